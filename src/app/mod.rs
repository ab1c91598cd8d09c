//! The only place that wires the bridge together. [`start`] is the builder: it brings up each
//! subsystem in order, each one a `spawn(deps, &tasks)` returning its handle, every task under
//! one `CancellationToken` + `TaskTracker` ([`Tasks`]). [`run`] adds the orderly shutdown: a core
//! task that ends on its own is logged with its cause chain and makes `run` fail, so a supervisor
//! restarts us.
//!
//! Subsystems, in start order: [`core`] (store, batteries, commands, presence, writer), the
//! store-and-forward task (when `[central] url` is set), Tempo,
//! [`scheduling`] (scheduler, leader election, reconciler), [`mqtt_link`] (MQTT bridge, request
//! actions of [`requests`], bridge entities), [`fan_out`] (samples and alerts to the adapters,
//! retained documents), [`regulation`] (the regulator on the grid meter, when enabled),
//! [`health`] (`bridge/health`, `/readyz`, `bridge/info`) and [`http_server`]. At shutdown the
//! regulator stops first (it hands its batteries back to Auto while the actors still run).

pub mod core;
mod devices;
pub mod fan_out;
pub mod health;
pub mod http_server;
pub mod mqtt_link;
pub mod regulation;
pub mod requests;
pub mod scheduling;
pub mod tasks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use self::core::Core;
pub use self::tasks::{StartupError, Tasks};
use crate::config::{Derived, Settings};
use crate::domain::AlertSender;
use crate::http;
use crate::mqtt::MqttHandle;
use crate::scheduler::{Leadership, Scheduler, SchedulerHandle};
use crate::tempo::TempoService;
use health::HealthSource;
use http_server::HttpDeps;
use scheduling::Scheduling;

/// What every subsystem after the core may use.
pub struct Deps<'a> {
    /// The validated configuration.
    pub settings: &'a Settings,
    /// Settings derived from several sections.
    pub derived: &'a Derived,
    /// Store, fleet, commands, presence, samples.
    pub core: &'a Core,
    /// The Tempo service, when enabled.
    pub tempo: Option<&'a Arc<TempoService>>,
    /// Where every part raises its alerts.
    pub alerts: &'a AlertSender,
}

/// Runs the bridge until `shutdown` resolves or a core task fails.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    run_with(settings, shutdown, |_| {}).await
}

/// [`run`], calling `started` once every part is up (the demo prints its instructions there).
pub async fn run_with(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
    started: impl FnOnce(&Running),
) -> anyhow::Result<()> {
    let (tasks, mut ended) = Tasks::new(CancellationToken::new());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        devices = settings.devices.len(),
        "bridge_starting"
    );
    let running = match start(&settings, &tasks).await {
        Ok(r) => r,
        Err(e) => {
            let _ = tasks.shutdown(settings.bridge.shutdown_timeout).await;
            return Err(e);
        }
    };
    tracing::info!(
        devices = running.core.fleet.len(),
        backend = ?running.core.store.backend(),
        "bridge_started"
    );
    started(&running);
    let failure = tokio::select! {
        () = shutdown => None,
        Some((name, err)) = ended.recv() => Some((name, err)),
    };
    if let Some((name, err)) = &failure {
        tracing::error!(task = name, error = format!("{err:#}"), "core_task_ended");
    }
    running
        .stop(&tasks, settings.bridge.shutdown_timeout)
        .await?;
    match failure {
        Some((name, err)) => Err(err.context(format!("core task {name} ended"))),
        None => Ok(()),
    }
}

/// The parts of a running bridge.
pub struct Running {
    /// Store, fleet, command service, channels.
    pub core: Core,
    /// The MQTT side.
    pub mqtt: MqttHandle,
    /// The scheduler's management handle.
    pub jobs: SchedulerHandle,
    /// Tempo service, when enabled.
    pub tempo: Option<Arc<TempoService>>,
    /// Address the HTTP endpoints listen on, when enabled.
    pub http: Option<SocketAddr>,
    /// The regulator, when enabled.
    pub regulation: Option<regulation::Regulation>,
    /// The store-and-forward task, when `[central] url` is set.
    pub forward: Option<crate::sites::forward::ForwarderHandle>,
    scheduler: Scheduler,
    leadership: Option<Leadership>,
}

impl Running {
    /// Orderly shutdown within `bound`: the regulator hands its batteries back to Auto, running
    /// jobs finish (half of `bound`), then the rest stops: actors, writer flush, MQTT offline.
    pub async fn stop(self, tasks: &Tasks, bound: std::time::Duration) -> anyhow::Result<()> {
        tracing::info!("bridge_stopping");
        if let Some(r) = self.regulation {
            r.stop().await;
        }
        let unfinished = self.scheduler.shutdown(bound / 2).await;
        if unfinished > 0 {
            tracing::warn!(unfinished, "scheduled_jobs_cut_at_shutdown");
        }
        if let Some(leader) = self.leadership {
            leader.stop().await;
        }
        tasks.shutdown(bound).await.context("orderly shutdown")?;
        tracing::info!("bridge_stopped");
        Ok(())
    }
}

/// Builds and starts every subsystem under `tasks` (the builder `run` and the tests share).
pub async fn start(settings: &Settings, tasks: &Tasks) -> anyhow::Result<Running> {
    crate::sites::set_process_site(&settings.site_id());
    let derived = settings.derive();
    let (alerts, alerts_rx) = mpsc::unbounded_channel();
    let core = core::spawn(settings, &derived, tasks, alerts.clone()).await?;
    let forward = spawn_forwarder(settings, &core, &alerts, tasks).await?;
    let tempo = spawn_tempo(settings, &core, &alerts)?;
    let deps = Deps {
        settings,
        derived: &derived,
        core: &core,
        tempo: tempo.as_ref(),
        alerts: &alerts,
    };
    let scheduling = Scheduling::init(&deps).await?;
    let jobs = scheduling.jobs.clone();
    let (taps, meter) = regulation::meter_tap(&settings.regulator);
    let mqtt = mqtt_link::spawn(&deps, &jobs, taps, tasks).await?;
    let leadership = scheduling.start(&deps, tasks);
    if leadership.is_some() {
        scheduling::settle_role(&deps, std::time::Duration::from_secs(2)).await;
    }

    let live = http::Live::new();
    let sinks = fan_out::Sinks {
        mqtt: &mqtt,
        live: &live,
        batcontrol: settings.regulator.batcontrol_status,
    };
    fan_out::spawn(&core, sinks, &derived.alerts, alerts_rx, tasks);
    fan_out::spawn_watch_publisher(tasks, jobs.subscribe(), {
        let mqtt = mqtt.clone();
        move |v| mqtt.publish_schedule(v)
    });
    fan_out::spawn_watch_publisher(tasks, core.commands.dry_run().subscribe(), {
        let mqtt = mqtt.clone();
        move |v| mqtt.publish_dry_run(v)
    });
    fan_out::spawn_watch_publisher(tasks, core.commands.maintenance().subscribe(), {
        let (mqtt, ids) = (mqtt.clone(), core.fleet.ids());
        move |v| {
            if let Ok(state) = serde_json::from_value(v) {
                mqtt.publish_maintenance(&state, &ids);
            }
        }
    });
    if let Some(t) = &tempo {
        fan_out::spawn_tempo_documents(t, &mqtt, tasks).await;
    }
    let regulation = regulation::spawn(&deps, &mqtt, meter, tasks);
    let health = HealthSource::new(&core, &mqtt, derived.stale_after);
    health.spawn_publisher(derived.health_every, tasks);
    let http_deps = HttpDeps {
        jobs: &jobs,
        live: &live,
        health: &health,
    };
    let http = http_server::spawn(&deps, http_deps, tasks).await?;
    // After the HTTP server: it installs the metrics recorder the role gauge is set on.
    scheduling::spawn_role_publisher(&deps, &mqtt, tasks);
    core.open_samples();
    Ok(Running {
        core,
        mqtt,
        jobs,
        tempo,
        http,
        regulation,
        forward,
        scheduler: scheduling.scheduler,
        leadership,
    })
}

/// The store-and-forward task, when `[central] url` is set: its own task and pools; the
/// central database being down does not delay the start (it is reached from the task). It
/// claims the site as this instance with its batteries (a conflict raises an alert).
async fn spawn_forwarder(
    settings: &Settings,
    core: &Core,
    alerts: &AlertSender,
    tasks: &Tasks,
) -> anyhow::Result<Option<crate::sites::forward::ForwarderHandle>> {
    if !settings.central.enabled() {
        return Ok(None);
    }
    let (forwarder, handle) = crate::sites::forward::prepare(
        &settings.central,
        &settings.site_id(),
        &settings.database.url,
        core.store.clone(),
    )
    .await
    .map_err(|e| StartupError(format!("cannot start the forwarder ({e})")))?;
    let me = crate::store::central::Claim {
        instance: settings.instance(),
        host: settings.host(),
        devices: core.fleet.ids().iter().map(ToString::to_string).collect(),
    };
    let forwarder = forwarder.with_identity(me, Some(alerts.clone()));
    tasks.spawn(forwarder.run(tasks.token().clone()));
    Ok(Some(handle))
}

/// The Tempo service, when `tempo.enabled`.
fn spawn_tempo(
    settings: &Settings,
    core: &Core,
    alerts: &AlertSender,
) -> anyhow::Result<Option<Arc<TempoService>>> {
    if !settings.tempo.enabled {
        return Ok(None);
    }
    let service = TempoService::new(
        settings.tempo.clone(),
        core.store.clone(),
        core.fleet.clone(),
        Some(alerts.clone()),
    )
    .map_err(|e| StartupError(e.to_string()))?
    .with_dry_run(core.commands.dry_run().clone());
    Ok(Some(Arc::new(service)))
}
