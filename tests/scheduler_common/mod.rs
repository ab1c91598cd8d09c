//! Shared helpers of the scheduler suites (`scheduler_restarts`, `scheduler_management`,
//! `scheduler_failures`): a probe job action that records its runs, stores (SQLite temp file or
//! a fresh PostgreSQL database), a scheduler on an injected manual clock, and waits on the
//! scheduler's snapshot channel. Include with `mod support; mod scheduler_common;`. Touches only
//! the stores it is given.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use marstek_bridge::domain::{Alert, JobAction, JobContext};
use marstek_bridge::scheduler::{
    JOB_HEALTH_CHECK, JobRegistry, JobSettings, ManualClock, Scheduler, SchedulerHandle,
    SchedulerSettings,
};
use marstek_bridge::store::{self, DatabaseSettings, JobRecord, Store};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::support::TestPgDb;

pub const WAIT: Duration = Duration::from_secs(20);

pub fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test literal")
        .with_timezone(&Utc)
}

#[derive(Clone, Copy, PartialEq)]
pub enum Behaviour {
    Ok,
    Fail,
    Panic,
    /// Waits until released, ignoring cancellation (a job that overruns shutdown).
    Block,
    /// Waits until cancelled (a well-behaved long job).
    UntilCancelled,
}

/// A job action that records each run and reports it on a channel.
pub struct Probe {
    pub behaviour: Behaviour,
    pub runs: Mutex<Vec<DateTime<Utc>>>,
    pub tx: mpsc::UnboundedSender<(String, DateTime<Utc>)>,
    pub release: Notify,
}

impl Probe {
    pub fn new(
        behaviour: Behaviour,
        tx: mpsc::UnboundedSender<(String, DateTime<Utc>)>,
    ) -> Arc<Self> {
        Arc::new(Self {
            behaviour,
            runs: Mutex::new(Vec::new()),
            tx,
            release: Notify::new(),
        })
    }

    pub fn runs(&self) -> Vec<DateTime<Utc>> {
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

pub async fn sqlite_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    store::open(&DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("bridge.db").display()),
        ..Default::default()
    })
    .await
    .expect("sqlite store")
}

pub async fn pg_store(db: &TestPgDb) -> Arc<dyn Store> {
    db.open_store().await
}

pub fn registry(entries: &[(&str, Arc<Probe>)]) -> JobRegistry {
    entries
        .iter()
        .map(|(id, p)| (id.to_string(), p.clone() as Arc<dyn JobAction>))
        .collect::<BTreeMap<_, _>>()
}

/// A scheduler on `store` running `jobs` (id, probe) on `clock`, as instance `instance`.
pub async fn scheduler(
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

/// A started scheduler like [`scheduler`] (instance `inst-a`) that raises its alerts on the
/// returned channel.
pub async fn start_alerting(
    settings: SchedulerSettings,
    store: &Arc<dyn Store>,
    jobs: &[(&str, Arc<Probe>)],
    clock: &Arc<ManualClock>,
) -> (Scheduler, mpsc::UnboundedReceiver<Alert>) {
    let (alerts, rx) = mpsc::unbounded_channel();
    let s = Scheduler::init(
        settings,
        store.clone(),
        registry(jobs),
        clock.clone(),
        Some(alerts),
        "inst-a",
    )
    .await
    .expect("scheduler init");
    s.start();
    (s, rx)
}

/// A started scheduler (default settings) running the one job `id` with `probe`, as
/// `instance`.
pub async fn start_one(
    store: &Arc<dyn Store>,
    clock: &Arc<ManualClock>,
    (id, probe): (&str, &Arc<Probe>),
    instance: &str,
) -> Scheduler {
    let jobs = [(id, probe.clone())];
    let s = scheduler(SchedulerSettings::default(), store, &jobs, clock, instance).await;
    s.start();
    s
}

pub fn job_view<'a>(snapshot: &'a Value, id: &str) -> Option<&'a Value> {
    snapshot["jobs"]
        .as_array()
        .and_then(|a| a.iter().find(|j| j["id"] == id))
}

/// Waits until the snapshot shows `id` idle with `last_status == status` for `scheduled_for`.
pub async fn wait_status(
    h: &SchedulerHandle,
    id: &str,
    status: &str,
    scheduled_for: DateTime<Utc>,
) {
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
pub async fn wait_next_after(h: &SchedulerHandle, id: &str, t: DateTime<Utc>) {
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

pub async fn seed_job(store: &dyn Store, id: &str, trigger: &str, next: DateTime<Utc>) {
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

pub fn one_minute_settings() -> SchedulerSettings {
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
