//! The scheduler's management API on a SQLite store with an injected manual clock: list, pause,
//! resume, trigger edits that persist and win over the config after a restart, previews, run
//! now, and bad input that changes nothing.

mod scheduler_common;
mod support;

use std::sync::Arc;
use std::time::Duration;

use marstek_bridge::scheduler::{
    JOB_SWITCH_TO_AUTO, JOB_SWITCH_TO_MANUAL_NIGHT, ManualClock, Scheduler, SchedulerError,
    SchedulerSettings,
};
use marstek_bridge::store::RunStatus;
use scheduler_common::*;
use tokio::sync::mpsc;

#[tokio::test]
async fn management_api_edits_persist_and_bad_input_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite_store(&dir).await;
    let clock = Arc::new(ManualClock::new(utc("2026-11-30T08:00:00Z")));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let probe = Probe::new(Behaviour::Ok, tx.clone());
    let reg = registry(&[
        (JOB_SWITCH_TO_AUTO, probe.clone()),
        (JOB_SWITCH_TO_MANUAL_NIGHT, probe.clone()),
    ]);
    let init = |settings: SchedulerSettings| {
        Scheduler::init(
            settings,
            store.clone(),
            reg.clone(),
            clock.clone(),
            None,
            "inst-a",
        )
    };
    let s = init(SchedulerSettings::default()).await.expect("init");
    s.start();
    let h = s.handle();
    let list = h.list().await;
    assert_eq!(list.len(), 2);
    let auto = list
        .iter()
        .find(|j| j.id == JOB_SWITCH_TO_AUTO)
        .expect("auto");
    assert_eq!(auto.trigger, "cron:0 6 * * *");
    assert_eq!(auto.next_run_utc, Some(utc("2026-12-01T05:00:00Z")));
    assert_eq!(
        auto.next_run_local.as_deref(),
        Some("2026-12-01T06:00:00+01:00")
    );

    // Errors: unknown job, invalid cron, never-firing, 6 fields, resume a running job.
    assert!(matches!(
        h.pause("job_nope").await,
        Err(SchedulerError::UnknownJob(_))
    ));
    for bad in [
        "cron:0 0 31 2 *",
        "cron:0 6 * * * *",
        "cron:99 * * * *",
        "hourly",
    ] {
        let e = h
            .update_trigger(JOB_SWITCH_TO_AUTO, bad)
            .await
            .expect_err(bad);
        assert!(matches!(e, SchedulerError::Trigger(_)), "{bad}: {e}");
    }
    assert!(matches!(
        h.resume(JOB_SWITCH_TO_AUTO).await,
        Err(SchedulerError::NotPaused(_))
    ));
    assert_eq!(h.list().await, list, "refused edits change nothing");

    // Pause twice: second refused.
    let v = h.pause(JOB_SWITCH_TO_AUTO).await.expect("pause");
    assert!(v.paused && v.next_run_utc.is_none());
    assert!(matches!(
        h.pause(JOB_SWITCH_TO_AUTO).await,
        Err(SchedulerError::AlreadyPaused(_))
    ));
    let v = h.resume(JOB_SWITCH_TO_AUTO).await.expect("resume");
    assert_eq!(v.next_run_utc, Some(utc("2026-12-01T05:00:00Z")));

    // Edit the trigger: persisted, overridden, and it wins over the config after a restart.
    let v = h
        .update_trigger(JOB_SWITCH_TO_AUTO, "cron:30 7 * * 1-5")
        .await
        .expect("update");
    assert!(v.trigger_overridden);
    assert_eq!(v.next_run_utc, Some(utc("2026-12-01T06:30:00Z")));
    let preview = h
        .preview(JOB_SWITCH_TO_AUTO, utc("2026-12-04T12:00:00Z"), 2)
        .await
        .expect("preview");
    // Friday noon → Monday 07:30 CET, Tuesday 07:30.
    assert_eq!(
        preview,
        vec![utc("2026-12-07T06:30:00Z"), utc("2026-12-08T06:30:00Z")]
    );

    // Preview of a trigger text in another zone; unknown zones and bad patterns refused.
    let fires = h
        .preview_in(
            "cron:0 6 * * *",
            Some("Europe/Paris"),
            utc("2026-03-28T12:00:00Z"),
            3,
        )
        .await
        .expect("preview");
    assert_eq!(
        fires,
        vec![
            utc("2026-03-29T04:00:00Z"),
            utc("2026-03-30T04:00:00Z"),
            utc("2026-03-31T04:00:00Z")
        ]
    );
    let fires = h
        .preview_in(
            JOB_SWITCH_TO_MANUAL_NIGHT,
            Some("UTC"),
            utc("2026-03-28T12:00:00Z"),
            1,
        )
        .await
        .expect("preview");
    assert_eq!(fires, vec![utc("2026-03-28T22:00:00Z")]);
    assert!(matches!(
        h.preview_in(
            "cron:0 6 * * *",
            Some("Mars/Olympus"),
            utc("2026-03-28T12:00:00Z"),
            3
        )
        .await,
        Err(SchedulerError::Trigger(_))
    ));
    assert!(matches!(
        h.preview("job_nope", utc("2026-03-28T12:00:00Z"), 3).await,
        Err(SchedulerError::UnknownJob(_))
    ));

    // Run now: runs once at once, recorded.
    let run = h
        .run_now(JOB_SWITCH_TO_MANUAL_NIGHT)
        .await
        .expect("run now")
        .expect("a run");
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(
        rx.recv().await.map(|(j, _)| j).as_deref(),
        Some(JOB_SWITCH_TO_MANUAL_NIGHT)
    );
    s.shutdown(Duration::from_secs(5)).await;

    let s = init(SchedulerSettings::default()).await.expect("re-init");
    let h = s.handle();
    let auto = h
        .list()
        .await
        .into_iter()
        .find(|j| j.id == JOB_SWITCH_TO_AUTO)
        .expect("auto");
    assert_eq!(auto.trigger, "cron:30 7 * * 1-5");
    assert!(auto.trigger_overridden);
    let v = h.reset_trigger(JOB_SWITCH_TO_AUTO).await.expect("reset");
    assert_eq!(v.trigger, "cron:0 6 * * *");
    assert!(!v.trigger_overridden);
    let rows = store.jobs().await.expect("rows");
    let row = rows
        .iter()
        .find(|r| r.id == JOB_SWITCH_TO_AUTO)
        .expect("row");
    assert!(!row.trigger_overridden);
    assert_eq!(row.trigger, "cron:0 6 * * *");
    let runs = store
        .job_runs(Some(JOB_SWITCH_TO_MANUAL_NIGHT), 10)
        .await
        .expect("runs");
    assert_eq!(runs.len(), 1);
    s.shutdown(Duration::from_secs(5)).await;

    // A config change (not overridden) recomputes from now: no run, no miss.
    let settings = SchedulerSettings {
        auto_mode_start_hour: 5,
        ..Default::default()
    };
    let s = init(settings).await.expect("re-init");
    let auto = s
        .handle()
        .list()
        .await
        .into_iter()
        .find(|j| j.id == JOB_SWITCH_TO_AUTO)
        .expect("auto");
    assert_eq!(auto.trigger, "cron:0 5 * * *");
    assert_eq!(auto.next_run_utc, Some(utc("2026-12-01T04:00:00Z")));
}
