//! The scheduler loop and its management handle. Loads or creates the job rows, sleeps until the
//! earliest `next_run_at` (or a change, or cancellation), applies the pure run decision, claims
//! each instant in the store before running it (so an instant runs at most once, across restarts
//! and instances), bounds concurrent runs with a semaphore, isolates failures and panics, records
//! every run, and publishes a schedule snapshot. Touches the `Store` (jobs, runs), the alert
//! channel and the job actions; nothing else.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Mutex, Notify, Semaphore, broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::clock::Clock;
use super::decision::{StartDecision, on_wake, start_decision};
use super::jobs::JobRegistry;
use super::settings::SchedulerSettings;
use super::trigger::{Trigger, parse_zone};
use super::{JOB_IDS, SchedulerError};
use crate::domain::{Alert, AlertKind, AlertSender, JobAction, JobContext, Severity};
use crate::store::{JobRecord, JobRunRecord, RunStatus, Store};

mod handle;
mod rows;

use rows::{first_fire, reconcile_row};

/// One job as shown by `list()` and in the retained schedule snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    /// Job id.
    pub id: String,
    /// Trigger text in force (`cron:0 6 * * *`, `interval:5m`).
    pub trigger: String,
    /// Whether the trigger was edited over MQTT/CLI (wins over the config until reset).
    pub trigger_overridden: bool,
    /// Enabled in the configuration.
    pub enabled: bool,
    /// Paused by a user.
    pub paused: bool,
    /// A run is in progress.
    pub running: bool,
    /// Next fire instant (UTC).
    pub next_run_utc: Option<DateTime<Utc>>,
    /// Next fire instant in the scheduler's zone (RFC 3339 with offset).
    pub next_run_local: Option<String>,
    /// Scheduled instant of the last run or miss (UTC).
    pub last_run_at: Option<DateTime<Utc>>,
    /// Status of the last run or miss.
    pub last_status: Option<RunStatus>,
    /// Error of the last run, when it failed or was missed (since this process started).
    pub last_error: Option<String>,
}

struct JobState {
    record: JobRecord,
    trigger: Trigger,
    config_trigger: Trigger,
    enabled: bool,
    running: bool,
    last_error: Option<String>,
}

/// Writes what the job's task ended with into `run` (completed with its result, or failed with
/// its error or panic message) and logs it once.
fn record_outcome(
    run: &mut JobRunRecord,
    joined: Result<anyhow::Result<serde_json::Value>, tokio::task::JoinError>,
    duration_ms: u64,
) {
    let (job_id, t) = (run.job_id.as_str(), run.scheduled_for);
    let err = match joined {
        Ok(Ok(value)) => {
            tracing::info!(job_id, scheduled_for = %t, duration_ms, "scheduled_job_completed");
            run.status = RunStatus::Completed;
            run.result = Some(value);
            return;
        }
        Ok(Err(e)) => format!("{e:#}"),
        Err(join) if join.is_panic() => {
            let p = join.into_panic();
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            format!("job panicked: {msg}")
        }
        Err(_) => "job task cancelled".to_string(),
    };
    tracing::error!(job_id, scheduled_for = %t, duration_ms, error = %err, "scheduled_job_failed");
    run.status = RunStatus::Failed;
    run.error = Some(err);
}

/// The state of job `id` at start-up: its configured trigger, and its row as stored (reconciled
/// with the configuration) or a new one first firing after `now`.
fn load_job(
    id: &str,
    settings: &SchedulerSettings,
    stored: Option<&JobRecord>,
    tz: Tz,
    now: DateTime<Utc>,
) -> Result<JobState, SchedulerError> {
    let config_trigger = match settings.trigger(id) {
        Some(t) => t?,
        None => return Err(SchedulerError::UnknownJob(id.to_string())),
    };
    let record = match stored {
        Some(row) => reconcile_row(row, &config_trigger, tz, now),
        None => JobRecord {
            id: id.to_string(),
            trigger: config_trigger.to_string(),
            trigger_overridden: false,
            next_run_at: first_fire(&config_trigger, now),
            paused: false,
            last_run_at: None,
            last_status: None,
        },
    };
    let trigger = Trigger::parse(&record.trigger, tz).unwrap_or(config_trigger.clone());
    Ok(JobState {
        record,
        trigger,
        config_trigger,
        enabled: settings.job_enabled(id),
        running: false,
        last_error: None,
    })
}

/// (job id, scheduled instant) of a run.
type RunKey = (String, DateTime<Utc>);
/// Runs in progress and when they started.
type InFlight = BTreeMap<RunKey, DateTime<Utc>>;

struct Inner {
    settings: SchedulerSettings,
    tz: Tz,
    store: Arc<dyn Store>,
    actions: JobRegistry,
    clock: Arc<dyn Clock>,
    alerts: Option<AlertSender>,
    instance: String,
    jobs: Mutex<BTreeMap<String, JobState>>,
    changed: Notify,
    workers: Arc<Semaphore>,
    tracker: TaskTracker,
    stop: CancellationToken,
    job_cancel: CancellationToken,
    in_flight: StdMutex<InFlight>,
    snapshot: watch::Sender<serde_json::Value>,
    finished: broadcast::Sender<JobRunRecord>,
}

/// Cheap-to-clone management API of a running scheduler (list, run now, pause, edit, preview).
#[derive(Clone)]
pub struct SchedulerHandle {
    inner: Arc<Inner>,
}

/// The persisted scheduler: `init`, then `start` (or `start_with_leadership`), then `shutdown`.
pub struct Scheduler {
    handle: SchedulerHandle,
    task: StdMutex<Option<JoinHandle<()>>>,
}

impl Scheduler {
    /// Loads or creates the job rows of every registered action. Job definitions come from the
    /// settings (fixed ids, per-job trigger overrides); a trigger edited over MQTT/CLI and
    /// persisted with `trigger_overridden` wins over the configuration until reset.
    pub async fn init(
        settings: SchedulerSettings,
        store: Arc<dyn Store>,
        actions: JobRegistry,
        clock: Arc<dyn Clock>,
        alerts: Option<AlertSender>,
        instance: impl Into<String>,
    ) -> Result<Self, SchedulerError> {
        if let Some((key, why)) = settings.validate().into_iter().next() {
            return Err(SchedulerError::Settings(format!("scheduler.{key}: {why}")));
        }
        let tz = parse_zone(&settings.timezone)?;
        let now = clock.now();
        let stored: BTreeMap<String, JobRecord> = store
            .jobs()
            .await?
            .into_iter()
            .map(|j| (j.id.clone(), j))
            .collect();
        let mut jobs = BTreeMap::new();
        for id in actions.keys() {
            let state = load_job(id, &settings, stored.get(id), tz, now)?;
            if stored.get(id) != Some(&state.record) {
                store.upsert_job(&state.record).await?;
            }
            tracing::info!(
                job_id = %id,
                trigger = %state.record.trigger,
                next_run_at = ?state.record.next_run_at,
                enabled = state.enabled,
                "scheduled_job_loaded"
            );
            jobs.insert(id.clone(), state);
        }
        let workers = Arc::new(Semaphore::new(settings.max_workers.max(1)));
        let (snapshot, _) = watch::channel(serde_json::Value::Null);
        let (finished, _) = broadcast::channel(64);
        let inner = Arc::new(Inner {
            settings,
            tz,
            store,
            actions,
            clock,
            alerts,
            instance: instance.into(),
            jobs: Mutex::new(jobs),
            changed: Notify::new(),
            workers,
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            job_cancel: CancellationToken::new(),
            in_flight: StdMutex::new(BTreeMap::new()),
            snapshot,
            finished,
        });
        inner.publish().await;
        Ok(Self {
            handle: SchedulerHandle { inner },
            task: StdMutex::new(None),
        })
    }

    /// The management handle.
    pub fn handle(&self) -> SchedulerHandle {
        self.handle.clone()
    }

    /// Spawns the loop (this instance always leads: SQLite, single bridge).
    pub fn start(&self) {
        self.spawn(None);
    }

    /// Spawns the loop, ticking only while `leading` is true (several bridges on PostgreSQL).
    pub fn start_with_leadership(&self, leading: watch::Receiver<bool>) {
        self.spawn(Some(leading));
    }

    fn spawn(&self, leading: Option<watch::Receiver<bool>>) {
        let inner = self.handle.inner.clone();
        let task = tokio::spawn(inner.run_loop(leading));
        if let Ok(mut slot) = self.task.lock()
            && let Some(old) = slot.replace(task)
        {
            old.abort();
        }
    }

    /// Stops the loop, signals running jobs (`JobContext::cancel`) and lets them finish within
    /// `timeout`; runs still going then are recorded as failed ("interrupted by shutdown").
    /// Returns how many were cut off.
    pub async fn shutdown(&self, timeout: Duration) -> usize {
        let inner = &self.handle.inner;
        inner.stop.cancel();
        inner.job_cancel.cancel();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        inner.tracker.close();
        if tokio::time::timeout(timeout, inner.tracker.wait())
            .await
            .is_ok()
        {
            tracing::info!("scheduler_stopped");
            return 0;
        }
        // Taking them out of `in_flight` tells a run that ends later not to overwrite this.
        let left: Vec<(RunKey, DateTime<Utc>)> = inner
            .in_flight
            .lock()
            .map(|mut m| std::mem::take(&mut *m).into_iter().collect())
            .unwrap_or_default();
        for ((job_id, scheduled_for), started_at) in &left {
            tracing::warn!(job_id = %job_id, scheduled_for = %scheduled_for, "scheduled_job_interrupted");
            let run = JobRunRecord::started(job_id, *scheduled_for, &inner.instance, *started_at)
                .failed(inner.clock.now(), "interrupted by shutdown".into());
            if let Err(e) = inner.store.finish_run(&run).await {
                tracing::warn!(job_id = %job_id, error = %e, "job_run_not_saved");
            }
        }
        tracing::info!(interrupted = left.len(), "scheduler_stopped");
        left.len()
    }
}

async fn next_change(rx: &mut Option<watch::Receiver<bool>>) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

impl Inner {
    async fn run_loop(self: Arc<Self>, mut leading: Option<watch::Receiver<bool>>) {
        tracing::info!(instance = %self.instance, "scheduler_started");
        loop {
            // A closed leadership channel (leader task gone) means not leading.
            let is_leader = leading
                .as_ref()
                .is_none_or(|rx| *rx.borrow() && rx.has_changed().is_ok());
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = if is_leader {
                self.tick().await;
                self.earliest_next().await
            } else {
                None
            };
            let clock = self.clock.clone();
            let sleep = async move {
                match next {
                    Some(t) => clock.sleep_until(t).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = notified => {}
                _ = sleep => {}
                _ = next_change(&mut leading) => {
                    let now_leading = leading.as_ref().is_none_or(|rx| *rx.borrow());
                    tracing::info!(instance = %self.instance, leading = now_leading, "scheduler_leadership_changed");
                }
            }
        }
        tracing::info!(instance = %self.instance, "scheduler_loop_stopped");
    }

    async fn earliest_next(&self) -> Option<DateTime<Utc>> {
        let jobs = self.jobs.lock().await;
        jobs.values()
            .filter(|j| j.enabled && !j.record.paused)
            .filter_map(|j| j.record.next_run_at)
            .min()
    }

    /// One wake-up: applies the run decision to every due job.
    async fn tick(self: &Arc<Self>) {
        let now = self.clock.now();
        let mut persist = Vec::new();
        let mut skipped = Vec::new();
        let mut submit = Vec::new();
        {
            let mut jobs = self.jobs.lock().await;
            for (id, st) in jobs.iter_mut() {
                if !st.enabled || st.record.paused {
                    continue;
                }
                let Some(next) = st.record.next_run_at else {
                    continue;
                };
                let Some(out) = on_wake(&st.trigger, next, now, self.settings.coalesce, st.running)
                else {
                    continue;
                };
                if out.coalesced > 0 {
                    tracing::info!(job_id = %id, coalesced = out.coalesced, "scheduled_job_coalesced");
                }
                st.record.next_run_at = out.next_run_at;
                for t in out.skipped {
                    st.record.last_run_at = Some(t);
                    st.record.last_status = Some(RunStatus::Skipped);
                    skipped.push((id.clone(), t));
                }
                if !out.submit.is_empty() {
                    st.running = true;
                    submit.push((id.clone(), out.submit));
                }
                persist.push(st.record.clone());
            }
        }
        for (id, t) in skipped {
            tracing::warn!(job_id = %id, scheduled_for = %t, "scheduled_job_skipped");
            let run = JobRunRecord::not_run(
                &id,
                t,
                &self.instance,
                RunStatus::Skipped,
                now,
                "previous run still going (max_instances 1)".into(),
            );
            if let Err(e) = self.store.claim_run(&run).await {
                tracing::warn!(job_id = %id, error = %e, "job_run_not_saved");
            }
        }
        for rec in &persist {
            if let Err(e) = self.store.upsert_job(rec).await {
                tracing::warn!(job_id = %rec.id, error = %e, "job_not_saved");
            }
        }
        for (id, times) in submit {
            let me = self.clone();
            self.tracker
                .spawn(async move { me.run_submission(id, times, false).await });
        }
        if !persist.is_empty() {
            self.publish().await;
        }
    }

    /// Runs the listed times of one job back to back in one worker; the grace check is made as
    /// each time starts (queueing counts), unless `run_now`.
    async fn run_submission(
        self: Arc<Self>,
        job_id: String,
        times: Vec<DateTime<Utc>>,
        run_now: bool,
    ) -> Option<JobRunRecord> {
        let permit = self.workers.clone().acquire_owned().await.ok();
        let mut last = None;
        for t in times {
            if self.stop.is_cancelled() && !run_now {
                // Queued behind busy workers when shutdown began: not started, not claimed.
                tracing::warn!(job_id = %job_id, scheduled_for = %t, "scheduled_job_not_started_shutdown");
                continue;
            }
            let started = self.clock.now();
            let decision = if run_now {
                StartDecision::Run
            } else {
                start_decision(t, started, self.settings.misfire_grace_time)
            };
            let outcome = match decision {
                StartDecision::Missed { late } => self.record_missed(&job_id, t, late).await,
                StartDecision::Run => self.run_once(&job_id, t, started, run_now).await,
            };
            if let Some(run) = outcome {
                // No subscriber is fine.
                let _ = self.finished.send(run.clone());
                let mut jobs = self.jobs.lock().await;
                if let Some(st) = jobs.get_mut(&job_id) {
                    st.record.last_run_at = Some(run.scheduled_for);
                    st.record.last_status = Some(run.status);
                    st.last_error = run.error.clone();
                }
                last = Some(run);
            }
        }
        drop(permit);
        let record = {
            let mut jobs = self.jobs.lock().await;
            jobs.get_mut(&job_id).map(|st| {
                st.running = false;
                st.record.clone()
            })
        };
        if let Some(rec) = record
            && let Err(e) = self.store.upsert_job(&rec).await
        {
            tracing::warn!(job_id = %job_id, error = %e, "job_not_saved");
        }
        self.publish().await;
        self.changed.notify_one();
        last
    }

    async fn record_missed(
        &self,
        job_id: &str,
        t: DateTime<Utc>,
        late: Duration,
    ) -> Option<JobRunRecord> {
        let now = self.clock.now();
        let why = format!(
            "missed by {} (misfire_grace_time {})",
            humantime::format_duration(Duration::from_secs(late.as_secs())),
            humantime::format_duration(self.settings.misfire_grace_time)
        );
        let run = JobRunRecord::not_run(job_id, t, &self.instance, RunStatus::Missed, now, why);
        match self.store.claim_run(&run).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(job_id, scheduled_for = %t, "scheduled_job_already_recorded");
                return None;
            }
            Err(e) => {
                tracing::warn!(job_id, error = %e, "job_run_not_saved");
            }
        }
        tracing::warn!(job_id, scheduled_for = %t, late_s = late.as_secs(), "scheduled_job_missed");
        self.alert(
            AlertKind::JobMissed,
            format!(
                "{job_id} scheduled for {} was missed by {}",
                t.with_timezone(&self.tz).to_rfc3339(),
                humantime::format_duration(Duration::from_secs(late.as_secs()))
            ),
        );
        Some(run)
    }

    async fn run_once(
        &self,
        job_id: &str,
        t: DateTime<Utc>,
        started: DateTime<Utc>,
        manual: bool,
    ) -> Option<JobRunRecord> {
        let action = self.actions.get(job_id).cloned()?;
        let mut run = JobRunRecord::started(job_id, t, &self.instance, started);
        if !self.claim(&mut run, manual).await {
            return None;
        }
        let t = run.scheduled_for;
        tracing::info!(job_id, scheduled_for = %t, "scheduled_job_started");
        if let Ok(mut m) = self.in_flight.lock() {
            m.insert((job_id.to_string(), t), started);
        }
        let ctx = JobContext {
            job_id: job_id.to_string(),
            scheduled_for: t,
            started_at: started,
            cancel: self.job_cancel.child_token(),
        };
        let clock_start = Instant::now();
        let joined = tokio::spawn(run_action(action, ctx)).await;
        let duration_ms = clock_start.elapsed().as_millis() as u64;
        let still_ours = self
            .in_flight
            .lock()
            .map(|mut m| m.remove(&(job_id.to_string(), t)).is_some())
            .unwrap_or(true);
        run.finished_at = Some(self.clock.now());
        record_outcome(&mut run, joined, duration_ms);
        if run.status == RunStatus::Failed {
            self.alert(
                AlertKind::JobFailed,
                format!(
                    "{job_id} failed: {}",
                    run.error.as_deref().unwrap_or_default()
                ),
            );
        }
        if !still_ours {
            // Shutdown already recorded it as interrupted.
            return Some(run);
        }
        if let Err(e) = self.store.finish_run(&run).await {
            tracing::warn!(job_id, error = %e, "job_run_not_saved");
        }
        Some(run)
    }

    /// Claims `run`'s instant in the store (a run-now takes the next free millisecond on a
    /// clash); false when another run holds it or the claim could not be made.
    async fn claim(&self, run: &mut JobRunRecord, manual: bool) -> bool {
        let mut claimed = self.store.claim_run(run).await;
        // A run-now instant is not a schedule slot: on a clash (two requests in the same
        // millisecond, or a frozen test clock) take the next free millisecond.
        let mut tries = 0;
        while manual && matches!(claimed, Ok(false)) && tries < 1000 {
            tries += 1;
            run.scheduled_for += chrono::TimeDelta::milliseconds(1);
            claimed = self.store.claim_run(run).await;
        }
        let (job_id, t) = (run.job_id.as_str(), run.scheduled_for);
        match claimed {
            Ok(true) => true,
            Ok(false) => {
                tracing::info!(job_id, scheduled_for = %t, "scheduled_job_already_claimed");
                false
            }
            Err(e) => {
                // Without a claim the instant could run twice; the reconciler covers modes.
                tracing::warn!(job_id, scheduled_for = %t, error = %e, "scheduled_job_claim_failed");
                false
            }
        }
    }

    fn alert(&self, kind: AlertKind, message: String) {
        if let Some(tx) = &self.alerts {
            let _ = tx.send(Alert::raised(
                kind,
                Severity::Warning,
                None,
                message,
                self.clock.now(),
            ));
        }
    }

    fn view(&self, id: &str, st: &JobState) -> JobView {
        let next = if st.enabled {
            st.record.next_run_at
        } else {
            None
        };
        JobView {
            id: id.to_string(),
            trigger: st.trigger.to_string(),
            trigger_overridden: st.record.trigger_overridden,
            enabled: st.enabled,
            paused: st.record.paused,
            running: st.running,
            next_run_utc: next,
            next_run_local: next.map(|t| t.with_timezone(&self.tz).to_rfc3339()),
            last_run_at: st.record.last_run_at,
            last_status: st.record.last_status,
            last_error: st.last_error.clone(),
        }
    }

    async fn list(&self) -> Vec<JobView> {
        let jobs = self.jobs.lock().await;
        jobs.iter().map(|(id, st)| self.view(id, st)).collect()
    }

    async fn publish(&self) {
        let jobs = self.list().await;
        let doc = json!({
            "timezone": self.tz.name(),
            "instance": self.instance,
            "updated_at": self.clock.now(),
            "jobs": jobs,
        });
        self.snapshot.send_replace(doc);
    }

    /// Applies `f` to a job's state under the lock, persists the row and wakes the loop.
    async fn edit<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut JobState, DateTime<Utc>) -> Result<T, SchedulerError>,
    ) -> Result<T, SchedulerError> {
        let now = self.clock.now();
        let (out, rec) = {
            let mut jobs = self.jobs.lock().await;
            let st = jobs
                .get_mut(id)
                .ok_or_else(|| SchedulerError::UnknownJob(id.to_string()))?;
            let before = st.record.clone();
            let out = f(st, now)?;
            if let Err(e) = self.store.upsert_job(&st.record).await {
                st.record = before;
                return Err(e.into());
            }
            (out, st.record.clone())
        };
        tracing::info!(job_id = %id, trigger = %rec.trigger, paused = rec.paused, next_run_at = ?rec.next_run_at, "scheduled_job_updated");
        self.publish().await;
        self.changed.notify_one();
        Ok(out)
    }
}

async fn run_action(
    action: Arc<dyn JobAction>,
    ctx: JobContext,
) -> anyhow::Result<serde_json::Value> {
    action.run(ctx).await
}
