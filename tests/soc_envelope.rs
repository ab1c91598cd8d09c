//! The SOC window of the safety envelope (`min_soc` / `max_soc`) end to end: the real Marstek
//! driver against the in-process simulator on loopback, the command service (the one path of
//! every source: MQTT, scheduler, reconciler, Tempo) and a SQLite store. A command that would
//! discharge at or below `min_soc`, or charge at or above `max_soc`, is refused before it reaches
//! the battery; a running Passive discharge that reaches `min_soc` is stopped (Passive 0 W),
//! audited with source `safety`, and raises a `soc_limit` alert.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use marstek_bridge::control::{CommandError, CommandService, Fleet, Origin};
use marstek_bridge::domain::{
    Alert, AlertKind, BatteryRef, Command, CommandSource, DeviceId, DeviceLimits, HhMm, ManualSlot,
    Mode, ModeConfig, Rejection, Watts, WeekMask,
};
use marstek_bridge::marstek::{DeviceSpec, MarstekBattery, PollingSettings, Transport};
use marstek_bridge::simulator::{SimConfig, SimHandle, Simulator};
use marstek_bridge::store::{self, DatabaseSettings, Store};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const WAIT: Duration = Duration::from_secs(20);

struct Rig {
    sim: SimHandle,
    battery: BatteryRef,
    commands: CommandService,
    store: Arc<dyn Store>,
    alerts: mpsc::UnboundedReceiver<Alert>,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn rig(initial_soc: f64) -> Rig {
    let sim = Simulator::start(SimConfig {
        initial_soc,
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
        // Routine polls off: the test polls when it wants a sample.
        status_interval: Duration::from_secs(3600),
        request_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_millis(500),
        quiet_gap: Duration::ZERO,
        resend_after: Duration::ZERO,
        ..PollingSettings::default()
    };
    let spec = DeviceSpec {
        id: DeviceId::parse("venus1").unwrap(),
        addr: sim.addrs()[0],
        limits: DeviceLimits {
            min_soc: 30,
            max_soc: 90,
            ..DeviceLimits::default()
        },
    };
    let battery: BatteryRef = Arc::new(MarstekBattery::spawn(
        transport,
        spec,
        polling,
        samples.clone(),
        cancel.clone(),
        &tracker,
    ));
    let (alerts_tx, alerts) = mpsc::unbounded_channel();
    let commands = CommandService::new(
        Fleet::new([battery.clone()]),
        Some(store.clone()),
        Some(alerts_tx),
        false,
    );
    tokio::spawn(
        commands
            .clone()
            .guard_soc(samples.subscribe(), cancel.clone()),
    );
    Rig {
        sim,
        battery,
        commands,
        store,
        alerts,
        cancel,
        _dir: dir,
    }
}

fn passive(power: i32, cd_time: u32) -> Command {
    Command::SetMode(ModeConfig::Passive {
        power: Watts(power),
        cd_time,
    })
}

impl Rig {
    async fn submit(&self, command: &Command) -> Result<(), CommandError> {
        let origin = Origin::new(CommandSource::Mqtt, json!({ "test": true }));
        self.commands
            .submit_one(&DeviceId::parse("venus1").unwrap(), command, origin)
            .await
            .map(drop)
    }
}

fn is_soc_refusal(r: &Result<(), CommandError>) -> bool {
    matches!(r, Err(CommandError::Rejected(Rejection::SocLimit(_))))
}

#[tokio::test]
async fn commands_outside_the_soc_window_are_refused_before_the_battery() {
    let rig = rig(20.0).await;
    rig.battery.poll().await.expect("first sample");
    let before = rig.sim.state(0).unwrap();

    // The finding's reproductions: discharge at 20 % with min_soc 30, a Manual discharge slot.
    let r = rig.submit(&passive(500, 600)).await;
    assert!(is_soc_refusal(&r), "{r:?}");
    let slot = ManualSlot {
        slot: 0,
        start: HhMm::new(0, 0).unwrap(),
        end: HhMm::new(23, 59).unwrap(),
        days: WeekMask::ALL,
        power: Watts(500),
        enable: true,
    };
    let r = rig
        .submit(&Command::SetMode(ModeConfig::Manual { slot }))
        .await;
    assert!(is_soc_refusal(&r), "{r:?}");
    let after = rig.sim.state(0).unwrap();
    assert_eq!(
        after.mode, before.mode,
        "a refused command reached the battery"
    );
    assert_eq!(after.slots, before.slots);

    // Charging is what the battery needs at 20 %: accepted.
    rig.submit(&passive(-500, 600)).await.expect("charge");
    assert_eq!(rig.sim.state(0).unwrap().passive_power, -500);

    // Charging at 95 % with max_soc 90 is refused.
    rig.sim.set_soc(0, 95.0);
    rig.battery.poll().await.expect("sample at 95 %");
    // (The running charge itself may already be stopped by the envelope at 95 %, so the refused
    // command asks for another power and the check is that this one never reached the battery.)
    let r = rig.submit(&passive(-800, 600)).await;
    assert!(is_soc_refusal(&r), "{r:?}");
    assert_ne!(
        rig.sim.state(0).unwrap().passive_power,
        -800,
        "a refused charge reached the battery"
    );

    // Refusals are audited like every other command.
    let audit = rig.store.recent_commands(10).await.unwrap();
    let refused = audit
        .iter()
        .filter(|c| c.status == "error" && c.error.as_deref().unwrap_or("").contains("SOC"))
        .count();
    assert_eq!(refused, 3, "{audit:?}");
}

#[tokio::test]
async fn a_passive_discharge_reaching_min_soc_is_stopped_with_an_alert() {
    let mut rig = rig(45.0).await;
    rig.battery.poll().await.expect("first sample");
    rig.submit(&passive(800, 3600))
        .await
        .expect("discharge at 45 %");
    let state = rig.sim.state(0).unwrap();
    assert_eq!((state.mode, state.passive_power), (Mode::Passive, 800));

    // The discharge has brought the battery down to min_soc; the next sample shows it.
    rig.sim.set_soc(0, 30.0);
    rig.battery.poll().await.expect("sample at min_soc");
    let alert = tokio::time::timeout(WAIT, rig.alerts.recv())
        .await
        .expect("a soc_limit alert in time")
        .expect("alert channel open");
    assert_eq!(alert.kind, AlertKind::SocLimit, "{alert:?}");
    assert_eq!(alert.device.as_ref().map(DeviceId::as_str), Some("venus1"));
    assert!(alert.message.contains("min_soc 30 %"), "{}", alert.message);
    let state = rig.sim.state(0).unwrap();
    assert_eq!(
        (state.mode, state.passive_power),
        (Mode::Passive, 0),
        "the discharge was not stopped: {state:?}"
    );
    // Stopped for the rest of the discharge's countdown, not beyond.
    let until = state.passive_until.expect("countdown");
    let left = (until - chrono::Utc::now()).num_seconds();
    assert!((3000..=3600).contains(&left), "{left} s");

    let audit = rig.store.recent_commands(10).await.unwrap();
    let stop = audit
        .iter()
        .find(|c| c.source == "safety")
        .unwrap_or_else(|| panic!("no safety row in {audit:?}"));
    assert_eq!(stop.status, "ok");

    // Discharging again at min_soc is refused; the stop is not repeated at the next sample.
    let r = rig.submit(&passive(800, 600)).await;
    assert!(is_soc_refusal(&r), "{r:?}");
    rig.battery.poll().await.expect("another sample");
    let safety_rows = rig
        .store
        .recent_commands(20)
        .await
        .unwrap()
        .iter()
        .filter(|c| c.source == "safety")
        .count();
    assert_eq!(safety_rows, 1);
}
