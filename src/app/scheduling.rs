//! The scheduling subsystem: the persisted scheduler with the standard jobs, leader election when
//! several bridges share PostgreSQL, and the reconciler (start-up reconciliation, then drift
//! checks) which only the leader runs. Touches the batteries only through the command service.

use std::sync::Arc;
use std::time::Duration;

use super::Deps;
use super::tasks::{StartupError, Tasks};
use crate::domain::{JobAction, NightPlanner};
use crate::scheduler::{
    Clock, JobDeps, Leadership, Reconciler, Scheduler, SchedulerHandle, SystemClock, spawn_leader,
    standard_jobs,
};
use crate::store::Backend;

/// The scheduler, built but not started, and its management handle.
pub struct Scheduling {
    /// The scheduler (started by [`Scheduling::start`], stopped by `run`).
    pub scheduler: Scheduler,
    /// Its management handle.
    pub jobs: SchedulerHandle,
    clock: Arc<dyn Clock>,
}

impl Scheduling {
    /// Loads the standard jobs and their stored state; nothing runs yet.
    pub async fn init(deps: &Deps<'_>) -> anyhow::Result<Self> {
        let (core, settings) = (deps.core, deps.settings);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let registry = standard_jobs(JobDeps {
            commands: core.commands.clone(),
            store: core.store.clone(),
            settings: settings.scheduler.clone(),
            planner: deps.tempo.cloned().map(|t| t as Arc<dyn NightPlanner>),
            tempo_check: deps.tempo.cloned().map(|t| t as Arc<dyn JobAction>),
            samples: core.samples.clone(),
            alerts: Some(deps.alerts.clone()),
        });
        let scheduler = Scheduler::init(
            settings.scheduler.clone(),
            core.store.clone(),
            registry,
            clock.clone(),
            Some(deps.alerts.clone()),
            settings.instance(),
        )
        .await
        .map_err(|e| StartupError(e.to_string()))?;
        let jobs = scheduler.handle();
        Ok(Self {
            scheduler,
            jobs,
            clock,
        })
    }

    /// Starts the scheduler (at once with SQLite, when leading with PostgreSQL: several bridges
    /// may share it) and the reconciler; returns the leadership to stop at shutdown.
    pub fn start(&self, deps: &Deps<'_>, tasks: &Tasks) -> Option<Leadership> {
        let leadership = match deps.core.store.backend() {
            Backend::Sqlite => {
                self.scheduler.start();
                None
            }
            Backend::Postgres | Backend::Timescale => {
                let leader = spawn_leader(
                    deps.core.store.clone(),
                    deps.settings.instance(),
                    deps.settings.scheduler.leader_ttl,
                );
                self.scheduler.start_with_leadership(leader.receiver());
                Some(leader)
            }
        };
        self.spawn_reconciler(deps, leadership.as_ref(), tasks);
        leadership
    }

    /// Once leading (or at once with SQLite): reconciles every battery with its intent, then
    /// checks for drift on every sample and every `reconcile_every`.
    fn spawn_reconciler(&self, deps: &Deps<'_>, leadership: Option<&Leadership>, tasks: &Tasks) {
        let core = deps.core;
        let mut reconciler = Reconciler::new(
            core.commands.clone(),
            core.store.clone(),
            deps.settings.scheduler.clone(),
            Some(deps.alerts.clone()),
            self.clock.clone(),
        );
        if let Some(t) = deps.tempo {
            reconciler = reconciler.with_planner(t.clone());
        }
        let reconciler = Arc::new(reconciler);
        let samples = core.samples.subscribe();
        let handle = self.jobs.clone();
        let tick: Duration = deps.derived.reconcile_every;
        let cancel = tasks.token().clone();
        let leading = leadership.map(Leadership::receiver);
        tasks.spawn(async move {
            // Only the leader (or the one SQLite instance) touches the batteries.
            if let Some(mut leading) = leading {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    r = leading.wait_for(|l| *l) => if r.is_err() { return },
                }
            }
            // A shutdown during start-up reconciliation ends it (a write to a stopping device
            // would otherwise hold the shutdown until its reply timeout).
            let outcomes = tokio::select! {
                () = cancel.cancelled() => return,
                o = reconciler.startup_from(&handle) => o,
            };
            tracing::info!(outcomes = %serde_json::Value::from(outcomes), "startup_reconciled");
            let _ = reconciler.spawn(samples, tick, cancel).await;
        });
    }
}
