//! A device whose host name does not resolve behaves like a battery that does not answer: the
//! bridge starts, serves every other battery, shows that one unavailable and keeps trying. The
//! bridge runs as a child process against the real broker and the simulator.
//!
//! The unresolvable name has a 64-character label: valid for the configuration, but the system
//! resolver refuses it before sending any query, so the test touches no name server.

mod fault_common;

use std::time::Duration;

use fault_common::{BridgeProcess, Drill, Watcher, broker_addr};

const BIN: &str = env!("CARGO_BIN_EXE_marstek-bridge");
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_device_host_does_not_stop_the_other_batteries() {
    let mut drill = Drill::devices("device_resolution", 1, broker_addr(), None).await;
    let (dir, base, setup) = (&drill.dir, drill.base.clone(), &mut drill.setup);
    setup.status_interval = "1s".into();
    setup.log_level = "info".into();
    let ghost = format!("{}.example", "b".repeat(64));
    setup.extra = format!("[[devices]]\nid = \"ghost\"\nhost = \"{ghost}\"\nport = 30000\n");
    let config = setup.write(dir.path());

    let check = std::process::Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");

    let mut watcher = Watcher::start(
        broker_addr(),
        &format!("{base}_watch"),
        &[format!("{base}/+/state"), format!("{base}/+/availability")],
    )
    .await;
    let mut bridge = BridgeProcess::spawn(BIN, &config, dir.path());
    // Both, in whatever order they come: the good battery's state, the ghost shown offline.
    let (mut good, mut ghost_offline) = (false, false);
    while !(good && ghost_offline) {
        let Some(seen) = watcher
            .next_matching(WAIT, |s| s.topic.starts_with(&format!("{base}/")))
            .await
        else {
            panic!(
                "good battery served: {good}, ghost offline: {ghost_offline}; log:\n{}",
                bridge.log_text()
            );
        };
        good |= seen.topic == format!("{base}/d0000/state");
        ghost_offline |=
            seen.topic == format!("{base}/ghost/availability") && seen.text == "offline";
    }
    // Still running, and still serving the good battery after the failed lookups.
    assert!(bridge.try_exit().is_none(), "{}", bridge.log_text());
    let again = watcher
        .next_matching(WAIT, |s| s.topic == format!("{base}/d0000/state"))
        .await;
    assert!(again.is_some(), "{}", bridge.log_text());
    let log = bridge.log_text();
    assert!(log.contains("device_unresolved"), "{log}");
    assert!(bridge.try_exit().is_none(), "{log}");
    drop(bridge);
    drill.sim.shutdown().await;
}
