//! Regulation benchmark (not a test): the whole bridge (`app::start`) on the local mosquitto
//! (`TEST_MQTT_URL`, default 127.0.0.1:1883) with 1 and then 3 simulated batteries behind one
//! simulated site (`simulator::site`, a Shelly Pro 3EM every second), 10 % UDP loss, the
//! regulator at its default tuning, and a 1 kW step load switched on and off every
//! `REGULATOR_BENCH_STEP_SECS` (45) for `REGULATOR_BENCH_SECS` (1800) per fleet
//! (`REGULATOR_BENCH_FLEETS`, default `1,3`). The site runs in
//! real time (the regulator's cycle and the batteries' countdowns are wall-clock), so a segment
//! takes as long as it simulates. Prints one JSON line per fleet: mean |grid − target|, p95
//! settling after a step, energy exported, mode writes per battery per minute, the largest
//! set-point written, CPU time and peak RSS of this process (bridge, simulator and site).
//! `BENCH_LOG=<filter>` prints the bridge's log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use marstek_bridge::app::{self, Tasks};
use marstek_bridge::config::{DeviceConfig, Settings};
use marstek_bridge::mqtt::{ClientOptions, MqttProtocol};
use marstek_bridge::simulator::site::{SiteConfig, start_site};
use marstek_bridge::simulator::{SimConfig, SimFaults, SimHandle, Simulator};
use serde_json::json;

const TARGET: f64 = 20.0;
const WITHIN: f64 = 25.0 + 30.0;

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

fn broker() -> (String, u16) {
    let url = std::env::var("TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let rest = url.trim_start_matches("mqtt://").to_string();
    let (host, port) = rest.rsplit_once(':').unwrap_or((&rest, "1883"));
    (host.to_string(), port.parse().unwrap_or(1883))
}

/// CPU seconds (user + system) and peak RSS (KiB) of this process, from /proc.
fn usage() -> (f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    (cpu, hwm)
}

fn p95(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[((v.len() as f64 * 0.95).ceil() as usize).clamp(1, v.len()) - 1])
}

/// The bridge's settings for the bench: the local broker under `base`, a SQLite store in `dir`,
/// the regulator on the simulated site's meter, one configured device per simulated battery.
fn bench_settings(
    base: &str,
    host: &str,
    port: u16,
    dir: &std::path::Path,
    sim: &SimHandle,
) -> Settings {
    let mut s = Settings::default();
    s.mqtt.host = host.to_string();
    s.mqtt.port = port;
    s.mqtt.base_topic = base.to_string();
    s.mqtt.discovery_prefix = format!("{base}ha");
    s.mqtt.client_id = base.to_string();
    s.database.url = format!("sqlite://{}/b.db", dir.display());
    s.marstek.bind_device_port = false;
    s.tempo.enabled = false;
    // No AUTO/MANUAL job: after 22:00 Paris the reconciler would hold the night's Manual intent
    // against the regulator, and the figures must not depend on the time of day.
    for job in ["job_switch_to_auto", "job_switch_to_manual_night"] {
        s.scheduler.jobs.entry(job.into()).or_default().enabled = false;
    }
    s.regulator.enabled = true;
    s.regulator.meter.preset = marstek_bridge::regulator::MeterPreset::Shelly3em;
    s.regulator.meter.topic = Some(format!("{base}-meter/status/em:0"));
    s.devices = sim
        .addrs()
        .iter()
        .enumerate()
        .map(|(i, a)| DeviceConfig {
            host: a.ip().to_string(),
            port: a.port(),
            id: Some(format!("bat{}", i + 1)),
            ..DeviceConfig::default()
        })
        .collect();
    s
}

/// MQTT options of the simulated site's client.
fn site_client(base: &str, host: String, port: u16) -> ClientOptions {
    ClientOptions {
        protocol: MqttProtocol::V311,
        client_id: format!("{base}-site"),
        host,
        port,
        keep_alive: Duration::from_secs(10),
        clean_session: true,
        credentials: None,
        tls: None,
        last_will: None,
    }
}

/// What one fleet's segment measured.
struct Report {
    batteries: usize,
    minutes: f64,
    err_sum: f64,
    n: u64,
    settling: Vec<f64>,
    exported_wh: f64,
    writes: u64,
    max_set: i32,
    limit: u32,
    cpu_s: f64,
    rss: u64,
}

impl Report {
    /// The printed JSON line (rounded to one decimal).
    fn json(self) -> serde_json::Value {
        let Report {
            batteries,
            minutes,
            err_sum,
            n,
            settling,
            exported_wh,
            writes,
            max_set,
            limit,
            cpu_s,
            rss,
        } = self;
        let steps = settling.len();
        json!({
            "batteries": batteries,
            "minutes": (minutes * 10.0).round() / 10.0,
            "udp_loss": 0.1,
            "mean_abs_error_w": (err_sum / n.max(1) as f64).round(),
            "p95_settling_s": p95(settling).map(|v| (v * 10.0).round() / 10.0),
            "steps_settled": steps,
            "exported_wh": (exported_wh * 10.0).round() / 10.0,
            "mode_writes_per_battery_per_min":
                (writes as f64 / batteries as f64 / minutes * 10.0).round() / 10.0,
            "largest_setpoint_w": max_set,
            "envelope_w": limit,
            "cpu_s": (cpu_s * 10.0).round() / 10.0,
            "peak_rss_kib": rss,
        })
    }
}

/// `batteries` simulated batteries at 70 % with 10 % UDP loss.
async fn start_sim(batteries: usize) -> anyhow::Result<Arc<SimHandle>> {
    let faults = SimFaults::parse_list("loss=0.1").map_err(anyhow::Error::msg)?;
    let sim = Simulator::start(SimConfig {
        devices: batteries,
        initial_soc: 70.0,
        faults,
        ..SimConfig::default()
    })
    .await?;
    Ok(Arc::new(sim))
}

/// The first battery's power envelope (W): the larger of its charge and discharge limits.
fn envelope(s: &Settings) -> u32 {
    let limits = s.devices[0].limits();
    limits.max_discharge_w.max(limits.max_charge_w)
}

/// Mode writes the simulated batteries have received so far, all batteries together.
fn mode_writes(sim: &SimHandle, batteries: usize) -> u64 {
    (0..batteries)
        .filter_map(|i| sim.stats(i))
        .map(|s| s.mode_writes)
        .sum()
}

async fn run(batteries: usize, segment: Duration, step: Duration) -> anyhow::Result<()> {
    let sim = start_sim(batteries).await?;
    let dir = tempfile::tempdir()?;
    let base = format!("mbbench{}", std::process::id());
    let (host, port) = broker();
    let s = bench_settings(&base, &host, port, dir.path(), &sim);
    let limit = envelope(&s);
    let (tasks, _ended) = Tasks::new(Default::default());
    let running = app::start(&s, &tasks).await?;
    for id in running.core.fleet.ids() {
        running.core.commands.regulated().join(&id);
    }
    let site_config = SiteConfig {
        topic: s.regulator.meter.topic.clone().unwrap_or_default(),
        ..SiteConfig::default()
    };
    let site = start_site(site_config, sim.clone(), &site_client(&base, host, port))?;
    let mut readings = site.readings();
    let writes0 = mode_writes(&sim, batteries);
    let (cpu0, _) = usage();
    let started = Instant::now();
    let (mut err_sum, mut n, mut exported_wh, mut max_set) = (0.0, 0u64, 0.0, 0i32);
    let (mut step_at, mut on, mut run_ok, mut settled) = (Instant::now(), false, 0, true);
    let mut settling = Vec::new();
    let mut last = Instant::now();
    while started.elapsed() < segment {
        if readings.changed().await.is_err() {
            break;
        }
        let Some(r) = *readings.borrow_and_update() else {
            continue;
        };
        let now = Instant::now();
        if now.duration_since(step_at) >= step {
            on = !on;
            site.set_extra_load(if on { 1000.0 } else { 0.0 });
            (step_at, run_ok, settled) = (now, 0, false);
        }
        err_sum += (r.grid_w - TARGET).abs();
        n += 1;
        exported_wh += (-r.grid_w).max(0.0) * now.duration_since(last).as_secs_f64() / 3600.0;
        last = now;
        for i in 0..batteries {
            if let Some(st) = sim.state(i) {
                max_set = max_set.max(st.passive_power.abs());
            }
        }
        run_ok = if (r.grid_w - TARGET).abs() <= WITHIN {
            run_ok + 1
        } else {
            0
        };
        if !settled && run_ok >= 3 {
            settled = true;
            settling.push(now.duration_since(step_at).as_secs_f64() - 2.0);
        }
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let writes = mode_writes(&sim, batteries);
    let (cpu1, rss) = usage();
    let report = Report {
        batteries,
        minutes,
        err_sum,
        n,
        settling,
        exported_wh,
        writes: writes - writes0,
        max_set,
        limit,
        cpu_s: cpu1 - cpu0,
        rss,
    };
    println!("{}", report.json());
    drop(site);
    // With 10 % loss a battery actor may still be retrying: a slow stop is reported, not fatal.
    if let Err(e) = running.stop(&tasks, Duration::from_secs(30)).await {
        eprintln!("bridge stop: {e:#}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // `BENCH_LOG=<filter>` (e.g. `marstek_bridge::regulator=debug`) prints the bridge's log.
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    }
    let segment = env_secs("REGULATOR_BENCH_SECS", 1800);
    let step = env_secs("REGULATOR_BENCH_STEP_SECS", 45);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let fleets = std::env::var("REGULATOR_BENCH_FLEETS").unwrap_or_else(|_| "1,3".into());
    for batteries in fleets.split(',').filter_map(|n| n.trim().parse().ok()) {
        rt.block_on(run(batteries, segment, step))?;
    }
    Ok(())
}
