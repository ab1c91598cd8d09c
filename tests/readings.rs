//! Every reading of every simulated model, end to end: the bridge binary (child process) polls
//! one simulated battery per profile over real UDP, publishes discovery and state on the real
//! mosquitto and stores samples in a SQLite file. Each test asserts the Home Assistant entities
//! discovered for the model, the values published for each detail reading (CT phases, meter
//! energy, solar strings incl. Venus A fw 148's mixed deci-watt/watt units, battery detail,
//! diagnostics) and that the stored row carries the same readings. The counter test feeds a
//! backward jump, a one-sample spike and a genuine reset and asserts what is published and stored.

mod fault_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use fault_common::{
    BridgeProcess, BridgeSetup, Watcher, aliases, broker_addr, free_addr, unique_base,
};
use marstek_bridge::simulator::{SimConfig, SimHandle, SimProfile, Simulator};
use serde_json::Value;
use sqlx::{Connection, Row};

const BIN: &str = env!("CARGO_BIN_EXE_marstek-bridge");
const WAIT: Duration = Duration::from_secs(30);

/// One bridge process polling one simulated battery.
struct Run {
    sim: SimHandle,
    bridge: BridgeProcess,
    watcher: Watcher,
    base: String,
    db: PathBuf,
    /// The bridge's HTTP address (`/metrics`).
    http: SocketAddr,
    /// Retained discovery configs seen so far (topic → payload; removals drop the topic).
    configs: BTreeMap<String, Value>,
    _dir: tempfile::TempDir,
}

impl Run {
    async fn start(profile: SimProfile, firmware: Option<i64>) -> Run {
        Run::start_with(profile, firmware, |_| {}).await
    }

    /// Like `start`, with `prepare` applied to the simulator before the bridge starts.
    async fn start_with(
        profile: SimProfile,
        firmware: Option<i64>,
        prepare: impl FnOnce(&SimHandle),
    ) -> Run {
        let sim = Simulator::start(SimConfig {
            profile,
            firmware,
            ..SimConfig::default()
        })
        .await
        .expect("simulator starts");
        // Noon (UTC, the simulator's zone): the solar strings produce.
        let noon = (Utc::now() + chrono::Duration::days(1))
            .date_naive()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        sim.clock().set(Utc.from_utc_datetime(&noon));
        prepare(&sim);
        let dir = tempfile::tempdir().unwrap();
        let base = unique_base("readings");
        let db = dir.path().join("r.db");
        let mut setup =
            BridgeSetup::new(broker_addr(), &base, &format!("sqlite://{}", db.display()));
        setup.devices = aliases(&sim.addrs());
        setup.status_interval = "1s".into();
        setup.discovery = "entity".into();
        let http = free_addr();
        setup.http_listen = Some(http);
        // Every round reads the extras (EM, Wi-Fi, BLE) so each state carries fresh ones.
        let toml = setup
            .to_toml()
            .replace("[polling]\n", "[polling]\nextras_every = 1\n");
        let config = dir.path().join("bridge.toml");
        std::fs::write(&config, toml).unwrap();
        let watcher = Watcher::start(
            broker_addr(),
            &format!("{base}_w"),
            &[format!("{base}/#"), format!("{base}_ha/#")],
        )
        .await;
        let bridge = BridgeProcess::spawn(BIN, &config, dir.path());
        Run {
            sim,
            bridge,
            watcher,
            base,
            db,
            http,
            configs: BTreeMap::new(),
            _dir: dir,
        }
    }

    /// Next state of the battery satisfying `pred`, keeping every discovery config on the way.
    async fn state_where(&mut self, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let state_topic = format!("{}/d0000/state", self.base);
        let prefix = format!("{}_ha/", self.base);
        let configs = &mut self.configs;
        let got = self
            .watcher
            .next_matching(WAIT, |s| {
                if s.topic.starts_with(&prefix) && s.topic.ends_with("/config") {
                    match serde_json::from_str::<Value>(&s.text) {
                        Ok(v) => configs.insert(s.topic.clone(), v),
                        Err(_) => configs.remove(&s.topic),
                    };
                    return false;
                }
                s.topic == state_topic
                    && serde_json::from_str::<Value>(&s.text).is_ok_and(|v| pred(&v))
            })
            .await;
        match got {
            Some(s) => serde_json::from_str(&s.text).unwrap(),
            None => panic!("no state with {what}; log:\n{}", self.bridge.log_text()),
        }
    }

    /// The entity keys discovered for the battery, once the model-specific ones are announced.
    async fn entities(&mut self) -> BTreeSet<String> {
        let node = format!("{}_d0000", self.base);
        // the identified device is announced with its model's entities (model is always there)
        self.state_where("discovery with the model", |_| true).await;
        let model_topic = format!("{}_ha/sensor/{node}/model/config", self.base);
        for _ in 0..30 {
            if self.configs.contains_key(&model_topic) {
                break;
            }
            self.state_where("discovery with the model", |_| true).await;
        }
        self.configs
            .keys()
            .filter_map(|t| {
                let parts: Vec<&str> = t.split('/').collect();
                (parts.get(2) == Some(&node.as_str())).then(|| parts[3].to_string())
            })
            .collect()
    }

    /// Stops the bridge and returns the stored readings JSON of the sample taken at `at`.
    async fn stored_readings(&mut self, at: &str) -> Value {
        self.bridge.terminate(Duration::from_secs(10));
        let at: DateTime<Utc> = at.parse().unwrap();
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", self.db.display()))
            .await
            .unwrap();
        let row = sqlx::query(
            "SELECT readings, total_grid_output_energy FROM battery_status \
             WHERE device_id = 'd0000' AND time = ?",
        )
        .bind(at.timestamp_micros())
        .fetch_one(&mut conn)
        .await
        .expect("the published sample is stored");
        let text: Option<String> = row.get("readings");
        serde_json::from_str(&text.expect("readings stored")).unwrap()
    }
}

/// Value of the series `name{device="d0000",reading="<reading>"}` on `/metrics`.
async fn gauge(run: &Run, name: &str, reading: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{}/metrics", run.http))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let labels = [
        "device=\"d0000\"".to_string(),
        format!("reading=\"{reading}\""),
    ];
    text.lines().find_map(|l| {
        let (series, v) = l.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?.strip_prefix('{')?;
        labels
            .iter()
            .all(|want| rest.split([',', '}']).any(|x| x == want))
            .then(|| v.parse().ok())?
    })
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// A raw `PV.GetStatus` reply, as the device sends it.
async fn raw_pv(to: SocketAddr) -> Value {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(br#"{"id":7,"method":"PV.GetStatus","params":{"id":0}}"#, to)
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf))
        .await
        .expect("PV reply")
        .unwrap();
    serde_json::from_slice::<Value>(&buf[..n]).unwrap()["result"].clone()
}

/// What a model reports beyond the core readings.
#[derive(Debug, Clone, Copy)]
struct Expect {
    device: &'static str,
    firmware: u64,
    pv: bool,
    meter_energy: bool,
    electrical: bool,
    temperatures: bool,
}

const CORE: [&str; 10] = [
    "charge_allowed",
    "discharge_allowed",
    "model",
    "firmware",
    "wifi_ssid",
    "wifi_ip",
    "ble_connected",
    "poll_failures",
    "last_error",
    "readings_dropped",
];

fn expected_entities(e: Expect) -> BTreeSet<String> {
    let mut keys: Vec<String> = CORE.iter().map(|k| k.to_string()).collect();
    keys.extend(["ct_a_power", "ct_b_power", "ct_c_power"].map(String::from));
    if e.meter_energy {
        keys.extend(["ct_input_energy", "ct_output_energy"].map(String::from));
    }
    if e.pv {
        for n in 1..=4 {
            for q in ["power", "voltage", "current", "working"] {
                keys.push(format!("pv{n}_{q}"));
            }
        }
    }
    if e.electrical {
        keys.extend(["bat_voltage", "bat_current", "error_code", "alarm_code"].map(String::from));
    }
    if e.temperatures {
        keys.extend(["cell_temp_max", "cell_temp_min", "board_temp"].map(String::from));
    }
    keys.into_iter().collect()
}

/// The detail keys the bridge can announce (to check the absent ones too).
fn all_detail_keys() -> BTreeSet<String> {
    expected_entities(Expect {
        device: "",
        firmware: 0,
        pv: true,
        meter_energy: true,
        electrical: true,
        temperatures: true,
    })
}

async fn profile_story(profile: SimProfile, firmware: Option<i64>, e: Expect) {
    let mut run = Run::start(profile, firmware).await;

    // Entities: exactly the model's detail set (plus the core ones that existed before).
    let entities = run.entities().await;
    let want = expected_entities(e);
    for k in all_detail_keys() {
        assert_eq!(
            entities.contains(&k),
            want.contains(&k),
            "{:?}: entity {k} discovered = {}",
            profile,
            entities.contains(&k)
        );
    }
    for k in ["soc", "bat_power", "ct_power", "temperature", "mode"] {
        assert!(entities.contains(k), "core entity {k}");
    }

    // A state with the extras read.
    let s = run
        .state_where("the extras", |v| {
            v["ct_a_power"].is_number() && v["wifi_ssid"].is_string()
        })
        .await;

    // Diagnostics.
    assert_eq!(s["model"], e.device);
    assert_eq!(s["firmware"].as_u64(), Some(e.firmware));
    assert_eq!(s["wifi_ssid"], "SimNet");
    assert_eq!(s["wifi_ip"], "127.0.0.1");
    assert_eq!(s["ble_connected"], false);
    assert_eq!(s["poll_failures"], 0);
    assert!(s["last_error"].is_null(), "{s}");
    assert_eq!(s["readings_dropped"], 0);

    // Meter: three phases adding up to the total; energy counters where reported.
    let phases = f(&s, "ct_a_power") + f(&s, "ct_b_power") + f(&s, "ct_c_power");
    assert_eq!(phases, f(&s, "ct_power"), "phases sum to the CT total: {s}");
    assert!(
        (f(&s, "ct_a_power") - 0.5 * f(&s, "ct_power")).abs() <= 1.0,
        "phase A carries half the house: {s}"
    );
    assert_eq!(s["ct_connected"], true);
    for k in ["ct_input_energy", "ct_output_energy"] {
        assert_eq!(s[k].is_number(), e.meter_energy, "{k}: {s}");
    }

    // Solar strings.
    if e.pv {
        let raw = raw_pv(run.sim.addrs()[0]).await;
        let p2 = f(&s, "pv2_power");
        assert!(p2 > 100.0, "strings produce at noon: {s}");
        assert!(
            (f(&s, "pv1_power") - p2).abs() <= 1.0,
            "PV1 decoded to watts like PV2: {s}"
        );
        // …although the device sends PV1 in deci-watts and PV2..4 in watts in one reply
        let ratio = f(&raw, "pv1_power") / f(&raw, "pv2_power");
        assert!((ratio - 10.0).abs() < 0.5, "raw PV1 is deci-watts: {raw}");
        let sum: f64 = (1..=4).map(|n| f(&s, &format!("pv{n}_power"))).sum();
        assert!(
            (sum - f(&s, "pv_power")).abs() <= 2.0,
            "strings sum to PV: {s}"
        );
        for (n, volts) in [(1, 38.0), (2, 41.0), (3, 36.0), (4, 44.0)] {
            assert_eq!(f(&s, &format!("pv{n}_voltage")), volts, "{s}");
            assert_eq!(s[format!("pv{n}_working")], true);
            let amps = f(&s, &format!("pv{n}_current"));
            if profile == SimProfile::VenusA {
                assert_eq!(amps, 0.0, "Venus A reports 0 A");
            } else {
                let p = f(&s, &format!("pv{n}_power"));
                assert!(
                    (amps * volts - p).abs() <= 2.0,
                    "V×I = P on string {n}: {s}"
                );
            }
        }
    } else {
        for n in 1..=4 {
            assert!(s[format!("pv{n}_power")].is_null(), "{s}");
        }
    }

    // Battery detail.
    if e.electrical {
        let soc = f(&s, "soc");
        let v = f(&s, "bat_voltage");
        assert!(
            (v - (48.0 + 0.07 * soc)).abs() <= 0.1,
            "pack voltage {v} at {soc} %"
        );
        let (i, p) = (f(&s, "bat_current"), f(&s, "bat_power"));
        assert!(
            (i * v - p).abs() <= 80.0,
            "current is discharge-positive like bat_power: {i} A × {v} V vs {p} W"
        );
        assert_eq!(
            (s["error_code"].as_i64(), s["alarm_code"].as_i64()),
            (Some(0), Some(0))
        );
    } else {
        for k in ["bat_voltage", "bat_current", "error_code"] {
            assert!(s[k].is_null(), "{k}: {s}");
        }
    }
    if e.temperatures {
        let t = f(&s, "temperature");
        assert_eq!(f(&s, "cell_temp_max"), t + 1.0);
        assert_eq!(f(&s, "cell_temp_min"), t - 1.0);
        assert_eq!(f(&s, "board_temp"), t + 8.0);
    } else {
        assert!(s["cell_temp_max"].is_null());
    }
    assert!(s["charge_allowed"].is_boolean() && s["discharge_allowed"].is_boolean());

    // Prometheus: the readings as gauges.
    let g = gauge(&run, "marstek_voltage_volts", "pv2").await;
    assert_eq!(g, e.pv.then_some(41.0), "PV2 voltage gauge");
    let g = gauge(&run, "marstek_power_watts", "ct_a").await;
    assert!(g.is_some(), "CT phase A gauge");
    let g = gauge(&run, "marstek_voltage_volts", "battery").await;
    assert_eq!(g.is_some(), e.electrical, "battery voltage gauge");
    let g = gauge(&run, "marstek_temperature_celsius", "cell_max").await;
    assert_eq!(g.is_some(), e.temperatures, "cell temperature gauge");

    // Stored: the same readings, in the typed extras column.
    let stored = run.stored_readings(s["at"].as_str().unwrap()).await;
    let obj = stored.as_object().unwrap();
    for k in all_detail_keys()
        .iter()
        .chain(["wifi_ssid", "model"].map(String::from).iter())
    {
        if k == "charge_allowed" || k == "discharge_allowed" {
            continue; // core columns
        }
        if s[k].is_null() {
            assert!(!obj.contains_key(k), "unset {k} not stored");
        } else {
            assert_eq!(obj.get(k), Some(&s[k]), "stored {k}");
        }
    }
    run.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn venus_e3_readings() {
    profile_story(
        SimProfile::VenusE3,
        None,
        Expect {
            device: "VenusE 3.0",
            firmware: 150,
            pv: false,
            meter_energy: false,
            electrical: true,
            temperatures: true,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn venus_e2_readings() {
    profile_story(
        SimProfile::VenusE2,
        None,
        Expect {
            device: "VenusE",
            firmware: 156,
            pv: false,
            meter_energy: true,
            electrical: true,
            temperatures: false,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn venus_a_fw148_readings_with_mixed_pv_units() {
    profile_story(
        SimProfile::VenusA,
        Some(148),
        Expect {
            device: "VenusA",
            firmware: 148,
            pv: true,
            meter_energy: false,
            electrical: false,
            temperatures: false,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn venus_d_readings() {
    profile_story(
        SimProfile::VenusD,
        None,
        Expect {
            device: "VenusD",
            firmware: 150,
            pv: true,
            meter_energy: true,
            electrical: true,
            temperatures: true,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn venus_e_mini_readings() {
    profile_story(
        SimProfile::VenusEMini,
        None,
        Expect {
            device: "Venus E mini",
            firmware: 150,
            pv: false,
            meter_energy: true,
            electrical: true,
            temperatures: true,
        },
    )
    .await;
}

/// The counter the counter test drives (constant while the battery discharges at noon).
const COUNTER: &str = "total_grid_input_energy";

/// Waits for a state whose counter satisfies `pred`; returns it and the counter values
/// published on the way (None = dropped).
async fn counter_until(
    run: &mut Run,
    what: &str,
    mut pred: impl FnMut(Option<f64>) -> bool,
    published: &mut Vec<Option<f64>>,
) -> Value {
    run.state_where(what, |v| {
        published.push(v[COUNTER].as_f64());
        pred(v[COUNTER].as_f64())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn energy_counters_drop_a_dip_and_a_spike_and_recognise_a_genuine_reset() {
    const LEVEL: f64 = 50_000.0;
    let mut run = Run::start_with(SimProfile::VenusE3, None, |sim| {
        sim.set_energy(0, None, None, Some(LEVEL));
    })
    .await;
    let mut published = Vec::new();
    let at_level = |v: Option<f64>| v == Some(LEVEL);
    counter_until(&mut run, "the first level", at_level, &mut published).await;

    // One-sample spike: dropped (null), the counter carries on at its level afterwards.
    run.sim.set_energy(0, None, None, Some(5.0e8));
    counter_until(
        &mut run,
        "the spike dropped",
        |v| v.is_none(),
        &mut published,
    )
    .await;
    run.sim.set_energy(0, None, None, Some(LEVEL));
    counter_until(
        &mut run,
        "the level after the spike",
        at_level,
        &mut published,
    )
    .await;

    // One-off backward jump: dropped, never published.
    run.sim.set_energy(0, None, None, Some(10.0));
    counter_until(&mut run, "the dip dropped", |v| v.is_none(), &mut published).await;
    run.sim.set_energy(0, None, None, Some(LEVEL));
    let before_reset = counter_until(
        &mut run,
        "the level after the dip",
        at_level,
        &mut published,
    )
    .await;
    let dropped_before = before_reset["readings_dropped"].as_u64().unwrap();
    assert!(dropped_before >= 2, "{before_reset}");

    // Genuine reset: the counter restarts at 0 and stays there; the third agreeing reading is
    // published (HA starts a new meter cycle), the two before it are dropped.
    run.sim.set_energy(0, None, None, Some(0.0));
    let reset = counter_until(
        &mut run,
        "the reset accepted",
        |v| v == Some(0.0),
        &mut published,
    )
    .await;
    assert_eq!(
        reset["readings_dropped"].as_u64().unwrap(),
        dropped_before + 2,
        "two lower readings dropped before the reset is recognised: {reset}"
    );

    // Published: never a bad value, never backwards except the one reset.
    let values: Vec<f64> = published.iter().flatten().copied().collect();
    assert!(
        values.iter().all(|v| *v == LEVEL || *v == 0.0),
        "{published:?}"
    );
    let decreases = values.windows(2).filter(|w| w[1] < w[0]).count();
    assert_eq!(decreases, 1, "one decrease, the reset: {published:?}");
    assert_eq!(values.last(), Some(&0.0));

    // Stored: the same story in the database, row by row.
    let total_dropped = reset["readings_dropped"].as_u64().unwrap();
    run.bridge.terminate(Duration::from_secs(10));
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", run.db.display()))
        .await
        .unwrap();
    let rows: Vec<Option<f64>> = sqlx::query(
        "SELECT total_grid_input_energy AS v FROM battery_status \
         WHERE device_id = 'd0000' ORDER BY time",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get("v"))
    .collect();
    let reset_at = rows
        .iter()
        .position(|v| *v == Some(0.0))
        .expect("the reset is stored");
    let (before, after) = rows.split_at(reset_at);
    assert!(
        before.iter().all(|v| v.is_none() || *v == Some(LEVEL)),
        "before the reset only the level or nothing is stored: {rows:?}"
    );
    assert!(after.iter().all(|v| *v == Some(0.0)), "{rows:?}");
    let nulls = before.iter().filter(|v| v.is_none()).count() as u64;
    assert_eq!(
        nulls, total_dropped,
        "every dropped reading is a NULL in the store: {rows:?}"
    );
    run.sim.shutdown().await;
}
