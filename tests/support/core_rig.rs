//! The in-process core of the bridge for integration tests, built by the app's own builder
//! (`app::core::spawn`, the one `app::start` uses): simulated batteries on loopback UDP, the real
//! Marstek driver, the command service with its SOC guard and remembered controls, presence and
//! the telemetry writer, on a SQLite file in a temp dir. Touches only loopback sockets, its temp
//! directory and the tasks it spawns (all cancelled on drop). Its [`loopback_settings`] are
//! also where the whole-bridge rig (`bridge_rig`) starts from.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use marstek_bridge::app::{Core, Tasks, core};
use marstek_bridge::config::{DeviceConfig, Settings};
use marstek_bridge::control::{CommandService, Fleet};
use marstek_bridge::domain::{Alert, AlertSender, BatteryRef, Sample};
use marstek_bridge::marstek::PollingSettings;
use marstek_bridge::simulator::{SimConfig, SimHandle, Simulator};
use marstek_bridge::store::Store;
use tokio::sync::{broadcast, mpsc};

/// Polling for tests that poll when they want a sample: routine polls off (one an hour),
/// short timeouts, no pacing, one retry.
pub fn on_demand_polling() -> PollingSettings {
    PollingSettings {
        status_interval: Duration::from_secs(3600),
        request_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_millis(500),
        quiet_gap: Duration::ZERO,
        retries: 1,
        resend_after: Duration::ZERO,
        failures_before_unreachable: 1,
        queue_capacity: 8,
        extras_every: 1,
        read_battery: true,
        // silence tests expect a silent battery to go unreachable at once, even on fw 150
        network_reset_blackout: false,
    }
}

/// The settings both rigs start from: one configured battery per simulated device (entry `n`
/// from `device(n)`, its host and port from the simulator), UDP on loopback without the device
/// port, `polling`, and the store on `bridge.db` in `dir` (SQLite).
pub fn loopback_settings(
    sim: &SimHandle,
    dir: &std::path::Path,
    polling: PollingSettings,
    device: impl Fn(usize) -> DeviceConfig,
) -> Settings {
    let mut settings = Settings::default();
    settings.database.url = format!("sqlite://{}", dir.join("bridge.db").display());
    settings.polling = polling;
    settings.marstek.bind_address = IpAddr::V4(Ipv4Addr::LOCALHOST);
    settings.marstek.bind_device_port = false;
    settings.devices = sim
        .addrs()
        .into_iter()
        .enumerate()
        .map(|(n, addr)| DeviceConfig {
            host: addr.ip().to_string(),
            port: addr.port(),
            ..device(n)
        })
        .collect();
    settings
}

/// What the rig is made of.
pub struct CoreSetup {
    /// The simulated fleet.
    pub sim: SimConfig,
    /// Polling of every battery.
    pub polling: PollingSettings,
    /// The configuration entry of battery `n` (its host and port are filled in from the
    /// simulator; the alias defaults to `bat<n>`).
    pub device: fn(usize) -> DeviceConfig,
}

impl CoreSetup {
    /// `sim` with [`on_demand_polling`] and batteries `bat0`, `bat1`, … at default limits.
    pub fn new(sim: SimConfig) -> Self {
        Self {
            sim,
            polling: on_demand_polling(),
            device: |n| DeviceConfig {
                id: Some(format!("bat{n}")),
                ..DeviceConfig::default()
            },
        }
    }
}

/// A running core: the simulator, the core handles, and the alerts its parts raised.
pub struct CoreRig {
    /// The simulated batteries.
    pub sim: SimHandle,
    /// Store, fleet, commands, presence, samples, writer.
    pub core: Core,
    /// Alerts raised by the command service (and whatever the test hands `alerts_tx` to).
    pub alerts: mpsc::UnboundedReceiver<Alert>,
    /// The sender of `alerts`, for the parts a test wires itself (scheduler, reconciler).
    pub alerts_tx: AlertSender,
    /// Every task of the core; cancelled on drop.
    pub tasks: Tasks,
    _dir: tempfile::TempDir,
}

impl CoreRig {
    /// Starts the simulator and the core on a fresh SQLite file.
    pub async fn start(setup: CoreSetup) -> CoreRig {
        let sim = Simulator::start(setup.sim).await.expect("simulator");
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = loopback_settings(&sim, dir.path(), setup.polling, setup.device);
        let (tasks, _ended) = Tasks::new(Default::default());
        let (alerts_tx, alerts) = mpsc::unbounded_channel();
        let core = core::spawn(&settings, &settings.derive(), &tasks, alerts_tx.clone())
            .await
            .expect("core starts");
        // `app::start` opens the sample relay once its subscribers are in place; here the
        // test is the subscriber.
        core.open_samples();
        first_rounds(&core).await;
        CoreRig {
            sim,
            core,
            alerts,
            alerts_tx,
            tasks,
            _dir: dir,
        }
    }

    /// The SQLite file of the store (for a test that damages it).
    #[allow(dead_code)]
    pub fn db_path(&self) -> std::path::PathBuf {
        self._dir.path().join("bridge.db")
    }

    /// The store.
    pub fn store(&self) -> Arc<dyn Store> {
        self.core.store.clone()
    }

    /// The command service.
    pub fn commands(&self) -> CommandService {
        self.core.commands.clone()
    }

    /// The fleet.
    pub fn fleet(&self) -> Fleet {
        self.core.fleet.clone()
    }

    /// Battery `n` of the fleet.
    pub fn battery(&self, n: usize) -> BatteryRef {
        self.core.fleet.iter().nth(n).expect("battery n").clone()
    }

    /// The sample broadcast.
    pub fn samples(&self) -> broadcast::Sender<Sample> {
        self.core.samples.clone()
    }

    /// The alerts raised so far, without waiting.
    pub fn drain_alerts(&mut self) -> Vec<Alert> {
        std::iter::from_fn(|| self.alerts.try_recv().ok()).collect()
    }
}

/// Waits until every battery has finished its first routine round: that round serves the
/// commands queued meanwhile between its reads, so a test that polls and commands before it ends
/// would see its (older) sample arrive after theirs.
async fn first_rounds(core: &Core) {
    let mut samples = core.samples.subscribe();
    let all_read = || core.fleet.iter().all(|b| b.soc().is_some());
    let wait = async {
        while !all_read() {
            if let Err(broadcast::error::RecvError::Closed) = samples.recv().await {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .expect("every battery answers its first round");
}

impl Drop for CoreRig {
    fn drop(&mut self) {
        self.tasks.token().cancel();
    }
}
