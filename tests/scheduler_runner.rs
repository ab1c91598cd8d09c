//! The scheduler against real stores (SQLite temp file, a fresh PostgreSQL database per test) with
//! an injected manual clock: restart cases (3 min late → runs once; 10 min late → missed, not
//! run), exactly-once across restarts and across two instances, the management API, failure and
//! panic isolation, shutdown, and leadership hand-over.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use marstek_bridge::domain::{AlertKind, JobAction, JobContext};
use marstek_bridge::scheduler::{
    Clock, JOB_HEALTH_CHECK, JOB_MONITOR_BATTERIES, JOB_SWITCH_TO_AUTO, JOB_SWITCH_TO_MANUAL_NIGHT,
    JobRegistry, JobSettings, ManualClock, ScheduledMode, Scheduler, SchedulerError,
    SchedulerHandle, SchedulerSettings, Trigger, mode_in_force, spawn_leader,
};
use marstek_bridge::store::{self, DatabaseSettings, JobRecord, RunStatus, Store};
use serde_json::{Value, json};
use support::TestPgDb;
use tokio::sync::{Notify, mpsc};

const WAIT: Duration = Duration::from_secs(20);

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test literal")
        .with_timezone(&Utc)
}

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Ok,
    Fail,
    Panic,
    /// Waits until released, ignoring cancellation (a job that overruns shutdown).
    Block,
    /// Waits until cancelled (a well-behaved long job).
    UntilCancelled,
}

/// A job action that records each run and reports it on a channel.
struct Probe {
    behaviour: Behaviour,
    runs: Mutex<Vec<DateTime<Utc>>>,
    tx: mpsc::UnboundedSender<(String, DateTime<Utc>)>,
    release: Notify,
}

impl Probe {
    fn new(behaviour: Behaviour, tx: mpsc::UnboundedSender<(String, DateTime<Utc>)>) -> Arc<Self> {
        Arc::new(Self {
            behaviour,
            runs: Mutex::new(Vec::new()),
            tx,
            release: Notify::new(),
        })
    }

    fn runs(&self) -> Vec<DateTime<Utc>> {
        self.runs.lock().expect("probe lock").clone()
    }
}

#[async_trait::async_trait]
impl JobAction for Probe {
    async fn run(&self, ctx: JobContext) -> anyhow::Result<Value> {
        self.runs
            .lock()
            .expect("probe lock")
            .push(ctx.scheduled_for);
        let _ = self.tx.send((ctx.job_id.clone(), ctx.scheduled_for));
        match self.behaviour {
            Behaviour::Ok => Ok(json!({ "ok": true })),
            Behaviour::Fail => Err(anyhow::anyhow!("device said no").context("probe failed")),
            Behaviour::Panic => panic!("probe panicked on purpose"),
            Behaviour::Block => {
                self.release.notified().await;
                Ok(json!({ "released": true }))
            }
            Behaviour::UntilCancelled => {
                ctx.cancel.cancelled().await;
                Err(anyhow::anyhow!("stopped early: shutting down"))
            }
        }
    }
}

async fn sqlite_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    store::open(&DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("bridge.db").display()),
        ..Default::default()
    })
    .await
    .expect("sqlite store")
}

async fn pg_store(db: &TestPgDb) -> Arc<dyn Store> {
    db.open_store().await
}

fn registry(entries: &[(&str, Arc<Probe>)]) -> JobRegistry {
    entries
        .iter()
        .map(|(id, p)| (id.to_string(), p.clone() as Arc<dyn JobAction>))
        .collect::<BTreeMap<_, _>>()
}

/// A scheduler on `store` running `jobs` (id, probe) on `clock`, as instance `instance`.
async fn scheduler(
    settings: SchedulerSettings,
    store: &Arc<dyn Store>,
    jobs: &[(&str, Arc<Probe>)],
    clock: &Arc<ManualClock>,
    instance: &str,
) -> Scheduler {
    Scheduler::init(
        settings,
        store.clone(),
        registry(jobs),
        clock.clone(),
        None,
        instance,
    )
    .await
    .expect("scheduler init")
}

fn job_view<'a>(snapshot: &'a Value, id: &str) -> Option<&'a Value> {
    snapshot["jobs"]
        .as_array()
        .and_then(|a| a.iter().find(|j| j["id"] == id))
}

/// Waits until the snapshot shows `id` idle with `last_status == status` for `scheduled_for`.
async fn wait_status(h: &SchedulerHandle, id: &str, status: &str, scheduled_for: DateTime<Utc>) {
    let mut rx = h.subscribe();
    let want = json!(scheduled_for);
    tokio::time::timeout(
        WAIT,
        rx.wait_for(|v| {
            job_view(v, id).is_some_and(|j| {
                j["last_status"] == status && j["last_run_at"] == want && j["running"] == false
            })
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("{id} never reached {status} for {scheduled_for}"))
    .expect("snapshot channel open");
}

/// Waits until the snapshot shows `id` idle with its next run strictly after `t`.
async fn wait_next_after(h: &SchedulerHandle, id: &str, t: DateTime<Utc>) {
    let mut rx = h.subscribe();
    tokio::time::timeout(
        WAIT,
        rx.wait_for(|v| {
            job_view(v, id)
                .filter(|j| j["running"] == false)
                .and_then(|j| j["next_run_utc"].as_str())
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .is_some_and(|n| n > t)
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("{id} never moved past {t}"))
    .expect("snapshot channel open");
}

async fn seed_job(store: &dyn Store, id: &str, trigger: &str, next: DateTime<Utc>) {
    store
        .upsert_job(&JobRecord {
            id: id.into(),
            trigger: trigger.into(),
            trigger_overridden: false,
            next_run_at: Some(next),
            paused: false,
            last_run_at: None,
            last_status: None,
        })
        .await
        .expect("seed job");
}

async fn late_three_minutes_runs_once(store: Arc<dyn Store>) {
    let six = utc("2026-11-30T05:00:00Z"); // 06:00 CET
    seed_job(store.as_ref(), JOB_SWITCH_TO_AUTO, "cron:0 6 * * *", six).await;
    let clock = Arc::new(ManualClock::new(utc("2026-11-30T05:03:00Z")));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let probe = Probe::new(Behaviour::Ok, tx.clone());
    let s = scheduler(
        SchedulerSettings::default(),
        &store,
        &[(JOB_SWITCH_TO_AUTO, probe.clone())],
        &clock,
        "inst-a",
    )
    .await;
    s.start();
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
    let s = scheduler(
        SchedulerSettings::default(),
        &store,
        &[(JOB_SWITCH_TO_AUTO, probe.clone())],
        &clock,
        "inst-b",
    )
    .await;
    s.start();
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
    let (alerts, mut alert_rx) = mpsc::unbounded_channel();
    let s = Scheduler::init(
        SchedulerSettings::default(),
        store.clone(),
        registry(&[(JOB_SWITCH_TO_AUTO, probe.clone())]),
        clock.clone(),
        Some(alerts),
        "inst-a",
    )
    .await
    .expect("init");
    s.start();
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

fn one_minute_settings() -> SchedulerSettings {
    let mut s = SchedulerSettings::default();
    s.jobs.insert(
        JOB_HEALTH_CHECK.into(),
        JobSettings {
            trigger: Some("interval:1m".into()),
            enabled: true,
        },
    );
    s
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
    let a = scheduler(
        one_minute_settings(),
        &store_a,
        &[(JOB_HEALTH_CHECK, probe.clone())],
        &clock,
        "inst-a",
    )
    .await;
    let b = scheduler(
        one_minute_settings(),
        &store_b,
        &[(JOB_HEALTH_CHECK, probe.clone())],
        &clock,
        "inst-b",
    )
    .await;
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
    let la = spawn_leader(store_a.clone(), "inst-a", bound);
    let mut a_rx = la.receiver();
    tokio::time::timeout(WAIT, a_rx.wait_for(|l| *l))
        .await
        .expect("a leads")
        .expect("open");
    let lb = spawn_leader(store_b.clone(), "inst-b", bound);
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
    let lc = spawn_leader(store_a.clone(), "inst-c", bound);
    lb.stop().await;
    let mut c_rx = lc.receiver();
    tokio::time::timeout(bound, c_rx.wait_for(|l| *l))
        .await
        .expect("c takes over after b resigned")
        .expect("open");
    sb.shutdown(Duration::from_secs(5)).await;
    lc.stop().await;
}

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
    let s = Scheduler::init(
        SchedulerSettings::default(),
        store.clone(),
        reg.clone(),
        clock.clone(),
        None,
        "inst-a",
    )
    .await
    .expect("init");
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

    let s = Scheduler::init(
        SchedulerSettings::default(),
        store.clone(),
        reg.clone(),
        clock.clone(),
        None,
        "inst-a",
    )
    .await
    .expect("re-init");
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
    let s = Scheduler::init(settings, store.clone(), reg, clock.clone(), None, "inst-a")
        .await
        .expect("re-init");
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
    let (alerts, mut alert_rx) = mpsc::unbounded_channel();
    let failing = Probe::new(Behaviour::Fail, tx.clone());
    let panicking = Probe::new(Behaviour::Panic, tx.clone());
    let fine = Probe::new(Behaviour::Ok, tx.clone());
    let mut settings = SchedulerSettings::default();
    // The seeded rows keep their triggers only when they match the config.
    settings.jobs.insert(
        JOB_HEALTH_CHECK.into(),
        JobSettings {
            trigger: Some("interval:1m".into()),
            enabled: true,
        },
    );
    let s = Scheduler::init(
        settings,
        store.clone(),
        registry(&[
            (JOB_SWITCH_TO_AUTO, failing.clone()),
            (JOB_SWITCH_TO_MANUAL_NIGHT, panicking.clone()),
            (JOB_HEALTH_CHECK, fine.clone()),
        ]),
        clock.clone(),
        Some(alerts),
        "inst-a",
    )
    .await
    .expect("init");
    s.start();
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

#[tokio::test]
async fn running_job_is_skipped_and_shutdown_records_interrupted_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite_store(&dir).await;
    let now = utc("2026-11-30T10:00:00Z");
    seed_job(store.as_ref(), JOB_MONITOR_BATTERIES, "interval:5m", now).await;
    let clock = Arc::new(ManualClock::new(now));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let blocking = Probe::new(Behaviour::Block, tx);
    let s = scheduler(
        SchedulerSettings::default(),
        &store,
        &[(JOB_MONITOR_BATTERIES, blocking.clone())],
        &clock,
        "inst-a",
    )
    .await;
    s.start();
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
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite_store(&dir).await;
    let now = utc("2026-11-30T10:00:00Z");
    seed_job(store.as_ref(), JOB_MONITOR_BATTERIES, "interval:5m", now).await;
    let clock = Arc::new(ManualClock::new(now));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let probe = Probe::new(Behaviour::UntilCancelled, tx);
    let s = scheduler(
        SchedulerSettings::default(),
        &store,
        &[(JOB_MONITOR_BATTERIES, probe)],
        &clock,
        "inst-a",
    )
    .await;
    s.start();
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
