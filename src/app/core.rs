//! The core every adapter shares: the store, one actor per battery (the fleet), the command
//! service with its remembered controls, device presence, the sample broadcast and the telemetry
//! writer (plus pruning and device registration). Opens the database and binds the UDP port.
//! The actors' samples pass through a relay that opens once every subsystem has subscribed
//! ([`Core::open_samples`], at the end of start-up), so the first status round of each battery
//! reaches MQTT, the store and every other reader instead of going out before they listen.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::devices::{register_devices, spawn_batteries};
use super::tasks::{StartupError, Tasks};
use crate::config::{Derived, Settings};
use crate::control::{CommandService, DryRun, Fleet, Maintenance, Presence, Regulated, Role};
use crate::domain::{AlertSender, Sample};
use crate::marstek::Transport;
use crate::store::{self, Store, WriterHandle};

/// How often expired telemetry is deleted (SQLite and plain PostgreSQL), seconds.
const PRUNE_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Everything built at start-up that the tasks share.
pub struct Core {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Every configured battery.
    pub fleet: Fleet,
    /// The one path for commands (and the remembered controls).
    pub commands: CommandService,
    /// Device availability (its one owner runs in the background).
    pub presence: Presence,
    /// Every sample of every battery.
    pub samples: broadcast::Sender<Sample>,
    /// Telemetry writer statistics.
    pub writer: WriterHandle,
    /// Cancelled when the sample relay may forward (every subscriber is in place).
    samples_open: CancellationToken,
}

impl Core {
    /// Lets the actors' samples through to [`Core::samples`]; the ones produced before (the
    /// first status rounds) are delivered first, in order.
    pub fn open_samples(&self) {
        self.samples_open.cancel();
    }
}

/// Opens the store, binds the UDP transport, spawns one actor per battery, the command
/// service's helpers, presence, the writer, pruning and device registration.
pub async fn spawn(
    settings: &Settings,
    derived: &Derived,
    tasks: &Tasks,
    alerts: AlertSender,
) -> anyhow::Result<Core> {
    let mut database = settings.database.clone();
    database.site_id = settings.site_id();
    database.forward = settings.central.enabled();
    let store = store::open(&database)
        .await
        .map_err(|e| StartupError(format!("cannot open the database ({e})")))?;
    let capacity = (settings.devices.len() * 16).clamp(256, 65_536);
    let (samples, _) = broadcast::channel(capacity);
    // The actors publish into `raw`; the relay forwards to `samples` once start-up is done.
    let (raw, raw_rx) = broadcast::channel(capacity);
    let samples_open = CancellationToken::new();
    spawn_relay(raw_rx, samples.clone(), samples_open.clone(), tasks);
    let bind = settings.marstek.bind_socket();
    let transport = Transport::bind(bind, tasks.token()).await.map_err(|e| {
        StartupError(format!(
            "marstek.bind_device_port: cannot bind UDP {bind} ({e}); another integration may own the port: \
             stop it or set marstek.bind_device_port = false"
        ))
    })?;
    let fleet = Fleet::new(spawn_batteries(settings, &transport, &store, &raw, tasks).await);
    let commands = spawn_commands(settings, &fleet, &store, &samples, tasks, alerts).await;
    let presence = Presence::spawn(
        &fleet,
        samples.subscribe(),
        derived.mqtt.offline_after(),
        settings.polling.network_reset_blackout,
        tasks.token().clone(),
        &tasks.tracker,
    );
    let (writer, writer_task) = store::spawn_writer(
        store.clone(),
        samples.subscribe(),
        &settings.database,
        tasks.token().clone(),
    );
    tasks.spawn_core("store_writer", async move {
        writer_task.await.context("telemetry writer panicked")
    });
    if store.backend() != store::Backend::Timescale {
        // TimescaleDB has its own retention policy; elsewhere old telemetry is deleted here.
        spawn_pruning(store.clone(), settings.database.retention_days, tasks);
    }
    tasks.spawn(register_devices(
        store.clone(),
        fleet.clone(),
        samples.subscribe(),
        tasks.token().clone(),
    ));
    Ok(Core {
        store,
        fleet,
        commands,
        presence,
        samples,
        writer,
        samples_open,
    })
}

/// Forwards the actors' samples to the shared broadcast once `open` is cancelled; stops with
/// the tasks' token or when the actors are gone.
fn spawn_relay(
    mut raw: broadcast::Receiver<Sample>,
    samples: broadcast::Sender<Sample>,
    open: CancellationToken,
    tasks: &Tasks,
) {
    let stop = tasks.token().clone();
    tasks.spawn(async move {
        tokio::select! {
            () = stop.cancelled() => return,
            () = open.cancelled() => {}
        }
        loop {
            let sample = tokio::select! {
                () = stop.cancelled() => return,
                r = raw.recv() => match r {
                    Ok(sample) => sample,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "sample_relay_lagged");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            // No receiver yet is not an error: the sample is simply not wanted.
            let _ = samples.send(sample);
        }
    });
}

/// The command service, its remembered controls and (when the regulator runs) the batteries in
/// `regulate` mode restored from the store, their writers and the state-of-charge guard.
async fn spawn_commands(
    settings: &Settings,
    fleet: &Fleet,
    store: &Arc<dyn Store>,
    samples: &broadcast::Sender<Sample>,
    tasks: &Tasks,
    alerts: AlertSender,
) -> CommandService {
    let commands = CommandService::new(
        fleet.clone(),
        Some(store.clone()),
        Some(alerts),
        settings.bridge.read_only,
    )
    .with_verify(settings.marstek.verify.clone())
    .with_dry_run(DryRun::load(store.as_ref(), settings.tempo.dry_run).await)
    .with_maintenance(Maintenance::load(store.as_ref()).await)
    .with_shutdown(tasks.token().clone())
    // Alone on SQLite, the bridge leads; on PostgreSQL it is a standby until it wins the lease.
    .with_role(Role::new(store.backend() == store::Backend::Sqlite))
    .with_regulated(Regulated::new(settings.regulator.enabled));
    if settings.regulator.enabled {
        let regulated = commands.regulated().clone();
        regulated.restore(store.as_ref(), &fleet.ids()).await;
        tasks.spawn(regulated.run_writer(store.clone(), tasks.token().clone()));
    }
    // Before any adapter starts: the first `<dev>/controls` carries the stored values, and no
    // command can race the restore.
    commands.controls().restore(store.as_ref()).await;
    tasks.spawn(
        commands
            .controls()
            .clone()
            .run_writer(store.clone(), tasks.token().clone()),
    );
    tasks.spawn(
        commands
            .clone()
            .guard_soc(samples.subscribe(), tasks.token().clone()),
    );
    commands
}

/// Deletes telemetry older than `days` now and every [`PRUNE_EVERY`].
fn spawn_pruning(store: Arc<dyn Store>, days: u32, tasks: &Tasks) {
    tasks.spawn_every(PRUNE_EVERY, move || {
        let store = store.clone();
        async move {
            if let Err(e) = store::prune_expired(store.as_ref(), days, Utc::now()).await {
                tracing::warn!(error = %e, "telemetry_prune_failed");
            }
        }
    });
}
