//! MQTT commands against the whole bridge (the app's own builder, `tests/support/bridge_rig.rs`)
//! on the test broker, with the in-process simulator behind the real driver and command service:
//! mode changes, slots, the Home Assistant number + button, malformed and retained commands. Each
//! test runs once with the bridge on MQTT 3.1.1 and once on MQTT 5, under topics of its own.

#[macro_use]
mod support;

use std::time::Duration;

use marstek_bridge::domain::Mode;
use marstek_bridge::mqtt::MqttProtocol;
use rumqttc::QoS;
use support::bridge_rig::{BridgeBuilder, TestBridge, settings_of, simulator};
use support::mqtt_probe::{Msg, Probe, WAIT};

for_both_protocols!(
    mode_commands_change_the_battery_and_answer,
    several_slots_are_applied_and_reported,
    passive_number_and_button_remember_then_apply,
    malformed_commands_get_errors_and_change_nothing,
    retained_commands_are_not_executed_and_are_cleared,
    a_retained_command_published_live_is_cleared_at_once,
);

/// One battery `dev1` behind a bridge on `protocol`, and a probe on its responses and controls.
async fn command_bridge(tag: &str, protocol: MqttProtocol) -> (Probe, TestBridge) {
    // MB_RESPONSE_QOS=1 shows the ~40 ms a QoS 1 answer waits behind the PUBACK when the
    // broker does not set TCP_NODELAY (see docs/mqtt.md).
    let bb = TestBridge::builder(tag).protocol(protocol).with(|s| {
        s.mqtt.response_qos = std::env::var("MB_RESPONSE_QOS")
            .ok()
            .and_then(|q| q.parse().ok())
            .unwrap_or(0);
    });
    let base = bb.base_topic().to_string();
    let p = Probe::connect(&[format!("{base}/+/response"), format!("{base}/+/controls")]).await;
    (p, bb.start().await)
}

async fn mode_commands_change_the_battery_and_answer(protocol: MqttProtocol) {
    let (mut p, b) = command_bridge("cmd", protocol).await;
    let resp = b.t("dev1/response");

    let r = p
        .command(
            &b.t("dev1/set"),
            r#"{"mode":"passive","power":-800,"duration":600,"id":"t1"}"#,
            "t1",
        )
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["verified"], true);
    assert!(r["applied"].is_object());
    assert_eq!(b.mode(0), Mode::Passive);

    p.publish(&b.t("dev1/set/mode"), b"Manual", false).await;
    let r = p.wait("manual", WAIT, |m| m.topic == resp).await.json();
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(b.mode(0), Mode::Manual);
    // Plain Manual writes the disabled placeholder slot 9.
    assert_eq!(r["applied"]["config"]["manual_cfg"]["time_num"], 9);
    assert_eq!(r["applied"]["config"]["manual_cfg"]["enable"], 0);

    p.publish(&b.t("dev1/set/mode"), b"auto", false).await;
    let r = p.wait("auto", WAIT, |m| m.topic == resp).await.json();
    assert_eq!(r["status"], "ok");
    assert_eq!(b.mode(0), Mode::Auto);

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
    b.stop_and_clear().await;
}

async fn several_slots_are_applied_and_reported(protocol: MqttProtocol) {
    let (mut p, b) = command_bridge("slots", protocol).await;
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
    b.stop_and_clear().await;
}

async fn passive_number_and_button_remember_then_apply(protocol: MqttProtocol) {
    let (mut p, b) = command_bridge("remember", protocol).await;
    let resp = b.t("dev1/response");
    // HA number + button: remembered then applied.
    let before = b.settings_of(0);
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
    assert_eq!(b.settings_of(0), before, "remembering sends nothing");
    p.publish(&b.t("dev1/set/apply_passive"), b"PRESS", false)
        .await;
    let r = p.wait("apply", WAIT, |m| m.topic == resp).await.json();
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["applied"]["config"]["passive_cfg"]["power"], -500);
    assert_eq!(r["applied"]["config"]["passive_cfg"]["cd_time"], 120);
    assert_eq!(b.snapshot(0).passive_power, -500);
    assert_eq!(b.mode(0), Mode::Passive);
    b.stop_and_clear().await;
}

/// A bridge to start on a battery `dev1` started first, and what a command could change on it
/// before the bridge ran.
async fn untouched(tag: &str, protocol: MqttProtocol) -> (serde_json::Value, BridgeBuilder) {
    let sim = simulator(1).await;
    let before = settings_of(&sim, 0);
    (
        before,
        TestBridge::builder(tag).protocol(protocol).simulator(sim),
    )
}

async fn malformed_commands_get_errors_and_change_nothing(protocol: MqttProtocol) {
    let (before, bb) = untouched("bad", protocol).await;
    let base = bb.base_topic().to_string();
    let mut p = Probe::connect(&[format!("{base}/+/response")]).await;
    let b = bb.start().await;
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
    assert_eq!(b.settings_of(0), before, "the battery is unchanged");
    println!("{} malformed payloads refused", cases.len());
    b.stop_and_clear().await;
}

async fn retained_commands_are_not_executed_and_are_cleared(protocol: MqttProtocol) {
    let (before, bb) = untouched("ret", protocol).await;
    let base = bb.base_topic().to_string();
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
    let b = bb.start().await;
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
        b.settings_of(0),
        before,
        "the retained command was not executed"
    );
    assert_ne!(b.mode(0), Mode::Passive);
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
    assert_eq!(b.mode(0), Mode::Ai);
    let mut after = Probe::connect(&[set.clone(), req.clone()]).await;
    let left = after.collect_until_quiet(Duration::from_millis(300)).await;
    assert!(left.iter().all(|m| !m.retain), "still retained: {left:?}");
    b.stop_and_clear().await;
}

/// A retained command published while the bridge is connected: MQTT 5 (Retain As Published)
/// sees the flag and refuses it; MQTT 3.1.1 delivers it as a plain message, so it runs once.
/// Either way the retained copy is cleared at once, so it never runs again (at a reconnect, at
/// the next start).
async fn a_retained_command_published_live_is_cleared_at_once(protocol: MqttProtocol) {
    let bb = TestBridge::builder("retlive").protocol(protocol);
    let set = format!("{}/dev1/set", bb.base_topic());
    let b = bb.start().await;
    let mut p = Probe::connect(&[set.clone(), b.t("+/response")]).await;
    assert_ne!(b.mode(0), Mode::Ups);
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
            assert_ne!(b.mode(0), Mode::Ups, "a retained command must not run");
        }
        MqttProtocol::V311 => {
            assert_eq!(
                r["status"], "ok",
                "3.1.1 cannot tell a live retained publish: {r}"
            );
            assert_eq!(b.mode(0), Mode::Ups);
        }
    }
    let mut late = Probe::connect(std::slice::from_ref(&set)).await;
    let left = late.collect_until_quiet(Duration::from_millis(300)).await;
    assert!(
        left.iter().all(|m| m.payload.is_empty()),
        "still retained on the broker: {left:?}"
    );
    b.stop_and_clear().await;
}
