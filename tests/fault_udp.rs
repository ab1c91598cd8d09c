//! Fault drill: one of two simulated batteries loses 30 % of the datagrams and answers with up
//! to 500 ms of random delay. The bridge (child process, 1 s status interval, 1 s timeouts) must
//! keep polling it, keep the healthy one unaffected, answer every command with a response (ok or
//! error) and not panic. States are counted as they arrive (no fixed window); prints the state
//! rate and the command outcomes.

mod fault_common;

use std::time::{Duration, Instant};

use fault_common::{BridgeProcess, Drill, Watcher, broker_addr};
use marstek_bridge::simulator::SimFaults;
use rumqttc::QoS;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_marstek-bridge");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_jittery_device_keeps_being_polled_and_commands_get_responses() {
    let faults = SimFaults::parse_list("loss=0.3,jitter=500ms").unwrap();
    let mut drill = Drill::devices("fault_udp", 2, broker_addr(), None).await;
    drill.setup.status_interval = "1s".into();
    drill.setup.request_timeout = "1s".into();
    let config = drill.write();
    let (sim, dir, base) = (&drill.sim, &drill.dir, drill.base.clone());
    let mut w = Watcher::start(broker_addr(), &format!("{base}_w"), &[format!("{base}/#")]).await;
    let mut bridge = BridgeProcess::spawn(BIN, &config, dir.path());

    // Identity first on a clean link, then the faults start.
    let lossy_state = format!("{base}/d0000/state");
    let first = w
        .next_matching(Duration::from_secs(30), |s| s.topic == lossy_state)
        .await;
    assert!(
        first.is_some(),
        "no first state; log:\n{}",
        bridge.log_text()
    );
    sim.set_faults(0, faults);

    // Polling under loss and jitter: states are counted as they arrive until both devices have
    // given enough (LIMIT only bounds a failure; the rate goes to the log).
    const LIMIT: Duration = Duration::from_secs(90);
    let start = Instant::now();
    let (mut lossy, mut healthy) = (0u32, 0u32);
    let healthy_state = format!("{base}/d0001/state");
    while lossy < 2 || healthy < 8 {
        let left = LIMIT.saturating_sub(start.elapsed());
        let Some(s) = w.next_matching(left, |s| s.topic.ends_with("/state")).await else {
            panic!(
                "after {LIMIT:?}: {lossy} states from the lossy device (want 2), {healthy} from \
                 the healthy one (want 8); log:\n{}",
                bridge.log_text()
            );
        };
        if s.topic == lossy_state {
            lossy += 1;
        } else if s.topic == healthy_state {
            healthy += 1;
        }
    }
    let stats = sim.stats(0).unwrap();
    eprintln!(
        "udp loss 30 % + jitter 500 ms: {lossy} states from the lossy device, {healthy} from the healthy one in {:?}; simulator received {} dropped {} replied {}",
        start.elapsed(),
        stats.received,
        stats.dropped,
        stats.replied
    );
    assert!(stats.dropped > 0, "the loss fault dropped datagrams");

    // Commands to the lossy device: every one gets a response.
    let resp_topic = format!("{base}/d0000/response");
    let (mut ok, mut err) = (0, 0);
    for i in 0..8u32 {
        let id = format!("u{i}");
        let mode = if i.is_multiple_of(2) { "ups" } else { "auto" };
        w.client
            .publish(
                format!("{base}/d0000/set"),
                QoS::AtLeastOnce,
                false,
                json!({"mode": mode, "id": id}).to_string(),
            )
            .await
            .unwrap();
        let t = Instant::now();
        let got = w
            .next_matching(Duration::from_secs(15), |s| {
                s.topic == resp_topic
                    && serde_json::from_str::<Value>(&s.text).is_ok_and(|v| v["id"] == json!(id))
            })
            .await;
        let Some(got) = got else {
            panic!("command {id} got no response; log:\n{}", bridge.log_text());
        };
        let v: Value = serde_json::from_str(&got.text).unwrap();
        eprintln!("command {id}: {} after {:?}", v["status"], t.elapsed());
        if v["status"] == "ok" {
            ok += 1;
        } else {
            assert_eq!(v["status"], "error", "{v}");
            assert!(v["error"].is_string(), "an error says why: {v}");
            err += 1;
        }
    }
    eprintln!("udp loss: commands ok {ok}, error {err}");
    assert!(bridge.try_exit().is_none(), "bridge still running");
    assert!(
        !bridge.log_text().contains("panicked"),
        "no panic; log:\n{}",
        bridge.log_text()
    );
    drop(bridge);
    drill.sim.shutdown().await;
}
