//! The simulator's behavioural faults seen from the wire (raw UDP, as any client sees them):
//! a battery that acknowledges a command and does not carry it out, undoes it later, resets
//! under `ES.GetMode`, answers only instance 1, refuses writes while busy, drops off the
//! network periodically, or replies in the Venus A fw 148 / Venus Mini fw 300 shapes. Also the
//! `simulate` command refusing a bad fault list with exit code 2.

use std::net::SocketAddr;
use std::time::Duration;

use marstek_bridge::domain::Mode;
use marstek_bridge::simulator::{NetReset, SimConfig, SimFaults, SimHandle, SimProfile, Simulator};
use serde_json::{Value, json};
use tokio::net::UdpSocket;

async fn raw(to: SocketAddr, req: Value) -> Option<Value> {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(req.to_string().as_bytes(), to).await.unwrap();
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_millis(400), s.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(serde_json::from_slice(&buf[..n]).expect("valid JSON")),
        _ => None,
    }
}

async fn call(to: SocketAddr, method: &str, params: Value) -> Option<Value> {
    raw(to, json!({"id": 7, "method": method, "params": params})).await
}

fn passive(power: i64, cd_time: i64) -> Value {
    json!({"id": 0, "config": {"mode": "Passive", "passive_cfg": {"power": power, "cd_time": cd_time}}})
}

async fn sim_with(profile: SimProfile, firmware: Option<i64>, faults: SimFaults) -> SimHandle {
    Simulator::start(SimConfig {
        profile,
        firmware,
        faults,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn set_result(r: &Option<Value>) -> Option<bool> {
    r.as_ref()?.get("result")?.get("set_result")?.as_bool()
}

#[tokio::test]
async fn ignore_writes_acknowledges_and_changes_nothing() {
    let f = SimFaults::parse_list("ignore-writes").unwrap();
    let s = sim_with(SimProfile::VenusE3, None, f).await;
    let a = s.addrs()[0];
    let r = call(a, "ES.SetMode", passive(-1500, 600)).await;
    assert_eq!(set_result(&r), Some(true));
    let r = call(a, "DOD.SET", json!({"value": 40})).await;
    assert_eq!(set_result(&r), Some(true));
    let st = s.state(0).unwrap();
    assert_eq!(st.mode, Mode::Auto);
    assert_eq!(st.dod, 88);
    // the read-back tells the truth
    let m = call(a, "ES.GetMode", json!({"id": 0})).await.unwrap();
    assert_eq!(m["result"]["mode"], json!("Auto"));
}

#[tokio::test]
async fn revert_after_falls_back_to_auto_on_the_simulated_clock() {
    let f = SimFaults::parse_list("revert-after=5m").unwrap();
    let s = sim_with(SimProfile::VenusE3, None, f).await;
    let a = s.addrs()[0];
    assert_eq!(
        set_result(&call(a, "ES.SetMode", passive(-1500, 3600)).await),
        Some(true)
    );
    s.clock().advance(Duration::from_secs(240));
    let st = s.state(0).unwrap();
    assert_eq!(st.mode, Mode::Passive);
    assert_eq!(st.bat_power, -1500.0, "charging as asked until the revert");
    s.clock().advance(Duration::from_secs(120));
    let m = call(a, "ES.GetMode", json!({"id": 0})).await.unwrap();
    assert_eq!(m["result"]["mode"], json!("Auto"));
}

#[tokio::test]
async fn getmode_resets_answers_right_then_falls_back() {
    let f = SimFaults::parse_list("getmode-resets").unwrap();
    let s = sim_with(SimProfile::VenusE3, Some(148), f).await;
    let a = s.addrs()[0];
    call(a, "ES.SetMode", passive(-800, 600)).await.unwrap();
    let m = call(a, "ES.GetMode", json!({"id": 0})).await.unwrap();
    assert_eq!(
        m["result"]["mode"],
        json!("Passive"),
        "the read-back itself is right"
    );
    assert_eq!(
        s.state(0).unwrap().mode,
        Mode::Auto,
        "and the poll undid it"
    );
    // ES.GetStatus does not reset
    call(a, "ES.SetMode", passive(-800, 600)).await.unwrap();
    call(a, "ES.GetStatus", json!({"id": 0})).await.unwrap();
    assert_eq!(s.state(0).unwrap().mode, Mode::Passive);
}

#[tokio::test]
async fn getmode_id1_only_is_silent_on_instance_0_and_numeric_on_1() {
    let f = SimFaults::parse_list("getmode-id1-only").unwrap();
    let s = sim_with(SimProfile::VenusE3, None, f).await;
    let a = s.addrs()[0];
    assert!(call(a, "ES.GetMode", json!({"id": 0})).await.is_none());
    call(a, "ES.SetMode", passive(300, 600)).await.unwrap();
    let m = call(a, "ES.GetMode", json!({"id": 1})).await.unwrap();
    assert_eq!(m["result"]["mode"], json!(3), "Passive as its code");
    // other methods still answer instance 0
    assert!(call(a, "ES.GetStatus", json!({"id": 0})).await.is_some());
}

#[tokio::test]
async fn busy_refuses_writes_for_its_window() {
    let f = SimFaults::parse_list("busy=10s").unwrap();
    let s = sim_with(SimProfile::VenusA, Some(148), f).await;
    let a = s.addrs()[0];
    assert_eq!(
        set_result(&call(a, "ES.SetMode", passive(-500, 600)).await),
        Some(true)
    );
    assert_eq!(
        set_result(&call(a, "ES.SetMode", passive(400, 600)).await),
        Some(false)
    );
    assert_eq!(s.state(0).unwrap().passive_power, -500);
    s.clock().advance(Duration::from_secs(11));
    assert_eq!(
        set_result(&call(a, "ES.SetMode", passive(400, 600)).await),
        Some(true),
        "succeeds on retry after the window"
    );
    assert_eq!(s.state(0).unwrap().passive_power, 400);
}

#[tokio::test]
async fn net_reset_is_silent_during_each_blackout_only() {
    let f = SimFaults {
        net_reset: Some(NetReset {
            period: Duration::from_secs(900),
            silence: Duration::from_secs(30),
        }),
        ..Default::default()
    };
    let s = sim_with(SimProfile::VenusE3, None, f).await;
    let a = s.addrs()[0];
    assert!(call(a, "ES.GetMode", json!({"id": 0})).await.is_some());
    let start = s.next_blackout(0).unwrap();
    let now = s.clock().now();
    let until = (start - now).to_std().unwrap();
    assert!(until > Duration::from_secs(800), "{until:?}");
    s.clock().advance(until + Duration::from_secs(5));
    assert!(call(a, "ES.GetMode", json!({"id": 0})).await.is_none());
    assert!(
        call(a, "Marstek.GetDevice", json!({"ble_mac": "0"}))
            .await
            .is_none()
    );
    s.clock().advance(Duration::from_secs(30));
    assert!(call(a, "ES.GetMode", json!({"id": 0})).await.is_some());
    // the next one is a period later
    let next = s.next_blackout(0).unwrap();
    assert_eq!((next - start).num_seconds(), 900);
}

#[tokio::test]
async fn no_bat_power_is_the_venus_a_148_shape() {
    let f = SimFaults::parse_list("no-bat-power").unwrap();
    let s = sim_with(SimProfile::VenusA, Some(148), f).await;
    let a = s.addrs()[0];
    // 13:00 UTC: the simulated PV is at its peak
    let noon = chrono::Utc::now()
        .date_naive()
        .and_hms_opt(13, 0, 0)
        .unwrap()
        .and_utc()
        + chrono::Duration::days(1);
    s.clock().set(noon);
    let es = call(a, "ES.GetStatus", json!({"id": 0})).await.unwrap();
    let es = &es["result"];
    assert!(es.get("bat_power").is_none());
    assert_eq!(es["pv_power"], json!(0), "hard-coded 0");
    assert_eq!(es["total_load_energy"], json!(0));
    let pv = call(a, "PV.GetStatus", json!({"id": 0})).await.unwrap();
    let pv = &pv["result"];
    let w = |ch: u8| pv[format!("pv{ch}_power")].as_f64().unwrap();
    let vi = |ch: u8| {
        pv[format!("pv{ch}_voltage")].as_f64().unwrap()
            * pv[format!("pv{ch}_current")].as_f64().unwrap()
    };
    assert!(w(2) > 50.0, "PV produces at noon: {pv}");
    assert!(
        (w(1) / 10.0 - vi(1)).abs() < 0.1 * vi(1) + 4.0,
        "PV1 in deciwatts: {pv}"
    );
    assert!(
        (w(2) - vi(2)).abs() < 0.1 * vi(2) + 4.0,
        "PV2 in watts: {pv}"
    );
}

#[tokio::test]
async fn ignore_manual_power_stores_zero_and_refuses_passive() {
    let f = SimFaults::parse_list("ignore-manual-power").unwrap();
    let s = sim_with(SimProfile::VenusEMini, Some(300), f).await;
    let a = s.addrs()[0];
    assert_eq!(
        set_result(&call(a, "ES.SetMode", passive(-800, 600)).await),
        Some(false)
    );
    let manual = json!({"id": 0, "config": {"mode": "Manual", "manual_cfg": {"time_num": 1,
        "start_time": "00:00", "end_time": "23:59", "week_set": 127, "power": -900, "enable": 1}}});
    assert_eq!(set_result(&call(a, "ES.SetMode", manual).await), Some(true));
    let st = s.state(0).unwrap();
    assert_eq!(st.mode, Mode::Manual);
    assert_eq!(st.slots[1].map(|x| x.power), Some(0));
}

#[tokio::test]
async fn faults_are_per_device_and_off_by_default() {
    let s = Simulator::start(SimConfig {
        devices: 2,
        device_faults: [(1, SimFaults::parse_list("ignore-writes").unwrap())].into(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    for a in s.addrs() {
        call(a, "ES.SetMode", passive(-600, 600)).await.unwrap();
    }
    assert_eq!(s.state(0).unwrap().mode, Mode::Passive);
    assert_eq!(s.state(1).unwrap().mode, Mode::Auto);
    // and switchable at run time
    s.update_faults(1, |f| f.ignore_writes = false);
    call(s.addrs()[1], "ES.SetMode", passive(-600, 600))
        .await
        .unwrap();
    assert_eq!(s.state(1).unwrap().mode, Mode::Passive);
}

#[test]
fn simulate_with_a_bad_fault_list_exits_2_naming_the_fault() {
    for (faults, named) in [
        ("busy=5s,revert-after=soon", "revert-after=soon"),
        ("ignore-writes,turbo", "turbo"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_marstek-bridge"))
            .args(["simulate", "--faults", faults])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(named), "{err}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_marstek-bridge"))
        .args(["simulate", "--device-faults", "0:getmode-resets,warp"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warp"));
}
