//! The only place that wires the bridge together: builds the clients, spawns every task under one
//! `CancellationToken` + `TaskTracker`, and owns the orderly shutdown. A core task that ends on
//! its own is logged with its cause chain and makes `run` fail, so a supervisor restarts us.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use anyhow::{Context, anyhow};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerts::{AlertEngine, AlertSettings};
use crate::config::{DeviceConfig, Settings};
use crate::control::{CommandService, Fleet, Presence};
use crate::domain::{
    Alert, AlertSender, BatteryRef, DeviceHealth, DeviceId, DeviceInfo, JobAction, NightPlanner,
    Sample,
};
use crate::http::{self, Readiness, ReadyProbe};
use crate::marstek::discovery::mac_from_src;
use crate::marstek::protocol::{DeviceResult, decode_result, get_device_params, method};
use crate::marstek::{DeviceSpec, MarstekBattery, NamedDevice, PollingSettings, Transport};
use crate::marstek::{DiscoverOptions, discover_devices};
use crate::mqtt::discovery::{self, Component, Entity, EntityCategory, EntityConfig, StateClass};
use crate::mqtt::{Handler, MqttBridge, MqttHandle, RequestRouter, Topics, handler};
use crate::scheduler::{
    Clock, JobDeps, Leadership, Reconciler, Scheduler, SchedulerHandle, SystemClock, spawn_leader,
    standard_jobs,
};
use crate::store::Backend;
use crate::store::{self, DeviceRecord, Store, WriterHandle};
use crate::tempo::TempoService;

/// A problem found while starting (database unreachable, port taken …): a runtime failure,
/// the process exits with code 1 (configuration errors are found before, by validation: 2).
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
    /// The one path for commands (and the remembered controls).
    pub commands: CommandService,
    /// Device availability (its one owner runs in the background).
    pub presence: Presence,
    /// Every sample of every battery.
    pub samples: broadcast::Sender<Sample>,
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
    let fleet = Fleet::new(spawn_batteries(settings, &transport, &store, &samples, tasks).await);
    let commands = CommandService::new(
        fleet.clone(),
        Some(store.clone()),
        Some(alerts.clone()),
        settings.bridge.read_only,
    );
    // Before any adapter starts: the first `<dev>/controls` carries the stored values, and no
    // command can race the restore.
    commands.controls().restore(store.as_ref()).await;
    tasks.spawn(
        commands
            .controls()
            .clone()
            .run_writer(store.clone(), tasks.token().clone()),
    );
    let presence = Presence::spawn(
        &fleet,
        samples.subscribe(),
        mqtt_settings(settings).offline_after(),
        tasks.token().clone(),
        &tasks.tracker,
    );
    tasks.spawn(
        commands
            .clone()
            .guard_soc(samples.subscribe(), tasks.token().clone()),
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
        let store = store.clone();
        let days = settings.database.retention_days;
        let cancel = tasks.token().clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(6 * 3600));
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = tick.tick() => {
                        if let Err(e) = store::prune_expired(store.as_ref(), days, Utc::now()).await {
                            tracing::warn!(error = %e, "telemetry_prune_failed");
                        }
                    }
                }
            }
        });
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
    })
}

/// One actor per configured battery. A host name that does not resolve does not stop the
/// others: that battery's actor keeps resolving it (and the battery is unavailable meanwhile).
/// Two entries that turn out to be the same battery (same address, or same id) are served once,
/// with one warning naming both entries.
async fn spawn_batteries(
    settings: &Settings,
    transport: &Arc<Transport>,
    store: &Arc<dyn Store>,
    samples: &broadcast::Sender<Sample>,
    tasks: &Tasks,
) -> Vec<BatteryRef> {
    let known = store.devices().await.unwrap_or_default();
    let entry = |n: usize| {
        let d = &settings.devices[n];
        format!("devices.{n} ({}:{})", d.host, d.port)
    };
    let mut by_addr: HashMap<SocketAddr, usize> = HashMap::new();
    let mut by_id: HashMap<DeviceId, usize> = HashMap::new();
    let mut batteries: Vec<BatteryRef> = Vec::new();
    for (n, device) in settings.devices.iter().enumerate() {
        let (addr, id) = match resolve_addr(&device.host, device.port).await {
            Ok(addr) => {
                if let Some(first) = by_addr.insert(addr, n) {
                    tracing::warn!(first = entry(first), second = entry(n), addr = %addr, "duplicate_device_ignored");
                    by_addr.insert(addr, first);
                    continue;
                }
                let id = device_id(device, addr, transport, &settings.polling, &known).await;
                (Some(addr), id)
            }
            Err(e) => {
                tracing::warn!(device = entry(n), error = %e, "device_unresolved_retrying");
                (None, named_id(device))
            }
        };
        if let Some(first) = by_id.get(&id) {
            tracing::warn!(first = entry(*first), second = entry(n), id = %id, "duplicate_device_ignored");
            continue;
        }
        by_id.insert(id.clone(), n);
        let (polling, out, token) = (
            settings.polling.clone(),
            samples.clone(),
            tasks.token().clone(),
        );
        let battery = match addr {
            Some(addr) => {
                let spec = DeviceSpec {
                    id,
                    addr,
                    limits: device.limits(),
                };
                MarstekBattery::spawn(transport.clone(), spec, polling, out, token, &tasks.tracker)
            }
            None => {
                let named = NamedDevice {
                    id,
                    host: device.host.clone(),
                    port: device.port,
                    limits: device.limits(),
                };
                MarstekBattery::spawn_named(
                    transport.clone(),
                    named,
                    polling,
                    out,
                    token,
                    &tasks.tracker,
                )
            }
        };
        batteries.push(Arc::new(battery));
    }
    batteries
}

/// The id of a battery whose host name does not resolve: its alias, else one derived from
/// the host name and port.
fn named_id(device: &DeviceConfig) -> DeviceId {
    device
        .id
        .as_deref()
        .and_then(|i| DeviceId::parse(i).ok())
        .unwrap_or_else(|| {
            let name: String = format!("{}_{}", device.host, device.port)
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .take(64)
                .collect();
            DeviceId(name)
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

/// The MQTT settings, with the poll interval the state expiry and the offline delay follow.
fn mqtt_settings(settings: &Settings) -> crate::mqtt::MqttSettings {
    let mut mqtt = settings.mqtt.clone();
    mqtt.status_interval = settings.polling.status_interval;
    mqtt
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
    let token = CancellationToken::new();
    let (tasks, mut ended) = Tasks::new(token.clone());
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
    tracing::info!("bridge_stopping");
    let bound = settings.bridge.shutdown_timeout;
    // Running jobs finish first (bounded), then the rest stops: actors, writer flush, MQTT offline.
    let unfinished = running.scheduler.shutdown(bound / 2).await;
    if unfinished > 0 {
        tracing::warn!(unfinished, "scheduled_jobs_cut_at_shutdown");
    }
    if let Some(leader) = running.leadership {
        leader.stop().await;
    }
    tasks.shutdown(bound).await.context("orderly shutdown")?;
    tracing::info!("bridge_stopped");
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
    scheduler: Scheduler,
    leadership: Option<Leadership>,
}

async fn start(settings: &Settings, tasks: &Tasks) -> anyhow::Result<Running> {
    let (alerts_tx, alerts_rx) = mpsc::unbounded_channel();
    let core = build_core(settings, tasks, alerts_tx.clone()).await?;
    let token = tasks.token().clone();
    let instance = settings.instance();

    let tempo = if settings.tempo.enabled {
        let service = TempoService::new(
            settings.tempo.clone(),
            core.store.clone(),
            core.fleet.clone(),
            Some(alerts_tx.clone()),
        )
        .map_err(|e| StartupError(e.to_string()))?;
        Some(Arc::new(service))
    } else {
        None
    };

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let registry = standard_jobs(JobDeps {
        commands: core.commands.clone(),
        store: core.store.clone(),
        settings: settings.scheduler.clone(),
        planner: tempo.clone().map(|t| t as Arc<dyn NightPlanner>),
        tempo_check: tempo.clone().map(|t| t as Arc<dyn JobAction>),
        samples: core.samples.clone(),
        alerts: Some(alerts_tx.clone()),
    });
    let scheduler = Scheduler::init(
        settings.scheduler.clone(),
        core.store.clone(),
        registry,
        clock.clone(),
        Some(alerts_tx.clone()),
        instance.clone(),
    )
    .await
    .map_err(|e| StartupError(e.to_string()))?;
    let jobs = scheduler.handle();

    let mut router = RequestRouter::with_builtins(
        core.fleet.clone(),
        settings.to_redacted_json(),
        Some(discover_handler(settings)),
    );
    register_job_actions(&mut router, &jobs);
    if let Some(t) = &tempo {
        register_tempo_actions(&mut router, t.clone());
    }
    let (mqtt, mqtt_task) = MqttBridge::start(
        mqtt_settings(settings),
        core.commands.clone(),
        &core.presence,
        router,
        token.clone(),
    )
    .map_err(|e| StartupError(format!("mqtt: {e}")))?;
    tasks.spawn_core("mqtt", async move {
        mqtt_task.await.context("MQTT bridge panicked")
    });
    mqtt.set_extra_entities(
        bridge_entities(mqtt.topics(), &jobs, tempo.is_some(), settings.mqtt.qos).await,
    );
    mqtt.publish_info(bridge_info(settings, &core, &instance));

    // Several bridges may share PostgreSQL: only the leader schedules. SQLite has one instance.
    let leadership = match core.store.backend() {
        Backend::Sqlite => {
            scheduler.start();
            None
        }
        Backend::Postgres | Backend::Timescale => {
            let leader = spawn_leader(
                core.store.clone(),
                instance.clone(),
                settings.scheduler.leader_ttl,
            );
            scheduler.start_with_leadership(leader.receiver());
            Some(leader)
        }
    };

    let mut reconciler = Reconciler::new(
        core.commands.clone(),
        core.store.clone(),
        settings.scheduler.clone(),
        Some(alerts_tx.clone()),
        clock.clone(),
    );
    if let Some(t) = &tempo {
        reconciler = reconciler.with_planner(t.clone());
    }
    let reconciler = Arc::new(reconciler);
    {
        let reconciler = reconciler.clone();
        let samples = core.samples.subscribe();
        let handle = jobs.clone();
        let tick = settings
            .polling
            .status_interval
            .max(Duration::from_secs(30));
        let cancel = token.clone();
        let leading = leadership.as_ref().map(Leadership::receiver);
        tasks.spawn(async move {
            // Only the leader (or the one SQLite instance) touches the batteries.
            if let Some(mut leading) = leading {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    r = leading.wait_for(|l| *l) => if r.is_err() { return },
                }
            }
            {
                let outcomes = reconciler.startup_from(&handle).await;
                tracing::info!(outcomes = %serde_json::Value::from(outcomes), "startup_reconciled");
            }
            let _ = reconciler.spawn(samples, tick, cancel).await;
        });
    }

    let mut alert_settings = settings.alerts.clone();
    alert_settings.unreachable_after = settings.polling.failures_before_unreachable;
    let live = http::Live::new();
    spawn_fan_out(tasks, &core, &mqtt, &live, &alert_settings, alerts_rx);
    spawn_watch_publisher(tasks, jobs.subscribe(), {
        let mqtt = mqtt.clone();
        move |v| mqtt.publish_schedule(v)
    });
    if let Some(t) = &tempo {
        // Fill the retained Tempo state from the store now, not at 11:30.
        let _ = t.get().await;
        spawn_watch_publisher(tasks, t.subscribe(), {
            let mqtt = mqtt.clone();
            move |v| mqtt.publish_tempo(v)
        });
        spawn_watch_publisher(tasks, t.live().subscribe(), {
            let mqtt = mqtt.clone();
            move |v| mqtt.publish_plan(v)
        });
        spawn_watch_publisher(tasks, t.book().subscribe(), {
            let mqtt = mqtt.clone();
            move |v| mqtt.publish_ledger(v)
        });
        // The first plan and ledger from what is known now, without delaying the start.
        let (live, book) = (t.live().clone(), t.book().clone());
        tasks.spawn(async move {
            live.compute(chrono::Utc::now(), false).await;
            book.refresh(chrono::Utc::now()).await;
        });
    }
    let health = HealthSource {
        fleet: core.fleet.clone(),
        writer: core.writer.clone(),
        mqtt: mqtt.clone(),
        store: core.store.clone(),
        stale_after: settings.polling.status_interval * 3,
    };
    {
        let health = health.clone();
        let cancel = token.clone();
        let every = settings.polling.status_interval.max(Duration::from_secs(5));
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = tick.tick() => {
                        let doc = health.report().await;
                        health.mqtt.publish_health(doc);
                    }
                }
            }
        });
    }

    let http = match &settings.http.listen {
        None => None,
        Some(addr) => {
            let bearer = settings
                .http
                .resolve_token()
                .map_err(|e| StartupError(format!("http.token_file: cannot read it ({e})")))?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| StartupError(format!("http.listen: cannot listen on {addr}: {e}")))?;
            let local = listener.local_addr()?;
            let probe: ReadyProbe = Arc::new(move || {
                let health = health.clone();
                Box::pin(async move { health.readiness().await })
            });
            tasks.spawn(live.clone().run_feeds(
                core.samples.subscribe(),
                Some(jobs.subscribe()),
                tempo.as_ref().map(|t| t.subscribe()),
                token.clone(),
            ));
            let mut info = bridge_info(settings, &core, &instance);
            info["tempo"] = tempo.is_some().into();
            info["token_configured"] = bearer.is_some().into();
            let server = http::Server {
                probe,
                metrics: http::metrics_handle(),
                api: http::ApiState {
                    commands: core.commands.clone(),
                    store: core.store.clone(),
                    jobs: Some(jobs.clone()),
                    tempo: tempo.clone(),
                    live: live.clone(),
                    bridge: info,
                    max_body: settings.http.max_body_bytes,
                    cancel: token.clone(),
                },
                access: http::Access::new(bearer),
                cors_origins: settings.http.cors_origins.clone(),
            };
            let max_body = settings.http.max_body_bytes;
            let cancel = token.clone();
            tasks.spawn_core("http", async move {
                http::serve(listener, server, max_body, cancel)
                    .await
                    .context("HTTP server")
            });
            Some(local)
        }
    };
    Ok(Running {
        core,
        mqtt,
        jobs,
        tempo,
        http,
        scheduler,
        leadership,
    })
}

/// `devices/discover`: unicast probe of the configured ports on the configured devices' hosts
/// plus a LAN broadcast, for the configured window.
fn discover_handler(settings: &Settings) -> Handler {
    let discovery = settings.marstek.discovery.clone();
    handler(move |req| {
        let discovery = discovery.clone();
        async move {
            let window = req
                .get("timeout")
                .and_then(Value::as_f64)
                .filter(|t| (0.1..=60.0).contains(t))
                .map(Duration::from_secs_f64)
                .unwrap_or(discovery.window);
            let target = match req.get("target").and_then(Value::as_str) {
                Some(t) => Some(
                    t.parse::<IpAddr>()
                        .map_err(|_| format!("target '{t}' is not an IP address"))?,
                ),
                None => None,
            };
            let opts = DiscoverOptions {
                window,
                target,
                ports: discovery.ports.clone(),
                ..DiscoverOptions::default()
            };
            let found = discover_devices(&opts).await.map_err(|e| e.to_string())?;
            Ok(json!(
                found
                    .iter()
                    .map(|d| json!({
                        "ble_mac": d.ble_mac, "model": d.device, "firmware": d.firmware,
                        "address": d.addr.to_string(), "wifi_mac": d.wifi_mac,
                    }))
                    .collect::<Vec<_>>()
            ))
        }
    })
}

fn job_id(req: &Value) -> Result<String, String> {
    req.get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| "missing \"id\": the job id, e.g. \"job_switch_to_auto\"".to_string())
}

fn view_json(v: impl serde::Serialize) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// A scheduler call's result as a request answer.
fn answer<T: serde::Serialize, E: std::fmt::Display>(r: Result<T, E>) -> Result<Value, String> {
    view_json(r.map_err(|e| e.to_string())?)
}

/// A request handler that gets its own scheduler handle with each request.
fn jobs_handler<F, Fut>(jobs: &SchedulerHandle, f: F) -> Handler
where
    F: Fn(SchedulerHandle, Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, String>> + Send + 'static,
{
    let j = jobs.clone();
    handler(move |req| f(j.clone(), req))
}

/// `jobs/list`, `jobs/run`, `jobs/pause`, `jobs/resume`, `jobs/update`, `jobs/reset`,
/// `jobs/preview`, and per-job `jobs/<id>/enabled` / `jobs/<id>/run` for Home Assistant.
fn register_job_actions(router: &mut RequestRouter, jobs: &SchedulerHandle) {
    router.register(
        "jobs/list",
        jobs_handler(jobs, |j, _| async move { view_json(j.list().await) }),
    );
    router.register(
        "jobs/run",
        jobs_handler(jobs, |j, req| async move {
            answer(j.run_now(&job_id(&req)?).await)
        }),
    );
    router.register(
        "jobs/pause",
        jobs_handler(jobs, |j, req| async move {
            answer(j.pause(&job_id(&req)?).await)
        }),
    );
    router.register(
        "jobs/resume",
        jobs_handler(jobs, |j, req| async move {
            answer(j.resume(&job_id(&req)?).await)
        }),
    );
    router.register(
        "jobs/update",
        jobs_handler(jobs, |j, req| async move {
            let trigger = req
                .get("trigger")
                .and_then(Value::as_str)
                .ok_or("missing \"trigger\", e.g. \"cron:0 7 * * *\" or \"interval:5m\"")?;
            answer(j.update_trigger(&job_id(&req)?, trigger).await)
        }),
    );
    router.register(
        "jobs/reset",
        jobs_handler(jobs, |j, req| async move {
            answer(j.reset_trigger(&job_id(&req)?).await)
        }),
    );
    router.register(
        "jobs/preview",
        jobs_handler(jobs, |j, req| async move {
            let spec = match (
                req.get("id").and_then(Value::as_str),
                req.get("trigger").and_then(Value::as_str),
            ) {
                (_, Some(t)) => t.to_string(),
                (Some(id), None) => id.to_string(),
                (None, None) => {
                    return Err(
                        "give \"id\" (a job) or \"trigger\" (e.g. \"cron:0 6 * * *\")".into(),
                    );
                }
            };
            let count = req
                .get("count")
                .and_then(Value::as_u64)
                .unwrap_or(5)
                .clamp(1, 100) as usize;
            let from = match req.get("from").and_then(Value::as_str) {
                Some(f) => DateTime::parse_from_rfc3339(f)
                    .map_err(|e| format!("from: '{f}' is not RFC 3339 ({e})"))?
                    .with_timezone(&Utc),
                None => Utc::now(),
            };
            let tz = j.timezone();
            let times = j
                .preview(&spec, from, count)
                .await
                .map_err(|e| e.to_string())?;
            Ok(json!(
                times
                    .iter()
                    .map(|t| json!({"utc": t, "local": t.with_timezone(&tz).to_rfc3339()}))
                    .collect::<Vec<_>>()
            ))
        }),
    );
    for id in SchedulerHandle::known_ids() {
        router.register(
            &format!("jobs/{id}/enabled"),
            jobs_handler(jobs, move |j, req| async move {
                let on = req
                    .get("enabled")
                    .and_then(Value::as_bool)
                    .ok_or("missing \"enabled\": true or false")?;
                answer(if on {
                    j.resume(id).await
                } else {
                    j.pause(id).await
                })
            }),
        );
        router.register(
            &format!("jobs/{id}/run"),
            jobs_handler(jobs, move |j, _| async move { answer(j.run_now(id).await) }),
        );
    }
}

/// `tempo/get`, `tempo/refresh` (`{"dry_run": true}` computes without storing a plan) and
/// `plan/get` (the planner's slots, computed now); the service validates the payload.
fn register_tempo_actions(router: &mut RequestRouter, tempo: Arc<TempoService>) {
    for action in ["tempo/get", "tempo/refresh", "plan/get", "ledger/get"] {
        let t = tempo.clone();
        router.register(
            action,
            handler(move |req| {
                let t = t.clone();
                async move { t.request(action, &req).await }
            }),
        );
    }
}

/// Home Assistant entities of the bridge device: a switch (enabled) and a button (run now) per
/// job, the next scheduled action, and the Tempo sensors.
async fn bridge_entities(
    topics: &Topics,
    jobs: &SchedulerHandle,
    tempo: bool,
    qos: u8,
) -> Vec<Entity> {
    let root = discovery::bridge_node(topics);
    let schedule = topics.bridge_schedule();
    let mut out = Vec::new();
    let base = |key: &str, name: String, component: Component| {
        let platform = component.as_str();
        Entity {
            component,
            key: key.to_string(),
            config: EntityConfig {
                name: Some(name),
                unique_id: format!("{root}_{key}"),
                default_entity_id: format!("{platform}.{root}_{key}"),
                qos,
                ..EntityConfig::default()
            },
            availability: vec![topics.bridge_state()],
        }
    };
    for job in jobs.list().await {
        let id = job.id.clone();
        let mut sw = base(
            &format!("{id}_enabled"),
            format!("Job {id}"),
            Component::Switch,
        );
        sw.config.state_topic = Some(schedule.clone());
        sw.config.value_template = Some(format!(
            "{{% set j = value_json.jobs | selectattr('id', 'eq', '{id}') | first %}}{{{{ 'on' if j and not j.paused else 'off' }}}}"
        ));
        sw.config.command_topic = Some(topics.bridge_request(&format!("jobs/{id}/enabled")));
        sw.config.payload_on = Some(r#"{"enabled":true}"#);
        sw.config.payload_off = Some(r#"{"enabled":false}"#);
        sw.config.state_on = Some("on");
        sw.config.state_off = Some("off");
        sw.config.entity_category = Some(EntityCategory::Config);
        sw.config.icon = Some("mdi:calendar-clock");
        out.push(sw);
        let mut button = base(
            &format!("{id}_run"),
            format!("Run {id} now"),
            Component::Button,
        );
        button.config.command_topic = Some(topics.bridge_request(&format!("jobs/{id}/run")));
        button.config.payload_press = Some("{}");
        button.config.entity_category = Some(EntityCategory::Config);
        out.push(button);
    }
    let mut next = base(
        "next_scheduled_action",
        "Next scheduled action".into(),
        Component::Sensor,
    );
    next.config.state_topic = Some(schedule);
    next.config.value_template = Some(
        "{% set j = value_json.jobs | selectattr('id', 'in', ['job_switch_to_auto', 'job_switch_to_manual_night']) \
         | selectattr('next_run_utc') | sort(attribute='next_run_utc') | first %}\
         {{ (j.id | replace('job_switch_to_', '') ~ ' at ' ~ j.next_run_local) if j else 'none' }}"
            .into(),
    );
    next.config.icon = Some("mdi:calendar-arrow-right");
    out.push(next);
    if tempo {
        for (key, name, path) in [
            ("tempo_today", "Tempo today", "today"),
            ("tempo_tomorrow", "Tempo tomorrow", "tomorrow"),
        ] {
            let mut e = base(key, name.into(), Component::Sensor);
            e.config.state_topic = Some(topics.bridge_tempo());
            e.config.value_template =
                Some(format!("{{{{ value_json.{path}.colour or 'unknown' }}}}"));
            e.config.icon = Some("mdi:palette");
            out.push(e);
        }
        let mut pre = base(
            "precharge_tonight",
            "Precharge tonight".into(),
            Component::BinarySensor,
        );
        pre.config.state_topic = Some(topics.bridge_tempo());
        pre.config.value_template = Some("{{ 'ON' if value_json.precharge else 'OFF' }}".into());
        pre.config.icon = Some("mdi:battery-charging-high");
        out.push(pre);
        let mut next = base(
            "plan_next_action",
            "Plan next action".into(),
            Component::Sensor,
        );
        next.config.state_topic = Some(topics.bridge_plan());
        next.config.value_template = Some("{{ value_json.next_action | truncate(250) }}".into());
        next.config.icon = Some("mdi:battery-clock");
        out.push(next);
        for (key, name, field) in [
            ("ledger_today", "Tempo saved today", "today_saved_eur"),
            (
                "ledger_season",
                "Tempo saved this season",
                "season_saved_eur",
            ),
        ] {
            let mut e = base(key, name.into(), Component::Sensor);
            e.config.state_topic = Some(topics.bridge_ledger());
            e.config.value_template = Some(format!("{{{{ value_json.{field} }}}}"));
            e.config.device_class = Some("monetary");
            e.config.unit_of_measurement = Some("EUR");
            e.config.state_class = Some(StateClass::Total);
            out.push(e);
        }
    }
    out
}

fn bridge_info(settings: &Settings, core: &Core, instance: &str) -> Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "instance": instance,
        "devices": core.fleet.ids(),
        "backend": core.store.backend(),
        "read_only": settings.bridge.read_only,
        "timezone": settings.scheduler.timezone,
        "config": settings.to_redacted_json(),
    })
}

/// Forwards every sample to MQTT and the alert rules, and every alert (rules, commands, jobs, Tempo) through the hysteresis to MQTT and the store.
fn spawn_fan_out(
    tasks: &Tasks,
    core: &Core,
    mqtt: &MqttHandle,
    live: &http::Live,
    alert_settings: &AlertSettings,
    mut alerts_rx: mpsc::UnboundedReceiver<Alert>,
) {
    let mut samples = core.samples.subscribe();
    let mut engine = AlertEngine::new(alert_settings.clone());
    let mqtt_out = mqtt.clone();
    let live = live.clone();
    let store = core.store.clone();
    let fleet = core.fleet.clone();
    let cancel = tasks.token().clone();
    tasks.spawn(async move {
        let mut health_tick = tokio::time::interval(Duration::from_secs(5));
        health_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let raised: Vec<Alert> = tokio::select! {
                () = cancel.cancelled() => return,
                r = samples.recv() => match r {
                    Ok(sample) => {
                        metrics::counter!("marstek_samples_total").increment(1);
                        crate::sample_metrics::record(&sample);
                        let alerts = engine.on_sample(&sample);
                        mqtt_out.publish_sample(sample);
                        alerts
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "publisher_lagged");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                a = alerts_rx.recv() => match a {
                    Some(a) => engine.on_event(a),
                    None => return,
                },
                _ = health_tick.tick() => {
                    let now = Utc::now();
                    fleet.iter().flat_map(|b| engine.on_health(b.id(), &b.health(), now)).collect()
                }
            };
            for alert in raised {
                tracing::warn!(kind = alert.kind.as_str(), device = ?alert.device.as_ref().map(DeviceId::as_str), state = ?alert.state, message = %alert.message, "alert");
                metrics::counter!("marstek_alerts_total", "kind" => alert.kind.as_str()).increment(1);
                mqtt_out.publish_alert(&alert);
                live.on_alert(&alert);
                if let Err(e) = store.record_alert(&alert).await {
                    tracing::warn!(error = %e, "alert_not_stored");
                }
            }
        }
    });
}

/// Publishes every new value of a watch channel.
fn spawn_watch_publisher(
    tasks: &Tasks,
    mut rx: watch::Receiver<Value>,
    publish: impl Fn(Value) + Send + 'static,
) {
    let cancel = tasks.token().clone();
    tasks.spawn(async move {
        loop {
            let v = rx.borrow_and_update().clone();
            if !v.is_null() {
                publish(v);
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
        }
    });
}

/// Reads health from every part, for `bridge/health` and `/readyz`.
#[derive(Clone)]
struct HealthSource {
    fleet: Fleet,
    writer: WriterHandle,
    mqtt: MqttHandle,
    store: Arc<dyn Store>,
    stale_after: Duration,
}

impl HealthSource {
    async fn report(&self) -> Value {
        let now = Utc::now();
        let stats = self.writer.stats();
        let devices: serde_json::Map<String, Value> = self
            .fleet
            .iter()
            .map(|b| {
                let h = b.health();
                metrics::gauge!("marstek_device_queue_depth", "device" => b.id().to_string())
                    .set(h.queue_depth as f64);
                (
                    b.id().to_string(),
                    json!({
                        "reachable": h.reachable,
                        "last_seen": h.last_seen,
                        "polled_recently": self.polled_recently(&h, now),
                        "requests": h.requests,
                        "timeouts": h.timeouts,
                        "errors": h.errors,
                        "consecutive_failures": h.consecutive_failures,
                        "last_latency_ms": h.last_latency_ms,
                        "queue_depth": h.queue_depth,
                    }),
                )
            })
            .collect();
        metrics::gauge!("marstek_store_buffered_samples").set(stats.buffered as f64);
        metrics::gauge!("marstek_store_dropped_samples").set(stats.dropped as f64);
        json!({
            "at": now,
            "broker_connected": *self.mqtt.connected().borrow(),
            "mqtt_dropped": self.mqtt.dropped(),
            "database": {
                "backend": self.store.backend(),
                "up": stats.db_up,
                "buffered": stats.buffered,
                "dropped": stats.dropped,
                "written": stats.written,
                "last_error": stats.last_error,
            },
            "devices": devices,
        })
    }

    fn polled_recently(&self, h: &DeviceHealth, now: DateTime<Utc>) -> bool {
        h.last_seen.is_some_and(|t| {
            (now - t)
                .to_std()
                .map(|age| age <= self.stale_after)
                .unwrap_or(true)
        })
    }

    async fn readiness(&self) -> Readiness {
        let report = self.report().await;
        let broker = report["broker_connected"].as_bool().unwrap_or(false);
        let database = report["database"]["up"].as_bool().unwrap_or(false);
        let devices_ok = report["devices"].as_object().is_none_or(|m| {
            m.values()
                .all(|d| d["polled_recently"].as_bool().unwrap_or(false))
        });
        Readiness {
            ready: broker && database && devices_ok,
            broker,
            database,
            devices: report["devices"].clone(),
        }
    }
}
