//! State, availability and the connection against the whole bridge (the app's own builder,
//! `tests/support/bridge_rig.rs`) on the test broker: battery state and availability following
//! the battery, alerts and health, a message over a mebibyte that must not drop the connection,
//! and a broker outage (the shared cuttable proxy of `tests/support`) after which state and
//! discovery are republished. Each test runs once with the bridge on MQTT 3.1.1 and once on
//! MQTT 5.

#[macro_use]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use marstek_bridge::domain::{Alert, AlertKind, AlertState, DeviceId, Mode, Severity};
use marstek_bridge::mqtt::MqttProtocol;
use serde_json::{Value, json};
use support::TcpProxy;
use support::bridge_rig::TestBridge;
use support::mqtt_probe::{BROKER, Msg, Probe, WAIT, clear_retained, publish_big};

for_both_protocols!(
    state_and_availability_follow_the_battery,
    a_message_over_a_mebibyte_does_not_drop_the_connection,
    reconnect_republishes_state_and_discovery,
);

async fn state_and_availability_follow_the_battery(protocol: MqttProtocol) {
    let bb = TestBridge::builder("state")
        .protocol(protocol)
        .poll_every(Duration::from_millis(200));
    let (base, prefix) = (bb.base_topic().to_string(), bb.prefix());
    let mut p = Probe::connect(&[format!("{base}/#")]).await;
    let mut states = Probe::connect(&[format!("{base}/+/state")]).await;
    let b = bb.start().await;
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
    let snap = b.snapshot(0);
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

    b.sim.set_silent(0, true);
    p.wait("offline", WAIT, |m| {
        m.topic == b.t("dev1/availability") && m.text() == "offline"
    })
    .await;
    b.sim.set_silent(0, false);
    p.wait("back online", WAIT, |m| {
        m.topic == b.t("dev1/availability") && m.text() == "online"
    })
    .await;

    // Alerts: event + retained active list.
    b.mqtt().publish_alert(&Alert {
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
    b.mqtt().publish_health(json!({"ok": true}));
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

/// A retained publish of 1.5 MiB on a command topic (anyone the ACL lets send commands can do
/// it): the bridge keeps its connection (no reconnect, no `offline`), refuses it or never gets
/// it (MQTT 5: the broker knows the bridge's 1 MiB limit), and later commands still work.
async fn a_message_over_a_mebibyte_does_not_drop_the_connection(protocol: MqttProtocol) {
    let b = TestBridge::builder("big").protocol(protocol).start().await;
    let mut p = Probe::connect(&[b.t("bridge/state"), b.t("+/response")]).await;
    let mut conn = b.mqtt().connected();
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
    assert_eq!(b.mode(0), Mode::Ai);
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
    b.stop_and_clear().await;
}

async fn reconnect_republishes_state_and_discovery(protocol: MqttProtocol) {
    let (proxy_addr, proxy) = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], BROKER.1)))
        .await
        .expect("proxy");
    let bb = TestBridge::builder("recon")
        .protocol(protocol)
        .poll_every(Duration::from_millis(200))
        .with(move |s| s.mqtt.port = proxy_addr.port());
    let (base, prefix) = (bb.base_topic().to_string(), bb.prefix());
    let mut p = Probe::connect(&[format!("{base}/#"), format!("{prefix}/#")]).await;
    let b = bb.start().await;
    p.wait("state", WAIT, |m| m.topic == b.t("dev1/state"))
        .await;
    let mut conn = b.mqtt().connected();

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
    b.stop_and_clear().await;
}
