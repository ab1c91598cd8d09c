//! The firmware catalogue seen from outside: the README's "Firmware notes" table is the
//! catalogue's own rendering; a battery on a known-bad firmware gets its note over HTTP (list
//! and one-battery view with the entry, quirks and sources), in `bridge/info` (which entry and
//! why) and one `firmware_known_bad` alert over MQTT with its Home Assistant problem sensor; a
//! firmware the catalogue does not know gets the cautious policy without any alert; a Manual
//! slot's power on firmware that ignores it is answered unverified with the reason; a battery
//! on firmware known to switch its Local API off that falls silent gets `local_api_disabled`
//! with a hint, cleared when it answers again. The whole
//! bridge (`app::run_with`) runs on the simulator (loopback UDP), the real mosquitto and SQLite,
//! with the AUTO/MANUAL jobs switched off; the driver alone shows that background polls leave
//! `ES.GetMode` alone where the catalogue says reading it resets the mode, and `probe` prints
//! the entry a battery matched and why.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use marstek_bridge::domain::{Battery, Command, DeviceId, DeviceLimits, Mode, ModeConfig, Watts};
use marstek_bridge::marstek::{DeviceSpec, MarstekBattery, PollingSettings, Transport, catalogue};
use marstek_bridge::simulator::{SimConfig, SimFaults, SimHandle, SimProfile, Simulator};
use rand::Rng;
use rumqttc::AsyncClient;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use support::mqtt_probe::{json_probe, publish_command};
use support::story::{StoryBridge, story_settings};

const WAIT: Duration = Duration::from_secs(30);
const BEGIN: &str = "<!-- firmware-notes:begin -->\n";
const END: &str = "<!-- firmware-notes:end -->";

/// The README's table between the markers must be the catalogue's rendering. Run with
/// `UPDATE_FIRMWARE_NOTES=1` to rewrite it from the table.
#[test]
fn the_readme_firmware_notes_are_the_catalogue() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme.find(BEGIN).expect("README has the begin marker") + BEGIN.len();
    let end = readme.find(END).expect("README has the end marker");
    let want = catalogue::readme_section();
    if std::env::var("UPDATE_FIRMWARE_NOTES").is_ok() {
        let updated = format!("{}{want}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        &readme[start..end],
        want,
        "README \"Firmware notes\" differs from the catalogue; run this test with \
         UPDATE_FIRMWARE_NOTES=1 to regenerate it"
    );
    for e in catalogue::ENTRIES {
        for (_, source) in e.quirks {
            assert!(readme[start..end].contains(source), "{source}");
        }
    }
}

/// One simulated battery (`venus1`) behind the whole bridge, and an MQTT client on its topics,
/// `bridge/info` and the discovery prefix.
struct Rig {
    base: String,
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Value)>,
    /// Every message received, in order.
    seen: Vec<(String, Value)>,
    /// Messages received while waiting for another one, not yet returned by `next`.
    backlog: Vec<(String, Value)>,
    http: std::net::SocketAddr,
    bridge: StoryBridge,
    sim: SimHandle,
    _probe: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(profile: SimProfile, firmware: i64, faults: &str) -> Rig {
        if std::env::var("STORY_LOG").is_ok() {
            let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
        }
        let sim = Simulator::start(SimConfig {
            profile,
            firmware: Some(firmware),
            faults: SimFaults::parse_list(faults).unwrap(),
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let base = format!("mbfw{}", rand::rng().random::<u32>());
        let mut s = story_settings(&sim, &["venus1"], &base, dir.path());
        s.http.listen = Some("127.0.0.1:0".into());
        s.polling.status_interval = Duration::from_millis(300);
        assert!(s.validate().is_empty(), "{:?}", s.validate());

        let topics = [
            format!("{base}/venus1/#"),
            format!("{base}/bridge/info"),
            format!("{base}ha/#"),
        ];
        let (client, rx, probe) = json_probe(format!("{base}-probe"), &topics).await;
        let bridge = StoryBridge::start(s, WAIT).await;
        let http = bridge.http;
        Rig {
            base,
            client,
            rx,
            seen: Vec::new(),
            backlog: Vec::new(),
            http,
            bridge,
            sim,
            _probe: probe,
            _dir: dir,
        }
    }

    /// The next message on `topic` (relative to the base, or absolute when it starts with
    /// the discovery prefix) matching `pred`, earlier unreturned ones first; every message
    /// received is kept in `seen`.
    async fn next(&mut self, topic: &str, pred: impl Fn(&str, &Value) -> bool) -> (String, Value) {
        let full = format!("{}/{topic}", self.base);
        let want = |t: &str| t == full || t.starts_with(topic);
        if let Some(i) = self.backlog.iter().position(|(t, v)| want(t) && pred(t, v)) {
            return self.backlog.remove(i);
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((t, v))) => {
                    self.seen.push((t.clone(), v.clone()));
                    if want(&t) && pred(&t, &v) {
                        return (t, v);
                    }
                    self.backlog.push((t, v));
                }
                _ => panic!("no {topic} message as expected"),
            }
        }
    }

    async fn get(&self, path: &str) -> Value {
        let r = reqwest::get(format!("http://{}{path}", self.http))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        r.json().await.unwrap()
    }

    /// Alerts of `kind` seen so far on the battery's alert topic.
    fn alerts(&self, kind: &str) -> Vec<Value> {
        let topic = format!("{}/venus1/alert", self.base);
        self.seen
            .iter()
            .filter(|(t, a)| *t == topic && a["kind"] == json!(kind))
            .map(|(_, a)| a.clone())
            .collect()
    }

    async fn send(&mut self, id: &str, command: Value) -> Value {
        let topic = format!("{}/venus1/set", self.base);
        publish_command(&self.client, topic, id, command).await;
        self.next("venus1/response", |_, r| r["id"] == json!(id))
            .await
            .1
    }

    async fn finish(mut self) {
        self.bridge.finish(WAIT).await;
    }
}

/// Venus E 3.0 on firmware 148 (background `ES.GetMode` polling resets the mode, jaapp #111):
/// the note over HTTP, the entry and why in `bridge/info`, one warning alert over MQTT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_bad_firmware_is_noted_over_http_and_alerted_once_over_mqtt() {
    let mut rig = Rig::start(SimProfile::VenusE3, 148, "").await;
    let (_, alert) = rig
        .next("venus1/alert", |_, a| {
            a["kind"] == json!("firmware_known_bad") && a["state"] == json!("raised")
        })
        .await;
    assert_eq!(alert["severity"], json!("warning"), "{alert}");
    let msg = alert["message"].as_str().unwrap();
    assert!(
        msg.contains("venus-e3-148") && msg.contains("jaapp #111"),
        "{msg}"
    );
    rig.next("venus1/alerts", |_, a| {
        a["active"]
            .as_array()
            .is_some_and(|k| k.contains(&json!("firmware_known_bad")))
    })
    .await;

    let list = rig.get("/api/v1/batteries").await;
    let one = &list.as_array().unwrap()[0];
    assert_eq!(one["firmware"], json!(148), "{one}");
    assert_eq!(one["firmware_known_bad"], json!(true), "{one}");
    assert!(
        one["firmware_note"]
            .as_str()
            .is_some_and(|n| n.contains("known-bad")),
        "{one}"
    );
    assert!(one.get("firmware_catalogue").is_none(), "list stays short");
    let view = rig.get("/api/v1/batteries/venus1").await;
    let entry = &view["firmware_catalogue"];
    assert_eq!(entry["entry"], json!("venus-e3-148"), "{view}");
    assert_eq!(entry["severity"], json!("warning"));
    assert_eq!(entry["policy"]["get_mode_sparingly"], json!(true));
    assert!(
        entry["matched"]
            .as_str()
            .is_some_and(|m| m.contains("VenusE 3.0") && m.contains("148")),
        "{entry}"
    );
    let sources: Vec<&str> = entry["quirks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|q| q["source"].as_str())
        .collect();
    assert!(sources.contains(&"jaapp #111"), "{sources:?}");

    let (_, info) = rig
        .next("bridge/info", |_, i| i["firmware"]["venus1"].is_object())
        .await;
    let fw = &info["firmware"]["venus1"];
    assert_eq!(
        (&fw["entry"], &fw["firmware"], &fw["firmware_range"]),
        (&json!("venus-e3-148"), &json!(148), &json!("148")),
        "{info}"
    );
    assert!(fw["matched"].as_str().unwrap().contains("is Venus E 3.0"));

    // Home Assistant gets a problem sensor for it
    let ha = format!("{}ha/", rig.base);
    rig.next(&ha, |t, _| t.contains("problem_firmware_known_bad"))
        .await;

    // three more status rounds after everything above, and still that one alert
    rig.backlog.clear();
    for _ in 0..3 {
        rig.next("venus1/state", |_, _| true).await;
    }
    let raised = rig.alerts("firmware_known_bad");
    assert_eq!(raised.len(), 1, "{raised:?}");
    rig.finish().await;
}

/// A firmware the catalogue does not hold (E 3.0 151) is not an error: the cautious policy
/// (`ES.GetMode` on `params.id` 1 first, which is all this simulated firmware answers), a note
/// saying so, no alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_firmware_gets_the_cautious_policy_and_no_alert() {
    let mut rig = Rig::start(SimProfile::VenusE3, 151, "getmode-id1-only").await;
    let (_, state) = rig.next("venus1/state", |_, s| s["mode"].is_string()).await;
    assert_eq!(state["mode"], json!("Auto"), "read on instance 1: {state}");
    let view = rig.get("/api/v1/batteries/venus1").await;
    let entry = &view["firmware_catalogue"];
    assert_eq!(
        (&entry["entry"], &entry["known"]),
        (&json!("unknown"), &json!(false)),
        "{view}"
    );
    assert_eq!(entry["policy"]["get_mode_instance"], json!(1));
    assert_eq!(view["firmware_known_bad"], json!(false));
    assert!(
        view["firmware_note"]
            .as_str()
            .is_some_and(|n| n.contains("cautious"))
    );
    rig.next("bridge/info", |_, i| {
        i["firmware"]["venus1"]["entry"] == json!("unknown")
    })
    .await;
    rig.backlog.clear();
    for _ in 0..2 {
        rig.next("venus1/state", |_, _| true).await;
    }
    assert!(rig.alerts("firmware_known_bad").is_empty());
    rig.finish().await;
}

/// Venus E mini firmware 300 drops a Manual slot's power (jaapp #140): the write is answered
/// `ok` but not verified, with the catalogue's reason, and no verification waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_power_on_firmware_that_ignores_it_is_answered_unverified_with_the_reason() {
    let mut rig = Rig::start(SimProfile::VenusEMini, 300, "ignore-manual-power").await;
    rig.next("venus1/state", |_, _| true).await;
    let r = rig
        .send(
            "m1",
            json!({"mode":"manual","slots":[{"slot":0,"start":"00:00","end":"23:59","days":127,"power":-800,"enable":true}]}),
        )
        .await;
    assert_eq!(
        (&r["status"], &r["verified"]),
        (&json!("ok"), &json!(false)),
        "{r}"
    );
    assert!(r.get("verification").is_none(), "nothing pending: {r}");
    let note = r["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("venus-e-mini-300") && note.contains("jaapp #140"),
        "{r}"
    );
    // a Manual slot without power is verified by its mode as usual
    let r = rig
        .send(
            "m2",
            json!({"mode":"manual","slots":[{"slot":1,"start":"00:00","end":"23:59","days":127,"power":0,"enable":true}]}),
        )
        .await;
    assert_eq!(r["verified"], json!(true), "{r}");
    assert!(r.get("note").is_none(), "{r}");
    rig.finish().await;
}

/// Background polls of a battery whose firmware resets the mode when `ES.GetMode` is read
/// (`getmode-resets`, fw 148, jaapp #111): it stays in Passive for as many routine rounds as
/// are watched on fw 148 (GetMode not read while the bridge's Passive stands, the mode
/// inferred from the power), while the same
/// firmware fault on fw 150, where the catalogue knows no such bug, is reset by the first round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_polls_leave_get_mode_alone_where_the_catalogue_says_it_resets_the_mode() {
    assert_eq!(routine_rounds_in_passive(148).await, Mode::Passive);
    assert_eq!(routine_rounds_in_passive(150).await, Mode::Auto);
}

/// Puts a Venus E 3.0 on `firmware` in Passive through the driver, turns `getmode-resets` on,
/// watches four routine rounds and returns the simulated battery's mode then.
async fn routine_rounds_in_passive(firmware: i64) -> Mode {
    let sim = Simulator::start(SimConfig {
        profile: SimProfile::VenusE3,
        firmware: Some(firmware),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let t = Transport::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), &cancel)
        .await
        .unwrap();
    let settings = PollingSettings {
        status_interval: Duration::from_millis(100),
        request_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_millis(300),
        quiet_gap: Duration::ZERO,
        resend_after: Duration::ZERO,
        extras_every: 1000,
        ..PollingSettings::default()
    };
    let (tx, mut rx) = broadcast::channel(64);
    let spec = DeviceSpec {
        id: DeviceId::parse("bat1").unwrap(),
        addr: sim.addrs()[0],
        limits: DeviceLimits::default(),
    };
    let b = MarstekBattery::spawn(t, spec, settings, tx, cancel.clone(), &tracker);
    // the first round (an extras round, which reads the mode) is over before the write
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    let passive = Command::SetMode(ModeConfig::Passive {
        power: Watts(-500),
        cd_time: 600,
    });
    let report = tokio::time::timeout(WAIT, b.execute(&passive))
        .await
        .unwrap()
        .unwrap();
    // fw 148 reads GetMode sparingly: not read back after a Passive write at all (it would
    // undo the write there), the mode being inferred from the power instead
    let read_back = (firmware != 148).then_some(Mode::Passive);
    assert_eq!(report.observed_mode, read_back);
    sim.update_faults(0, |f| f.getmode_resets = true);
    // rounds that started after the fault was switched on
    let mut rounds = 0;
    while rounds < 5 {
        let s = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        rounds += 1;
        if firmware == 148 && rounds > 1 {
            assert_eq!(s.mode, Some(Mode::Passive), "the mode the power shows");
        }
    }
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    sim.state(0).unwrap().mode
}

/// Venus E 3.0 fw 148 whose Open API is switched off (`api-disabled`): besides `unreachable`,
/// `local_api_disabled` with the hint to switch it on again in the app; both cleared once it
/// answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_battery_on_firmware_that_switches_its_api_off_gets_the_hint() {
    let mut rig = Rig::start(SimProfile::VenusE3, 148, "").await;
    rig.next("venus1/state", |_, _| true).await;
    rig.sim.update_faults(0, |f| f.api_disabled = true);
    let (_, a) = rig
        .next("venus1/alert", |_, a| {
            a["kind"] == json!("local_api_disabled") && a["state"] == json!("raised")
        })
        .await;
    let msg = a["message"].as_str().unwrap();
    assert!(
        msg.contains("Open API is still on in the Marstek app") && msg.contains("venus-e3-148"),
        "{msg}"
    );
    assert_eq!(rig.alerts("unreachable").len(), 1, "raised just before");
    rig.sim.update_faults(0, |f| f.api_disabled = false);
    rig.next("venus1/alert", |_, a| {
        a["kind"] == json!("local_api_disabled") && a["state"] == json!("cleared")
    })
    .await;
    rig.finish().await;
}

/// `probe` prints the catalogue entry a battery matched, why, its policy and its quirks with
/// their sources (and the same in its JSON).
#[tokio::test]
async fn probe_prints_the_catalogue_entry_and_why() {
    let sim = Simulator::start(SimConfig {
        profile: SimProfile::VenusA,
        firmware: Some(148),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let a = sim.addrs()[0].to_string();
    let out = marstek_bridge::marstek::probe(&a, false).await.unwrap();
    for want in [
        "catalogue       venus-a-148 (Venus A, firmware 148)",
        "matched         model 'VenusA' is Venus A; firmware 148 is in 148",
        "firmware note   warning: known-bad range",
        "policy          GetMode id 0; GetMode sparingly",
        "[jaapp PR #129]",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
    let js: Value =
        serde_json::from_str(&marstek_bridge::marstek::probe(&a, true).await.unwrap()).unwrap();
    assert_eq!(js["catalogue"]["entry"], json!("venus-a-148"), "{js}");
    assert_eq!(js["catalogue"]["policy"]["bat_power_missing"], json!(true));
}
