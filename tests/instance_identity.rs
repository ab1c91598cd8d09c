//! A bridge without a configured `instance_id` keeps one identity across restarts: after a
//! SIGKILL, the restarted process (same host, same configuration, new process id) reclaims its
//! own scheduler lease at once instead of waiting for it to run out. The lease here lasts 45 s
//! (`leader_ttl = "60s"`); the restarted bridge must run its 2 s job well before that.

mod fault_common;
mod support;

use std::time::Duration;

use chrono::Utc;
use fault_common::{BridgeProcess, Drill, broker_addr, wait_runs};
use support::TestPgDb;

const BIN: &str = env!("CARGO_BIN_EXE_marstek-bridge");
const JOB: &str = "job_health_check";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_restarted_bridge_reclaims_its_own_lease_at_once() {
    let db = TestPgDb::create("restart_identity").await;
    let mut drill = Drill::devices("restart_identity", 1, broker_addr(), Some(&db.url)).await;
    let (dir, base, setup) = (&drill.dir, drill.base.clone(), &mut drill.setup);
    setup.extra = format!(
        "[scheduler]\nmisfire_grace_time = \"1s\"\nleader_ttl = \"60s\"\n\n\
         [scheduler.jobs.{JOB}]\ntrigger = \"interval:2s\"\n"
    );
    // The default identity: no instance_id line.
    let text = setup
        .to_toml()
        .replace(&format!("instance_id = \"{base}\"\n"), "");
    assert!(!text.contains("instance_id ="), "{text}");
    let config = dir.path().join("bridge.toml");
    std::fs::write(&config, text).unwrap();
    let done = |r: &fault_common::Run| r.0 == JOB && r.2 == "completed";

    let mut first = BridgeProcess::spawn(BIN, &config, dir.path());
    let before = wait_runs(&db.url, Duration::from_secs(30), |r| r.iter().any(done)).await;
    let Some(run) = before.iter().find(|r| done(r)) else {
        panic!("job never ran: {before:?}; log:\n{}", first.log_text());
    };
    let instance = run.4.clone();
    assert!(
        !instance.ends_with(&format!("-{}", first.pid())),
        "the default instance id still carries the process id: {instance}"
    );
    first.kill();

    let restarted_at = Utc::now();
    let second = BridgeProcess::spawn(BIN, &config, dir.path());
    // Well inside the dead process's 45 s lease: only its own identity can run the job now.
    let after = wait_runs(&db.url, Duration::from_secs(20), |r| {
        r.iter()
            .any(|x| done(x) && x.3.is_some_and(|s| s >= restarted_at))
    })
    .await;
    let Some(rerun) = after
        .iter()
        .find(|x| done(x) && x.3.is_some_and(|s| s >= restarted_at))
    else {
        panic!(
            "the restarted bridge did not run within 20 s of a 45 s lease: {after:?}; log:\n{}",
            second.log_text()
        );
    };
    assert_eq!(rerun.4, instance, "a new identity after the restart");
    drop(second);
    drill.sim.shutdown().await;
    db.drop_now().await;
}
