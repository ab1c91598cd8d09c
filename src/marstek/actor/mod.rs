//! One actor (task) per battery: it owns the device's request queue so the device never sees two
//! requests at once, keeps a quiet gap after every reply, serves commands and immediate polls
//! before routine polls, polls on an interval, learns the identity (`Marstek.GetDevice`) at
//! start and after the device comes back, keeps `DeviceHealth`, and publishes one `Sample` per
//! round on the broadcast channel given by the caller.
//!
//! A battery configured by host name that does not resolve is served like one that does not
//! answer: its requests fail, it turns unreachable, and the name is resolved again with a
//! growing pause (1 s doubling to 1 min); a battery that turns unreachable has its name
//! resolved again too.
//!
//! [`MarstekBattery`] is the handle; it implements `domain::Battery`. Touches the shared
//! [`Transport`] and the system resolver only. The status round lives in `round`, command
//! execution in `serve`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod round;
mod serve;

use super::catalogue;
use super::client::{Reply, Transport};
use super::pacing::next_round;
use super::profile::Profile;
use super::protocol::{self, DeviceResult, decode_result, method};
use super::readings::{ReadingsTracker, reading_units};
use super::settings::PollingSettings;
use crate::domain::{
    Battery, Command, CommandReport, DeviceHealth, DeviceId, DeviceInfo, DeviceLimits, DriverError,
    Mode, ModeConfig, Percent, Sample,
};

/// One battery to drive.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec {
    /// Bridge id (alias or BLE MAC).
    pub id: DeviceId,
    /// Address and port the battery listens on.
    pub addr: SocketAddr,
    /// Configured limits.
    pub limits: DeviceLimits,
}

/// One battery known by host name, resolved by its actor (again and again while it fails).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedDevice {
    /// Bridge id (alias, or a name derived from the host).
    pub id: DeviceId,
    /// Host name of the battery.
    pub host: String,
    /// UDP port it listens on.
    pub port: u16,
    /// Configured limits.
    pub limits: DeviceLimits,
}

/// First and longest pause between two attempts to resolve a device's host name.
const RESOLVE_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// Where the actor sends: a fixed address, or a host name resolved when needed.
struct Target {
    addr: Option<SocketAddr>,
    name: Option<(String, u16)>,
    next_attempt: Instant,
    backoff: Duration,
}

enum Job {
    Poll(oneshot::Sender<Result<Sample, DriverError>>),
    Execute(
        Box<Command>,
        oneshot::Sender<Result<CommandReport, DriverError>>,
    ),
}

struct Shared {
    health: Mutex<DeviceHealth>,
    soc: Mutex<Option<Percent>>,
    info: Mutex<Option<DeviceInfo>>,
    queued: AtomicUsize,
    available: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Handle to one device actor; cheap to clone.
#[derive(Clone)]
pub struct MarstekBattery {
    spec: Arc<DeviceSpec>,
    jobs: mpsc::Sender<Job>,
    capacity: usize,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MarstekBattery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarstekBattery")
            .field("id", &self.spec.id)
            .field("addr", &self.spec.addr)
            .finish()
    }
}

impl MarstekBattery {
    /// Spawns the actor of one device on `tracker`; it stops when `shutdown` is cancelled.
    pub fn spawn(
        transport: Arc<Transport>,
        spec: DeviceSpec,
        settings: PollingSettings,
        samples: broadcast::Sender<Sample>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let target = Target {
            addr: Some(spec.addr),
            name: None,
            next_attempt: Instant::now(),
            backoff: RESOLVE_BACKOFF.0,
        };
        Self::spawn_target(
            transport, spec, target, settings, samples, shutdown, tracker,
        )
    }

    /// Spawns the actor of a device known by a host name that did not resolve (yet); the handle's
    /// [`addr`](Self::addr) is `0.0.0.0:<port>` until then.
    pub fn spawn_named(
        transport: Arc<Transport>,
        device: NamedDevice,
        settings: PollingSettings,
        samples: broadcast::Sender<Sample>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let spec = DeviceSpec {
            id: device.id,
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), device.port),
            limits: device.limits,
        };
        let target = Target {
            addr: None,
            name: Some((device.host, device.port)),
            next_attempt: Instant::now(),
            backoff: RESOLVE_BACKOFF.0,
        };
        Self::spawn_target(
            transport, spec, target, settings, samples, shutdown, tracker,
        )
    }

    fn spawn_target(
        transport: Arc<Transport>,
        spec: DeviceSpec,
        target: Target,
        settings: PollingSettings,
        samples: broadcast::Sender<Sample>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let capacity = settings.queue_capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let (available, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            health: Mutex::new(DeviceHealth::default()),
            soc: Mutex::new(None),
            info: Mutex::new(None),
            queued: AtomicUsize::new(0),
            available,
        });
        let spec = Arc::new(spec);
        let actor = Actor {
            transport,
            target,
            spec: spec.clone(),
            settings,
            samples,
            shared: shared.clone(),
            profile: None,
            identify: true,
            last_io: None,
            round: 0,
            readings: ReadingsTracker::default(),
            mode_instance: 0,
            last_mode: None,
            written: None,
            silence: None,
        };
        tracker.spawn(actor.run(rx, shutdown));
        Self {
            spec,
            jobs: tx,
            capacity,
            shared,
        }
    }

    /// Address of the device.
    pub fn addr(&self) -> SocketAddr {
        self.spec.addr
    }

    /// Reachability changes: `true` reachable, `false` unreachable (starts `false`).
    pub fn availability(&self) -> watch::Receiver<bool> {
        self.shared.available.subscribe()
    }

    fn enqueue(&self, job: Job) -> Result<(), DriverError> {
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.shared.queued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(DriverError::QueueFull {
                device: self.spec.id.to_string(),
                capacity: self.capacity,
            }),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(DriverError::Closed),
        }
    }
}

/// Binds the shared transport from the settings and spawns one actor per device.
pub async fn spawn_fleet(
    settings: &super::settings::MarstekSettings,
    polling: &PollingSettings,
    devices: Vec<DeviceSpec>,
    samples: broadcast::Sender<Sample>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<(Arc<Transport>, Vec<MarstekBattery>), DriverError> {
    let transport = Transport::bind(settings.bind_socket(), shutdown).await?;
    let handles = devices
        .into_iter()
        .map(|spec| {
            MarstekBattery::spawn(
                transport.clone(),
                spec,
                polling.clone(),
                samples.clone(),
                shutdown.clone(),
                tracker,
            )
        })
        .collect();
    Ok((transport, handles))
}

#[async_trait::async_trait]
impl Battery for MarstekBattery {
    fn id(&self) -> &DeviceId {
        &self.spec.id
    }

    fn availability(&self) -> Option<watch::Receiver<bool>> {
        Some(self.shared.available.subscribe())
    }

    fn limits(&self) -> DeviceLimits {
        self.spec.limits
    }

    fn info(&self) -> Option<DeviceInfo> {
        lock(&self.shared.info).clone()
    }

    fn soc(&self) -> Option<Percent> {
        *lock(&self.shared.soc)
    }

    fn health(&self) -> DeviceHealth {
        let mut h = lock(&self.shared.health).clone();
        h.queue_depth = self.shared.queued.load(Ordering::Relaxed);
        h
    }

    async fn poll(&self) -> Result<Sample, DriverError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(Job::Poll(tx))?;
        rx.await.map_err(|_| DriverError::Closed)?
    }

    async fn execute(&self, command: &Command) -> Result<CommandReport, DriverError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(Job::Execute(Box::new(command.clone()), tx))?;
        rx.await.map_err(|_| DriverError::Closed)?
    }
}

struct Actor {
    transport: Arc<Transport>,
    target: Target,
    spec: Arc<DeviceSpec>,
    settings: PollingSettings,
    samples: broadcast::Sender<Sample>,
    shared: Arc<Shared>,
    profile: Option<Profile>,
    identify: bool,
    last_io: Option<Instant>,
    round: u64,
    readings: ReadingsTracker,
    /// `params.id` asked first on `ES.GetMode`: the catalogue's choice at identification, then
    /// the one that answered (0, or 1 on firmware that ignores 0).
    mode_instance: u8,
    /// The mode last read or inferred (carried into rounds that leave `ES.GetMode` out).
    last_mode: Option<Mode>,
    /// The last mode write the device accepted, and when: what the mode is inferred from
    /// where the catalogue reads `ES.GetMode` sparingly.
    written: Option<(ModeConfig, Instant)>,
    /// Since when the device has failed every round, and how many (a known network reset is
    /// not counted while it lasts no longer than the catalogue's bound).
    silence: Option<(Instant, u32)>,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>, shutdown: CancellationToken) {
        let mut next_poll = tokio::time::Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                job = rx.recv() => match job {
                    Some(job) => self.serve(job).await,
                    None => break,
                },
                _ = tokio::time::sleep_until(next_poll) => {
                    let extras = self
                        .round
                        .is_multiple_of(u64::from(self.settings.extras_every.max(1)));
                    self.round += 1;
                    let _ = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        r = self.poll_round(extras, Some(&mut rx)) => r,
                    };
                    next_poll = next_round(
                        next_poll,
                        self.settings.status_interval,
                        tokio::time::Instant::now(),
                    );
                }
            }
        }
        tracing::debug!(device = %self.spec.id, "actor_stopped");
    }

    async fn serve(&mut self, job: Job) {
        self.shared.queued.fetch_sub(1, Ordering::Relaxed);
        match job {
            Job::Poll(tx) => {
                let r = self.poll_round(true, None).await;
                let _ = tx.send(r);
            }
            Job::Execute(cmd, tx) => {
                let r = self.execute(&cmd).await;
                if let Err(e) = &r {
                    tracing::warn!(device = %self.spec.id, command = cmd.name(), error = %e, "command_failed");
                }
                let _ = tx.send(r);
            }
        }
    }

    /// Serves queued commands/immediate polls (priority) between the requests of a routine round.
    async fn serve_pending(&mut self, rx: &mut Option<&mut mpsc::Receiver<Job>>) {
        let Some(rx) = rx.as_mut() else { return };
        while let Ok(job) = rx.try_recv() {
            Box::pin(self.serve(job)).await;
        }
    }

    async fn call(&mut self, m: &str, params: Value, write: bool) -> Result<Reply, DriverError> {
        if let Some(last) = self.last_io {
            let ready = last + self.settings.quiet_gap;
            // Only when the gap is still running: tokio's timer rounds a deadline up to its next
            // millisecond tick, so even an elapsed or zero gap would cost up to 1 ms per call.
            if ready > Instant::now() {
                tokio::time::sleep_until(tokio::time::Instant::from_std(ready)).await;
            }
        }
        let opts = if write {
            self.settings.write_options()
        } else {
            self.settings.read_options()
        };
        let addr = match self.resolve().await {
            Ok(a) => a,
            Err(e) => {
                lock(&self.shared.health).errors += 1;
                return Err(e);
            }
        };
        let unsupported = self.transport.is_unsupported(addr, m);
        if !unsupported {
            lock(&self.shared.health).requests += 1;
        }
        let r = self.transport.request(addr, m, params, opts).await;
        if !unsupported {
            self.last_io = Some(Instant::now());
        }
        let mut h = lock(&self.shared.health);
        match &r {
            Ok(reply) => {
                h.last_latency_ms = Some(reply.latency.as_secs_f64() * 1000.0);
                h.last_seen = Some(Utc::now());
            }
            Err(DriverError::Timeout { .. }) => h.timeouts += 1,
            Err(DriverError::Unsupported { .. }) => {}
            Err(DriverError::Device { code, .. }) if *code == protocol::METHOD_NOT_FOUND => {
                h.last_seen = Some(Utc::now());
            }
            Err(_) => h.errors += 1,
        }
        r
    }

    /// The device's address: the fixed one, or its host name resolved now (at most once per
    /// backoff pause; an I/O error while it does not resolve).
    async fn resolve(&mut self) -> Result<SocketAddr, DriverError> {
        let t = &mut self.target;
        if let Some(addr) = t.addr {
            return Ok(addr);
        }
        let Some((host, port)) = t.name.clone() else {
            return Err(DriverError::Io("no address".into()));
        };
        if Instant::now() < t.next_attempt {
            return Err(DriverError::Io(format!(
                "cannot resolve {host} (will retry)"
            )));
        }
        let found = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())
            .and_then(|mut a| {
                a.find(SocketAddr::is_ipv4)
                    .ok_or_else(|| "no IPv4 address".into())
            });
        match found {
            Ok(addr) => {
                tracing::info!(device = %self.spec.id, host = %host, addr = %addr, "device_resolved");
                t.addr = Some(addr);
                t.backoff = RESOLVE_BACKOFF.0;
                Ok(addr)
            }
            Err(e) => {
                tracing::warn!(device = %self.spec.id, host = %host, error = %e, retry_in = ?t.backoff, "device_unresolved");
                t.next_attempt = Instant::now() + t.backoff;
                t.backoff = (t.backoff * 2).min(RESOLVE_BACKOFF.1);
                Err(DriverError::Io(format!("cannot resolve {host}: {e}")))
            }
        }
    }

    async fn identify(&mut self) -> Result<Profile, DriverError> {
        let reply = self
            .call(method::GET_DEVICE, protocol::get_device_params(), false)
            .await?;
        let d: DeviceResult = decode_result(&reply.result).map_err(DriverError::Decode)?;
        let profile = Profile::from_device(&d);
        let ble_mac = d
            .ble_mac
            .clone()
            .filter(|m| !m.is_empty())
            .or_else(|| {
                reply
                    .src
                    .as_deref()
                    .and_then(|s| s.rsplit('-').next())
                    .map(str::to_string)
            })
            .unwrap_or_default()
            .to_ascii_lowercase();
        let info = DeviceInfo {
            id: self.spec.id.clone(),
            model: d.device.clone().unwrap_or_default(),
            firmware: profile.firmware,
            ble_mac,
            wifi_mac: d.wifi_mac.clone(),
            address: self.target.addr.unwrap_or(self.spec.addr).to_string(),
            readings: reading_units(&profile).set,
            firmware_note: Some(catalogue::lookup(
                d.device.as_deref().unwrap_or(""),
                profile.firmware,
            )),
        };
        self.apply_policy(&info);
        self.readings.identified(&profile, &info.ble_mac);
        tracing::info!(device = %self.spec.id, model = %info.model, firmware = info.firmware, "device_identified");
        *lock(&self.shared.info) = Some(info);
        self.profile = Some(profile);
        self.identify = false;
        Ok(profile)
    }

    /// Follows the catalogue's policy for the device just identified: the `ES.GetMode`
    /// instance asked first, and a warning when the poll interval is below the safe one.
    fn apply_policy(&mut self, info: &DeviceInfo) {
        let Some(note) = &info.firmware_note else {
            return;
        };
        self.mode_instance = note.policy.get_mode_instance.min(1);
        let safe = Duration::from_secs(u64::from(note.policy.min_poll_interval_s));
        if self.settings.status_interval < safe {
            tracing::warn!(device = %self.spec.id, entry = %note.entry, interval = ?self.settings.status_interval, safe = ?safe, "poll_interval_below_firmware_safe_interval");
        }
        tracing::info!(device = %self.spec.id, entry = %note.entry, matched = %note.matched, severity = note.severity.as_str(), note = %note.note, "firmware_catalogue_matched");
    }

    async fn profile(&mut self) -> Result<Profile, DriverError> {
        match self.profile {
            Some(p) if !self.identify => Ok(p),
            _ => self.identify().await,
        }
    }
}
