//! The shipped `mosquitto/acl` for real: a private mosquitto with passwords and that ACL file, the
//! bridge binary logging in as `bridge` over MQTT 5 with the default topics, and the mosquitto
//! command-line clients as Home Assistant (reads discovery and state) and as a script (commands
//! a simulated battery and gets the MQTT 5 answer on a response topic under `replies/`). What the
//! ACL forbids (a script writing discovery) is refused by the broker.

mod fault_common;
mod support;

use std::path::Path;
use std::process::Command;

use fault_common::BridgeProcess;
use marstek_bridge::simulator::{SimConfig, Simulator};
use serde_json::Value;
use support::PrivateBroker;

const BIN: &str = env!("CARGO_BIN_EXE_marstek-bridge");

/// Runs a mosquitto client (`mosquitto_sub`, `mosquitto_rr`, `mosquitto_pub`) to completion.
fn cli(program: &str, port: u16, user: &str, args: &[&str]) -> std::process::Output {
    let password = format!("{user}-secret");
    let port = port.to_string();
    Command::new(program)
        .args(["-V", "mqttv5", "-h", "127.0.0.1", "-p", &port])
        .args(["-u", user, "-P", &password])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is installed (mosquitto-clients): {e}"))
}

fn json_of(out: &std::process::Output, what: &str) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{what}: not JSON ({e}): {text:?}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_acl_lets_the_bridge_home_assistant_and_scripts_do_their_part() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    for (i, user) in ["bridge", "homeassistant", "client"].iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        cmd.arg("-b");
        if i == 0 {
            cmd.arg("-c");
        }
        let ok = cmd
            .arg(&passwd)
            .arg(user)
            .arg(format!("{user}-secret"))
            .status()
            .expect("mosquitto_passwd is installed");
        assert!(ok.success());
    }
    let acl = Path::new(env!("CARGO_MANIFEST_DIR")).join("mosquitto/acl");
    let broker = PrivateBroker::start(
        dir.path(),
        &format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}",
            passwd.display(),
            acl.display()
        ),
    );
    let sim = Simulator::start(SimConfig {
        devices: 1,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dev = sim.addrs()[0];
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            r#"[bridge]
instance_id = "acl"
[mqtt]
host = "127.0.0.1"
port = {port}
protocol = "5"
client_id = "marstek-bridge-acl"
username = "bridge"
password = "bridge-secret"
reconnect_min = "100ms"
reconnect_max = "500ms"
[database]
url = "sqlite://{db}"
[polling]
status_interval = "1s"
quiet_gap = "0s"
[marstek]
bind_device_port = false
[tempo]
enabled = false
[[devices]]
id = "venus1"
host = "{ip}"
port = {dev_port}
"#,
            port = broker.port,
            db = dir.path().join("acl.db").display(),
            ip = dev.ip(),
            dev_port = dev.port(),
        ),
    )
    .unwrap();
    let bridge = BridgeProcess::spawn(BIN, &config, dir.path());
    let port = broker.port;

    // Home Assistant's user reads the discovery and the state the bridge published.
    let wait = ["-C", "1", "-W", "30"];
    let soc_config = tokio::task::spawn_blocking(move || {
        let topic = "homeassistant/sensor/marstek_venus1/soc/config";
        cli(
            "mosquitto_sub",
            port,
            "homeassistant",
            &[&["-t", topic][..], &wait].concat(),
        )
    })
    .await
    .unwrap();
    let v = json_of(&soc_config, "soc discovery config");
    assert_eq!(
        v["state_topic"],
        "marstek/venus1/state",
        "{v}; log:\n{}",
        bridge.log_text()
    );
    let state = tokio::task::spawn_blocking(move || {
        cli(
            "mosquitto_sub",
            port,
            "homeassistant",
            &[&["-t", "marstek/venus1/state"][..], &wait].concat(),
        )
    })
    .await
    .unwrap();
    assert!(json_of(&state, "state")["soc"].is_number());

    // A script commands the battery and gets the answer on its MQTT 5 response topic.
    let answer = tokio::task::spawn_blocking(move || {
        cli(
            "mosquitto_rr",
            port,
            "client",
            &[
                "-t",
                "marstek/venus1/set",
                "-e",
                "replies/acl-test",
                "-m",
                r#"{"mode":"manual","id":"acl1"}"#,
                "-W",
                "30",
            ],
        )
    })
    .await
    .unwrap();
    let v = json_of(&answer, "answer on replies/acl-test");
    assert_eq!(v["id"], "acl1", "{v}");
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(
        sim.state(0).unwrap().mode,
        marstek_bridge::domain::Mode::Manual
    );

    // The ACL keeps scripts out of Home Assistant's discovery: the broker refuses the publish.
    let forged = tokio::task::spawn_blocking(move || {
        cli(
            "mosquitto_pub",
            port,
            "client",
            &[
                "-q",
                "1",
                "-t",
                "homeassistant/switch/forged/config",
                "-m",
                "{}",
            ],
        )
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&forged.stderr).to_lowercase();
    assert!(
        said.contains("not authori"),
        "forged discovery accepted: {said:?}"
    );
    drop(bridge);
    sim.shutdown().await;
}
