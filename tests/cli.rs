//! The command line as a user meets it: `config check` / `config print` exit codes and messages,
//! secrets never printed, and `run` stopping cleanly on SIGTERM within the shutdown bound.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_marstek-bridge"));
    // The developer's environment must not leak into these tests.
    for (k, _) in std::env::vars() {
        if k.starts_with("MARSTEK_BRIDGE") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn check(config: &Path) -> Output {
    check_with_env(config, &[])
}

fn check_with_env(config: &Path, env: &[(&str, &str)]) -> Output {
    bin()
        .args(["config", "check", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn documented_example_config_passes() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/marstek-bridge.toml");
    let out = check(&example);
    assert!(
        out.status.success(),
        "example config rejected: {}",
        stderr(&out)
    );
}

#[test]
fn unknown_key_exits_2_naming_key_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.toml",
        "[bridge]\nread_only = false\nfrobnicate = 1\n",
    );
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("bridge.frobnicate"), "{err}");
    assert!(err.contains("c.toml:3"), "{err}");
}

#[test]
fn duplicate_device_exits_2_naming_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.toml",
        "[[devices]]\nhost = \"10.0.0.1\"\nid = \"a\"\n\n[[devices]]\nhost = \"10.0.0.1\"\nid = \"b\"\n",
    );
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("devices.1.host"), "{err}");
    assert!(err.contains("same battery as devices.0"), "{err}");
}

#[test]
fn the_same_battery_under_two_spellings_is_refused_naming_both_entries() {
    let dir = tempfile::tempdir().unwrap();
    for (a, b) in [
        ("127.0.0.1", "localhost"),
        ("127.0.0.1", "127.1"),
        ("Battery.LAN", "battery.lan."),
    ] {
        let cfg = write(
            dir.path(),
            "c.toml",
            &format!(
                "[[devices]]\nhost = \"{a}\"\nport = 30001\n\n[[devices]]\nhost = \"{b}\"\nport = 30001\n"
            ),
        );
        let out = check(&cfg);
        assert_eq!(out.status.code(), Some(2), "{a} / {b}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("c.toml:6: `devices.1.host`"), "{err}");
        assert!(
            err.contains(&format!(
                "{b}:30001 is the same battery as devices.0 ({a}:30001)"
            )),
            "{err}"
        );
    }
    // Same host, other port: two batteries behind one address are fine.
    let cfg = write(
        dir.path(),
        "ok.toml",
        "[[devices]]\nhost = \"127.0.0.1\"\nport = 30001\n\n[[devices]]\nhost = \"localhost\"\nport = 30002\n",
    );
    assert!(check(&cfg).status.success(), "{}", stderr(&check(&cfg)));
}

#[test]
fn every_credential_of_a_database_url_is_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", "[bridge]\nread_only = false\n");
    for url in [
        "postgres://u@127.0.0.1:5432/db?password=S3CRET",
        "postgres://u@127.0.0.1:5432/db?sslmode=disable&sslpassword=S3CRET&application_name=x",
        "postgres://u:S3CRET@127.0.0.1:5432/db?password=S3CRET",
        "postgres://:S3CRET@127.0.0.1/db",
    ] {
        let out = bin()
            .args(["config", "print", "--config"])
            .arg(&cfg)
            .env("MARSTEK_BRIDGE__DATABASE__URL", url)
            .output()
            .unwrap();
        assert!(out.status.success(), "{url}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("S3CRET"), "{url} printed:\n{text}");
        assert!(text.contains("127.0.0.1"), "{text}");
    }
    // A URL that does not parse is shown without its secrets too (here in the error).
    let out = check_with_env(
        &cfg,
        &[(
            "MARSTEK_BRIDGE__DATABASE__URL",
            "postgres://u:S3CRET@127.0.0.1:notaport/db?password=S3CRET",
        )],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!stderr(&out).contains("S3CRET"), "{}", stderr(&out));
}

#[test]
fn secrets_are_strings_whatever_they_look_like_and_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", "[mqtt]\nusername = \"bridge\"\n");
    for (var, value) in [
        ("MARSTEK_BRIDGE__MQTT__PASSWORD", "532815386218"),
        ("MARSTEK_BRIDGE__MQTT__PASSWORD", "4.25e7"),
        ("MARSTEK_BRIDGE__MQTT__PASSWORD", "[13, 37]"),
    ] {
        let out = bin()
            .args(["config", "print", "--config"])
            .arg(&cfg)
            .env(var, value)
            .output()
            .unwrap();
        assert!(out.status.success(), "{var}={value}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains(value), "{value} printed:\n{text}");
    }
    // Written as a number in the file, the password is refused, without being echoed.
    let cfg = write(
        dir.path(),
        "n.toml",
        "[mqtt]\nusername = \"bridge\"\npassword = 532815386218\n",
    );
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("n.toml:3: `mqtt.password`"), "{err}");
    assert!(!err.contains("532815386218"), "{err}");
}

#[test]
fn database_urls_are_validated_fully_by_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", "[bridge]\nread_only = false\n");
    for url in [
        "postgres://u@127.0.0.1:notaport/db",
        "postgres://u@127.0.0.1:5432/db?sslmode=sometimes",
        "sqlite://data/x.db?mode=sideways",
    ] {
        let out = check_with_env(&cfg, &[("MARSTEK_BRIDGE__DATABASE__URL", url)]);
        assert_eq!(out.status.code(), Some(2), "{url} passed config check");
        assert!(stderr(&out).contains("`database.url`"), "{}", stderr(&out));
    }
    let out = check_with_env(
        &cfg,
        &[(
            "MARSTEK_BRIDGE__DATABASE__URL",
            "postgres://u@127.0.0.1:5432/db?sslmode=disable",
        )],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_unreachable_database_at_run_is_a_runtime_failure_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = write(
        dir.path(),
        "c.toml",
        &format!(
            "[marstek]\nbind_device_port = false\n\n[database]\nurl = \"postgres://postgres@127.0.0.1:{port}/x?password=S3CRET\"\nacquire_timeout = \"1s\"\n"
        ),
    );
    assert!(check(&cfg).status.success(), "{}", stderr(&check(&cfg)));
    let out = bin()
        .args(["run", "--log-format", "json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("cannot be reached"), "{err}");
    assert!(!err.contains("S3CRET"), "{err}");
}

#[test]
fn invalid_values_each_named_with_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.toml",
        "[[devices]]\nhost = \"10.0.0.1\"\nport = 0\nmin_soc = 90\nmax_soc = 50\nprofile = \"venus-z\"\n",
    );
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for key in ["devices.0.port", "devices.0.min_soc", "devices.0.profile"] {
        assert!(err.contains(key), "{key} missing in: {err}");
    }
}

#[test]
fn broken_toml_and_missing_file_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", "[bridge\nread_only = \n");
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not valid TOML"));
    let out = check(&dir.path().join("missing.toml"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not exist"));
}

#[test]
fn config_print_never_shows_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = write(dir.path(), "pw", "from-a-file-secret\n");
    let cfg = write(
        dir.path(),
        "c.toml",
        "[mqtt]\nusername = \"bridge\"\npassword = \"hunter2-secret\"\n\n[database]\nurl = \"postgres://bridge:db-secret@127.0.0.1:5432/marstek\"\n",
    );
    let out = bin()
        .args(["config", "print", "--config"])
        .arg(&cfg)
        .env(
            "MARSTEK_BRIDGE__TEMPO__RTE_CLIENT_SECRET_FILE",
            &secret_file,
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for secret in ["hunter2-secret", "db-secret", "from-a-file-secret"] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert!(text.contains("***"), "{text}");
    assert!(text.contains("postgres://bridge:***@127.0.0.1"), "{text}");
}

#[test]
fn env_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", "[bridge]\nread_only = false\n");
    let out = bin()
        .args(["config", "print", "--config"])
        .arg(&cfg)
        .env("MARSTEK_BRIDGE__BRIDGE__READ_ONLY", "true")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("read_only = true"));
}

#[test]
fn sigterm_stops_the_daemon_cleanly_within_the_bound() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", &test_config(dir.path()));
    let mut child = bin()
        .args(["run", "--log-format", "json", "--config"])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("\"bridge_started\""));
    assert!(started, "the daemon never logged bridge_started");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "still running 15 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        status.success(),
        "exit status {status:?}; log tail: {rest:?}"
    );
    assert!(
        rest.iter().any(|l| l.contains("bridge_stopped")),
        "{rest:?}"
    );
}

/// A configuration for a daemon on this machine's real neighbours with no battery.
pub fn test_config(dir: &Path) -> String {
    format!(
        "[bridge]\nshutdown_timeout = \"10s\"\n\n[marstek]\nbind_device_port = false\n\n[database]\nurl = \"sqlite://{}/bridge.db\"\n",
        dir.display()
    )
}

#[test]
fn jobs_preview_prints_local_and_utc_instants() {
    let out = bin()
        .args([
            "jobs",
            "preview",
            "--cron",
            "0 6 * * *",
            "--tz",
            "Europe/Paris",
            "--from",
            "2026-03-28T12:00:00Z",
            "--count",
            "3",
            "--config",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for utc in [
        "2026-03-29T04:00:00Z",
        "2026-03-30T04:00:00Z",
        "2026-03-31T04:00:00Z",
    ] {
        assert!(text.contains(utc), "{utc} missing:\n{text}");
    }
    assert!(text.contains("06:00:00 CEST"), "{text}");
    let bad = bin()
        .args([
            "jobs",
            "preview",
            "--cron",
            "0 6 * * * *",
            "--config",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("5 are allowed"), "{}", stderr(&bad));
}

#[test]
fn jobs_commands_reach_the_running_bridge_and_refusals_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!("mbcli{}", std::process::id());
    let cfg = write(
        dir.path(),
        "c.toml",
        &format!(
            "{}\n[mqtt]\nbase_topic = \"{base}\"\ndiscovery_prefix = \"{base}ha\"\nclient_id = \"{base}\"\n\n[tempo]\nenabled = false\n",
            test_config(dir.path())
        ),
    );
    let mut daemon = Daemon(
        bin()
            .args(["run", "--log-format", "json", "--config"])
            .arg(&cfg)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(daemon.0.stderr.take().unwrap()).lines();
    assert!(
        lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("\"bridge_started\""))
    );
    std::thread::spawn(move || lines.for_each(drop));
    let jobs = |args: &[&str]| {
        bin()
            .arg("jobs")
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap()
    };

    let list = jobs(&["list", "--json"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"job_switch_to_auto") && ids.contains(&"job_health_check"),
        "{ids:?}"
    );

    let pause = jobs(&["pause", "job_monitor_batteries"]);
    assert!(pause.status.success(), "{}", stderr(&pause));
    let again = jobs(&["pause", "job_monitor_batteries"]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already paused"),
        "{}",
        stderr(&again)
    );
    let never = jobs(&["update", "job_switch_to_auto", "cron:0 0 31 2 *"]);
    assert_eq!(never.status.code(), Some(2));
    assert!(stderr(&never).contains("never fires"), "{}", stderr(&never));
    let unknown = jobs(&["run", "job_nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    let resume = jobs(&["resume", "job_monitor_batteries"]);
    assert!(resume.status.success(), "{}", stderr(&resume));
}

/// Stops the daemon when the test ends, passed or not.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn bad_time_zone_and_bad_cron_exit_2_naming_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.toml",
        "[scheduler]\ntimezone = \"Europe/Pariss\"\n\n[scheduler.jobs.job_switch_to_auto]\ntrigger = \"cron:0 6 * * * *\"\n",
    );
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("c.toml:2: `scheduler.timezone`"), "{err}");
    assert!(
        err.contains("scheduler.jobs.job_switch_to_auto.trigger"),
        "{err}"
    );
    assert!(err.contains("exactly 5 are allowed"), "{err}");
    let cfg = write(
        dir.path(),
        "d.toml",
        "[scheduler.jobs.job_switch_to_auto]\ntrigger = \"cron:61 6 * * *\"\n",
    );
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("scheduler.jobs.job_switch_to_auto.trigger"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn mqtt_protocol_is_checked_naming_the_allowed_values() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.toml", "[mqtt]\nprotocol = \"4\"\n");
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("mqtt.protocol"), "{err}");
    assert!(err.contains("c.toml:2"), "{err}");
    assert!(err.contains("\"3.1.1\"") && err.contains("\"5\""), "{err}");
    // 5 as a TOML integer, and as an environment override (which arrives as an integer).
    let cfg = write(dir.path(), "ok.toml", "[mqtt]\nprotocol = 5\n");
    assert!(check(&cfg).status.success(), "{}", stderr(&check(&cfg)));
    let cfg = write(dir.path(), "env.toml", "[mqtt]\nprotocol = \"3.1.1\"\n");
    let out = check_with_env(&cfg, &[("MARSTEK_BRIDGE__MQTT__PROTOCOL", "5")]);
    assert!(out.status.success(), "{}", stderr(&out));
}
