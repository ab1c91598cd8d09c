//! Fault drill: the broker connection of a running bridge (child process) is cut and restored 5
//! times in a row through a `TcpProxy` in front of the real mosquitto. Each time the broker must
//! see the bridge offline (last will), then online again with discovery and device state
//! republished (the status interval is 60 s, so the state comes from the reconnect, not from a
//! poll). Prints the recovery time of each cycle (DESIGN §11 target: within 2 s of reconnect).

mod fault_common;
mod support;

use std::time::{Duration, Instant};

use fault_common::{BridgeProcess, BridgeSetup, Watcher, aliases, broker_addr, unique_base};
use marstek_bridge::simulator::{SimConfig, Simulator};
use support::TcpProxy;

const BIN: &str = env!("CARGO_BIN_EXE_marstek-bridge");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_recovers_from_five_broker_cuts_with_state_republished() {
    let sim = Simulator::start(SimConfig {
        devices: 2,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let (proxy_addr, proxy) = TcpProxy::start(broker_addr()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = unique_base("fault_broker");
    let db = format!("sqlite://{}", dir.path().join("b.db").display());
    let mut setup = BridgeSetup::new(proxy_addr, &base, &db);
    setup.devices = aliases(&sim.addrs());
    setup.status_interval = "60s".into();
    setup.discovery = "entity".into();
    let config = setup.write(dir.path());
    let disc = format!("{base}_ha");
    let mut w = Watcher::start(
        broker_addr(),
        &format!("{base}_w"),
        &[format!("{base}/#"), format!("{disc}/#")],
    )
    .await;
    let bridge = BridgeProcess::spawn(BIN, &config, dir.path());

    let bridge_state = format!("{base}/bridge/state");
    let dev_state = format!("{base}/d0000/state");
    let first = w
        .next_matching(Duration::from_secs(30), |s| s.topic == dev_state)
        .await;
    assert!(
        first.is_some(),
        "no first state; log:\n{}",
        bridge.log_text()
    );

    let mut recoveries = Vec::new();
    for cycle in 1..=5 {
        proxy.cut();
        let offline = w
            .next_matching(Duration::from_secs(15), |s| {
                s.topic == bridge_state && s.text == "offline"
            })
            .await;
        assert!(
            offline.is_some(),
            "cycle {cycle}: broker never reported the bridge offline (last will)"
        );
        proxy.restore();
        let restored = Instant::now();
        let (mut online, mut state, mut discovery) = (None, None, None);
        let end = Instant::now() + Duration::from_secs(20);
        while online.is_none() || state.is_none() || discovery.is_none() {
            let left = end.saturating_duration_since(Instant::now());
            let Some(s) = w.next_matching(left, |_| true).await else {
                break;
            };
            if s.topic == bridge_state && s.text == "online" {
                online = Some(s.at);
            } else if s.topic == dev_state && online.is_some() {
                state = Some(s.at);
            } else if s.topic.starts_with(&disc) && s.topic.ends_with("/config") && online.is_some()
            {
                discovery = Some(s.at);
            }
        }
        let (Some(online), Some(state), Some(discovery)) = (online, state, discovery) else {
            panic!(
                "cycle {cycle}: not back within 20 s (online {online:?}, state {state:?}, discovery {discovery:?}); log:\n{}",
                bridge.log_text()
            );
        };
        let rec = state.max(discovery).duration_since(restored);
        eprintln!(
            "broker cut {cycle}/5: online after {:?}, state after {:?}, discovery after {:?} (target ≤ 2 s)",
            online.duration_since(restored),
            state.duration_since(restored),
            discovery.duration_since(restored)
        );
        recoveries.push(rec);
    }
    let worst = recoveries.iter().max().copied().unwrap_or_default();
    eprintln!("broker cuts: worst recovery {worst:?} over 5 cycles");
    assert!(
        proxy.accepted() >= 6,
        "bridge reconnected {} times",
        proxy.accepted()
    );
    drop(bridge);
    sim.shutdown().await;
}
