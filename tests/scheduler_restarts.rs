//! The scheduler against real stores (SQLite temp file, a fresh PostgreSQL database per test) with
//! an injected manual clock, across restarts and instances: 3 min late → runs once; 10 min late
//! → missed, not run; exactly-once across restarts and across two instances; leadership
//! hand-over.

mod scheduler_common;
mod support;

use std::sync::Arc;
use std::time::Duration;

use marstek_bridge::domain::AlertKind;
use marstek_bridge::scheduler::{
    Clock, JOB_HEALTH_CHECK, JOB_SWITCH_TO_AUTO, ManualClock, ScheduledMode, SchedulerSettings,
    Trigger, mode_in_force, spawn_leader,
};
use marstek_bridge::store::{RunStatus, Store};
use scheduler_common::*;
use serde_json::json;
use support::TestPgDb;
use tokio::sync::mpsc;

async fn late_three_minutes_runs_once(store: Arc<dyn Store>) {
    let six = utc("2026-11-30T05:00:00Z"); // 06:00 CET
    seed_job(store.as_ref(), JOB_SWITCH_TO_AUTO, "cron:0 6 * * *", six).await;
    let clock = Arc::new(ManualClock::new(utc("2026-11-30T05:03:00Z")));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let probe = Probe::new(Behaviour::Ok, tx.clone());
    let s = start_one(&store, &clock, (JOB_SWITCH_TO_AUTO, &probe), "inst-a").await;
    let (job, at) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("ran")
        .expect("channel");
    assert_eq!((job.as_str(), at), (JOB_SWITCH_TO_AUTO, six));
    wait_status(&s.handle(), JOB_SWITCH_TO_AUTO, "completed", six).await;
    let runs = store
        .job_runs(Some(JOB_SWITCH_TO_AUTO), 10)
        .await
        .expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Completed);
    assert_eq!(runs[0].scheduled_for, six);
    assert_eq!(runs[0].instance, "inst-a");
    assert_eq!(runs[0].result, Some(json!({ "ok": true })));
    let row = store.jobs().await.expect("jobs");
    assert_eq!(row[0].next_run_at, Some(utc("2026-12-01T05:00:00Z")));
    assert_eq!(s.shutdown(Duration::from_secs(5)).await, 0);

    // Crash before the row was advanced: the instant is due again, but its run is claimed
    // already, so a restarted scheduler does not run it twice.
    seed_job(store.as_ref(), JOB_SWITCH_TO_AUTO, "cron:0 6 * * *", six).await;
    let s = start_one(&store, &clock, (JOB_SWITCH_TO_AUTO, &probe), "inst-b").await;
    wait_next_after(&s.handle(), JOB_SWITCH_TO_AUTO, six).await;
    s.shutdown(Duration::from_secs(5)).await;
    assert_eq!(probe.runs(), vec![six]);
    assert_eq!(
        store
            .job_runs(Some(JOB_SWITCH_TO_AUTO), 10)
            .await
            .expect("runs")
            .len(),
        1
    );
}

async fn late_ten_minutes_is_missed(store: Arc<dyn Store>) {
    let six = utc("2026-11-30T05:00:00Z");
    seed_job(store.as_ref(), JOB_SWITCH_TO_AUTO, "cron:0 6 * * *", six).await;
    let now = utc("2026-11-30T05:10:02Z");
    let clock = Arc::new(ManualClock::new(now));
    let (tx, _rx) = mpsc::unbounded_channel();
    let probe = Probe::new(Behaviour::Ok, tx);
    let jobs = [(JOB_SWITCH_TO_AUTO, probe.clone())];
    let (s, mut alert_rx) =
        start_alerting(SchedulerSettings::default(), &store, &jobs, &clock).await;
    wait_status(&s.handle(), JOB_SWITCH_TO_AUTO, "missed", six).await;
    let alert = tokio::time::timeout(WAIT, alert_rx.recv())
        .await
        .expect("alert")
        .expect("channel");
    assert_eq!(alert.kind, AlertKind::JobMissed);
    assert!(alert.message.contains("10m 2s"), "{}", alert.message);
    s.shutdown(Duration::from_secs(5)).await;
    assert!(probe.runs().is_empty(), "a missed run must not run");
    let runs = store
        .job_runs(Some(JOB_SWITCH_TO_AUTO), 10)
        .await
        .expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Missed);
    assert!(
        runs[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("missed by 10m 2s")),
        "{:?}",
        runs[0].error
    );
    let row = store.jobs().await.expect("jobs");
    assert_eq!(row[0].next_run_at, Some(utc("2026-12-01T05:00:00Z")));
    assert_eq!(row[0].last_status, Some(RunStatus::Missed));
    // The schedule still says AUTO is in force since 06:00 (the reconciler applies it).
    let h = s.handle();
    let auto = h
        .trigger_of(JOB_SWITCH_TO_AUTO)
        .await
        .expect("auto trigger");
    let manual = Trigger::parse("cron:0 22 * * *", h.timezone()).expect("manual");
    assert!(matches!(
        mode_in_force(&auto, &manual, clock.now()),
        Some(ScheduledMode::Auto { since, .. }) if since == six
    ));
}

#[tokio::test]
async fn sqlite_three_minutes_late_runs_once_and_never_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    late_three_minutes_runs_once(sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn postgres_three_minutes_late_runs_once_and_never_twice() {
    let db = TestPgDb::create("sched_late3").await;
    late_three_minutes_runs_once(pg_store(&db).await).await;
}

#[tokio::test]
async fn sqlite_ten_minutes_late_is_missed_not_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    late_ten_minutes_is_missed(sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn postgres_ten_minutes_late_is_missed_not_run() {
    let db = TestPgDb::create("sched_late10").await;
    late_ten_minutes_is_missed(pg_store(&db).await).await;
}

#[tokio::test]
async fn two_schedulers_on_one_postgres_run_each_instant_exactly_once() {
    let db = TestPgDb::create("sched_two").await;
    let store_a = pg_store(&db).await;
    let store_b = pg_store(&db).await;
    let start = utc("2026-11-30T10:00:00Z");
    let clock = Arc::new(ManualClock::new(start));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let probe = Probe::new(Behaviour::Ok, tx);
    let jobs = [(JOB_HEALTH_CHECK, probe.clone())];
    let a = scheduler(one_minute_settings(), &store_a, &jobs, &clock, "inst-a").await;
    let b = scheduler(one_minute_settings(), &store_b, &jobs, &clock, "inst-b").await;
    a.start();
    b.start();
    let mut expected = Vec::new();
    for k in 1..=5 {
        clock.advance(Duration::from_secs(60));
        let instant = start + chrono::TimeDelta::minutes(k);
        expected.push(instant);
        let (_, at) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("a run per minute")
            .expect("channel");
        assert_eq!(at, instant);
        // Both instances have handled this instant before time moves on.
        wait_next_after(&a.handle(), JOB_HEALTH_CHECK, instant).await;
        wait_next_after(&b.handle(), JOB_HEALTH_CHECK, instant).await;
    }
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
    assert_eq!(probe.runs(), expected, "each instant ran exactly once");
    let runs = store_a
        .job_runs(Some(JOB_HEALTH_CHECK), 100)
        .await
        .expect("runs");
    assert_eq!(runs.len(), 5);
    assert!(runs.iter().all(|r| r.status == RunStatus::Completed));
}

#[tokio::test]
async fn leader_hands_over_within_the_bound_on_postgres() {
    let db = TestPgDb::create("sched_leader").await;
    let store_a = pg_store(&db).await;
    let store_b = pg_store(&db).await;
    let bound = Duration::from_secs(3);
    let la = spawn_leader(store_a.clone(), "site:s1", "inst-a", bound);
    let mut a_rx = la.receiver();
    tokio::time::timeout(WAIT, a_rx.wait_for(|l| *l))
        .await
        .expect("a leads")
        .expect("open");
    let lb = spawn_leader(store_b.clone(), "site:s1", "inst-b", bound);
    let mut b_rx = lb.receiver();

    // Scheduler B follows its leadership; while A leads it runs nothing.
    let clock = Arc::new(ManualClock::new(utc("2026-11-30T10:00:00Z")));
    let (tx, mut runs_rx) = mpsc::unbounded_channel();
    let probe = Probe::new(Behaviour::Ok, tx);
    let sb = scheduler(
        one_minute_settings(),
        &store_b,
        &[(JOB_HEALTH_CHECK, probe.clone())],
        &clock,
        "inst-b",
    )
    .await;
    sb.start_with_leadership(lb.receiver());
    assert!(!lb.is_leader(), "only one leader");
    clock.advance(Duration::from_secs(60));

    // A dies without resigning: B takes over within the bound, then runs the due instant.
    la.abort();
    let t0 = tokio::time::Instant::now();
    tokio::time::timeout(bound + Duration::from_secs(2), b_rx.wait_for(|l| *l))
        .await
        .expect("b takes over within the bound")
        .expect("open");
    let took = t0.elapsed();
    eprintln!("leader hand-over after abort: {took:?} (bound {bound:?})");
    assert!(took <= bound + Duration::from_secs(1), "took {took:?}");
    let (_, at) = tokio::time::timeout(WAIT, runs_rx.recv())
        .await
        .expect("b runs once leading")
        .expect("channel");
    assert_eq!(at, utc("2026-11-30T10:01:00Z"));
    assert_eq!(probe.runs().len(), 1);

    // A clean stop resigns, so a waiting instance takes over at its next attempt.
    let lc = spawn_leader(store_a.clone(), "site:s1", "inst-c", bound);
    lb.stop().await;
    let mut c_rx = lc.receiver();
    tokio::time::timeout(bound, c_rx.wait_for(|l| *l))
        .await
        .expect("c takes over after b resigned")
        .expect("open");
    sb.shutdown(Duration::from_secs(5)).await;
    lc.stop().await;
}
