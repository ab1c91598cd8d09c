//! Fault drill: the broker connection of a running bridge (child process) is cut and restored 5
//! times in a row through a `TcpProxy` in front of the real mosquitto. Each time the broker must
//! see the bridge offline (last will), then online again with discovery and device state
//! republished (the status interval is 60 s, so the state comes from the reconnect, not from a
//! poll). Prints the recovery time of each cycle (DESIGN §11 target: within 2 s of reconnect).
//! A second drill keeps the broker away long enough for an uncapped backoff to pass 2 s, with
//! the default `reconnect_max`, and checks the delays the bridge logged against that cap.

mod fault_common;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use fault_common::{BridgeProcess, Drill, Watcher, broker_addr};
use support::TcpProxy;

const BIN: &str = env!("CARGO_BIN_EXE_marstek-bridge");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_recovers_from_five_broker_cuts_with_state_republished() {
    let (proxy_addr, proxy) = TcpProxy::start(broker_addr()).await.unwrap();
    let mut drill = Drill::devices("fault_broker", 2, proxy_addr, None).await;
    drill.setup.status_interval = "60s".into();
    drill.setup.discovery = "entity".into();
    let config = drill.write();
    let (dir, base) = (&drill.dir, drill.base.clone());
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
                s.topic == bridge_state && s.text == r#"{"state":"offline"}"#
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
            if s.topic == bridge_state && s.text == r#"{"state":"online"}"# {
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
    drill.sim.shutdown().await;
}

/// `(message, retry_in_ms)` of every connection failure in a JSON log.
fn reconnect_delays(log: &str) -> Vec<(String, u64)> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let ms = v.get("retry_in_ms")?.as_u64()?;
            Some((v["message"].as_str()?.to_string(), ms))
        })
        .collect()
}

/// Reads the bridge's log until `n` connection failures are logged (or `limit` passes).
async fn wait_failures(log: &Path, n: usize, limit: Duration) -> Vec<(String, u64)> {
    let end = Instant::now() + limit;
    loop {
        let delays = reconnect_delays(&std::fs::read_to_string(log).unwrap_or_default());
        if delays.len() >= n || Instant::now() > end {
            return delays;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_backoff_is_capped_by_default_during_a_long_cut() {
    let (proxy_addr, proxy) = TcpProxy::start(broker_addr()).await.unwrap();
    let mut drill = Drill::devices("fault_backoff", 1, proxy_addr, None).await;
    let (dir, base, setup) = (&drill.dir, drill.base.clone(), &mut drill.setup);
    setup.status_interval = "60s".into();
    setup.log_level = "warn,marstek_bridge::mqtt=debug".into();
    // The shipped backoff: 200 ms doubling, capped by the default `reconnect_max`.
    let toml = setup
        .to_toml()
        .replace("[logging]\n", "[logging]\nformat = \"json\"\n")
        .replace("reconnect_min = \"100ms\"\n", "")
        .replace("reconnect_max = \"500ms\"\n", "");
    assert!(!toml.contains("reconnect_max"), "{toml}");
    let config = dir.path().join("bridge.toml");
    std::fs::write(&config, toml).unwrap();
    let mut w = Watcher::start(broker_addr(), &format!("{base}_w"), &[format!("{base}/#")]).await;
    let bridge = BridgeProcess::spawn(BIN, &config, dir.path());
    let dev_state = format!("{base}/d0000/state");
    let first = w
        .next_matching(Duration::from_secs(30), |s| s.topic == dev_state)
        .await;
    assert!(
        first.is_some(),
        "no first state; log:\n{}",
        bridge.log_text()
    );

    proxy.cut();
    let bridge_state = format!("{base}/bridge/state");
    let offline = w
        .next_matching(Duration::from_secs(15), |s| {
            s.topic == bridge_state && s.text == r#"{"state":"offline"}"#
        })
        .await;
    assert!(offline.is_some(), "no last will after the cut");
    // 200, 400, 800, 1600 ms: the fifth delay after the cut is where an uncapped backoff passes
    // 2 s (3.2 s, then 6.4 s); wait for the seventh failure.
    let delays = wait_failures(&bridge.log, 7, Duration::from_secs(40)).await;
    proxy.restore();
    let restored = Instant::now();
    assert!(
        delays.len() >= 7,
        "only {} failures logged: {delays:?}",
        delays.len()
    );
    assert_eq!(delays[0].0, "mqtt_disconnected", "{delays:?}");
    let longest = delays.iter().map(|d| d.1).max().unwrap_or(0);
    assert_eq!(
        longest, 2000,
        "the reconnect delay must grow to the 2 s default cap and no further: {delays:?}"
    );
    let state = w
        .next_matching(Duration::from_secs(20), |s| s.topic == dev_state)
        .await;
    assert!(
        state.is_some(),
        "not back after the cut; log:\n{}",
        bridge.log_text()
    );
    eprintln!(
        "broker away {} attempts (delays {:?} ms): state back {:?} after the broker's return (cap 2 s)",
        delays.len(),
        delays.iter().map(|d| d.1).collect::<Vec<_>>(),
        state.unwrap().at.duration_since(restored)
    );
    drop(bridge);
    drill.sim.shutdown().await;
}
