//! The Marstek device actor against the in-process simulator on loopback: samples and every
//! mode change, reachability after failures, a full queue, pacing for a gap-sensitive device,
//! one request in flight under concurrent callers, a fleet spawned from settings, and decoded
//! samples that agree with the simulated physics.

mod marstek_common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use marstek_bridge::domain::{
    Battery, Command, DeviceId, DeviceLimits, DriverError, HhMm, ManualSlot, Mode, ModeConfig,
    Percent, Sample, Watts, WeekMask,
};
use marstek_bridge::marstek::protocol::{self, method};
use marstek_bridge::marstek::{DeviceSpec, MarstekBattery, PollingSettings};
use marstek_bridge::simulator::{SimHandle, SimProfile};
use marstek_common::*;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[tokio::test]
async fn actor_publishes_samples_and_applies_every_mode() {
    let s = sim(SimProfile::VenusA, Some(150), 1).await;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let t = transport(&cancel).await;
    let (b, mut samples) = spawn_actor(t, s.addrs()[0], fast(), &cancel, &tracker);
    let first = tokio::time::timeout(WAIT, samples.recv())
        .await
        .expect("first sample")
        .unwrap();
    assert_eq!(first.soc, Some(Percent(50)));
    assert_eq!(first.mode, Some(Mode::Auto));
    assert!(first.bat_power.is_some() && first.grid_power.is_some());
    assert_eq!(first.ct_connected, Some(true));
    assert_eq!(first.rssi, Some(-55));
    let info = b.info().expect("identified");
    assert_eq!(info.model, "VenusA");
    assert_eq!(info.firmware, 150);
    assert_eq!(info.ble_mac, s.ble_mac(0).unwrap());
    assert!(b.health().reachable);

    let slot = ManualSlot {
        slot: 3,
        start: HhMm::new(0, 0).unwrap(),
        end: HhMm::new(23, 59).unwrap(),
        days: WeekMask::ALL,
        power: Watts(-700),
        enable: true,
    };
    for cfg in [
        ModeConfig::Ai,
        ModeConfig::Ups,
        ModeConfig::Manual { slot },
        ModeConfig::Passive {
            power: Watts(-1000),
            cd_time: 600,
        },
        ModeConfig::Auto,
    ] {
        let r = b.execute(&Command::SetMode(cfg.clone())).await.unwrap();
        assert!(r.verified, "{cfg:?} verified by read-back");
        assert_eq!(r.observed_mode, Some(cfg.mode()));
        assert_eq!(s.state(0).unwrap().mode, cfg.mode());
        if let ModeConfig::Passive { .. } = cfg {
            let st = s.state(0).unwrap();
            assert_eq!(st.passive_power, -1000);
            assert!(st.passive_until.is_some());
        }
    }
    let st = s.state(0).unwrap();
    let stored = st.slots[3].expect("slot 3 written");
    assert_eq!(
        (stored.power, stored.week, stored.enable),
        (-700, 127, true)
    );
    assert_eq!((stored.start_min, stored.end_min), (0, 23 * 60 + 59));

    let r = b
        .execute(&Command::SetDod { value: Percent(60) })
        .await
        .unwrap();
    assert!(!r.verified, "DOD has no getter");
    assert_eq!(s.state(0).unwrap().dod, 60);
    b.execute(&Command::SetLed { on: false }).await.unwrap();
    assert!(!s.state(0).unwrap().led);
    b.execute(&Command::SetBleAdv { on: false }).await.unwrap();
    assert!(!s.state(0).unwrap().ble_adv);

    // a refused write (DOD outside 30..=88 reaches the device only if unvalidated)
    let e = b
        .execute(&Command::SetDod { value: Percent(10) })
        .await
        .unwrap_err();
    assert!(matches!(e, DriverError::Rejected { .. }), "{e}");
    // slot beyond the model's range is refused before sending
    let mut bad = slot;
    bad.slot = 10;
    let e = b
        .execute(&Command::SetMode(ModeConfig::Manual { slot: bad }))
        .await
        .unwrap_err();
    assert!(matches!(e, DriverError::Device { code: -32602, .. }), "{e}");

    // immediate poll reflects the state change (Passive charge → negative battery power)
    b.execute(&Command::SetMode(ModeConfig::Passive {
        power: Watts(-800),
        cd_time: 600,
    }))
    .await
    .unwrap();
    let p = b.poll().await.unwrap();
    assert_eq!(p.mode, Some(Mode::Passive));
    let h = b.health();
    assert!(h.requests > 10);
    assert_eq!(h.timeouts, 0);
    cancel.cancel();
    tracker.close();
    tokio::time::timeout(WAIT, tracker.wait())
        .await
        .expect("actor stops on cancel");
}

#[tokio::test]
async fn unreachable_after_n_failures_and_reachable_again() {
    let s = sim(SimProfile::VenusE3, None, 1).await;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let t = transport(&cancel).await;
    let settings = PollingSettings {
        status_interval: Duration::from_millis(50),
        request_timeout: Duration::from_millis(100),
        retries: 0,
        ..fast()
    };
    let (b, _rx) = spawn_actor(t, s.addrs()[0], settings, &cancel, &tracker);
    wait_available(&b, true).await;
    s.set_silent(0, true);
    wait_available(&b, false).await;
    let h = b.health();
    assert!(!h.reachable);
    assert!(h.consecutive_failures >= 2);
    assert!(h.timeouts >= 2);
    assert!(matches!(b.poll().await, Err(DriverError::Timeout { .. })));
    s.set_silent(0, false);
    wait_available(&b, true).await;
    assert_eq!(b.health().consecutive_failures, 0);
    assert!(b.info().is_some());
}

#[tokio::test]
async fn queue_full_is_a_clear_error() {
    let s = sim(SimProfile::VenusE3, None, 1).await;
    s.set_silent(0, true);
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let t = transport(&cancel).await;
    let settings = PollingSettings {
        queue_capacity: 1,
        ..fast()
    };
    let (b, _rx) = spawn_actor(t, s.addrs()[0], settings, &cancel, &tracker);
    let cmd = Command::SetMode(ModeConfig::Auto);
    let (a, c) = tokio::join!(b.execute(&cmd), b.execute(&cmd));
    assert!(a.is_err(), "device silent");
    assert!(
        matches!(c, Err(DriverError::QueueFull { capacity: 1, .. })),
        "{c:?}"
    );
}

#[tokio::test]
async fn pacing_keeps_a_gap_sensitive_device_answering() {
    let s = sim(SimProfile::VenusE3, None, 1).await;
    s.update_faults(0, |f| {
        f.drop_within_quiet_gap = Some(Duration::from_millis(150))
    });
    let cancel = CancellationToken::new();
    // without a gap, a request right after a reply is dropped
    let t = transport(&cancel).await;
    let a = s.addrs()[0];
    get_mode(&t, a, opts(500, 0, None)).await.unwrap();
    let e = get_mode(&t, a, opts(100, 0, None)).await.unwrap_err();
    assert!(matches!(e, DriverError::Timeout { .. }));
    // the actor waits its quiet gap after every reply: a full round without a single timeout
    let s = sim(SimProfile::VenusE3, None, 1).await;
    s.update_faults(0, |f| {
        f.drop_within_quiet_gap = Some(Duration::from_millis(150))
    });
    let a = s.addrs()[0];
    let tracker = TaskTracker::new();
    let settings = PollingSettings {
        quiet_gap: Duration::from_millis(250),
        retries: 0,
        request_timeout: Duration::from_millis(500),
        ..fast()
    };
    let (b, mut rx) = spawn_actor(transport(&cancel).await, a, settings, &cancel, &tracker);
    let sample = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        sample.mode.is_some()
            && sample.temperature.is_some()
            && sample.total_grid_input_energy.is_some()
    );
    assert_eq!(b.health().timeouts, 0);
}

#[tokio::test]
async fn one_request_in_flight_per_device_under_concurrent_callers() {
    let s = sim(SimProfile::VenusE3, None, 1).await;
    // the device drops any request arriving while it is "busy" (within 20 ms of the previous)
    s.update_faults(0, |f| f.drop_concurrent = Some(Duration::from_millis(20)));
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let settings = PollingSettings {
        quiet_gap: Duration::from_millis(50),
        retries: 0,
        ..fast()
    };
    let (b, mut rx) = spawn_actor(
        transport(&cancel).await,
        s.addrs()[0],
        settings,
        &cancel,
        &tracker,
    );
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    let cmds = [
        Command::SetLed { on: false },
        Command::SetMode(ModeConfig::Ai),
        Command::SetBleAdv { on: false },
    ];
    let (r1, r2, r3, p) = tokio::join!(
        b.execute(&cmds[0]),
        b.execute(&cmds[1]),
        b.execute(&cmds[2]),
        b.poll()
    );
    r1.unwrap();
    assert!(r2.unwrap().verified);
    r3.unwrap();
    p.unwrap();
    assert_eq!(s.stats(0).unwrap().dropped, 0, "never two requests at once");
    assert_eq!(b.health().timeouts, 0);
}

#[tokio::test]
async fn spawn_fleet_from_settings() {
    let s = sim(SimProfile::VenusD, None, 3).await;
    let settings = marstek_bridge::marstek::MarstekSettings {
        bind_device_port: false,
        bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ..Default::default()
    };
    assert!(settings.validate().is_empty());
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (tx, mut rx) = broadcast::channel(16);
    let specs = s
        .addrs()
        .into_iter()
        .enumerate()
        .map(|(i, addr)| DeviceSpec {
            id: DeviceId::parse(&format!("d{i}")).unwrap(),
            addr,
            limits: DeviceLimits::default(),
        })
        .collect();
    let (_t, fleet) =
        marstek_bridge::marstek::spawn_fleet(&settings, &fast(), specs, tx, &cancel, &tracker)
            .await
            .unwrap();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 3 {
        let sample = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(sample.pv_power.is_some(), "Venus D reads PV");
        seen.insert(sample.device.clone());
    }
    for b in &fleet {
        assert_eq!(b.info().unwrap().model, "VenusD");
    }
    cancel.cancel();
    tracker.close();
    tokio::time::timeout(WAIT, tracker.wait()).await.unwrap();
}

async fn first_sample(s: &SimHandle) -> (Sample, MarstekBattery) {
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let t = transport(&cancel).await;
    let (b, mut rx) = spawn_actor(t, s.addrs()[0], fast(), &cancel, &tracker);
    let sample = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    (sample, b)
}

#[tokio::test]
async fn decoded_samples_agree_with_the_simulated_physics() {
    use chrono::{TimeZone, Utc};
    // Venus A fw 148 at noon: PV1 in deciwatts, PV energy in Wh (< 149)
    let s = sim(SimProfile::VenusA, Some(148), 1).await;
    let noon = (Utc::now() + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(12, 0, 0)
        .unwrap();
    s.clock().set(Utc.from_utc_datetime(&noon));
    let (sample, _b) = first_sample(&s).await;
    let pv = sample.pv_power.unwrap().0;
    assert!((700..=800).contains(&pv), "PV at noon ≈ 780 W, got {pv}");
    let st = s.state(0).unwrap();
    assert!((f64::from(sample.soc.unwrap().0) - st.soc).abs() <= 1.0);
    // battery + pv balance: grid = bat + pv (all discharge-positive)
    let (g, b) = (sample.grid_power.unwrap().0, sample.bat_power.unwrap().0);
    assert_eq!(b, g - pv, "bat_power derived as ongrid + offgrid − pv");

    // Venus E 3.0 fw 139: no ES.GetStatus, temperature ×10 and capacity in 10 Wh on the wire
    let s = sim(SimProfile::VenusE3, Some(139), 1).await;
    let (sample, b) = first_sample(&s).await;
    let t = sample.temperature.unwrap().0;
    assert!((25.0..=40.0).contains(&t), "temperature scaled: {t}");
    let rem = sample.remaining_capacity.unwrap().0;
    assert!(
        (rem - 2560.0).abs() <= 10.0,
        "remaining capacity 50 % of 5120 Wh: {rem}"
    );
    assert_eq!(b.health().timeouts, 0, "ES.GetStatus was not even tried");
    assert_eq!(b.info().unwrap().firmware, 139);

    // HMG-50 fw 156: grid totals in 100 Wh units; discharge 2 h at 1 kW in Passive
    let s = sim(SimProfile::VenusE2, None, 1).await;
    let a = s.addrs()[0];
    let cancel = CancellationToken::new();
    let tr = transport(&cancel).await;
    tr.request(
        a,
        method::ES_SET_MODE,
        protocol::set_mode_params(&ModeConfig::Passive {
            power: Watts(1000),
            cd_time: 7200,
        }),
        opts(1000, 0, None),
    )
    .await
    .unwrap();
    s.set_soc(0, 90.0);
    s.clock().advance(Duration::from_secs(7200));
    let (sample, _b) = first_sample(&s).await;
    let out = sample.total_grid_output_energy.unwrap().0;
    let real = s.state(0).unwrap().out_wh;
    assert!((1900.0..=2100.0).contains(&real), "{real}");
    assert!(
        (out - real).abs() <= 100.0,
        "decoded {out} Wh vs simulated {real} Wh"
    );
}
