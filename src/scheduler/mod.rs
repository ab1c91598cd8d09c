//! Persisted scheduler: cron/interval triggers in a configured zone, APScheduler-style misfire and
//! coalesce rules, bounded workers, the five jobs, desired-state reconciliation and leadership.
//!
//! Touches the `Store` (job rows, runs, desired state, leader lease), the fleet through
//! `control::CommandService` (the one command path), the sample broadcast and the alert channel.
//! It never talks MQTT or SQL itself: the app wires the schedule snapshot and health JSON out.
//!
//! Wiring (app): build `standard_jobs(JobDeps { .. })` (the Tempo service is both `tempo_check`
//! and `planner`), `Scheduler::init(settings, store, jobs, Arc::new(SystemClock), alerts,
//! instance)`, then on SQLite `start()`, on PostgreSQL `spawn_leader(store, site_lease(site), instance,
//! settings.leader_ttl)` and `start_with_leadership(leadership.receiver())`. When leading, run
//! `Reconciler::startup_from(&handle)` and `Arc::new(reconciler).spawn(samples.subscribe(), 15s,
//! cancel)`. Publish `handle.subscribe()` retained on `<base>/bridge/schedule` and the
//! `job_health_check` results from `handle.subscribe_runs()` on `<base>/bridge/health`. At exit:
//! `scheduler.shutdown(bound)`, then `leadership.stop()` (resigns the lease).
//!
//! DST (croner 4.0.3, where it differs from APScheduler 3.11): a fixed-time job inside the
//! spring gap (e.g. 02:30 on 2026-03-29 in Paris) runs at 03:00, the first instant after the
//! gap (APScheduler: 03:30); a fixed-time job inside the fall-back hour (02:00–02:59 on
//! 2026-10-25) runs once, on the first pass (APScheduler: twice). The standard 06:00, 11:30 and
//! 22:00 jobs are unaffected; wildcard/step patterns run in both passes like APScheduler.

pub mod clock;
pub mod decision;
pub mod jobs;
pub mod leader;
pub mod preview;
pub mod reconcile;
pub mod runner;
pub mod settings;
pub mod trigger;

pub use clock::{Clock, ManualClock, SystemClock};
pub use decision::{StartDecision, WakeOutcome, on_wake, start_decision};
pub use jobs::{JobDeps, JobRegistry, standard_jobs};
pub use leader::{Leadership, site_lease, spawn_leader};
pub use preview::{PreviewArgs, preview_command};
pub use reconcile::{Reconciler, ScheduledMode, mode_in_force};
pub use runner::{JobView, Scheduler, SchedulerHandle};
pub use settings::{JobSettings, SchedulerSettings};
pub use trigger::{Trigger, TriggerError};

use crate::store::StoreError;

/// Fixed id of the 06:00 job (every battery → AUTO).
pub const JOB_SWITCH_TO_AUTO: &str = "job_switch_to_auto";
/// Fixed id of the 22:00 job (every battery → MANUAL idle, or tonight's precharge plan).
pub const JOB_SWITCH_TO_MANUAL_NIGHT: &str = "job_switch_to_manual_night";
/// Fixed id of the 11:30 Tempo check (action provided by the `tempo` module).
pub const JOB_CHECK_TEMPO_TOMORROW: &str = "job_check_tempo_tomorrow";
/// Fixed id of the 5-minute monitoring job.
pub const JOB_MONITOR_BATTERIES: &str = "job_monitor_batteries";
/// Fixed id of the 1-minute health check.
pub const JOB_HEALTH_CHECK: &str = "job_health_check";
/// Every standard job id, in display order.
pub const JOB_IDS: [&str; 5] = [
    JOB_SWITCH_TO_AUTO,
    JOB_SWITCH_TO_MANUAL_NIGHT,
    JOB_CHECK_TEMPO_TOMORROW,
    JOB_MONITOR_BATTERIES,
    JOB_HEALTH_CHECK,
];

/// Why a scheduler operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// No job with that id.
    #[error("unknown job '{0}' (known: {known})", known = JOB_IDS.join(", "))]
    UnknownJob(String),
    /// The trigger text (or zone) is not usable.
    #[error(transparent)]
    Trigger(#[from] TriggerError),
    /// Pausing a paused job.
    #[error("job '{0}' is already paused")]
    AlreadyPaused(String),
    /// Resuming a job that is not paused.
    #[error("job '{0}' is not paused")]
    NotPaused(String),
    /// The job is disabled in the configuration.
    #[error("job '{0}' is disabled in the configuration ([scheduler.jobs.{0}] enabled = false)")]
    Disabled(String),
    /// The job is running now (max_instances 1).
    #[error("job '{0}' is already running")]
    AlreadyRunning(String),
    /// The settings are invalid (key path and reason).
    #[error("invalid scheduler settings: {0}")]
    Settings(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A command-line or request argument is not usable.
    #[error("{0}")]
    InvalidArgument(String),
    /// The scheduler is shutting down.
    #[error("the scheduler is shutting down")]
    ShuttingDown,
}
