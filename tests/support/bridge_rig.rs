//! The whole bridge in-process for integration tests, built by the app's own builder
//! (`app::start`, the one `app::run` uses) on the core rig's settings (`core_rig`) plus MQTT:
//! simulated batteries on loopback UDP, the real driver, command service, scheduler, MQTT bridge
//! and fan-out, on a SQLite file in a temp dir (or a database a test names), talking to the test
//! broker under a base topic and discovery prefix of its own. Effect checks of writes are off
//! (answers are verified by the mode read-back). The schedule's AUTO (06:00) and MANUAL (22:00)
//! jobs are disabled unless a test opts in, so nothing depends on the time of day. Touches only
//! loopback sockets, its temp directory, its own topics and the tasks it spawns (all cancelled
//! on drop).

use std::sync::Arc;
use std::time::Duration;

use marstek_bridge::app::tasks::Ended;
use marstek_bridge::app::{self, Running, Tasks};
use marstek_bridge::config::{DeviceConfig, Settings};
use marstek_bridge::domain::Mode;
use marstek_bridge::marstek::PollingSettings;
use marstek_bridge::mqtt::{MqttHandle, MqttProtocol};
use marstek_bridge::scheduler::{JOB_SWITCH_TO_AUTO, JOB_SWITCH_TO_MANUAL_NIGHT, JobSettings};
use marstek_bridge::simulator::{SimConfig, SimHandle, SimSnapshot, Simulator};
use marstek_bridge::store::Store;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::core_rig::{loopback_settings, on_demand_polling};
use super::mqtt_probe::{BROKER, Probe, WAIT, clear_retained, unique};

/// A settings change applied after the rig's own, before validation.
type Tweak = Box<dyn FnOnce(&mut Settings)>;

/// What the bridge under test is made of; [`BridgeBuilder::start`] starts it.
pub struct BridgeBuilder {
    ids: Vec<String>,
    sim: Option<SimHandle>,
    poll: Duration,
    protocol: MqttProtocol,
    base: String,
    schedule: bool,
    tweaks: Vec<Tweak>,
}

/// Polling of the rig's batteries every `every`: [`on_demand_polling`]'s short timeouts, no
/// pacing, one retry, unreachable after two failed rounds, room for 16 queued requests.
pub fn test_polling(every: Duration) -> PollingSettings {
    PollingSettings {
        status_interval: every,
        failures_before_unreachable: 2,
        queue_capacity: 16,
        ..on_demand_polling()
    }
}

impl BridgeBuilder {
    /// One battery `dev1`, routine polls off (one an hour), MQTT 3.1.1, topics
    /// `mbtest-<tag>-<random>` and `<that>-ha`.
    pub fn new(tag: &str) -> Self {
        Self {
            ids: vec!["dev1".into()],
            sim: None,
            poll: Duration::from_secs(3600),
            protocol: MqttProtocol::V311,
            base: unique(tag),
            schedule: false,
            tweaks: Vec::new(),
        }
    }

    /// The batteries' ids, one simulated device each.
    pub fn devices(mut self, ids: &[&str]) -> Self {
        self.ids = ids.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Routine polls every `every`.
    pub fn poll_every(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// The bridge's MQTT protocol.
    pub fn protocol(mut self, protocol: MqttProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The simulated batteries to use (already started, one per id), instead of fresh ones.
    pub fn simulator(mut self, sim: SimHandle) -> Self {
        self.sim = Some(sim);
        self
    }

    /// The base topic (and `<base>-ha` prefix) of an earlier bridge, e.g. to restart on a new
    /// fleet.
    pub fn base(mut self, base: &str) -> Self {
        self.base = base.to_string();
        self
    }

    /// The base topic the bridge will use (to subscribe before it starts).
    pub fn base_topic(&self) -> &str {
        &self.base
    }

    /// The discovery prefix the bridge will use.
    pub fn prefix(&self) -> String {
        format!("{}-ha", self.base)
    }

    /// Keeps the schedule's AUTO / MANUAL jobs (for the tests about them).
    pub fn with_schedule(mut self) -> Self {
        self.schedule = true;
        self
    }

    /// Changes the settings after the rig's own (database URL, MQTT port, discovery style…).
    pub fn with(mut self, tweak: impl FnOnce(&mut Settings) + 'static) -> Self {
        self.tweaks.push(Box::new(tweak));
        self
    }

    /// Starts the simulator and the bridge; returns once the bridge is connected and has said
    /// `online` (so its subscriptions are in place).
    pub async fn start(mut self) -> TestBridge {
        let sim = match self.sim.take() {
            Some(sim) => sim,
            None => simulator(self.ids.len()).await,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let base = self.base.clone();
        let settings = self.settings(&sim, &dir, &base);
        let (tasks, ended, running) = launch(&settings).await;
        TestBridge {
            prefix: settings.mqtt.discovery_prefix.clone(),
            base,
            sim,
            settings,
            tasks,
            ended,
            running: Some(running),
            _dir: dir,
        }
    }

    fn settings(self, sim: &SimHandle, dir: &tempfile::TempDir, base: &str) -> Settings {
        let ids = &self.ids;
        let device = |n: usize| DeviceConfig {
            id: Some(ids[n].clone()),
            ..DeviceConfig::default()
        };
        let mut s = loopback_settings(sim, dir.path(), test_polling(self.poll), device);
        s.mqtt.host = BROKER.0.into();
        s.mqtt.port = BROKER.1;
        s.mqtt.protocol = self.protocol;
        s.mqtt.client_id = base.to_string();
        s.mqtt.base_topic = base.to_string();
        s.mqtt.discovery_prefix = format!("{base}-ha");
        s.mqtt.keep_alive = Duration::from_secs(5);
        s.mqtt.reconnect_min = Duration::from_millis(50);
        s.mqtt.reconnect_max = Duration::from_millis(300);
        s.mqtt.birth_delay_max = Duration::from_millis(100);
        // Answers say `verified` from the mode read-back, as a bridge without effect checks
        // does; the effect checks (and their later verdicts) have suites of their own.
        s.marstek.verify.enabled = false;
        s.tempo.enabled = false;
        s.bridge.instance_id = Some(base.to_string());
        if !self.schedule {
            for job in [JOB_SWITCH_TO_AUTO, JOB_SWITCH_TO_MANUAL_NIGHT] {
                s.scheduler.jobs.insert(
                    job.into(),
                    JobSettings {
                        trigger: None,
                        enabled: false,
                    },
                );
            }
        }
        for tweak in self.tweaks {
            tweak(&mut s);
        }
        let issues = s.validate();
        assert!(issues.is_empty(), "test settings invalid: {issues:?}");
        s
    }
}

/// `n` simulated batteries with the simulator's defaults, on loopback.
pub async fn simulator(n: usize) -> SimHandle {
    Simulator::start(SimConfig {
        devices: n,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

/// What a command could change on device `i` of `sim` (mode, set-points, slots, DOD, LED, BLE).
pub fn settings_of(sim: &SimHandle, i: usize) -> Value {
    let s = sim.state(i).expect("device exists");
    json!({
        "mode": s.mode, "passive_power": s.passive_power, "slots": s.slots, "dod": s.dod,
        "led": s.led, "ble_adv": s.ble_adv,
    })
}

/// Runs `app::start` on `settings` and waits until the bridge is connected and online.
async fn launch(settings: &Settings) -> (Tasks, mpsc::UnboundedReceiver<Ended>, Running) {
    let base = &settings.mqtt.base_topic;
    // `online` is published after the subscriptions: once it is seen, commands are heard.
    let mut online = Probe::connect(&[format!("{base}/bridge/state")]).await;
    let (tasks, ended) = Tasks::new(CancellationToken::new());
    let running = app::start(settings, &tasks).await.expect("bridge starts");
    let mut conn = running.mqtt.connected();
    tokio::time::timeout(WAIT, conn.wait_for(|c| *c))
        .await
        .expect("bridge connects")
        .expect("bridge alive");
    online
        .wait("bridge online", WAIT, |m| m.json()["state"] == "online")
        .await;
    (tasks, ended, running)
}

/// A running bridge (the app's own builder) with its simulated batteries.
pub struct TestBridge {
    /// The simulated batteries (device `n` is the `n`-th configured id).
    pub sim: SimHandle,
    /// The base topic.
    pub base: String,
    /// The discovery prefix.
    pub prefix: String,
    /// The settings it runs on.
    pub settings: Settings,
    tasks: Tasks,
    ended: mpsc::UnboundedReceiver<Ended>,
    running: Option<Running>,
    _dir: tempfile::TempDir,
}

impl TestBridge {
    /// A builder for battery `dev1` under topics tagged `tag`.
    pub fn builder(tag: &str) -> BridgeBuilder {
        BridgeBuilder::new(tag)
    }

    fn running(&self) -> &Running {
        self.running.as_ref().expect("bridge running")
    }

    /// `<base>/<rest>`.
    pub fn t(&self, rest: &str) -> String {
        format!("{}/{rest}", self.base)
    }

    /// The MQTT side of the running bridge.
    pub fn mqtt(&self) -> &MqttHandle {
        &self.running().mqtt
    }

    /// The store of the running bridge.
    pub fn store(&self) -> Arc<dyn Store> {
        self.running().core.store.clone()
    }

    /// A store of its own on the bridge's database (readable after [`TestBridge::shut_down`]).
    pub async fn open_store(&self) -> Arc<dyn Store> {
        marstek_bridge::store::open(&self.settings.database)
            .await
            .expect("the bridge's database opens")
    }

    /// What the simulator holds for device `i`.
    pub fn snapshot(&self, i: usize) -> SimSnapshot {
        self.sim.state(i).expect("device exists")
    }

    /// Device `i`'s mode in the simulator.
    pub fn mode(&self, i: usize) -> Mode {
        self.snapshot(i).mode
    }

    /// What a command could change on device `i` (see [`settings_of`]).
    pub fn settings_of(&self, i: usize) -> Value {
        settings_of(&self.sim, i)
    }

    /// Stops the bridge the orderly way (`Running::stop`: jobs, actors, writer flush, MQTT
    /// `offline`); the simulator and the database stay for [`TestBridge::start_again`]. Panics
    /// if a core task ended by itself meanwhile (what makes `app::run` fail).
    pub async fn shut_down(&mut self) {
        if let Some(running) = self.running.take() {
            if let Ok((task, err)) = self.ended.try_recv() {
                panic!("core task {task} ended while the bridge ran: {err:#}");
            }
            running
                .stop(&self.tasks, self.settings.bridge.shutdown_timeout)
                .await
                .expect("bridge stops in time");
        }
    }

    /// Starts the bridge again on the same settings, simulator and database.
    pub async fn start_again(&mut self) {
        self.shut_down().await;
        let (tasks, ended, running) = launch(&self.settings).await;
        self.tasks = tasks;
        self.ended = ended;
        self.running = Some(running);
    }

    /// Stops the bridge (see [`TestBridge::shut_down`]).
    pub async fn stop(mut self) {
        self.shut_down().await;
    }

    /// Stops the bridge and removes what it and the test left retained under its topics.
    pub async fn stop_and_clear(self) {
        let filters = [format!("{}/#", self.prefix), format!("{}/#", self.base)];
        self.stop().await;
        clear_retained(&filters).await;
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        self.tasks.token().cancel();
    }
}
