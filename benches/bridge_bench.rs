//! End-to-end benchmark of the release bridge binary: starts N simulated batteries in process
//! (1, 10, 100, 1000), runs `marstek-bridge run` as a child against the real mosquitto
//! (127.0.0.1:1883) and a fresh PostgreSQL database per run (dropped after), with pacing off and
//! a 5 s status interval, and measures start-up to the first state publish, the poll-round
//! duration, CPU time and peak RSS of the child (from `/proc`), command latency
//! (`/set` → `/response`) and telemetry insert throughput (PostgreSQL and SQLite, the
//! `Store::insert_samples` path of `store_ingest`). Writes `docs/benchmarks.json` and
//! `docs/benchmarks.md`. Run: `scripts/bench.sh` (or `cargo bench --bench bridge_bench`).
//! Environment: `BENCH_SIZES=1,10` and `BENCH_WINDOW=10` (seconds) shorten a run;
//! `BENCH_NO_WRITE=1` prints without writing the docs.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/fault_common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{BridgeProcess, BridgeSetup, Watcher, aliases, broker_addr, percentile, unique_base};
use marstek_bridge::simulator::{Addressing, SimConfig, Simulator};
use marstek_bridge::store::{self, DatabaseSettings, Store};
use rumqttc::QoS;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_marstek-bridge");

/// Command latency figures, ms.
#[derive(Debug, Clone, serde::Serialize)]
struct Latency {
    commands: usize,
    ok: usize,
    errors: usize,
    timeouts: usize,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Figures of one fleet run.
#[derive(Debug, Clone, serde::Serialize)]
struct FleetRun {
    devices: usize,
    mqtt_qos: u8,
    discovery: String,
    status_interval_s: u64,
    startup_to_first_state_ms: f64,
    startup_to_all_states_ms: f64,
    devices_publishing: usize,
    window_s: f64,
    state_publishes_in_window: usize,
    full_rounds: usize,
    round_ms_median: f64,
    round_ms_max: f64,
    cpu_s_per_min: f64,
    cpu_pct_of_one_core: f64,
    peak_rss_mb: f64,
    /// Anonymous (heap, stacks) part of the resident set at the end of the window, MB.
    rss_anon_mb: f64,
    /// File-backed part (the binary's pages, shared libraries) at the end of the window, MB.
    rss_file_mb: f64,
    command_latency: Option<Latency>,
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Splits arrival times into rounds (a gap of more than a second starts a new round).
fn rounds(times: &[Instant]) -> Vec<(usize, Duration)> {
    let mut out = Vec::new();
    let mut start = match times.first() {
        Some(t) => *t,
        None => return out,
    };
    let (mut last, mut count) = (start, 0usize);
    for &t in times {
        if t.duration_since(last) > Duration::from_secs(1) {
            out.push((count, last.duration_since(start)));
            start = t;
            count = 0;
        }
        last = t;
        count += 1;
    }
    out.push((count, last.duration_since(start)));
    out
}

/// One fleet size end to end: start-up, steady state over `window`, then `commands` sequential
/// commands; the bridge publishing at `qos` with `discovery`.
async fn fleet_run(
    n: usize,
    discovery: &str,
    window: Duration,
    commands: usize,
    qos: u8,
) -> anyhow::Result<FleetRun> {
    let sim = Simulator::start(SimConfig {
        devices: n,
        addressing: Addressing::Ports {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: 0,
        },
        ..SimConfig::default()
    })
    .await?;
    let db = support::TestPgDb::create("bench_fleet").await;
    let base = unique_base("bench");
    let mut setup = BridgeSetup::new(broker_addr(), &base, &db.url);
    setup.devices = aliases(&sim.addrs());
    setup.discovery = discovery.to_string();
    setup.qos = qos;
    let dir = tempfile::tempdir()?;
    let config = setup.write(dir.path());
    let mut w = Watcher::start(
        broker_addr(),
        &format!("{base}_w"),
        &[format!("{base}/+/state"), format!("{base}/+/response")],
    )
    .await;
    let mut bridge = BridgeProcess::spawn(BIN, &config, dir.path());

    let start = startup(&mut w, &bridge, &base, n).await?;
    let steady = steady_state(&mut w, &bridge, &base, window, start.seen.len()).await;
    // Only devices that published: one that never registered would only time out.
    let live: Vec<&str> = setup
        .devices
        .iter()
        .map(|d| d.0.as_str())
        .filter(|d| start.seen.contains(*d))
        .collect();
    let latency = command_latency(&mut w, &base, &live, commands).await?;
    let peak_rss_mb = bridge.peak_rss_kb().unwrap_or(0) as f64 / 1024.0;
    let rss_anon_mb = bridge.rss_anon_kb().unwrap_or(0) as f64 / 1024.0;
    let rss_file_mb = bridge.rss_file_kb().unwrap_or(0) as f64 / 1024.0;
    let exit = bridge.terminate(Duration::from_secs(10));
    if !exit.is_some_and(|s| s.success()) {
        eprintln!("bridge exit {exit:?}; log:\n{}", bridge.log_text());
    }
    sim.shutdown().await;
    db.drop_now().await;
    Ok(FleetRun {
        devices: n,
        mqtt_qos: qos,
        discovery: discovery.to_string(),
        status_interval_s: 5,
        startup_to_first_state_ms: ms(start.first),
        startup_to_all_states_ms: ms(start.all),
        devices_publishing: start.seen.len(),
        window_s: steady.elapsed,
        state_publishes_in_window: steady.publishes,
        full_rounds: steady.full.len(),
        round_ms_median: percentile(&steady.full, 50.0),
        round_ms_max: steady.full.last().copied().unwrap_or(f64::NAN),
        cpu_s_per_min: steady.cpu_frac * 60.0,
        cpu_pct_of_one_core: steady.cpu_frac * 100.0,
        peak_rss_mb,
        rss_anon_mb,
        rss_file_mb,
        command_latency: latency,
    })
}

/// The device alias of a battery's state publish: `<base>/<dev>/state`, not the bridge's own
/// `<base>/bridge/state`.
fn state_of(base: &str, s: &common::Seen) -> Option<String> {
    let rest = s.topic.strip_prefix(base)?.strip_prefix('/')?;
    rest.strip_suffix("/state")
        .filter(|d| *d != "bridge")
        .map(str::to_string)
}

/// Start-up figures: spawn → first state publish, spawn → every device published once.
struct Startup {
    first: Duration,
    all: Duration,
    /// Devices that published.
    seen: HashSet<String>,
}

/// Waits for the first state publish, then for every one of the `n` devices once (or as many
/// as manage within 45 s; the shortfall is reported).
async fn startup(
    w: &mut Watcher,
    bridge: &BridgeProcess,
    base: &str,
    n: usize,
) -> anyhow::Result<Startup> {
    let first = w
        .next_matching(Duration::from_secs(60), |s| state_of(base, s).is_some())
        .await
        .ok_or_else(|| anyhow::anyhow!("no state in 60 s; log:\n{}", bridge.log_text()))?;
    let first_at = first.at.duration_since(bridge.started);
    let mut seen: HashSet<String> = state_of(base, &first).into_iter().collect();
    let limit = Instant::now() + Duration::from_secs(45);
    while seen.len() < n {
        let left = limit.saturating_duration_since(Instant::now());
        let Some(s) = w.next_matching(left, |s| state_of(base, s).is_some()).await else {
            eprintln!("only {} of {n} devices published within 45 s", seen.len());
            break;
        };
        if let Some(d) = state_of(base, &s) {
            seen.insert(d);
        }
    }
    Ok(Startup {
        first: first_at,
        all: Instant::now().duration_since(bridge.started),
        seen,
    })
}

/// Steady-state figures over the window.
struct Steady {
    /// Length of the window, s.
    elapsed: f64,
    /// CPU time of the bridge per second of the window.
    cpu_frac: f64,
    /// State publishes in the window.
    publishes: usize,
    /// Durations of the full poll rounds, ms, sorted.
    full: Vec<f64>,
}

/// CPU and state arrivals over `window`; a round is full when `devices` published in it.
async fn steady_state(
    w: &mut Watcher,
    bridge: &BridgeProcess,
    base: &str,
    window: Duration,
    devices: usize,
) -> Steady {
    let cpu0 = bridge.cpu_seconds().unwrap_or(0.0);
    let t0 = Instant::now();
    let mut times = Vec::new();
    while let Some(s) = w
        .next_matching(window.saturating_sub(t0.elapsed()), |s| {
            state_of(base, s).is_some()
        })
        .await
    {
        times.push(s.at);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = bridge.cpu_seconds().unwrap_or(cpu0);
    // Full rounds only: the first and last cluster may be cut by the window.
    let mut full: Vec<f64> = rounds(&times)
        .iter()
        .filter(|(c, _)| *c >= devices.max(1))
        .map(|(_, d)| ms(*d))
        .collect();
    full.sort_by(|a, b| a.total_cmp(b));
    Steady {
        elapsed,
        cpu_frac: (cpu1 - cpu0) / elapsed,
        publishes: times.len(),
        full,
    }
}

/// Sequential `/set` → `/response` over the `live` devices, alternating modes so each one
/// writes; None when no command is asked for.
async fn command_latency(
    w: &mut Watcher,
    base: &str,
    live: &[&str],
    commands: usize,
) -> anyhow::Result<Option<Latency>> {
    if commands == 0 {
        return Ok(None);
    }
    let mut lat = Vec::with_capacity(commands);
    let (mut ok, mut errors, mut timeouts) = (0, 0, 0);
    for i in 0..commands {
        let Some(dev) = live.get(i % live.len().max(1)) else {
            break;
        };
        let mode = if (i / live.len().max(1)).is_multiple_of(2) {
            "ups"
        } else {
            "auto"
        };
        let id = format!("c{i}");
        let payload = json!({"mode": mode, "id": id}).to_string();
        let topic = format!("{base}/{dev}/set");
        let resp_topic = format!("{base}/{dev}/response");
        let t = Instant::now();
        // QoS 0: with QoS 1 the broker's PUBACK to this client and mosquitto's default
        // `set_tcp_nodelay false` (Nagle + delayed ACK) add ~40 ms that is not the bridge's.
        w.client
            .publish(topic, QoS::AtMostOnce, false, payload)
            .await?;
        let got = w
            .next_matching(Duration::from_secs(5), |s| {
                s.topic == resp_topic
                    && serde_json::from_str::<Value>(&s.text).is_ok_and(|v| v["id"] == json!(id))
            })
            .await;
        let Some(s) = got else {
            timeouts += 1;
            continue;
        };
        lat.push(ms(s.at.duration_since(t)));
        let v: Value = serde_json::from_str(&s.text).unwrap_or(Value::Null);
        if v["status"] == "ok" {
            ok += 1;
        } else {
            errors += 1;
            if errors <= 3 {
                eprintln!("command error: {}", s.text);
            }
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(Some(Latency {
        commands,
        ok,
        errors,
        timeouts,
        p50_ms: percentile(&lat, 50.0),
        p95_ms: percentile(&lat, 95.0),
        p99_ms: percentile(&lat, 99.0),
        max_ms: lat.last().copied().unwrap_or(f64::NAN),
    }))
}

/// Samples/s inserted through `Store::insert_samples` in batches of `batch` for about `secs`.
async fn ingest(store: Arc<dyn Store>, batch: usize, secs: f64) -> anyhow::Result<f64> {
    let mut offset = 0i64;
    // Warm-up batch (connections, prepared statements).
    store
        .insert_samples(&support::synthetic_samples(batch, 10, &mut offset))
        .await?;
    let (mut rows, mut spent) = (0u64, Duration::ZERO);
    while spent.as_secs_f64() < secs {
        let b = support::synthetic_samples(batch, 10, &mut offset);
        let t = Instant::now();
        rows += store.insert_samples(&b).await?;
        spent += t.elapsed();
    }
    Ok(rows as f64 / spent.as_secs_f64())
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": model,
        "memory_gib": (mem_kb as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "os": std::env::consts::OS,
    })
}

fn fmt(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "n/a".into()
    }
}

/// Marks the start of the hand-written findings in `docs/benchmarks.md`, kept across runs.
const FINDINGS_MARKER: &str = "<!-- findings: written by hand, kept by scripts/bench.sh -->";

/// A summary row: the target, the figure it is judged on, whether it is met.
type Row = (&'static str, String, bool);

/// One line per DESIGN §11 target: the figure it is judged on and whether it is met.
fn summary(runs: &[FleetRun], pg: f64) -> String {
    let mut rows: Vec<Row> = Vec::new();
    if let Some(r) = runs
        .iter()
        .find(|r| r.devices == 10 && r.discovery == "entity" && r.mqtt_qos == 1)
    {
        rows.push((
            "RSS ≤ 15 MB, 10 batteries",
            format!("{} MB peak", fmt(r.peak_rss_mb, 1)),
            r.peak_rss_mb <= 15.0,
        ));
    }
    rows.extend(latency_row(runs));
    rows.extend(large_fleet_rows(runs));
    rows.push((
        "PostgreSQL ≥ 50,000 samples/s",
        format!("{} samples/s", fmt(pg, 0)),
        pg >= 50_000.0,
    ));
    let start = runs
        .iter()
        .filter(|r| r.devices <= 10)
        .map(|r| r.startup_to_first_state_ms)
        .fold(f64::NAN, f64::max);
    if start.is_finite() {
        rows.push((
            "start-up → first state ≤ 200 ms + device latency",
            format!("{} ms (worst run of 1–10 batteries)", fmt(start, 0)),
            start <= 200.0,
        ));
    }
    let mut s =
        String::from("## Against DESIGN §11\n\n| target | measured | met |\n|---|---|---|\n");
    for (target, measured, met) in rows {
        s.push_str(&format!(
            "| {target} | {measured} | {} |\n",
            if met { "yes" } else { "**no**" }
        ));
    }
    s.push('\n');
    s
}

/// Command latency, judged on the worst run (every fleet size, both QoS levels).
fn latency_row(runs: &[FleetRun]) -> Option<Row> {
    let lat: Vec<&Latency> = runs
        .iter()
        .filter_map(|r| r.command_latency.as_ref())
        .collect();
    if lat.is_empty() {
        return None;
    }
    let p50 = lat.iter().map(|l| l.p50_ms).fold(f64::NAN, f64::max);
    let p99 = lat.iter().map(|l| l.p99_ms).fold(f64::NAN, f64::max);
    let n: usize = lat.iter().map(|l| l.commands).sum();
    let ok: usize = lat.iter().map(|l| l.ok).sum();
    Some((
        "command p50 ≤ 2 ms, p99 ≤ 10 ms",
        format!(
            "worst run: p50 {} ms, p99 {} ms ({n} commands, {ok} ok)",
            fmt(p50, 2),
            fmt(p99, 2)
        ),
        p50 <= 2.0 && p99 <= 10.0 && ok == n,
    ))
}

/// RSS and CPU of 1,000 batteries, judged on the worst run.
fn large_fleet_rows(runs: &[FleetRun]) -> Vec<Row> {
    let worst = |f: fn(&FleetRun) -> f64| {
        runs.iter()
            .filter(|r| r.devices == 1000)
            .map(f)
            .fold(f64::NAN, f64::max)
    };
    let mut rows = Vec::new();
    let rss = worst(|r| r.peak_rss_mb);
    if rss.is_finite() {
        rows.push((
            "RSS ≤ 60 MB, 1,000 batteries",
            format!("{} MB peak (worst run)", fmt(rss, 1)),
            rss <= 60.0,
        ));
    }
    let cpu = worst(|r| r.cpu_pct_of_one_core);
    if cpu.is_finite() {
        rows.push((
            "CPU ≤ 10 % of a core, 1,000 batteries at 5 s",
            format!("{} % (worst run)", fmt(cpu, 2)),
            cpu <= 10.0,
        ));
    }
    rows
}

fn markdown(report: &Value, runs: &[FleetRun], pg: f64, lite: f64) -> String {
    let m = &report["machine"];
    let mut s = String::new();
    s.push_str("# Benchmarks\n\n");
    s.push_str(&format!(
        "Measured {} on {} cores ({}), {} GiB RAM, by `scripts/bench.sh` \
         (`benches/bridge_bench.rs`): release binary as a child process, real mosquitto and \
         PostgreSQL on loopback, simulated batteries in the benchmark process, `quiet_gap = \"0s\"`, \
         `status_interval = \"5s\"`. Raw figures: `docs/benchmarks.json`.\n\n",
        report["date"].as_str().unwrap_or(""),
        m["cores"],
        m["cpu"].as_str().unwrap_or(""),
        m["memory_gib"]
    ));
    s.push_str(&summary(runs, pg));
    s.push_str("## Fleet runs\n\n");
    s.push_str("| devices (publishing) | discovery | QoS | start-up → first state (ms) | → all states (ms) | poll round median / max (ms) | CPU (% of one core) | CPU s/min | peak RSS (MB) | RSS anon / file at end (MB) | target |\n");
    s.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for r in runs {
        let target = match r.devices {
            10 => "RSS ≤ 15 MB; start-up ≤ 200 ms + device latency",
            1000 => "RSS ≤ 60 MB; CPU ≤ 10 % of one core",
            _ => "start-up ≤ 200 ms + device latency",
        };
        s.push_str(&format!(
            "| {} ({}) | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} / {} | {} |\n",
            r.devices,
            r.devices_publishing,
            r.discovery,
            r.mqtt_qos,
            fmt(r.startup_to_first_state_ms, 0),
            fmt(r.startup_to_all_states_ms, 0),
            fmt(r.round_ms_median, 1),
            fmt(r.round_ms_max, 1),
            fmt(r.cpu_pct_of_one_core, 2),
            fmt(r.cpu_s_per_min, 2),
            fmt(r.peak_rss_mb, 1),
            fmt(r.rss_anon_mb, 1),
            fmt(r.rss_file_mb, 1),
            target
        ));
    }
    s.push_str("\n## Command latency (`/set` → `/response`, sequential, pacing off)\n\n");
    s.push_str("| devices | bridge MQTT QoS | commands | ok / error / timeout | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) | target |\n");
    s.push_str("|---:|---:|---:|---|---:|---:|---:|---:|---|\n");
    for r in runs {
        if let Some(l) = &r.command_latency {
            s.push_str(&format!(
                "| {} | {} | {} | {} / {} / {} | {} | {} | {} | {} | p50 ≤ 2 ms, p99 ≤ 10 ms |\n",
                r.devices,
                r.mqtt_qos,
                l.commands,
                l.ok,
                l.errors,
                l.timeouts,
                fmt(l.p50_ms, 2),
                fmt(l.p95_ms, 2),
                fmt(l.p99_ms, 2),
                fmt(l.max_ms, 2)
            ));
        }
    }
    s.push_str("\n## Telemetry insert throughput (`Store::insert_samples`, batches of 5,000)\n\n");
    s.push_str("| store | samples/s | target |\n|---|---:|---|\n");
    s.push_str(&format!(
        "| PostgreSQL | {} | ≥ 50,000 |\n| SQLite | {} | — |\n",
        fmt(pg, 0),
        fmt(lite, 0)
    ));
    s.push_str(
        "\nStart-up is measured from `spawn()` of the process to the arrival of the first \
         `<base>/<dev>/state` at a subscriber, so it includes process start, migrations on a \
         fresh database, the broker connection and the first identity and status calls. The poll \
         round is the span from the first to the last state publish of one round (all devices \
         start their first poll together and keep a 5 s period). CPU is utime+stime of the \
         bridge process from `/proc/<pid>/stat` over the window, after every device has \
         published once.\n",
    );
    s
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let sizes = env_list("BENCH_SIZES", &[1, 10, 100, 1000]);
        let window = Duration::from_secs(
            std::env::var("BENCH_WINDOW")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(21),
        );
        let runs = fleet_runs(&sizes, window).await?;
        let (pg_rate, lite_rate) = ingest_rates().await?;
        eprintln!("ingest samples/s: postgres {pg_rate:.0}, sqlite {lite_rate:.0}");

        let report = json!({
            "date": Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            "machine": machine(),
            "targets": {
                "rss_mb_10_devices": 15,
                "rss_mb_1000_devices": 60,
                "cpu_pct_one_core_1000_devices_5s": 10,
                "command_p50_ms": 2,
                "command_p99_ms": 10,
                "postgres_samples_per_s": 50000,
                "startup_ms_plus_device_latency": 200
            },
            "fleet": runs,
            "ingest_samples_per_s": {"postgres": pg_rate, "sqlite": lite_rate, "batch": 5000},
        });
        let md = markdown(&report, &runs, pg_rate, lite_rate);
        println!("{md}");
        if std::env::var_os("BENCH_NO_WRITE").is_none() {
            write_docs(&report, &md)?;
        }
        Ok(())
    })
}

/// Every fleet run: each size with discovery on at QoS 1, plus 10 batteries at QoS 0 and 1,000
/// with discovery off.
async fn fleet_runs(sizes: &[usize], window: Duration) -> anyhow::Result<Vec<FleetRun>> {
    let mut runs = Vec::new();
    for &n in sizes {
        let commands = match n {
            10 => 1000,
            1000 => 0,
            _ => 200,
        };
        let r = fleet_run(n, "entity", window, commands, 1).await?;
        eprintln!("{}", serde_json::to_string(&r)?);
        runs.push(r);
        if n == 10 {
            // The bridge publishing at QoS 0: no PUBACK from mosquitto, so its Nagle
            // (`set_tcp_nodelay false` by default) cannot hold the next `/set`.
            let r = fleet_run(n, "entity", Duration::from_secs(6), 1000, 0).await?;
            eprintln!("{}", serde_json::to_string(&r)?);
            runs.push(r);
        }
        if n == 1000 {
            let r = fleet_run(n, "off", window, 0, 1).await?;
            eprintln!("{}", serde_json::to_string(&r)?);
            runs.push(r);
        }
    }
    Ok(runs)
}

/// Telemetry insert rates, samples/s: (PostgreSQL on a throw-away database, SQLite in a
/// temporary file).
async fn ingest_rates() -> anyhow::Result<(f64, f64)> {
    let db = support::TestPgDb::create("bench_ingest").await;
    let pg = store::open(&DatabaseSettings {
        url: db.url.clone(),
        ..Default::default()
    })
    .await?;
    let pg_rate = ingest(pg.clone(), 5_000, 5.0).await?;
    drop(pg);
    db.drop_now().await;
    let dir = tempfile::tempdir()?;
    let lite = store::open(&DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("bench.db").display()),
        ..Default::default()
    })
    .await?;
    let lite_rate = ingest(lite, 5_000, 5.0).await?;
    Ok((pg_rate, lite_rate))
}

/// Writes `docs/benchmarks.json` and `docs/benchmarks.md`, keeping the hand-written findings
/// after the marker.
fn write_docs(report: &Value, md: &str) -> anyhow::Result<()> {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::create_dir_all(&docs)?;
    std::fs::write(
        docs.join("benchmarks.json"),
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    let findings = std::fs::read_to_string(docs.join("benchmarks.md"))
        .ok()
        .and_then(|old| old.find(FINDINGS_MARKER).map(|i| old[i..].to_string()))
        .unwrap_or_else(|| format!("{FINDINGS_MARKER}\n"));
    std::fs::write(docs.join("benchmarks.md"), format!("{md}\n{findings}"))?;
    Ok(())
}
