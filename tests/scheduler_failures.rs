//! The scheduler's isolation and shutdown on a SQLite store with an injected manual clock:
//! failing and panicking jobs do not affect others, a running job is skipped at its next fire,
//! shutdown records interrupted and cancelled runs, and queueing behind busy workers counts as
//! lateness.

mod scheduler_common;
mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use marstek_bridge::domain::AlertKind;
use marstek_bridge::scheduler::{
    JOB_HEALTH_CHECK, JOB_MONITOR_BATTERIES, JOB_SWITCH_TO_AUTO, JOB_SWITCH_TO_MANUAL_NIGHT,
    ManualClock, Scheduler, SchedulerError,
};
use marstek_bridge::store::{RunStatus, Store};
use scheduler_common::*;
use tokio::sync::mpsc;

#[tokio::test]
async fn failing_and_panicking_jobs_do_not_affect_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite_store(&dir).await;
    let now = utc("2026-11-30T10:00:00Z");
    for id in [
        JOB_SWITCH_TO_AUTO,
        JOB_SWITCH_TO_MANUAL_NIGHT,
        JOB_HEALTH_CHECK,
    ] {
        let trigger = if id == JOB_HEALTH_CHECK {
            "interval:1m"
        } else if id == JOB_SWITCH_TO_AUTO {
            "cron:0 6 * * *"
        } else {
            "cron:0 22 * * *"
        };
        seed_job(store.as_ref(), id, trigger, now).await;
    }
    let clock = Arc::new(ManualClock::new(now));
    let (tx, _rx) = mpsc::unbounded_channel();
    let failing = Probe::new(Behaviour::Fail, tx.clone());
    let panicking = Probe::new(Behaviour::Panic, tx.clone());
    let fine = Probe::new(Behaviour::Ok, tx.clone());
    // The seeded rows keep their triggers only when they match the config.
    let jobs = [
        (JOB_SWITCH_TO_AUTO, failing.clone()),
        (JOB_SWITCH_TO_MANUAL_NIGHT, panicking.clone()),
        (JOB_HEALTH_CHECK, fine.clone()),
    ];
    let (s, mut alert_rx) = start_alerting(one_minute_settings(), &store, &jobs, &clock).await;
    let h = s.handle();
    wait_status(&h, JOB_SWITCH_TO_AUTO, "failed", now).await;
    wait_status(&h, JOB_SWITCH_TO_MANUAL_NIGHT, "failed", now).await;
    wait_status(&h, JOB_HEALTH_CHECK, "completed", now).await;
    // The scheduler keeps going after a panic: the next minute runs too.
    clock.advance(Duration::from_secs(60));
    wait_status(
        &h,
        JOB_HEALTH_CHECK,
        "completed",
        now + chrono::TimeDelta::minutes(1),
    )
    .await;
    s.shutdown(Duration::from_secs(5)).await;
    let runs = store.job_runs(None, 20).await.expect("runs");
    let by_job = |id: &str| {
        runs.iter()
            .filter(|r| r.job_id == id)
            .cloned()
            .collect::<Vec<_>>()
    };
    let failed = by_job(JOB_SWITCH_TO_AUTO);
    assert_eq!(failed[0].status, RunStatus::Failed);
    assert_eq!(
        failed[0].error.as_deref(),
        Some("probe failed: device said no"),
        "cause chain kept"
    );
    let panicked = by_job(JOB_SWITCH_TO_MANUAL_NIGHT);
    assert_eq!(panicked[0].status, RunStatus::Failed);
    assert!(
        panicked[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("panicked on purpose")),
        "{:?}",
        panicked[0].error
    );
    assert_eq!(by_job(JOB_HEALTH_CHECK).len(), 2);
    let mut kinds = Vec::new();
    while let Ok(a) = alert_rx.try_recv() {
        kinds.push(a.kind);
    }
    assert_eq!(
        kinds.iter().filter(|k| **k == AlertKind::JobFailed).count(),
        2
    );
}

/// The monitor job due at 10:00 UTC on a fresh SQLite store, run by a probe of one behaviour on
/// a started scheduler.
struct MonitorRun {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    now: DateTime<Utc>,
    clock: Arc<ManualClock>,
    probe: Arc<Probe>,
    rx: mpsc::UnboundedReceiver<(String, DateTime<Utc>)>,
    s: Scheduler,
}

async fn monitor_run(behaviour: Behaviour) -> MonitorRun {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite_store(&dir).await;
    let now = utc("2026-11-30T10:00:00Z");
    seed_job(store.as_ref(), JOB_MONITOR_BATTERIES, "interval:5m", now).await;
    let clock = Arc::new(ManualClock::new(now));
    let (tx, rx) = mpsc::unbounded_channel();
    let probe = Probe::new(behaviour, tx);
    let s = start_one(&store, &clock, (JOB_MONITOR_BATTERIES, &probe), "inst-a").await;
    MonitorRun {
        _dir: dir,
        store,
        now,
        clock,
        probe,
        rx,
        s,
    }
}

#[tokio::test]
async fn running_job_is_skipped_and_shutdown_records_interrupted_runs() {
    let MonitorRun {
        _dir,
        store,
        now,
        clock,
        probe: blocking,
        mut rx,
        s,
    } = monitor_run(Behaviour::Block).await;
    let h = s.handle();
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("started")
        .expect("channel");
    // Still running at the next fire: skipped, not queued.
    let next = now + chrono::TimeDelta::minutes(5);
    clock.advance(Duration::from_secs(300));
    let mut snap = h.subscribe();
    tokio::time::timeout(
        WAIT,
        snap.wait_for(|v| {
            job_view(v, JOB_MONITOR_BATTERIES).is_some_and(|j| j["last_status"] == "skipped")
        }),
    )
    .await
    .expect("skipped")
    .expect("open");
    assert!(matches!(
        h.run_now(JOB_MONITOR_BATTERIES).await,
        Err(SchedulerError::AlreadyRunning(_))
    ));
    // Shutdown with a short bound: the blocked run is recorded as interrupted.
    assert_eq!(s.shutdown(Duration::from_millis(200)).await, 1);
    let runs = store
        .job_runs(Some(JOB_MONITOR_BATTERIES), 10)
        .await
        .expect("runs");
    let skipped = runs
        .iter()
        .find(|r| r.scheduled_for == next)
        .expect("skipped row");
    assert_eq!(skipped.status, RunStatus::Skipped);
    let first = runs
        .iter()
        .find(|r| r.scheduled_for == now)
        .expect("first row");
    assert_eq!(first.status, RunStatus::Failed);
    assert_eq!(first.error.as_deref(), Some("interrupted by shutdown"));
    assert_eq!(blocking.runs(), vec![now]);
}

#[tokio::test]
async fn shutdown_cancels_cooperative_jobs_and_records_them() {
    let MonitorRun {
        _dir,
        store,
        mut rx,
        s,
        ..
    } = monitor_run(Behaviour::UntilCancelled).await;
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("started")
        .expect("channel");
    assert_eq!(s.shutdown(Duration::from_secs(10)).await, 0);
    let runs = store
        .job_runs(Some(JOB_MONITOR_BATTERIES), 10)
        .await
        .expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert_eq!(
        runs[0].error.as_deref(),
        Some("stopped early: shutting down")
    );
}

#[tokio::test]
async fn queueing_behind_busy_workers_counts_as_lateness() {
    // Case J: one worker, busy past the grace time; a job due meanwhile is missed, not run late.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite_store(&dir).await;
    let now = utc("2026-11-30T10:00:00Z");
    seed_job(store.as_ref(), JOB_MONITOR_BATTERIES, "interval:5m", now).await;
    seed_job(store.as_ref(), JOB_HEALTH_CHECK, "interval:1m", now).await;
    let clock = Arc::new(ManualClock::new(now));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let blocking = Probe::new(Behaviour::Block, tx.clone());
    let quick = Probe::new(Behaviour::Ok, tx);
    let mut settings = one_minute_settings();
    settings.max_workers = 1;
    settings.misfire_grace_time = Duration::from_secs(2);
    // Both due at 10:00; jobs are visited in id order, and the single-threaded test runtime runs
    // them in spawn order, so the health job (blocking) takes the only worker first.
    let s = scheduler(
        settings,
        &store,
        &[
            (JOB_HEALTH_CHECK, blocking.clone()),
            (JOB_MONITOR_BATTERIES, quick.clone()),
        ],
        &clock,
        "inst-a",
    )
    .await;
    let h = s.handle();
    let mut finished = h.subscribe_runs();
    s.start();
    let (first, _) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("one started")
        .expect("channel");
    assert_eq!(first, JOB_HEALTH_CHECK);
    // 4 s pass before the worker frees up; the monitor job then starts 4 s late (grace 2 s).
    clock.advance(Duration::from_secs(4));
    blocking.release.notify_one();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let run = tokio::time::timeout(WAIT, finished.recv())
            .await
            .expect("runs recorded")
            .expect("open");
        seen.push((run.job_id.clone(), run.status, run.scheduled_for));
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        vec![
            (JOB_HEALTH_CHECK.to_string(), RunStatus::Completed, now),
            (JOB_MONITOR_BATTERIES.to_string(), RunStatus::Missed, now),
        ]
    );
    assert!(quick.runs().is_empty(), "the late job did not run");
    s.shutdown(Duration::from_millis(200)).await;
}
