//! What the bridge records of MQTT commands, against the whole bridge (the app's own builder,
//! `tests/support/bridge_rig.rs`) on the test broker: remembered controls that survive a restart
//! (from the database, not the broker), the audit row and desired state of an applied command,
//! refused commands audited within a bound under a flood, and ids with U+0000 refused and
//! audited on PostgreSQL. Rows are read once the bridge has stopped: the orderly shutdown
//! writes what the recorder still holds.

mod support;

use marstek_bridge::domain::{CommandSource, CommandStatus, Mode};
use marstek_bridge::mqtt::MqttProtocol;
use marstek_bridge::store::{CommandRecord, Store};
use serde_json::Value;
use support::TestPgDb;
use support::bridge_rig::TestBridge;
use support::mqtt_probe::{Probe, WAIT};

#[tokio::test]
async fn remembered_controls_survive_a_restart() {
    let bb = TestBridge::builder("keep").protocol(MqttProtocol::V5);
    let base = bb.base_topic().to_string();
    let (resp, controls) = (
        format!("{base}/dev1/response"),
        format!("{base}/dev1/controls"),
    );
    let mut p = Probe::connect(&[resp.clone(), controls.clone()]).await;

    let mut b = bb.start().await;
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
    b.shut_down().await;
    assert_ne!(
        b.snapshot(0).passive_power,
        -700,
        "remembering sends nothing"
    );

    // Forget what the broker retained: the values must come back from the database.
    p.publish(&controls, b"", true).await;
    p.wait("retained controls cleared", WAIT, |m| {
        m.topic == controls && m.payload.is_empty()
    })
    .await;
    b.start_again().await;
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
    assert_eq!(b.mode(0), Mode::Passive);
    assert_eq!(b.snapshot(0).passive_power, -700);
    b.shut_down().await;

    // Answered first, recorded after: by the time the bridge has stopped, the command has its
    // audit row and its desired state (expiring with the passive duration).
    let store = b.open_store().await;
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
    b.stop_and_clear().await;
}

/// Audit rows of `source = mqtt` with status `error`, newest first.
async fn refused_rows(store: &dyn Store) -> Vec<CommandRecord> {
    let rows = store.recent_commands(1000).await.expect("audit readable");
    rows.into_iter()
        .filter(|r| r.source == CommandSource::Mqtt && r.status == CommandStatus::Error)
        .collect()
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
    let mut b = TestBridge::builder("refaudit").start().await;
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

    // A flood: every message is answered, at most 30 rows a minute are written, the rest counted
    // (each refusal is admitted or counted before it is answered).
    let flood = 100;
    for i in 0..flood {
        p.publish(&b.t("dev1/set"), format!("bad {i}").as_bytes(), false)
            .await;
    }
    wait_answers(&mut p, flood).await;
    let dropped = 3 + flood as u64 - 30;
    assert_eq!(b.mqtt().refusals_not_recorded(), dropped);
    b.shut_down().await;
    let store = b.open_store().await;
    let rows = refused_rows(store.as_ref()).await;
    assert_eq!(
        rows.len(),
        30,
        "the audit holds at most 30 refusals a minute"
    );
    // The first three are among them, each with its reason.
    let find = |dev: &str, what: &str| {
        rows.iter()
            .any(|r| r.device == dev && r.error.as_deref().is_some_and(|e| e.contains(what)))
    };
    assert!(find("dev1", "not JSON"), "{rows:?}");
    assert!(find("ghost", "unknown device"), "{rows:?}");
    assert!(find("dev1", "unknown field 'colour'"), "{rows:?}");
    assert!(rows.iter().any(|r| r.payload["received"] == "not json"));
    let early = rows
        .iter()
        .filter(|r| {
            !r.payload["received"]
                .as_str()
                .unwrap_or("")
                .starts_with("bad ")
        })
        .count();
    assert_eq!(early, 3, "{rows:?}");
    b.stop_and_clear().await;
}

#[tokio::test]
async fn an_id_with_u0000_is_refused_and_audited_on_postgres() {
    let db = TestPgDb::create("mbnul").await;
    let url = db.url.clone();
    let mut b = TestBridge::builder("nul")
        .with(move |s| s.database.url = url)
        .start()
        .await;
    let mut p = Probe::connect(&[b.t("+/response")]).await;
    assert_ne!(b.mode(0), Mode::Ups);
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
    assert_ne!(b.mode(0), Mode::Ups, "what cannot be audited must not run");
    p.publish(
        &b.t("dev1/set"),
        b"{\"mode\":\"ups\",\"id\":\"raw\0nul\"}",
        false,
    )
    .await;
    let r = wait_answers(&mut p, 1).await.remove(0);
    assert_eq!(r["status"], "error", "{r}");
    assert_ne!(b.mode(0), Mode::Ups);
    // A printable id still runs.
    p.publish(&b.t("dev1/set"), br#"{"mode":"ups","id":"fine"}"#, false)
        .await;
    let r = wait_answers(&mut p, 1).await.remove(0);
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(b.mode(0), Mode::Ups);
    b.shut_down().await;
    let store = db.open_store().await;
    let rows = refused_rows(store.as_ref()).await;
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
    b.stop_and_clear().await;
}
