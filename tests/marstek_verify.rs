//! Verification by effect, told as stories against the simulator's behavioural faults: the
//! whole bridge (`app::run_with`) with the real driver on loopback UDP, the real mosquitto, a
//! SQLite store and the HTTP API; a command sent on `<base>/<dev>/set` is answered at once on
//! `<base>/<dev>/response` (`"verification": "pending"` while its effect is being checked),
//! and its verdict follows there with the same id. The user-visible outcome is either "it
//! holds" (`verified: true`, after re-sending where the battery was busy) or an honest
//! `status: "error"`, `error: "not_holding"` with what was observed, an audit row and a
//! `command_not_holding` alert — never `verified: true` for a command that did not take. Every
//! not-holding story waits for a verdict that never comes when verification is switched off;
//! one story shows what users saw then.

mod support;
mod verify_story;

use std::time::Duration;

use marstek_bridge::domain::Mode;
use marstek_bridge::simulator::SimProfile;
use serde_json::{Value, json};
use verify_story::{passive, story, story_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_writes_are_not_holding_with_an_alert_and_clear_once_one_holds() {
    let mut st = story(SimProfile::VenusE3, None, "ignore-writes", true).await;
    let r = st.send_verdict("c1", passive(-1500)).await;
    assert_eq!(r["status"], json!("error"), "{r}");
    assert_eq!(r["error"], json!("not_holding"), "{r}");
    assert_eq!(r["verification"], json!("not_holding"), "{r}");
    assert_eq!(r["verified"], json!(false));
    assert_eq!(r["observed"]["mode"], json!("Auto"), "{r}");
    assert_eq!(r["observed"]["expected"]["bat_power"], json!(-1500), "{r}");
    assert_eq!(
        r["observed"]["attempts"],
        json!(3),
        "the write and two re-sends"
    );
    // re-sends are bounded: the three writes, and at most one re-apply of the intent by the
    // reconciler since (the next one waits its backoff, and it re-sends nothing itself)
    let writes = st.sim.stats(0).unwrap().mode_writes;
    assert!((3..=4).contains(&writes), "{writes} writes");
    st.alert("raised").await;
    // the verdict is in the audit, next to the command it judges
    let audit = st.audit().await;
    let verdict = audit
        .iter()
        .find(|row| row["payload"]["verification"] == json!("not_holding"))
        .unwrap_or_else(|| panic!("no not_holding audit row: {audit:?}"));
    assert_eq!(
        (&verdict["source"], &verdict["status"], &verdict["error"]),
        (&json!("mqtt"), &json!("error"), &json!("not_holding")),
        "{verdict}"
    );
    assert_eq!(verdict["payload"]["observed"]["attempts"], json!(3));

    // the battery obeys again: the next write holds and clears the alert
    st.sim.update_faults(0, |f| f.ignore_writes = false);
    let r = st.send_verdict("c2", passive(-1500)).await;
    assert_eq!(
        (&r["status"], &r["verified"], &r["verification"]),
        (&json!("ok"), &json!(true), &json!("verified")),
        "{r}"
    );
    assert_eq!(r["observed"]["mode"], json!("Passive"), "{r}");
    st.alert("cleared").await;
    st.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_under_getmode_is_avoided_and_the_write_verified_by_its_power() {
    // fw 148: answering GetMode puts the battery back in Auto, so the bridge does not ask; the
    // Passive is verified by the charge ES.GetStatus shows, and stays in effect
    let mut st = story(SimProfile::VenusE3, Some(148), "getmode-resets", true).await;
    let r = st.send_verdict("g1", passive(-800)).await;
    assert_eq!(
        (&r["status"], &r["verified"]),
        (&json!("ok"), &json!(true)),
        "{r}"
    );
    assert_eq!(r["observed"]["bat_power"], json!(-800), "{r}");
    let state = st.sim.state(0).unwrap();
    assert_eq!((state.mode, state.passive_power), (Mode::Passive, -800));
    st.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_battery_is_written_again_after_a_pause_and_then_holds() {
    let mut st = story(SimProfile::VenusA, Some(148), "busy=1s", true).await;
    let r = st.send_verdict("b1", passive(-500)).await;
    assert_eq!(r["verified"], json!(true), "{r}");
    // refused while busy (set_result false), accepted on the re-send after the pause
    let r = st.send_verdict("b2", passive(400)).await;
    assert_eq!(
        (&r["status"], &r["verified"]),
        (&json!("ok"), &json!(true)),
        "{r}"
    );
    let state = st.sim.state(0).unwrap();
    assert_eq!((state.mode, state.passive_power), (Mode::Passive, 400));
    st.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the first state does not arrive yet with getmode-id1-only; the instance fallback is unfinished"]
async fn getmode_on_instance_1_only_is_read_there_with_its_integer_mode() {
    let mut st = story(SimProfile::VenusE3, None, "getmode-id1-only", true).await;
    let r = st.send_verdict("i1", passive(-600)).await;
    assert_eq!(
        (&r["status"], &r["verified"]),
        (&json!("ok"), &json!(true)),
        "{r}"
    );
    // the state published after the write carries the mode read on instance 1 (code 3)
    st.next("state", |s| s["mode"] == json!("passive")).await;
    st.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn venus_a_148_without_bat_power_is_verified_by_its_inferred_power() {
    let mut st = story(SimProfile::VenusA, Some(148), "no-bat-power", true).await;
    // at night, so that the PV strings (in mixed units on this firmware) produce nothing
    let night = chrono::Utc::now()
        .date_naive()
        .and_hms_opt(1, 0, 0)
        .unwrap()
        .and_utc()
        + chrono::Duration::days(1);
    st.sim.clock().set(night);
    let r = st.send_verdict("n1", passive(-700)).await;
    assert_eq!(
        (&r["status"], &r["verified"]),
        (&json!("ok"), &json!(true)),
        "{r}"
    );
    st.sim.update_faults(0, |f| f.ignore_writes = true);
    let r = st.send_verdict("n2", passive(700)).await;
    assert_eq!(r["error"], json!("not_holding"), "{r}");
    st.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn venus_mini_300_refusing_passive_is_an_error_after_the_re_sends() {
    let mut st = story(
        SimProfile::VenusEMini,
        Some(300),
        "ignore-manual-power",
        true,
    )
    .await;
    // this firmware refuses the write outright (set_result false): nothing to verify, so the
    // refusal is the answer, after the re-sends
    let r = st.send("m1", passive(-800)).await;
    assert_eq!(r["status"], json!("error"), "{r}");
    assert_eq!(r["verified"], json!(false));
    assert_eq!(r["verification"], Value::Null, "{r}");
    assert_eq!(st.sim.stats(0).unwrap().mode_writes, 3, "{r}");
    st.finish().await;
}

/// A newer command to the same battery ends the verification of the one before: its verdict
/// says so, and only the newer one is re-sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_command_supersedes_a_verification_in_progress() {
    let mut st = story(SimProfile::VenusE3, None, "ignore-writes", true).await;
    st.send("s1", passive(-1000)).await;
    let first = st.send("s2", passive(-600)).await;
    assert_eq!(first["verification"], json!("pending"), "{first}");
    let r = st.verdict("s1").await;
    assert_eq!(
        (&r["status"], &r["verified"], &r["verification"]),
        (&json!("ok"), &json!(false), &json!("superseded")),
        "{r}"
    );
    let r = st.verdict("s2").await;
    assert_eq!(r["error"], json!("not_holding"), "{r}");
    assert_eq!(r["observed"]["expected"]["bat_power"], json!(-600), "{r}");
    assert_eq!(r["observed"]["attempts"], json!(3), "{r}");
    st.finish().await;
}

/// A battery that falls back to Auto on its own (`revert-after`) is put back in the user's
/// Passive by the reconciler: `mode_drift` raised, the re-apply in the audit with source
/// `reconciler`, the battery in Passive again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_battery_that_falls_back_to_auto_is_put_back_by_the_reconciler() {
    let mut st = story_with(SimProfile::VenusE3, None, "revert-after=60s", true, |s| {
        s.polling.status_interval = Duration::from_millis(500);
    })
    .await;
    let r = st.send_verdict("r1", passive(-1000)).await;
    assert_eq!(r["verified"], json!(true), "{r}");
    // a status round sees the intent held
    st.next("state", |s| s["mode"] == json!("Passive")).await;
    // a minute later (simulated) the battery drops back to Auto by itself
    let later = chrono::Utc::now() + chrono::Duration::seconds(90);
    st.sim.clock().set(later);
    let drift = st.next("alert", |a| a["kind"] == json!("mode_drift")).await;
    assert!(
        drift["message"]
            .as_str()
            .unwrap()
            .contains("re-applied: ok"),
        "{drift}"
    );
    let state = st.sim.state(0).unwrap();
    assert_eq!((state.mode, state.passive_power), (Mode::Passive, -1000));
    let audit = st.audit().await;
    let reapply = audit
        .iter()
        .find(|row| row["source"] == json!("reconciler"))
        .unwrap_or_else(|| panic!("no reconciler row: {audit:?}"));
    assert_eq!(reapply["status"], json!("ok"), "{reapply}");
    assert_eq!(reapply["payload"]["received"]["intent"], json!("mqtt"));
    // the retained intent document tells the story: one revert, re-applied, holding again
    let doc = st
        .next("intent", |d| {
            d["reverts"] == json!(1) && d["holding"] == json!(true)
        })
        .await;
    assert_eq!(doc["intended"]["mode"], json!("Passive"), "{doc}");
    assert_eq!(doc["intended"]["power"], json!(-1000), "{doc}");
    assert_eq!(doc["intended"]["set_by"], json!("mqtt"), "{doc}");
    assert_eq!(doc["observed"]["mode"], json!("Passive"), "{doc}");
    assert_eq!(doc["last_reapply"]["result"], json!("applied"), "{doc}");
    st.finish().await;
}

/// Over HTTP the answer is immediate too, unless `?wait=verified` asks for the verdict: 502
/// `not_holding` with the verdict attached when the write did not take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_waits_for_the_verdict_only_when_asked() {
    let mut st = story(SimProfile::VenusE3, None, "ignore-writes", true).await;
    let (code, r) = st.post("", passive(-900)).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(
        (&r["verified"], &r["verification"]),
        (&json!(false), &json!("pending")),
        "{r}"
    );
    let (code, body) = st.post("?wait=verified", passive(-900)).await;
    assert_eq!(code, 502, "{body}");
    assert_eq!(body["error"]["code"], json!("not_holding"), "{body}");
    assert_eq!(body["result"]["verification"], json!("not_holding"));
    assert_eq!(body["result"]["observed"]["mode"], json!("Auto"), "{body}");
    st.alert("raised").await;

    let (code, body) = st.post("?wait=soon", passive(-900)).await;
    assert_eq!(code, 400, "an unknown wait is refused: {body}");

    st.sim.update_faults(0, |f| f.ignore_writes = false);
    let (code, r) = st.post("?wait=verified", passive(-900)).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(
        (&r["status"], &r["verified"], &r["verification"]),
        (&json!("ok"), &json!(true), &json!("verified")),
        "{r}"
    );
    assert_eq!(r["observed"]["bat_power"], json!(-900), "{r}");
    st.finish().await;
}

/// With verification switched off the same stories end as the reports describe: a write the
/// battery ignored or undid answered `ok` with no verdict to follow, the busy battery's
/// refusal final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_verification_the_stories_end_as_users_reported() {
    let mut st = story(SimProfile::VenusE3, None, "ignore-writes", false).await;
    let r = st.send("o1", passive(-1500)).await;
    assert_eq!(r["status"], json!("ok"), "an ignored write looks fine: {r}");
    assert_eq!(r["verification"], Value::Null, "no verdict follows: {r}");
    st.finish().await;

    let mut st = story(SimProfile::VenusE3, Some(148), "getmode-resets", false).await;
    let r = st.send("o2", passive(-800)).await;
    // the driver no longer reads the mode back there (the read would undo the write): not
    // verified, and left in effect
    assert_eq!(
        (&r["status"], &r["verified"]),
        (&json!("ok"), &json!(false)),
        "no echo is claimed as proof: {r}"
    );
    assert_eq!(st.sim.state(0).unwrap().mode, Mode::Passive);
    st.finish().await;

    let mut st = story(SimProfile::VenusA, Some(148), "busy=1s", false).await;
    st.send("o3", passive(-500)).await;
    let r = st.send("o4", passive(400)).await;
    assert_eq!(r["status"], json!("error"), "{r}");
    st.finish().await;
}

/// A firmware update from the app under a maintenance hold: while held, the bridge sends the
/// battery nothing — not the user's commands (MQTT or HTTP), not the reconciler's re-apply when
/// the battery falls back to Auto; once released, the reconciler puts it back in the user's
/// Passive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_hold_keeps_every_write_away_until_it_is_released() {
    let mut st = story_with(SimProfile::VenusE3, None, "revert-after=60s", true, |s| {
        s.polling.status_interval = Duration::from_millis(300);
    })
    .await;
    let r = st.send_verdict("h1", passive(-1000)).await;
    assert_eq!(r["verified"], json!(true), "{r}");
    st.next("maintenance", |v| v == &json!("OFF")).await;

    st.set_field("maintenance", "ON").await;
    let r = st
        .next("response", |r| r["applied"]["maintenance"] == json!(true))
        .await;
    assert_eq!(r["status"], json!("ok"), "{r}");
    st.next("maintenance", |v| v == &json!("ON")).await;
    let writes = st.sim.stats(0).unwrap().mode_writes;

    // The battery falls back to Auto (its update); rounds see it, nothing is re-applied.
    st.sim
        .clock()
        .set(chrono::Utc::now() + chrono::Duration::seconds(90));
    for _ in 0..3 {
        st.next("state", |s| s["mode"] == json!("Auto")).await;
    }
    let r = st.send("h2", passive(-500)).await;
    assert_eq!(r["status"], json!("error"), "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("maintenance hold"),
        "{r}"
    );
    let (code, body) = st.post("", passive(-500)).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"]["code"], json!("maintenance"), "{body}");
    assert_eq!(
        st.sim.stats(0).unwrap().mode_writes,
        writes,
        "no write while held"
    );
    assert_eq!(st.sim.state(0).unwrap().mode, Mode::Auto);
    let (_, holds) = st
        .put("/api/v1/maintenance", json!({"maintenance": true}))
        .await;
    assert_eq!(holds["devices"]["venus1"]["by"], json!("mqtt"), "{holds}");
    assert_eq!(holds["bridge"]["by"], json!("http"), "{holds}");

    // Released (both holds): the reconciler re-applies the user's Passive.
    let (code, _) = st
        .put("/api/v1/maintenance", json!({"maintenance": false}))
        .await;
    assert_eq!(code, 200);
    let (code, holds) = st
        .put(
            "/api/v1/maintenance",
            json!({"maintenance": false, "device": "venus1"}),
        )
        .await;
    assert_eq!(code, 200, "{holds}");
    assert_eq!(holds["devices"], json!({}), "{holds}");
    st.next("maintenance", |v| v == &json!("OFF")).await;
    st.backlog.clear();
    let doc = st
        .next("intent", |d| {
            d["last_reapply"]["result"] == json!("applied")
        })
        .await;
    assert_eq!(doc["intended"]["power"], json!(-1000), "{doc}");
    let state = st.sim.state(0).unwrap();
    assert_eq!((state.mode, state.passive_power), (Mode::Passive, -1000));
    let audit = st.audit().await;
    assert!(
        audit.iter().any(|row| row["source"] == json!("reconciler")),
        "the re-apply after the release is audited: {audit:?}"
    );
    let (code, body) = st
        .put(
            "/api/v1/maintenance",
            json!({"maintenance": true, "device": "nope"}),
        )
        .await;
    assert_eq!(code, 404, "{body}");
    st.finish().await;
}
