//! Integration tests of the MQTT bridge against the real mosquitto on 127.0.0.1:1883, with
//! the in-process Marstek simulator driven by the real driver (`MarstekBattery`) behind the real
//! `CommandService`. Each test uses its own base topic, discovery prefix, client id and
//! simulator; the shared cuttable TCP proxy (`tests/support`) stages the broker outage. The
//! contract tests run once with the bridge on MQTT 3.1.1 and once on MQTT 5; MQTT 5's
//! request/response properties and the persisted controls have tests of their own.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use marstek_bridge::control::{CommandService, Fleet, Presence};
use marstek_bridge::domain::{
    Alert, AlertKind, AlertState, BatteryRef, CommandSource, CommandStatus, DeviceId, DeviceLimits,
    Mode, Sample, Severity,
};
use marstek_bridge::marstek::{DeviceSpec, MarstekBattery, PollingSettings, Transport};
use marstek_bridge::mqtt::{
    DiscoveryStyle, MqttBridge, MqttHandle, MqttProtocol, MqttSettings, RequestRouter,
    discovery::parse_topic_list, handler,
};
use marstek_bridge::simulator::{SimConfig, SimHandle, SimSnapshot, Simulator};
use marstek_bridge::store::{self, DatabaseSettings, Store};
use rand::Rng;
use rumqttc::v5 as r5;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use support::TcpProxy;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const BROKER: (&str, u16) = ("127.0.0.1", 1883);
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- simulated batteries

/// Simulated batteries with one driver actor each; samples go to `samples`.
struct Rig {
    sim: SimHandle,
    batteries: Vec<MarstekBattery>,
    samples: broadcast::Sender<Sample>,
    cancel: CancellationToken,
    _tracker: TaskTracker,
}

impl Rig {
    async fn start(ids: &[&str], poll: Duration) -> Rig {
        let sim = Simulator::start(SimConfig {
            devices: ids.len(),
            ..SimConfig::default()
        })
        .await
        .expect("simulator starts");
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let t = Transport::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), &cancel)
            .await
            .expect("bind");
        let (samples, _) = broadcast::channel(256);
        let polling = PollingSettings {
            status_interval: poll,
            request_timeout: Duration::from_millis(300),
            write_timeout: Duration::from_millis(500),
            quiet_gap: Duration::ZERO,
            retries: 1,
            resend_after: Duration::ZERO,
            failures_before_unreachable: 2,
            queue_capacity: 16,
            extras_every: 1,
            read_battery: true,
        };
        let batteries = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                MarstekBattery::spawn(
                    t.clone(),
                    DeviceSpec {
                        id: DeviceId::parse(id).unwrap(),
                        addr: sim.addrs()[i],
                        limits: DeviceLimits::default(),
                    },
                    polling.clone(),
                    samples.clone(),
                    cancel.clone(),
                    &tracker,
                )
            })
            .collect();
        Rig {
            sim,
            batteries,
            samples,
            cancel,
            _tracker: tracker,
        }
    }

    fn snapshot(&self, i: usize) -> SimSnapshot {
        self.sim.state(i).expect("device exists")
    }

    fn mode(&self, i: usize) -> Mode {
        self.snapshot(i).mode
    }

    /// What a command could change (mode, set-points, slots, DOD, LED, BLE).
    fn settings_of(&self, i: usize) -> Value {
        let s = self.snapshot(i);
        json!({
            "mode": s.mode, "passive_power": s.passive_power, "slots": s.slots, "dod": s.dod,
            "led": s.led, "ble_adv": s.ble_adv,
        })
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

// ---------------------------------------------------------------- probe client

#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

impl Msg {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// Waits for `n` SUBACKs reported on `rx` by a probe's event-loop task.
async fn await_subacks(rx: &mut mpsc::UnboundedReceiver<()>, n: usize) {
    for _ in 0..n {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("suback")
            .expect("probe task alive");
    }
}

struct Probe {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Msg>,
    task: JoinHandle<()>,
}

impl Probe {
    async fn connect(filters: &[String]) -> Probe {
        let id = format!("mbprobe-{}", rand::rng().random::<u64>());
        let mut o = MqttOptions::new(id, BROKER.0, BROKER.1);
        o.set_keep_alive(Duration::from_secs(10));
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 64);
        let mut net = el.network_options();
        net.set_tcp_nodelay(true);
        el.set_network_options(net);
        let (tx, rx) = mpsc::unbounded_channel();
        let (sub_tx, mut sub_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = sub_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        for f in filters {
            client.subscribe(f.clone(), QoS::AtLeastOnce).await.unwrap();
        }
        await_subacks(&mut sub_rx, filters.len()).await;
        Probe { client, rx, task }
    }

    /// Next message matching `pred` (others are skipped), or panics after `within`.
    async fn wait(&mut self, what: &str, within: Duration, pred: impl Fn(&Msg) -> bool) -> Msg {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) if pred(&m) => return m,
                Ok(Some(_)) => {}
                Ok(None) => panic!("probe closed while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Waits until every predicate has matched some message, in any order; returns the matches.
    async fn wait_all(
        &mut self,
        what: &str,
        within: Duration,
        preds: &[&dyn Fn(&Msg) -> bool],
    ) -> Vec<Msg> {
        let deadline = tokio::time::Instant::now() + within;
        let mut found: Vec<Option<Msg>> = vec![None; preds.len()];
        while found.iter().any(Option::is_none) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => {
                    for (i, p) in preds.iter().enumerate() {
                        if found[i].is_none() && p(&m) {
                            found[i] = Some(m.clone());
                        }
                    }
                }
                Ok(None) => panic!("probe closed while waiting for {what}"),
                Err(_) => panic!(
                    "timed out waiting for {what}: matched {:?}",
                    found.iter().map(Option::is_some).collect::<Vec<_>>()
                ),
            }
        }
        found.into_iter().flatten().collect()
    }

    async fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
            .await
            .unwrap();
    }

    /// Drains everything that arrives until `quiet` passes without a message.
    async fn collect_until_quiet(&mut self, quiet: Duration) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            out.push(m);
        }
        out
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------- bridge under test

struct TestBridge {
    handle: MqttHandle,
    cancel: CancellationToken,
    join: Option<JoinHandle<()>>,
    base: String,
    feeders: Vec<JoinHandle<()>>,
}

/// The secret set in the configuration `config/get` answers with.
const SECRET: &str = "s3cret-pass";

/// What `config/get` answers in the bridge: settings holding secrets, through the bridge's own
/// redaction (`Settings::to_redacted_json`, as the app wires it).
fn redacted_config() -> Value {
    let mut s = marstek_bridge::config::Settings::default();
    s.mqtt.username = Some("bridge".into());
    s.mqtt.password = Some(SECRET.into());
    s.database.url = format!("postgres://bridge:{SECRET}@127.0.0.1/bridge");
    s.to_redacted_json()
}

fn unique(tag: &str) -> String {
    format!("mbtest-{tag}-{:08x}", rand::rng().random::<u32>())
}

fn settings(base: &str, prefix: &str, port: u16, protocol: MqttProtocol) -> MqttSettings {
    MqttSettings {
        host: "127.0.0.1".into(),
        port,
        protocol,
        client_id: base.to_string(),
        base_topic: base.to_string(),
        discovery_prefix: prefix.to_string(),
        keep_alive: Duration::from_secs(5),
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(300),
        status_interval: Duration::from_millis(200),
        birth_delay_max: Duration::from_millis(100),
        ..Default::default()
    }
}

async fn start_bridge(s: MqttSettings, rig: &Rig) -> TestBridge {
    start_bridge_with_store(s, rig, None).await
}

async fn start_bridge_with_store(
    s: MqttSettings,
    rig: &Rig,
    store: Option<Arc<dyn Store>>,
) -> TestBridge {
    let refs: Vec<BatteryRef> = rig
        .batteries
        .iter()
        .map(|b| Arc::new(b.clone()) as BatteryRef)
        .collect();
    let fleet = Fleet::new(refs);
    let service = CommandService::new(fleet.clone(), store, None, false);
    let mut router = RequestRouter::with_builtins(fleet.clone(), redacted_config(), None);
    router.register(
        "test/echo",
        handler(|v| async move { Ok(json!({ "echo": v })) }),
    );
    let cancel = CancellationToken::new();
    let base = s.base_topic.clone();
    // `online` is published after the subscriptions: once it is seen, commands are heard.
    let state_topic = format!("{base}/bridge/state");
    let mut online = Probe::connect(std::slice::from_ref(&state_topic)).await;
    // What the app does: availability has one owner fed by the samples and the drivers, the
    // remembered controls are restored before the bridge starts and saved by their writer, and
    // every sample goes to the bridge.
    let tracker = TaskTracker::new();
    let presence = Presence::spawn(
        &fleet,
        rig.samples.subscribe(),
        s.offline_after(),
        cancel.clone(),
        &tracker,
    );
    if let Some(store) = service.store().cloned() {
        service.controls().restore(store.as_ref()).await;
        tracker.spawn(service.controls().clone().run_writer(store, cancel.clone()));
    }
    let (handle, join) = MqttBridge::start(s, service, &presence, router, cancel.clone()).unwrap();
    let mut feeders = Vec::new();
    let (h, mut rx, c) = (handle.clone(), rig.samples.subscribe(), cancel.clone());
    feeders.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = c.cancelled() => break,
                r = rx.recv() => match r {
                    Ok(s) => h.publish_sample(s),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                },
            }
        }
    }));
    let mut conn = handle.connected();
    tokio::time::timeout(WAIT, conn.wait_for(|c| *c))
        .await
        .expect("bridge connects")
        .unwrap();
    online
        .wait("bridge online", WAIT, |m| m.json()["state"] == "online")
        .await;
    TestBridge {
        handle,
        cancel,
        join: Some(join),
        base,
        feeders,
    }
}

impl TestBridge {
    fn t(&self, rest: &str) -> String {
        format!("{}/{rest}", self.base)
    }
    async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(j) = self.join.take() {
            tokio::time::timeout(WAIT, j)
                .await
                .expect("bridge stops")
                .unwrap();
        }
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        self.cancel.cancel();
        for f in &self.feeders {
            f.abort();
        }
    }
}

/// Removes what a test left retained on the broker.
async fn clear_retained(filters: &[String]) {
    let mut p = Probe::connect(filters).await;
    let msgs = p.collect_until_quiet(Duration::from_millis(300)).await;
    for m in msgs.iter().filter(|m| m.retain && !m.payload.is_empty()) {
        p.publish(&m.topic, b"", true).await;
    }
    let _ = p.collect_until_quiet(Duration::from_millis(100)).await;
}

// ---------------------------------------------------------------- tests

/// Runs each named `async fn(MqttProtocol)` once per protocol: `mqtt311::<name>` and
/// `mqtt5::<name>`. The probes stay on 3.1.1, as Home Assistant and most tools do.
macro_rules! for_both_protocols {
    ($($name:ident),+ $(,)?) => {
        mod mqtt311 {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::MqttProtocol::V311).await
            })+
        }
        mod mqtt5 {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::MqttProtocol::V5).await
            })+
        }
    };
}

for_both_protocols!(
    discovery_configs_are_retained_and_complete,
    state_and_availability_follow_the_battery,
    mode_commands_change_the_battery_and_answer,
    several_slots_are_applied_and_reported,
    passive_number_and_button_remember_then_apply,
    bridge_requests_are_answered_on_their_response_topic,
    config_get_answers_the_settings_with_every_secret_hidden,
    malformed_commands_get_errors_and_change_nothing,
    retained_commands_are_not_executed_and_are_cleared,
    a_retained_command_published_live_is_cleared_at_once,
    a_message_over_a_mebibyte_does_not_drop_the_connection,
    reconnect_republishes_state_and_discovery,
    ha_birth_republishes_and_removed_devices_are_cleared,
);

async fn discovery_configs_are_retained_and_complete(protocol: MqttProtocol) {
    for style in [DiscoveryStyle::Entity, DiscoveryStyle::Device] {
        let base = unique("disc");
        let prefix = format!("{base}-ha");
        let rig = Rig::start(&["acd929a744d4"], Duration::from_secs(3600)).await;
        let mut live = Probe::connect(&[format!("{base}/bridge/discovery")]).await;
        let mut s = settings(&base, &prefix, BROKER.1, protocol);
        s.discovery = style;
        let b = start_bridge(s, &rig).await;
        let list = live
            .wait("discovery list", WAIT, |m| {
                m.topic.ends_with("/bridge/discovery")
            })
            .await;
        let topics = parse_topic_list(&list.payload, &prefix);
        match style {
            DiscoveryStyle::Entity => assert!(topics.len() > 25, "{topics:?}"),
            _ => assert_eq!(topics.len(), 2),
        }
        // A late subscriber gets every config retained.
        let mut p = Probe::connect(&[format!("{prefix}/#")]).await;
        let mut got = std::collections::BTreeMap::new();
        while got.len() < topics.len() {
            let m = p
                .wait("retained config", WAIT, |m| m.topic.ends_with("/config"))
                .await;
            assert!(m.retain, "{} not retained", m.topic);
            got.insert(m.topic.clone(), m.json());
        }
        let check_entity = |topic: &str, platform: &str, v: &Value, dev: &Value| {
            assert!(
                v["unique_id"].as_str().is_some_and(|u| !u.is_empty()),
                "{topic}"
            );
            assert!(v.get("object_id").is_none(), "{topic}");
            assert!(
                v["default_entity_id"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{platform}.")),
                "{topic}"
            );
            match platform {
                "sensor" | "binary_sensor" => assert!(v["state_topic"].is_string(), "{topic}"),
                _ => assert!(v["command_topic"].is_string(), "{topic}"),
            }
            assert!(dev["identifiers"][0].is_string());
            let unit = v["unit_of_measurement"].as_str();
            match v["device_class"].as_str() {
                Some("battery") => assert_eq!(unit, Some("%")),
                Some("power") => assert_eq!(unit, Some("W")),
                Some("energy") => {
                    assert_eq!(unit, Some("Wh"));
                    assert_eq!(v["state_class"], "total_increasing");
                }
                Some("energy_storage") => assert_eq!(unit, Some("Wh")),
                Some("temperature") => assert_eq!(unit, Some("°C")),
                _ => {}
            }
            if v["state_class"] == "measurement" {
                assert!(v["expire_after"].as_u64().unwrap() >= 1, "{topic}");
            }
        };
        for (topic, v) in &got {
            assert!(topics.contains(topic));
            match style {
                DiscoveryStyle::Entity => {
                    let platform = topic.split('/').nth(1).unwrap();
                    assert_eq!(v["origin"]["name"], "marstek-bridge");
                    check_entity(topic, platform, v, &v["device"]);
                    if topic.contains("acd929a744d4") && !topic.contains("unreachable") {
                        assert_eq!(v["availability_mode"], "all", "{topic}");
                        let av = v["availability"].as_array().unwrap();
                        assert_eq!(av.len(), 2);
                        assert_eq!(av[0]["topic"], format!("{base}/bridge/state"));
                        assert_eq!(av[0]["value_template"], "{{ value_json.state }}");
                        assert_eq!(av[1]["topic"], format!("{base}/acd929a744d4/availability"));
                        assert!(v["device"]["via_device"].is_string());
                    }
                }
                _ => {
                    assert_eq!(v["origin"]["name"], "marstek-bridge");
                    for (key, c) in v["components"].as_object().unwrap() {
                        let platform = c["platform"].as_str().unwrap().to_string();
                        check_entity(&format!("{topic}#{key}"), &platform, c, &v["device"]);
                    }
                }
            }
        }
        let soc_topic = match style {
            DiscoveryStyle::Entity => {
                format!("{prefix}/sensor/{base}_acd929a744d4/soc/config")
            }
            _ => format!("{prefix}/device/{base}_acd929a744d4/config"),
        };
        assert!(got.contains_key(&soc_topic), "{soc_topic} missing");
        b.stop().await;
        clear_retained(&[format!("{prefix}/#"), format!("{base}/#")]).await;
    }
}

async fn state_and_availability_follow_the_battery(protocol: MqttProtocol) {
    let base = unique("state");
    let prefix = format!("{base}-ha");
    let rig = Rig::start(&["dev1"], Duration::from_millis(200)).await;
    let mut p = Probe::connect(&[format!("{base}/#")]).await;
    let mut states = Probe::connect(&[format!("{base}/+/state")]).await;
    let b = start_bridge(settings(&base, &prefix, BROKER.1, protocol), &rig).await;
    let (state_t, avail_t, bridge_t) = (
        b.t("dev1/state"),
        b.t("dev1/availability"),
        b.t("bridge/state"),
    );
    let got = p
        .wait_all(
            "state, availability online, bridge online",
            WAIT,
            &[
                &|m: &Msg| m.topic == state_t,
                &|m: &Msg| m.topic == avail_t && m.text() == "online",
                &|m: &Msg| m.topic == bridge_t && m.json() == json!({"state": "online"}),
            ],
        )
        .await;
    let v = got[0].json();
    let snap = rig.snapshot(0);
    assert!((v["soc"].as_f64().unwrap() - snap.soc).abs() <= 2.0, "{v}");
    assert!(v["bat_power"].is_i64(), "{v}");
    assert_eq!(v["mode"], json!(snap.mode));
    assert_eq!(v["device"], "dev1");
    assert!(chrono::DateTime::parse_from_rfc3339(v["last_seen"].as_str().unwrap()).is_ok());
    // Retained for a late subscriber.
    let mut late = Probe::connect(&[b.t("dev1/state"), b.t("dev1/availability")]).await;
    let m = late
        .wait("retained state", WAIT, |m| m.topic.ends_with("/state"))
        .await;
    assert!(m.retain);

    rig.sim.set_silent(0, true);
    p.wait("offline", WAIT, |m| {
        m.topic == b.t("dev1/availability") && m.text() == "offline"
    })
    .await;
    rig.sim.set_silent(0, false);
    p.wait("back online", WAIT, |m| {
        m.topic == b.t("dev1/availability") && m.text() == "online"
    })
    .await;

    // Alerts: event + retained active list.
    b.handle.publish_alert(&Alert {
        kind: AlertKind::LowSoc,
        severity: Severity::Warning,
        device: Some(DeviceId::parse("dev1").unwrap()),
        message: "low".into(),
        value: Some(9.0),
        threshold: Some(15.0),
        state: AlertState::Raised,
        at: Utc::now(),
    });
    let (alert_t, alerts_t) = (b.t("dev1/alert"), b.t("dev1/alerts"));
    let got = p
        .wait_all(
            "alert event and active list",
            WAIT,
            &[&|m: &Msg| m.topic == alert_t, &|m: &Msg| {
                m.topic == alerts_t && m.json()["active"] == json!(["low_soc"])
            }],
        )
        .await;
    assert_eq!(got[0].json()["kind"], "low_soc");
    assert_eq!(got[0].json()["state"], "raised");
    let mut late = Probe::connect(std::slice::from_ref(&alerts_t)).await;
    let m = late.wait("retained alerts", WAIT, |_| true).await;
    assert!(m.retain);
    assert_eq!(m.json()["active"], json!(["low_soc"]));
    b.handle.publish_health(json!({"ok": true}));
    let h = p
        .wait("health", WAIT, |m| m.topic == b.t("bridge/health"))
        .await;
    assert_eq!(h.json(), json!({"ok": true}));
    let bridge_state = b.t("bridge/state");
    b.stop().await;
    p.wait("offline on stop", WAIT, |m| {
        m.topic == bridge_state && m.json() == json!({"state": "offline"})
    })
    .await;
    // `<base>/+/state` is one kind of payload: every message on it is a JSON object (a
    // battery's sample, or the bridge's `{"state":…}`), so a JSON-parsing subscriber never fails.
    let seen = states.collect_until_quiet(Duration::from_millis(300)).await;
    assert!(
        seen.iter().any(|m| m.topic == bridge_state) && seen.iter().any(|m| m.topic == state_t),
        "both kinds seen: {seen:?}"
    );
    for m in seen.iter().filter(|m| !m.payload.is_empty()) {
        let v: Value = serde_json::from_slice(&m.payload)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {:?}", m.topic, m.text()));
        assert!(v.is_object(), "{}: {v}", m.topic);
    }
    clear_retained(&[format!("{prefix}/#"), format!("{base}/#")]).await;
}

/// One battery `dev1` behind a bridge on `protocol`, and a probe on its responses and controls.
async fn command_bridge(tag: &str, protocol: MqttProtocol) -> (Rig, Probe, TestBridge) {
    let base = unique(tag);
    let prefix = format!("{base}-ha");
    let rig = Rig::start(&["dev1"], Duration::from_secs(3600)).await;
    let p = Probe::connect(&[format!("{base}/+/response"), format!("{base}/+/controls")]).await;
    // MB_RESPONSE_QOS=1 shows the ~40 ms a QoS 1 answer waits behind the PUBACK when the
    // broker does not set TCP_NODELAY (see docs/mqtt.md).
    let mut s = settings(&base, &prefix, BROKER.1, protocol);
    s.response_qos = std::env::var("MB_RESPONSE_QOS")
        .ok()
        .and_then(|q| q.parse().ok())
        .unwrap_or(0);
    let b = start_bridge(s, &rig).await;
    (rig, p, b)
}

/// Stops the bridge and clears what it left retained.
async fn stop_command_bridge(b: TestBridge) {
    let base = b.base.clone();
    b.stop().await;
    clear_retained(&[format!("{base}-ha/#"), format!("{base}/#")]).await;
}

async fn mode_commands_change_the_battery_and_answer(protocol: MqttProtocol) {
    let (rig, mut p, b) = command_bridge("cmd", protocol).await;
    let resp = b.t("dev1/response");

    p.publish(
        &b.t("dev1/set"),
        br#"{"mode":"passive","power":-800,"duration":600,"id":"t1"}"#,
        false,
    )
    .await;
    let r = p
        .wait("response t1", WAIT, |m| m.topic == resp)
        .await
        .json();
    assert_eq!(r["id"], "t1");
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["verified"], true);
    assert!(r["applied"].is_object());
    assert_eq!(rig.mode(0), Mode::Passive);

    p.publish(&b.t("dev1/set/mode"), b"Manual", false).await;
    let r = p.wait("manual", WAIT, |m| m.topic == resp).await.json();
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(rig.mode(0), Mode::Manual);
    // Plain Manual writes the disabled placeholder slot 9.
    assert_eq!(r["applied"]["config"]["manual_cfg"]["time_num"], 9);
    assert_eq!(r["applied"]["config"]["manual_cfg"]["enable"], 0);

    p.publish(&b.t("dev1/set/mode"), b"auto", false).await;
    let r = p.wait("auto", WAIT, |m| m.topic == resp).await.json();
    assert_eq!(r["status"], "ok");
    assert_eq!(rig.mode(0), Mode::Auto);

    // Commands in a row are answered in order, each with its own id.
    for i in 0..5 {
        let id = format!("l{i}");
        p.client
            .publish(
                b.t("dev1/set"),
                QoS::AtMostOnce,
                false,
                format!(r#"{{"mode":"auto","id":"{id}"}}"#),
            )
            .await
            .unwrap();
        let r = p.wait("in a row", WAIT, |m| m.topic == resp).await.json();
        assert_eq!(r["id"], id.as_str());
    }
    stop_command_bridge(b).await;
}

async fn several_slots_are_applied_and_reported(protocol: MqttProtocol) {
    let (_rig, mut p, b) = command_bridge("slots", protocol).await;
    let resp = b.t("dev1/response");
    // Several slots: one submit each, all reported.
    p.publish(
        &b.t("dev1/set"),
        br#"{"id":9,"mode":"manual","slots":[{"slot":0,"start":"22:00","end":"06:00","days":["mon","tue"],"power":-1200},{"slot":1,"start":"06:00","end":"07:00","days":127,"power":0,"enable":false}]}"#,
        false,
    )
    .await;
    let r = p.wait("slots", WAIT, |m| m.topic == resp).await.json();
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["applied"].as_array().unwrap().len(), 2);
    stop_command_bridge(b).await;
}

async fn passive_number_and_button_remember_then_apply(protocol: MqttProtocol) {
    let (rig, mut p, b) = command_bridge("remember", protocol).await;
    let resp = b.t("dev1/response");
    // HA number + button: remembered then applied.
    let before = rig.settings_of(0);
    let controls = b.t("dev1/controls");
    p.publish(&b.t("dev1/set/passive_power"), b"-500", false)
        .await;
    let got = p
        .wait_all(
            "passive_power remembered",
            WAIT,
            &[&|m: &Msg| m.topic == resp, &|m: &Msg| {
                m.topic == controls && m.json()["passive_power"] == -500
            }],
        )
        .await;
    assert_eq!(got[0].json()["status"], "ok");
    p.publish(&b.t("dev1/set/passive_duration"), b"120", false)
        .await;
    assert_eq!(
        p.wait("pd", WAIT, |m| m.topic == resp).await.json()["status"],
        "ok"
    );
    assert_eq!(rig.settings_of(0), before, "remembering sends nothing");
    p.publish(&b.t("dev1/set/apply_passive"), b"PRESS", false)
        .await;
    let r = p.wait("apply", WAIT, |m| m.topic == resp).await.json();
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["applied"]["config"]["passive_cfg"]["power"], -500);
    assert_eq!(r["applied"]["config"]["passive_cfg"]["cd_time"], 120);
    assert_eq!(rig.snapshot(0).passive_power, -500);
    assert_eq!(rig.mode(0), Mode::Passive);
    stop_command_bridge(b).await;
}

async fn bridge_requests_are_answered_on_their_response_topic(protocol: MqttProtocol) {
    let (_rig, _p, b) = command_bridge("req", protocol).await;
    let mut rq = Probe::connect(&[b.t("bridge/response/#")]).await;
    rq.publish(
        &b.t("bridge/request/devices/list"),
        br#"{"transaction":"x1"}"#,
        false,
    )
    .await;
    let r = rq.wait("devices/list", WAIT, |_| true).await;
    assert_eq!(r.topic, b.t("bridge/response/devices/list"));
    let v = r.json();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["transaction"], "x1");
    assert_eq!(v["data"][0]["id"], "dev1");
    rq.publish(&b.t("bridge/request/test/echo"), br#"{"a":1}"#, false)
        .await;
    let v = rq.wait("echo", WAIT, |_| true).await.json();
    assert_eq!(v["data"]["echo"]["a"], 1);
    rq.publish(&b.t("bridge/request/nope"), br#"{"transaction":3}"#, false)
        .await;
    let v = rq.wait("nope", WAIT, |_| true).await.json();
    assert_eq!(v["status"], "error");
    assert_eq!(v["transaction"], 3);
    stop_command_bridge(b).await;
}

async fn config_get_answers_the_settings_with_every_secret_hidden(protocol: MqttProtocol) {
    let (_rig, _p, b) = command_bridge("config", protocol).await;
    let mut rq = Probe::connect(&[b.t("bridge/response/#")]).await;
    rq.publish(&b.t("bridge/request/config/get"), b"{}", false)
        .await;
    let r = rq.wait("config", WAIT, |_| true).await;
    let v = r.json();
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["data"]["mqtt"]["username"], "bridge");
    assert_eq!(v["data"]["mqtt"]["password"], "***");
    assert_eq!(
        v["data"]["database"]["url"],
        "postgres://bridge:***@127.0.0.1/bridge"
    );
    let text = String::from_utf8_lossy(&r.payload);
    assert!(!text.contains(SECRET), "a secret left the bridge: {text}");
    stop_command_bridge(b).await;
}

async fn malformed_commands_get_errors_and_change_nothing(protocol: MqttProtocol) {
    let base = unique("bad");
    let prefix = format!("{base}-ha");
    let rig = Rig::start(&["dev1"], Duration::from_secs(3600)).await;
    let before = rig.settings_of(0);
    let mut p = Probe::connect(&[format!("{base}/+/response")]).await;
    let b = start_bridge(settings(&base, &prefix, BROKER.1, protocol), &rig).await;
    let set = b.t("dev1/set");
    let long = format!(r#"{{"mode":"auto","id":"{}"}}"#, "x".repeat(5000));
    let cases: Vec<(String, Vec<u8>)> = [
        "not json",
        "[1]",
        "\"auto\"",
        "{}",
        r#"{"mode":"turbo"}"#,
        r#"{"mode":"auto","power":5}"#,
        r#"{"mode":"passive"}"#,
        r#"{"mode":"passive","power":"-800"}"#,
        r#"{"mode":"passive","power":-800,"duration":0}"#,
        r#"{"mode":"passive","power":-800,"duration":86401}"#,
        r#"{"mode":"passive","power":-5000,"duration":60}"#,
        r#"{"mode":"passive","power":5000,"duration":60}"#,
        r#"{"mode":"auto","colour":"red"}"#,
        r#"{"dod":29}"#,
        r#"{"dod":89}"#,
        r#"{"dod":"80"}"#,
        r#"{"dod":80,"led":true}"#,
        r#"{"led":"yes"}"#,
        r#"{"mode":"manual","slots":[]}"#,
        r#"{"mode":"manual","slots":[{"slot":10,"start":"22:00","end":"06:00","power":0}]}"#,
        r#"{"mode":"manual","slots":[{"slot":1,"start":"25:00","end":"06:00","power":0}]}"#,
        r#"{"mode":"manual","slots":[{"slot":1,"start":"22:00","end":"06:00","days":0,"power":0}]}"#,
        r#"{"mode":"manual","slots":[{"slot":1,"start":"22:00","end":"06:00","days":200,"power":0}]}"#,
        r#"{"mode":"manual","slots":[{"slot":1,"start":"22:00","end":"06:00","days":["someday"],"power":0}]}"#,
        r#"{"mode":"manual","slots":[{"slot":1,"start":"22:00","end":"06:00","power":-9000}]}"#,
    ]
    .iter()
    .map(|s| (set.clone(), s.as_bytes().to_vec()))
    .chain([
        (set.clone(), vec![0xff, 0xfe, 0xfd]),
        (set.clone(), long.into_bytes()),
        (b.t("dev1/set/mode"), b"Turbo".to_vec()),
        (b.t("dev1/set/dod"), b"95".to_vec()),
        (b.t("dev1/set/passive_power"), b"lots".to_vec()),
        (b.t("dev1/set/passive_duration"), b"-1".to_vec()),
        (b.t("dev1/set/colour"), b"red".to_vec()),
        (b.t("dev1/set/led"), b"maybe".to_vec()),
    ])
    .collect();
    assert!(cases.len() >= 20);
    for (topic, payload) in &cases {
        p.publish(topic, payload, false).await;
        let r = p
            .wait("error response", WAIT, |m| m.topic == b.t("dev1/response"))
            .await
            .json();
        assert_eq!(
            r["status"],
            "error",
            "accepted {:?}: {r}",
            String::from_utf8_lossy(payload)
        );
        assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    // Unknown device answers on its own response topic.
    p.publish(&b.t("ghost/set"), br#"{"mode":"auto","id":"g"}"#, false)
        .await;
    let r = p
        .wait("ghost", WAIT, |m| m.topic == b.t("ghost/response"))
        .await
        .json();
    assert_eq!(r["status"], "error");
    assert_eq!(r["id"], "g");
    assert!(r["error"].as_str().unwrap().contains("unknown device"));
    assert_eq!(rig.settings_of(0), before, "the battery is unchanged");
    println!("{} malformed payloads refused", cases.len());
    b.stop().await;
    clear_retained(&[format!("{prefix}/#"), format!("{base}/#")]).await;
}

async fn retained_commands_are_not_executed_and_are_cleared(protocol: MqttProtocol) {
    let base = unique("ret");
    let prefix = format!("{base}-ha");
    let rig = Rig::start(&["dev1"], Duration::from_secs(3600)).await;
    let before = rig.settings_of(0);
    let pre = Probe::connect(&[]).await;
    let set = format!("{base}/dev1/set");
    let req = format!("{base}/bridge/request/devices/list");
    pre.publish(
        &set,
        br#"{"mode":"passive","power":-800,"duration":600}"#,
        true,
    )
    .await;
    pre.publish(&req, br#"{"transaction":1}"#, true).await;
    // Make sure the broker holds them before the bridge starts.
    let mut check = Probe::connect(&[set.clone(), req.clone()]).await;
    check
        .wait("retained set", WAIT, |m| m.retain && m.topic == set)
        .await;
    drop(check);

    let mut p = Probe::connect(&[set.clone(), req.clone(), format!("{base}/+/response")]).await;
    let _ = p.collect_until_quiet(Duration::from_millis(200)).await; // retained replay
    let b = start_bridge(settings(&base, &prefix, BROKER.1, protocol), &rig).await;
    let got = p
        .wait_all(
            "set and request cleared, the command refused",
            WAIT,
            &[
                &|m: &Msg| m.topic == set && m.payload.is_empty(),
                &|m: &Msg| m.topic == req && m.payload.is_empty(),
                &|m: &Msg| m.topic.ends_with("/response"),
            ],
        )
        .await;
    assert_eq!(
        rig.settings_of(0),
        before,
        "the retained command was not executed"
    );
    assert_ne!(rig.mode(0), Mode::Passive);
    // The retained command was answered with a refusal, not run.
    let r = got[2].json();
    assert_eq!(r["status"], "error", "{r}");
    assert!(r["error"].as_str().unwrap().contains("retained"), "{r}");
    // A live command still works afterwards.
    p.publish(&set, br#"{"mode":"ai","id":"live"}"#, false)
        .await;
    let r = p
        .wait("live", WAIT, |m| m.topic.ends_with("/response"))
        .await
        .json();
    assert_eq!(r["id"], "live", "{r}");
    assert_eq!(rig.mode(0), Mode::Ai);
    let mut after = Probe::connect(&[set.clone(), req.clone()]).await;
    let left = after.collect_until_quiet(Duration::from_millis(300)).await;
    assert!(left.iter().all(|m| !m.retain), "still retained: {left:?}");
    b.stop().await;
    clear_retained(&[format!("{prefix}/#"), format!("{base}/#")]).await;
}

/// A retained command published while the bridge is connected: MQTT 5 (Retain As Published)
/// sees the flag and refuses it; MQTT 3.1.1 delivers it as a plain message, so it runs once.
/// Either way the retained copy is cleared at once, so it never runs again (at a reconnect, at
/// the next start).
async fn a_retained_command_published_live_is_cleared_at_once(protocol: MqttProtocol) {
    let base = unique("retlive");
    let prefix = format!("{base}-ha");
    let rig = Rig::start(&["dev1"], Duration::from_secs(3600)).await;
    let set = format!("{base}/dev1/set");
    let b = start_bridge(settings(&base, &prefix, BROKER.1, protocol), &rig).await;
    let mut p = Probe::connect(&[set.clone(), b.t("+/response")]).await;
    assert_ne!(rig.mode(0), Mode::Ups);
    p.publish(&set, br#"{"mode":"ups","id":"r1"}"#, true).await;
    let got = p
        .wait_all(
            "answer and clearing",
            WAIT,
            &[&|m: &Msg| m.topic.ends_with("/response"), &|m: &Msg| {
                m.topic == set && m.payload.is_empty()
            }],
        )
        .await;
    let r = got[0].json();
    assert_eq!(r["id"], "r1", "{r}");
    match protocol {
        MqttProtocol::V5 => {
            assert_eq!(r["status"], "error", "{r}");
            assert!(r["error"].as_str().unwrap().contains("retained"), "{r}");
            assert_ne!(rig.mode(0), Mode::Ups, "a retained command must not run");
        }
        MqttProtocol::V311 => {
            assert_eq!(
                r["status"], "ok",
                "3.1.1 cannot tell a live retained publish: {r}"
            );
            assert_eq!(rig.mode(0), Mode::Ups);
        }
    }
    let mut late = Probe::connect(std::slice::from_ref(&set)).await;
    let left = late.collect_until_quiet(Duration::from_millis(300)).await;
    assert!(
        left.iter().all(|m| m.payload.is_empty()),
        "still retained on the broker: {left:?}"
    );
    b.stop().await;
    clear_retained(&[format!("{prefix}/#"), format!("{base}/#")]).await;
}

/// Publishes one message of any size (QoS 1, waits for the PUBACK) from a client of its own.
async fn publish_big(topic: &str, payload: Vec<u8>, retain: bool) {
    let id = format!("mbbig-{}", rand::rng().random::<u64>());
    let mut o = MqttOptions::new(id, BROKER.0, BROKER.1);
    o.set_max_packet_size(64 << 20, 64 << 20);
    let (client, mut el) = AsyncClient::new(o, 4);
    client
        .publish(topic, QoS::AtLeastOnce, retain, payload)
        .await
        .unwrap();
    let acked = tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return,
                Ok(_) => {}
                Err(e) => panic!("big publish failed: {e}"),
            }
        }
    })
    .await;
    assert!(acked.is_ok(), "no PUBACK for the big publish");
    let _ = client.disconnect().await;
}

/// A retained publish of 1.5 MiB on a command topic (anyone the ACL lets send commands can do
/// it): the bridge keeps its connection (no reconnect, no `offline`), refuses it or never gets
/// it (MQTT 5: the broker knows the bridge's 1 MiB limit), and later commands still work.
async fn a_message_over_a_mebibyte_does_not_drop_the_connection(protocol: MqttProtocol) {
    let base = unique("big");
    let prefix = format!("{base}-ha");
    let rig = Rig::start(&["dev1"], Duration::from_secs(3600)).await;
    let b = start_bridge(settings(&base, &prefix, BROKER.1, protocol), &rig).await;
    let mut p = Probe::connect(&[b.t("bridge/state"), b.t("+/response")]).await;
    let mut conn = b.handle.connected();
    assert!(*conn.borrow_and_update());
    let set = b.t("dev1/set");
    let mut big = br#"{"mode":"turbo","pad":""#.to_vec();
    big.resize(big.len() + (3 << 19), b'x');
    big.extend_from_slice(br#""}"#);
    publish_big(&set, big, true).await;
    p.publish(&set, br#"{"mode":"ai","id":"after"}"#, false)
        .await;
    let after = |m: &Msg| m.topic.ends_with("/response") && m.json()["id"] == "after";
    // MQTT 3.1.1: read (8 MiB limit) and refused by `max_payload`, with an answer.
    let refused = |m: &Msg| {
        m.topic.ends_with("/response")
            && m.json()["error"]
                .as_str()
                .is_some_and(|e| e.contains("too large"))
    };
    let preds: Vec<&dyn Fn(&Msg) -> bool> = match protocol {
        MqttProtocol::V311 => vec![&after, &refused],
        MqttProtocol::V5 => vec![&after],
    };
    let answers = p
        .wait_all("the command after the big one", WAIT, &preds)
        .await;
    assert_eq!(answers[0].json()["status"], "ok", "{:?}", answers[0].text());
    assert_eq!(rig.mode(0), Mode::Ai);
    let rest = p.collect_until_quiet(Duration::from_millis(300)).await;
    assert!(
        !conn.has_changed().unwrap(),
        "the bridge lost its connection over the big message"
    );
    assert!(
        rest.iter().all(|m| !m.text().contains("offline")),
        "bridge/state flapped: {rest:?}"
    );
    p.publish(&set, b"", true).await; // the broker may still hold it (MQTT 5)
    b.stop().await;
    clear_retained(&[format!("{prefix}/#"), format!("{base}/#")]).await;
}

async fn reconnect_republishes_state_and_discovery(protocol: MqttProtocol) {
    let base = unique("recon");
    let prefix = format!("{base}-ha");
    let rig = Rig::start(&["dev1"], Duration::from_millis(200)).await;
    let (proxy_addr, proxy) = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], BROKER.1)))
        .await
        .expect("proxy");
    let mut p = Probe::connect(&[format!("{base}/#"), format!("{prefix}/#")]).await;
    let b = start_bridge(settings(&base, &prefix, proxy_addr.port(), protocol), &rig).await;
    p.wait("state", WAIT, |m| m.topic == b.t("dev1/state"))
        .await;
    let mut conn = b.handle.connected();

    proxy.cut();
    // The broker publishes the last will when the connection drops.
    p.wait("last will", WAIT, |m| {
        m.topic == b.t("bridge/state") && m.json()["state"] == "offline"
    })
    .await;
    tokio::time::timeout(WAIT, conn.wait_for(|c| !*c))
        .await
        .unwrap()
        .unwrap();
    let _ = p.collect_until_quiet(Duration::from_millis(100)).await;

    proxy.restore();
    let t0 = Instant::now();
    let within = Duration::from_secs(2);
    p.wait("online", within, |m| {
        m.topic == b.t("bridge/state") && m.json()["state"] == "online"
    })
    .await;
    p.wait("discovery", within.saturating_sub(t0.elapsed()), |m| {
        m.topic == format!("{prefix}/sensor/{base}_dev1/soc/config")
    })
    .await;
    p.wait("state", within.saturating_sub(t0.elapsed()), |m| {
        m.topic == b.t("dev1/state")
    })
    .await;
    println!(
        "back online with discovery and state {:?} after restore",
        t0.elapsed()
    );
    b.stop().await;
    clear_retained(&[format!("{prefix}/#"), format!("{base}/#")]).await;
}

async fn ha_birth_republishes_and_removed_devices_are_cleared(protocol: MqttProtocol) {
    let base = unique("birth");
    let prefix = format!("{base}-ha");
    let rig = Rig::start(&["deva", "devc"], Duration::from_secs(3600)).await;
    let mut p = Probe::connect(&[format!("{prefix}/#"), format!("{base}/bridge/discovery")]).await;
    let b = start_bridge(settings(&base, &prefix, BROKER.1, protocol), &rig).await;
    let list = p
        .wait("list", WAIT, |m| m.topic.ends_with("/bridge/discovery"))
        .await;
    let c_topics: Vec<String> = parse_topic_list(&list.payload, &prefix)
        .into_iter()
        .filter(|t| t.contains("_devc/"))
        .collect();
    assert!(!c_topics.is_empty());
    let _ = p.collect_until_quiet(Duration::from_millis(200)).await;

    // HA comes back: discovery is sent again.
    p.publish(&format!("{prefix}/status"), b"online", false)
        .await;
    p.wait("republish after birth", WAIT, |m| {
        m.topic == format!("{prefix}/sensor/{base}_deva/soc/config") && !m.payload.is_empty()
    })
    .await;
    b.stop().await;

    // Restart without devc: its configs are removed.
    let only_a = Rig::start(&["deva"], Duration::from_secs(3600)).await;
    let b = start_bridge(settings(&base, &prefix, BROKER.1, protocol), &only_a).await;
    let mut cleared = std::collections::BTreeSet::new();
    while cleared.len() < c_topics.len() {
        let m = p
            .wait("removed config", WAIT, |m| {
                m.payload.is_empty() && m.topic.contains("_devc/")
            })
            .await;
        cleared.insert(m.topic);
    }
    let list = p
        .wait("new list", WAIT, |m| m.topic.ends_with("/bridge/discovery"))
        .await;
    let topics = parse_topic_list(&list.payload, &prefix);
    assert!(!topics.is_empty() && topics.iter().all(|t| !t.contains("_devc/")));
    b.stop().await;
    clear_retained(&[format!("{prefix}/#"), format!("{base}/#")]).await;
}

// ---------------------------------------------------------------- MQTT 5 request/response

/// A message seen by the MQTT 5 probe, with the Correlation Data property.
#[derive(Debug, Clone)]
struct Msg5 {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
    correlation: Option<Vec<u8>>,
}

impl Msg5 {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

/// An MQTT 5 client (rumqttc v5) that publishes with Response Topic / Correlation Data.
struct Probe5 {
    client: r5::AsyncClient,
    rx: mpsc::UnboundedReceiver<Msg5>,
    task: JoinHandle<()>,
}

impl Probe5 {
    async fn connect(filters: &[String]) -> Probe5 {
        use r5::mqttbytes::v5::Packet as P5;
        let id = format!("mbprobe5-{}", rand::rng().random::<u64>());
        let mut o = r5::MqttOptions::new(id, BROKER.0, BROKER.1);
        o.set_keep_alive(Duration::from_secs(10));
        let (client, mut el) = r5::AsyncClient::new(o, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let (sub_tx, mut sub_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(r5::Event::Incoming(P5::Publish(p))) => {
                        let _ = tx.send(Msg5 {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            correlation: p
                                .properties
                                .and_then(|p| p.correlation_data)
                                .map(|d| d.to_vec()),
                        });
                    }
                    Ok(r5::Event::Incoming(P5::SubAck(_))) => {
                        let _ = sub_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        for f in filters {
            client
                .subscribe(f.clone(), r5::mqttbytes::QoS::AtLeastOnce)
                .await
                .unwrap();
        }
        await_subacks(&mut sub_rx, filters.len()).await;
        Probe5 { client, rx, task }
    }

    /// Publishes `payload` asking for the answer on `response_topic` with `correlation`.
    async fn request(
        &self,
        topic: &str,
        payload: &[u8],
        response_topic: &str,
        correlation: Option<&[u8]>,
    ) {
        let props = r5::mqttbytes::v5::PublishProperties {
            response_topic: Some(response_topic.to_string()),
            correlation_data: correlation.map(bytes::Bytes::copy_from_slice),
            ..Default::default()
        };
        self.client
            .publish_with_properties(
                topic,
                r5::mqttbytes::QoS::AtLeastOnce,
                false,
                payload.to_vec(),
                props,
            )
            .await
            .unwrap();
    }

    /// Sends a request asking for the answer on `response_topic`; returns every message up to
    /// and including the first one there.
    async fn ask(
        &mut self,
        topic: &str,
        payload: &[u8],
        response_topic: &str,
        correlation: Option<&[u8]>,
    ) -> Vec<Msg5> {
        self.request(topic, payload, response_topic, correlation)
            .await;
        self.until(response_topic, |m| m.topic == response_topic)
            .await
    }

    /// Every message until one matches `pred` (included last), or panics after [`WAIT`].
    async fn until(&mut self, what: &str, pred: impl Fn(&Msg5) -> bool) -> Vec<Msg5> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => {
                    let done = pred(&m);
                    seen.push(m);
                    if done {
                        return seen;
                    }
                }
                Ok(None) => panic!("probe closed while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}; saw {seen:?}"),
            }
        }
    }
}

impl Drop for Probe5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn mqtt5_answers_go_to_the_response_topic_with_the_correlation_data() {
    let base = unique("rr");
    let prefix = format!("{base}-ha");
    let replies = format!("{base}-replies");
    let rig = Rig::start(&["dev1"], Duration::from_secs(3600)).await;
    let b = start_bridge(settings(&base, &prefix, BROKER.1, MqttProtocol::V5), &rig).await;
    let (set, resp) = (b.t("dev1/set"), b.t("dev1/response"));
    let mut p = Probe5::connect(&[
        format!("{replies}/#"),
        resp.clone(),
        b.t("bridge/response/#"),
        set.clone(),
    ])
    .await;
    let is_reply =
        |topic: String, id: &'static str| move |m: &Msg5| m.topic == topic && m.json()["id"] == id;

    // A JSON command: answered on the requester's topic with its binary correlation data, and
    // on the documented topic as before.
    let corr: &[u8] = &[0, 1, 2, 0xff];
    let seen = p
        .ask(
            &set,
            br#"{"mode":"passive","power":-800,"duration":600,"id":"t1"}"#,
            &format!("{replies}/a"),
            Some(corr),
        )
        .await;
    let r = seen.last().unwrap();
    assert_eq!(r.correlation.as_deref(), Some(corr));
    assert!(!r.retain);
    let v = r.json();
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["verified"], true);
    assert_eq!(rig.mode(0), Mode::Passive);
    assert_eq!(rig.snapshot(0).passive_power, -800);
    let documented = seen
        .iter()
        .any(|m| m.topic == resp && m.json()["id"] == "t1");
    if !documented {
        p.until("documented t1", is_reply(resp.clone(), "t1")).await;
    }

    // A plain field without correlation data; a refused command still answers there.
    let seen = p
        .ask(
            &b.t("dev1/set/passive_power"),
            b"-300",
            &format!("{replies}/b"),
            None,
        )
        .await;
    let r = seen.last().unwrap();
    assert_eq!(r.correlation, None);
    assert_eq!(r.json()["status"], "ok", "{:?}", r.json());
    assert_eq!(r.json()["applied"]["passive_power"], -300);
    let seen = p
        .ask(
            &set,
            br#"{"mode":"turbo","id":"bad"}"#,
            &format!("{replies}/a"),
            Some(b"c-bad"),
        )
        .await;
    let r = seen.last().unwrap();
    assert_eq!(r.correlation.as_deref(), Some(&b"c-bad"[..]));
    assert_eq!(r.json()["status"], "error");
    assert_eq!(
        rig.mode(0),
        Mode::Passive,
        "the refused command changed nothing"
    );

    // A bridge request.
    let seen = p
        .ask(
            &b.t("bridge/request/devices/list"),
            br#"{"transaction":"x"}"#,
            &format!("{replies}/c"),
            Some(b"c3"),
        )
        .await;
    let r = seen.last().unwrap();
    assert_eq!(r.correlation.as_deref(), Some(&b"c3"[..]));
    assert_eq!(r.json()["transaction"], "x");
    assert_eq!(r.json()["data"][0]["id"], "dev1");

    // Bad response topics (the bridge's own command topic, an oversized one) are ignored: the
    // documented topic answers, nothing is sent there. Replies leave in order, so once the
    // reply to a later good request has arrived, a wrong one would have been seen.
    let long = format!("{replies}/{}", "x".repeat(300));
    p.request(&set, br#"{"mode":"auto","id":"loop"}"#, &set, Some(b"l"))
        .await;
    p.request(&set, br#"{"mode":"auto","id":"long"}"#, &long, Some(b"l"))
        .await;
    p.request(
        &set,
        br#"{"mode":"auto","id":"after"}"#,
        &format!("{replies}/d"),
        Some(b"d"),
    )
    .await;
    let mut all = p
        .until("reply after", is_reply(format!("{replies}/d"), "after"))
        .await;
    if !all.iter().any(is_reply(resp.clone(), "after")) {
        let mut rest = p
            .until("documented after", is_reply(resp.clone(), "after"))
            .await;
        all.append(&mut rest);
    }
    for id in ["loop", "long"] {
        assert!(
            all.iter().any(|m| m.topic == resp && m.json()["id"] == id),
            "no documented answer for {id}: {all:?}"
        );
    }
    assert!(
        !all.iter()
            .any(|m| (m.topic == set || m.topic == long) && m.json().get("status").is_some()),
        "an answer went to a bad response topic: {all:?}"
    );
    assert_eq!(rig.mode(0), Mode::Auto);
    b.stop().await;
    clear_retained(&[format!("{prefix}/#"), format!("{base}/#")]).await;
}

// ---------------------------------------------------------------- persisted controls

async fn sqlite_store(dir: &std::path::Path) -> Arc<dyn Store> {
    let settings = DatabaseSettings {
        url: format!("sqlite://{}", dir.join("controls.db").display()),
        ..Default::default()
    };
    store::open(&settings).await.expect("sqlite store opens")
}

#[tokio::test]
async fn remembered_controls_survive_a_restart() {
    let base = unique("keep");
    let prefix = format!("{base}-ha");
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::start(&["dev1"], Duration::from_secs(3600)).await;
    let (resp, controls) = (
        format!("{base}/dev1/response"),
        format!("{base}/dev1/controls"),
    );
    let mut p = Probe::connect(&[resp.clone(), controls.clone()]).await;
    let s = settings(&base, &prefix, BROKER.1, MqttProtocol::V5);

    let b = start_bridge_with_store(s.clone(), &rig, Some(sqlite_store(dir.path()).await)).await;
    p.publish(&b.t("dev1/set/passive_power"), b"-700", false)
        .await;
    p.publish(&b.t("dev1/set/passive_duration"), b"900", false)
        .await;
    p.wait("controls remembered", WAIT, |m| {
        m.topic == controls
            && m.json()["passive_power"] == -700
            && m.json()["passive_duration"] == 900
    })
    .await;
    b.stop().await;
    assert_ne!(
        rig.snapshot(0).passive_power,
        -700,
        "remembering sends nothing"
    );

    // Forget what the broker retained: the values must come back from the database.
    p.publish(&controls, b"", true).await;
    p.wait("retained controls cleared", WAIT, |m| {
        m.topic == controls && m.payload.is_empty()
    })
    .await;
    let b = start_bridge_with_store(s, &rig, Some(sqlite_store(dir.path()).await)).await;
    let m = p
        .wait("restored controls", WAIT, |m| {
            m.topic == controls && !m.payload.is_empty()
        })
        .await;
    assert_eq!(m.json()["passive_power"], -700, "{:?}", m.json());
    assert_eq!(m.json()["passive_duration"], 900);
    p.publish(&b.t("dev1/set/mode"), b"Passive", false).await;
    let r = p
        .wait("passive applied", WAIT, |m| m.topic == resp)
        .await
        .json();
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["applied"]["config"]["passive_cfg"]["power"], -700);
    assert_eq!(r["applied"]["config"]["passive_cfg"]["cd_time"], 900);
    assert_eq!(rig.mode(0), Mode::Passive);
    assert_eq!(rig.snapshot(0).passive_power, -700);
    b.stop().await;

    // Answered first, recorded after: by the time the bridge has stopped, the command has its
    // audit row and its desired state (expiring with the passive duration).
    let store = sqlite_store(dir.path()).await;
    let audit = store.recent_commands(10).await.unwrap();
    let row = audit
        .iter()
        .find(|c| c.source == CommandSource::Mqtt && c.payload["received"] == "Passive")
        .unwrap_or_else(|| panic!("no audit row for set/mode Passive: {audit:?}"));
    assert_eq!(row.status, CommandStatus::Ok);
    assert_eq!(row.device, "dev1");
    let desired = store.desired_states().await.unwrap();
    let d = desired
        .iter()
        .find(|d| d.device.as_str() == "dev1")
        .unwrap_or_else(|| panic!("no desired state for dev1: {desired:?}"));
    assert_eq!(d.config.mode(), Mode::Passive);
    assert_eq!(d.set_by, "mqtt");
    let left = d.valid_until.expect("passive intent expires") - d.set_at;
    assert_eq!(left.num_seconds(), 900);
    clear_retained(&[format!("{prefix}/#"), format!("{base}/#")]).await;
}

/// Audit rows of `source = mqtt` with status `error`, newest first.
async fn refused_rows(store: &dyn Store) -> Vec<marstek_bridge::store::CommandRecord> {
    let rows = store.recent_commands(1000).await.expect("audit readable");
    rows.into_iter()
        .filter(|r| r.source == CommandSource::Mqtt && r.status == CommandStatus::Error)
        .collect()
}

/// Waits until `n` refused rows are in the audit (the recorder writes after the answers).
async fn wait_refused_rows(
    store: &dyn Store,
    n: usize,
) -> Vec<marstek_bridge::store::CommandRecord> {
    let end = Instant::now() + WAIT;
    loop {
        let rows = refused_rows(store).await;
        if rows.len() >= n || Instant::now() > end {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for `n` answers on `<dev>/response`.
async fn wait_answers(p: &mut Probe, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = p
            .wait("answer", WAIT, |m| m.topic.ends_with("/response"))
            .await;
        out.push(m.json());
    }
    out
}

#[tokio::test]
async fn refused_commands_are_audited_and_a_flood_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(dir.path()).await;
    let base = unique("refaudit");
    let prefix = format!("{base}-ha");
    let rig = Rig::start(&["dev1"], Duration::from_secs(3600)).await;
    let s = settings(&base, &prefix, BROKER.1, MqttProtocol::V311);
    let b = start_bridge_with_store(s, &rig, Some(store.clone())).await;
    let mut p = Probe::connect(&[b.t("+/response")]).await;
    p.publish(&b.t("dev1/set"), b"not json", false).await;
    p.publish(&b.t("ghost/set"), br#"{"mode":"auto","id":"g"}"#, false)
        .await;
    p.publish(&b.t("dev1/set/colour"), b"red", false).await;
    let answers = wait_answers(&mut p, 3).await;
    assert!(
        answers.iter().all(|a| a["status"] == "error"),
        "{answers:?}"
    );
    let rows = wait_refused_rows(store.as_ref(), 3).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    let find = |dev: &str, what: &str| {
        rows.iter()
            .any(|r| r.device == dev && r.error.as_deref().is_some_and(|e| e.contains(what)))
    };
    assert!(find("dev1", "not JSON"), "{rows:?}");
    assert!(find("ghost", "unknown device"), "{rows:?}");
    assert!(find("dev1", "unknown field 'colour'"), "{rows:?}");
    assert!(rows.iter().any(|r| r.payload["received"] == "not json"));

    // A flood: every message is answered, at most 30 rows a minute are written, the rest counted.
    let flood = 100;
    for i in 0..flood {
        p.publish(&b.t("dev1/set"), format!("bad {i}").as_bytes(), false)
            .await;
    }
    wait_answers(&mut p, flood).await;
    let dropped = 3 + flood as u64 - 30;
    let end = Instant::now() + WAIT;
    while b.handle.refusals_not_recorded() < dropped && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.handle.refusals_not_recorded(), dropped);
    let rows = wait_refused_rows(store.as_ref(), 30).await;
    assert_eq!(
        rows.len(),
        30,
        "the audit holds at most 30 refusals a minute"
    );
    b.stop().await;
    assert_eq!(refused_rows(store.as_ref()).await.len(), 30);
    clear_retained(&[format!("{prefix}/#"), format!("{base}/#")]).await;
}

#[tokio::test]
async fn an_id_with_u0000_is_refused_and_audited_on_postgres() {
    let db = support::TestPgDb::create("mbnul").await;
    let store = db.open_store().await;
    let base = unique("nul");
    let prefix = format!("{base}-ha");
    let rig = Rig::start(&["dev1"], Duration::from_secs(3600)).await;
    let s = settings(&base, &prefix, BROKER.1, MqttProtocol::V311);
    let b = start_bridge_with_store(s, &rig, Some(store.clone())).await;
    let mut p = Probe::connect(&[b.t("+/response")]).await;
    assert_ne!(rig.mode(0), Mode::Ups);
    // `\u0000` escaped in the JSON (valid JSON, a NUL in the id), then a raw NUL byte.
    p.publish(
        &b.t("dev1/set"),
        br#"{"mode":"ups","id":"nul\u0000audit"}"#,
        false,
    )
    .await;
    let r = wait_answers(&mut p, 1).await.remove(0);
    assert_eq!(r["status"], "error", "{r}");
    assert_eq!(r["id"], "nul\u{0}audit", "{r}");
    assert!(r["error"].as_str().unwrap().contains("U+0000"), "{r}");
    assert_ne!(
        rig.mode(0),
        Mode::Ups,
        "what cannot be audited must not run"
    );
    p.publish(
        &b.t("dev1/set"),
        b"{\"mode\":\"ups\",\"id\":\"raw\0nul\"}",
        false,
    )
    .await;
    let r = wait_answers(&mut p, 1).await.remove(0);
    assert_eq!(r["status"], "error", "{r}");
    assert_ne!(rig.mode(0), Mode::Ups);
    let rows = wait_refused_rows(store.as_ref(), 2).await;
    assert_eq!(
        rows.len(),
        2,
        "both refusals stored on PostgreSQL: {rows:?}"
    );
    let received: Vec<&str> = rows
        .iter()
        .map(|r| r.payload["received"].as_str().unwrap())
        .collect();
    assert!(
        received.iter().any(|t| t.contains(r"nul\u0000audit")),
        "{received:?}"
    );
    assert!(
        received.iter().any(|t| t.contains(r"raw\u{0}nul")),
        "{received:?}"
    );
    // A printable id still runs.
    p.publish(&b.t("dev1/set"), br#"{"mode":"ups","id":"fine"}"#, false)
        .await;
    let r = wait_answers(&mut p, 1).await.remove(0);
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(rig.mode(0), Mode::Ups);
    b.stop().await;
    clear_retained(&[format!("{prefix}/#"), format!("{base}/#")]).await;
}
