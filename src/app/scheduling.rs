//! The scheduling subsystem: the persisted scheduler with the standard jobs, leader election per
//! site when several bridges share PostgreSQL (the lease `site:<site_id>`; the command service's
//! role follows it, so a standby refuses writes, and `marstek_leader` says it), and the
//! reconciler (start-up reconciliation, then drift checks) which only the leader runs. Touches
//! the batteries only through the command service.

use std::sync::Arc;
use std::time::Duration;

use super::Deps;
use super::tasks::{StartupError, Tasks};
use crate::control::RoleState;
use crate::domain::{JobAction, NightPlanner};
use crate::scheduler::{
    Clock, JobDeps, Leadership, Reconciler, Scheduler, SchedulerHandle, SystemClock, site_lease,
    spawn_leader, standard_jobs,
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
                    site_lease(&deps.settings.site_id()),
                    deps.settings.instance(),
                    deps.settings.scheduler.leader_ttl,
                );
                self.scheduler.start_with_leadership(leader.receiver());
                follow_leadership(deps, &leader, tasks);
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

/// Keeps the command service's role on the leadership: leading, or a standby naming the holder
/// of the site's lease.
fn follow_leadership(deps: &Deps<'_>, leader: &Leadership, tasks: &Tasks) {
    let role = deps.core.commands.role().clone();
    let (mut leading, mut holder) = (leader.receiver(), leader.holder());
    let cancel = tasks.token().clone();
    tasks.spawn(async move {
        loop {
            let state = RoleState {
                leading: *leading.borrow_and_update(),
                leader: holder.borrow_and_update().clone(),
            };
            if role.set(state.clone()) {
                tracing::info!(role = state.name(), leader = ?state.leader, "site_role");
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                r = leading.changed() => if r.is_err() { break },
                r = holder.changed() => if r.is_err() { break },
            }
        }
        // The leadership loop ended (stopped or aborted): this bridge leads no more.
        role.set(RoleState {
            leading: false,
            leader: None,
        });
    });
}

/// Waits (at most `within`) until the first lease attempt has given this bridge a role: leader,
/// or standby of a known leader. Commands arriving before are refused as from a standby.
pub async fn settle_role(deps: &Deps<'_>, within: Duration) {
    let mut role = deps.core.commands.role().subscribe();
    let settled = role.wait_for(|r| r.leading || r.leader.is_some());
    if tokio::time::timeout(within, settled).await.is_err() {
        tracing::warn!(waited = ?within, "site_role_unsettled: no lease decision yet");
    }
}

/// Publishes the role in `bridge/info` and as the `marstek_leader` gauge (1 leading, 0 standby)
/// at start and on every change.
pub fn spawn_role_publisher(deps: &Deps<'_>, mqtt: &crate::mqtt::MqttHandle, tasks: &Tasks) {
    let mut role = deps.core.commands.role().subscribe();
    let (mqtt, cancel) = (mqtt.clone(), tasks.token().clone());
    tasks.spawn(async move {
        loop {
            let state = role.borrow_and_update().clone();
            metrics::gauge!("marstek_leader").set(if state.leading { 1.0 } else { 0.0 });
            mqtt.publish_role(&state);
            tokio::select! {
                () = cancel.cancelled() => return,
                r = role.changed() => if r.is_err() { return },
            }
        }
    });
}
