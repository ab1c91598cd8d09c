//! The regulator end to end on the real command path: two simulated batteries behind the real
//! Marstek driver (UDP on loopback), the command service with a SQLite store, and the
//! regulator task fed Shelly Pro 3EM payloads computed from a house model (grid = load − what
//! the batteries deliver, read from the simulator). Counted in control cycles, not time (each
//! meter reading is awaited until the cycle that used it has reported, its writes answered): a
//! 1.5 kW step load is covered within a bounded number of cycles and shared by both batteries,
//! which never run in opposite directions; a silent meter hands both back to Auto within a
//! bounded number of cycles; an inverted meter stops the regulator; a bridge stop hands back;
//! every write is audited with source `regulator`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use marstek_bridge::control::{CommandService, Fleet};
use marstek_bridge::domain::{BatteryRef, DeviceId, DeviceLimits, Mode};
use marstek_bridge::marstek::{DeviceSpec, MarstekBattery, PollingSettings, Transport};
use marstek_bridge::regulator::run::{Inputs, run};
use marstek_bridge::regulator::{MeterPreset, Phase, RegulatorSettings, Status};
use marstek_bridge::simulator::{SimConfig, SimHandle, Simulator};
use marstek_bridge::store::{self, DatabaseSettings, Store};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const WAIT: Duration = Duration::from_secs(20);
const TARGET: f64 = 20.0;

struct Rig {
    sim: SimHandle,
    store: Arc<dyn Store>,
    members: watch::Sender<BTreeSet<DeviceId>>,
    stop: CancellationToken,
    meter: mpsc::Sender<Vec<u8>>,
    status: watch::Receiver<Option<Status>>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn settings() -> RegulatorSettings {
    let mut s = RegulatorSettings {
        enabled: true,
        interval: Duration::from_secs(1),
        countdown: Duration::from_secs(10),
        min_write_interval: Duration::from_secs(2),
        ..Default::default()
    };
    s.meter.preset = MeterPreset::Shelly3em;
    s.meter.topic = Some("shellypro3em-test/status/em:0".into());
    s.meter.stale_after = Duration::from_secs(3);
    assert!(s.validate().is_empty(), "{:?}", s.validate());
    s
}

async fn rig() -> Rig {
    let sim = Simulator::start(SimConfig {
        devices: 2,
        initial_soc: 60.0,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store::open(&DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("bridge.db").display()),
        ..Default::default()
    })
    .await
    .expect("store");
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let transport = Transport::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), &cancel)
        .await
        .expect("bind");
    let (samples, _) = broadcast::channel(64);
    let polling = PollingSettings {
        status_interval: Duration::from_secs(1),
        request_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_millis(500),
        quiet_gap: Duration::ZERO,
        resend_after: Duration::ZERO,
        ..PollingSettings::default()
    };
    let batteries: Vec<BatteryRef> = sim
        .addrs()
        .into_iter()
        .enumerate()
        .map(|(i, addr)| {
            let spec = DeviceSpec {
                id: DeviceId::parse(&format!("bat{}", i + 1)).unwrap(),
                addr,
                limits: DeviceLimits::default(),
            };
            Arc::new(MarstekBattery::spawn(
                transport.clone(),
                spec,
                polling.clone(),
                samples.clone(),
                cancel.clone(),
                &tracker,
            )) as BatteryRef
        })
        .collect();
    let service = CommandService::new(Fleet::new(batteries), Some(store.clone()), None, false);
    let (members, members_rx) = watch::channel(BTreeSet::new());
    let (meter, meter_rx) = mpsc::channel(16);
    let (status_tx, status) = watch::channel(None);
    let inputs = Inputs {
        meter: meter_rx,
        samples: samples.subscribe(),
        members: members_rx,
    };
    // The regulator stops before the drivers (as in the bridge), so that its hand-back to
    // Auto still reaches the batteries.
    let stop = cancel.child_token();
    let task = tokio::spawn(run(
        settings(),
        service,
        inputs,
        status_tx,
        Duration::from_secs(90),
        stop.clone(),
    ));
    Rig {
        sim,
        store,
        members,
        stop,
        meter,
        status,
        cancel,
        task: Some(task),
        _dir: dir,
    }
}

impl Rig {
    /// What each battery delivers now, W (+ discharge): its Passive set-point, 0 otherwise.
    fn outputs(&self) -> Vec<i32> {
        (0..2)
            .map(|i| {
                let s = self.sim.state(i).unwrap();
                if s.mode == Mode::Passive {
                    s.passive_power
                } else {
                    0
                }
            })
            .collect()
    }

    fn grid(&self, load: f64) -> f64 {
        load - f64::from(self.outputs().iter().sum::<i32>())
    }

    fn modes(&self) -> Vec<Mode> {
        (0..2).map(|i| self.sim.state(i).unwrap().mode).collect()
    }

    fn regulate_both(&self) {
        let ids = ["bat1", "bat2"].map(|d| DeviceId::parse(d).unwrap());
        self.members.send_replace(ids.into_iter().collect());
    }

    /// Publishes one Shelly Pro 3EM status with this grid power.
    async fn publish(&self, grid_w: f64) {
        let payload = format!(
            r#"{{"id":0,"a_act_power":{a:.1},"b_act_power":0,"c_act_power":0,"total_act_power":{grid_w:.1}}}"#,
            a = grid_w
        );
        self.meter.send(payload.into_bytes()).await.unwrap();
    }

    /// Waits for the next control cycle and returns its status.
    async fn next_cycle(&mut self) -> Status {
        tokio::time::timeout(WAIT, self.status.changed())
            .await
            .expect("no cycle")
            .unwrap();
        self.status.borrow_and_update().clone().expect("status")
    }

    /// Waits for the cycle that regulated on the reading `grid_w` (published just before): its
    /// writes were answered by the batteries before its status was sent. Cycles that ran on an
    /// older reading (a loaded machine delays the payload) are skipped; a cycle that used no
    /// reading (stopped, fallback) is returned as it is.
    async fn cycle_on(&mut self, grid_w: f64) -> Status {
        loop {
            let status = self.next_cycle().await;
            // No grid in the status: the cycle regulated on nothing (stopped, fallback).
            if status.grid_w.is_none_or(|g| (g - grid_w).abs() < 0.06) {
                return status;
            }
        }
    }

    /// Runs cycles against the house with `load` W, publishing the grid before each; asserts
    /// the directions every cycle; returns the first cycle from which the grid stayed within
    /// the deadband + 30 W of the target.
    async fn regulate(&mut self, load: f64, cycles: usize, invert: bool) -> Option<usize> {
        let mut within = None;
        for n in 1..=cycles {
            let grid = self.grid(load);
            let shown = if invert { -grid } else { grid };
            self.publish(shown).await;
            let status = self.cycle_on(shown).await;
            let out = self.outputs();
            assert!(
                !(out.iter().any(|w| *w > 0) && out.iter().any(|w| *w < 0)),
                "opposite directions at cycle {n}: {out:?} ({status:?})"
            );
            let ok = (self.grid(load) - TARGET).abs() <= 25.0 + 30.0;
            within = match (ok, within) {
                (true, None) => Some(n),
                (false, _) => None,
                (true, w) => w,
            };
        }
        within
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_load_is_covered_by_both_batteries_and_a_bridge_stop_hands_back_to_auto() {
    let mut rig = rig().await;
    rig.regulate_both();
    let covered = rig.regulate(1500.0, 20, false).await;
    let n = covered.expect("the load was never covered");
    assert!(n <= 10, "covered only after {n} cycles");
    let out = rig.outputs();
    assert!(
        out.iter().all(|w| *w > 0),
        "1.5 kW is above the join power: both share {out:?}"
    );
    assert_eq!(rig.modes(), [Mode::Passive, Mode::Passive]);

    let audit = rig.store.recent_commands(50).await.unwrap();
    assert!(!audit.is_empty());
    assert!(audit.iter().all(|c| c.source == "regulator"), "{audit:?}");
    assert!(audit.iter().any(|c| c.device == "bat1") && audit.iter().any(|c| c.device == "bat2"));

    rig.stop.cancel();
    rig.task.take().unwrap().await.unwrap();
    // The task ends only after the hand-back was answered.
    assert_eq!(rig.modes(), [Mode::Auto, Mode::Auto]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_meter_hands_both_batteries_back_to_auto_within_a_bounded_number_of_cycles() {
    let mut rig = rig().await;
    rig.regulate_both();
    rig.regulate(1500.0, 8, false).await;
    assert!(rig.modes().contains(&Mode::Passive));
    // The meter falls silent: stale after 3 s of 1 s cycles, then one cycle to write Auto.
    let mut back_after = None;
    for n in 1..=8 {
        let status = rig.next_cycle().await;
        if rig.modes() == [Mode::Auto, Mode::Auto] {
            assert!(matches!(status.phase, Phase::Fallback(_)), "{status:?}");
            back_after = Some(n);
            break;
        }
    }
    let n = back_after.expect("still not in Auto after 8 silent cycles");
    assert!(n <= 5, "Auto only after {n} cycles");
    // Readings return: regulation resumes.
    let covered = rig.regulate(1500.0, 12, false).await;
    assert!(covered.is_some(), "regulation did not resume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inverted_meter_stops_the_regulator_and_leaves_the_batteries_in_auto() {
    let mut rig = rig().await;
    rig.regulate_both();
    rig.regulate(600.0, 12, true).await;
    let status = rig.next_cycle().await;
    assert!(
        matches!(&status.phase, Phase::Stopped(why) if why.contains("inverted")),
        "{status:?}"
    );
    assert_eq!(rig.modes(), [Mode::Auto, Mode::Auto]);
}
