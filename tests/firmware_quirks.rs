//! Control honesty on firmware whose own reads undo a command, told as stories against the
//! simulator (real UDP, real mosquitto, the whole bridge; harness in `verify_story`). On a
//! Venus E 3.0 firmware 148 with the `getmode-resets` fault, answering `ES.GetMode` puts a
//! Passive or Manual battery back in Auto (jaapp #111): a command is either verified AND in
//! effect in the simulator (mode and power), or answered `not_holding` with its alert — never
//! `verified: true` while the battery already fell back to Auto. On firmware 150, whose
//! network chip restarts periodically (`net-reset`), a silence within the catalogue's bound is
//! a blackout (no offline, no alert, polls resume); a longer one goes offline.

mod support;
mod verify_story;

use std::time::Duration;

use marstek_bridge::domain::Mode;
use marstek_bridge::simulator::SimProfile;
use serde_json::{Value, json};
use verify_story::{Story, passive, story_with};

/// A Manual slot that covers every minute of every day (so its power is due whatever the
/// battery's clock says), charging at `power` W.
fn manual_all_day(power: i32) -> Value {
    json!({"mode": "manual", "slots": [
        {"slot": 0, "start": "00:00", "end": "23:59", "days": 127, "power": power}
    ]})
}

/// The final word on a command: its verdict when one follows, else its first answer.
async fn outcome(st: &mut Story, id: &str, command: Value) -> Value {
    let first = st.send(id, command).await;
    if first["verification"] == json!("pending") {
        st.verdict(id).await
    } else {
        first
    }
}

/// The honest outcome: verified only when the simulator's true state is `mode` with roughly
/// `power` W flowing; otherwise `not_holding` and the alert (raised once while it stands:
/// `raised` says whether it already was). Returns whether it was verified.
async fn assert_honest(
    st: &mut Story,
    r: &Value,
    (mode, power): (Mode, f64),
    raised: &mut bool,
) -> bool {
    let truth = st.sim.state(0).unwrap();
    if r["verified"] == json!(true) {
        assert_eq!(
            truth.mode, mode,
            "reported verified, battery in {:?}: {r}",
            truth.mode
        );
        assert!(
            (truth.bat_power - power).abs() <= power.abs() * 0.25,
            "reported verified, battery at {} W: {r}",
            truth.bat_power
        );
        true
    } else {
        assert_eq!(
            (&r["status"], &r["error"]),
            (&json!("error"), &json!("not_holding")),
            "{r}"
        );
        if !std::mem::replace(raised, true) {
            st.alert("raised").await;
        }
        false
    }
}

async fn fw148(interval: Duration) -> Story {
    story_with(
        SimProfile::VenusE3,
        Some(148),
        "getmode-resets",
        true,
        move |s| {
            s.polling.status_interval = interval;
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fw148_getmode_resets_passive_and_manual_are_never_verified_while_in_auto() {
    let mut st = fw148(Duration::from_secs(3600)).await;
    let mut raised = false;
    let r = outcome(&mut st, "p1", passive(-1500)).await;
    assert_honest(&mut st, &r, (Mode::Passive, -1500.0), &mut raised).await;
    let r = outcome(&mut st, "m1", manual_all_day(-1000)).await;
    assert_honest(&mut st, &r, (Mode::Manual, -1000.0), &mut raised).await;
    // a night slot has no power due at every minute: there is nothing to measure, so it is
    // answered unverified, saying why, and no read-back undoes it
    let night = json!({"mode": "manual", "slots": [
        {"slot": 1, "start": "22:00", "end": "06:00", "days": 127, "power": -1200}
    ]});
    let r = st.send("m3", night).await;
    assert_eq!(
        (&r["status"], &r["verified"]),
        (&json!("ok"), &json!(false)),
        "{r}"
    );
    assert_ne!(r["verification"], json!("pending"), "{r}");
    assert!(
        r["note"]
            .as_str()
            .is_some_and(|n| n.contains("cannot be verified")),
        "{r}"
    );
    assert_eq!(st.sim.state(0).unwrap().mode, Mode::Manual);
    st.finish().await;
}

/// Verified by its effect (power read from `ES.GetStatus`), a Passive or all-day Manual command
/// is never undone by the bridge's own reads: background rounds keep the battery charging, and
/// the state shows the mode inferred from the power.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fw148_passive_holds_through_background_rounds() {
    let mut st = fw148(Duration::from_millis(300)).await;
    let mut raised = false;
    let r = outcome(&mut st, "p2", passive(-1500)).await;
    assert!(
        assert_honest(&mut st, &r, (Mode::Passive, -1500.0), &mut raised).await,
        "the write holds, so it is verified: {r}"
    );
    st.backlog.clear();
    for _ in 0..4 {
        st.next("state", |s| s["mode"] == json!("Passive")).await;
    }
    let truth = st.sim.state(0).unwrap();
    assert_eq!((truth.mode, truth.passive_power), (Mode::Passive, -1500));
    // the same for a Manual slot due all day: verified by its charge, left in effect
    let r = outcome(&mut st, "m2", manual_all_day(-1000)).await;
    assert!(
        assert_honest(&mut st, &r, (Mode::Manual, -1000.0), &mut raised).await,
        "{r}"
    );
    st.backlog.clear();
    for _ in 0..4 {
        st.next("state", |s| s["mode"] == json!("Manual")).await;
    }
    assert_eq!(st.sim.state(0).unwrap().mode, Mode::Manual);
    st.finish().await;
}

/// The reconciler keeps the intent by the same evidence: when the fw 148 battery falls back to
/// Auto on its own (`revert-after`), the rounds infer Auto from the power (no `ES.GetMode`),
/// and the user's Passive is re-applied and holds again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fw148_a_fall_back_seen_in_the_power_is_re_applied_by_the_reconciler() {
    let mut st = story_with(
        SimProfile::VenusE3,
        Some(148),
        "getmode-resets,revert-after=60s",
        true,
        |s| s.polling.status_interval = Duration::from_millis(500),
    )
    .await;
    let mut raised = false;
    let r = outcome(&mut st, "r1", passive(-1000)).await;
    assert!(
        assert_honest(&mut st, &r, (Mode::Passive, -1000.0), &mut raised).await,
        "{r}"
    );
    st.next("state", |s| s["mode"] == json!("Passive")).await;
    st.sim
        .clock()
        .set(chrono::Utc::now() + chrono::Duration::seconds(90));
    let drift = st.next("alert", |a| a["kind"] == json!("mode_drift")).await;
    assert!(
        drift["message"]
            .as_str()
            .unwrap()
            .contains("re-applied: ok"),
        "{drift}"
    );
    st.backlog.clear();
    st.next("state", |s| s["mode"] == json!("Passive")).await;
    let truth = st.sim.state(0).unwrap();
    assert_eq!((truth.mode, truth.passive_power), (Mode::Passive, -1000));
    st.finish().await;
}

/// A Venus E 3.0 on firmware 150 (catalogue: a network reset every 900 s, up to 30 s silent)
/// whose simulator restarts its network stack (`net-reset`, 20 s of silence): the blackout
/// passes with no `offline` and no alert, and polls resume; a silence longer than the bound
/// (the battery gone for good) does go offline, with the `unreachable` alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fw150_network_reset_is_a_blackout_unless_it_outlasts_the_catalogue() {
    let mut st = story_with(
        SimProfile::VenusE3,
        Some(150),
        "net-reset=900s/20s",
        true,
        |s| s.polling.status_interval = Duration::from_millis(300),
    )
    .await;
    st.next("availability", |v| v == &json!("online")).await;
    st.drain();
    let start = st.sim.next_blackout(0).unwrap();
    st.sim.clock().set(start + chrono::Duration::seconds(1));
    // rounds fail while the network is down: well past failures_before_unreachable (3)
    let dropped = st.sim.stats(0).unwrap().dropped;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while st.sim.stats(0).unwrap().dropped < dropped + 12 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no round during the blackout"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    st.sim.clock().set(start + chrono::Duration::seconds(21));
    st.next("state", |_| true).await;
    let during: Vec<_> = st
        .drain()
        .into_iter()
        .filter(|(t, v)| t == "availability" && v == &json!("offline") || t == "alert")
        .collect();
    assert!(during.is_empty(), "a blackout is not an outage: {during:?}");

    // silent for good: offline once the silence outlasts the catalogue's 30 s
    st.sim.set_silent(0, true);
    st.next_within("availability", Duration::from_secs(120), |v| {
        v == &json!("offline")
    })
    .await;
    st.next("alert", |a| {
        a["kind"] == json!("unreachable") && a["state"] == json!("raised")
    })
    .await;
    st.sim.set_silent(0, false);
    st.next("availability", |v| v == &json!("online")).await;
    st.finish().await;
}
