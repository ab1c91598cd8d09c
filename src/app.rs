//! The only place that wires the bridge together: builds the clients, spawns every task under one
//! `CancellationToken` + `TaskTracker`, and owns the orderly shutdown. A core task that ends on
//! its own is logged with its cause chain and makes `run` fail, so a supervisor restarts us.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{DeviceConfig, Settings};
use crate::control::{CommandService, Fleet};
use crate::domain::{AlertSender, BatteryRef, DeviceId, DeviceInfo, Sample};
use crate::marstek::discovery::mac_from_src;
use crate::marstek::protocol::{DeviceResult, decode_result, get_device_params, method};
use crate::marstek::{DeviceSpec, MarstekBattery, PollingSettings, Transport};
use crate::store::{self, DeviceRecord, Store, WriterHandle};

/// A problem found while starting (database URL unusable or unreachable, port taken …): the
/// process exits with code 2 like a configuration error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// Spawns tracked tasks and notices when a core task stops by itself.
#[derive(Clone)]
pub struct Tasks {
    token: CancellationToken,
    /// Tracker of every spawned task (shutdown waits for all of them).
    pub tracker: TaskTracker,
    ended: mpsc::UnboundedSender<(&'static str, anyhow::Error)>,
}

impl Tasks {
    /// A fresh set and the receiver of core-task endings.
    pub fn new(
        token: CancellationToken,
    ) -> (Self, mpsc::UnboundedReceiver<(&'static str, anyhow::Error)>) {
        let (ended, rx) = mpsc::unbounded_channel();
        (
            Self {
                token,
                tracker: TaskTracker::new(),
                ended,
            },
            rx,
        )
    }

    /// The token cancelled at shutdown.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Spawns a core task: it must run until cancelled; ending earlier (even with `Ok`) is fatal.
    pub fn spawn_core<F>(&self, name: &'static str, fut: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let token = self.token.clone();
        let ended = self.ended.clone();
        self.tracker.spawn(async move {
            let result = fut.await;
            if !token.is_cancelled() {
                let err = match result {
                    Ok(()) => anyhow!("{name} stopped unexpectedly"),
                    Err(e) => e,
                };
                let _ = ended.send((name, err));
            } else if let Err(e) = result {
                tracing::warn!(
                    task = name,
                    error = format!("{e:#}"),
                    "task_failed_during_shutdown"
                );
            }
        });
    }

    /// Spawns a helper task whose end is not fatal.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(fut);
    }

    /// Cancels everything and waits up to `timeout` for every task to exit.
    pub async fn shutdown(&self, timeout: Duration) -> anyhow::Result<()> {
        self.token.cancel();
        self.tracker.close();
        tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .map_err(|_| anyhow!("tasks still running after the shutdown timeout of {timeout:?}"))
    }
}

/// Everything built at start-up that the tasks share.
pub struct Core {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Every configured battery.
    pub fleet: Fleet,
    /// The one path for commands.
    pub commands: CommandService,
    /// Every sample of every battery.
    pub samples: broadcast::Sender<Sample>,
    /// Alert events from every part.
    pub alerts: AlertSender,
    /// Telemetry writer statistics.
    pub writer: WriterHandle,
}

/// Opens the store, binds the UDP transport, spawns one actor per battery and the writer.
pub async fn build_core(
    settings: &Settings,
    tasks: &Tasks,
    alerts: AlertSender,
) -> anyhow::Result<Core> {
    let store = store::open(&settings.database)
        .await
        .map_err(|e| StartupError(format!("cannot open the database ({e})")))?;
    let capacity = (settings.devices.len() * 16).clamp(256, 65_536);
    let (samples, _) = broadcast::channel(capacity);
    let bind = settings.marstek.bind_socket();
    let transport = Transport::bind(bind, tasks.token()).await.map_err(|e| {
        StartupError(format!(
            "marstek.bind_device_port: cannot bind UDP {bind} ({e}); another integration may own the port: \
             stop it or set marstek.bind_device_port = false"
        ))
    })?;
    let known = store.devices().await.unwrap_or_default();
    let mut batteries: Vec<BatteryRef> = Vec::new();
    for device in &settings.devices {
        let addr = resolve_addr(&device.host, device.port)
            .await
            .map_err(|e| StartupError(format!("devices: {e}")))?;
        let id = device_id(device, addr, &transport, &settings.polling, &known).await;
        let spec = DeviceSpec {
            id,
            addr,
            limits: device.limits(),
        };
        let battery = MarstekBattery::spawn(
            transport.clone(),
            spec,
            settings.polling.clone(),
            samples.clone(),
            tasks.token().clone(),
            &tasks.tracker,
        );
        batteries.push(Arc::new(battery));
    }
    let fleet = Fleet::new(batteries);
    let commands = CommandService::new(
        fleet.clone(),
        Some(store.clone()),
        Some(alerts.clone()),
        settings.bridge.read_only,
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
        samples,
        alerts,
        writer,
    })
}

async fn resolve_addr(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| format!("{host} has no IPv4 address"))
}

/// The id of a configured battery: its alias, else its BLE MAC (asked now, or remembered in the
/// store from an earlier run), else a name derived from its address until it answers.
async fn device_id(
    device: &DeviceConfig,
    addr: SocketAddr,
    transport: &Transport,
    polling: &PollingSettings,
    known: &[DeviceRecord],
) -> DeviceId {
    if let Some(id) = device.id.as_deref().and_then(|i| DeviceId::parse(i).ok()) {
        return id;
    }
    let asked = transport
        .request(
            addr,
            method::GET_DEVICE,
            get_device_params(),
            polling.read_options(),
        )
        .await
        .ok()
        .and_then(|reply| {
            let result: Option<DeviceResult> = decode_result(&reply.result).ok();
            result
                .and_then(|r| r.ble_mac)
                .map(|m| m.to_ascii_lowercase())
                .or_else(|| reply.src.as_deref().and_then(mac_from_src))
        });
    let remembered = || {
        known
            .iter()
            .find(|r| r.info.address == addr.to_string())
            .map(|r| r.info.ble_mac.clone())
    };
    if let Some(id) = asked
        .or_else(remembered)
        .and_then(|m| DeviceId::parse(&m).ok())
    {
        return id;
    }
    let fallback = format!("{}_{}", addr.ip(), addr.port()).replace(['.', ':'], "_");
    tracing::warn!(device = %addr, id = %fallback, "device_id_unknown_using_address");
    DeviceId(fallback)
}

/// Records each battery's identity in the store the first time it answers (and when it changes).
async fn register_devices(
    store: Arc<dyn Store>,
    fleet: Fleet,
    mut samples: broadcast::Receiver<Sample>,
    cancel: CancellationToken,
) {
    let mut seen: HashMap<DeviceId, DeviceInfo> = HashMap::new();
    loop {
        let sample = tokio::select! {
            () = cancel.cancelled() => return,
            r = samples.recv() => match r {
                Ok(s) => s,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let Some(info) = fleet.get(&sample.device).and_then(|b| b.info()) else {
            continue;
        };
        if seen.get(&sample.device) == Some(&info) {
            continue;
        }
        match store.upsert_device(&info, sample.at).await {
            Ok(()) => {
                tracing::info!(device = %info.id, model = %info.model, firmware = info.firmware, "device_registered");
                seen.insert(sample.device.clone(), info);
            }
            Err(e) => tracing::warn!(device = %sample.device, error = %e, "device_not_registered"),
        }
    }
}

/// Runs the bridge until `shutdown` resolves or a core task fails.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let token = CancellationToken::new();
    let (tasks, mut ended) = Tasks::new(token.clone());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        devices = settings.devices.len(),
        "bridge_starting"
    );

    tracing::info!("bridge_started");
    let failure = tokio::select! {
        () = shutdown => None,
        Some((name, err)) = ended.recv() => Some((name, err)),
    };
    if let Some((name, err)) = &failure {
        tracing::error!(task = name, error = format!("{err:#}"), "core_task_ended");
    }
    tracing::info!("bridge_stopping");
    tasks
        .shutdown(settings.bridge.shutdown_timeout)
        .await
        .context("orderly shutdown")?;
    tracing::info!("bridge_stopped");
    match failure {
        Some((name, err)) => Err(err.context(format!("core task {name} ended"))),
        None => Ok(()),
    }
}
