//! Fault drill: two bridge processes (a primary and a standby, different instance ids and base
//! topics) share one PostgreSQL database and run `job_health_check` every 2 s. Only the lease
//! holder may run jobs: while both live, every run is the first one's; after it is killed with
//! SIGKILL, the standby takes the lease when it expires and the schedule goes on, with no
//! instant run twice (not even at a shifted instant). Prints the hand-over time.

mod fault_common;
mod support;

use std::time::Duration;

use chrono::Utc;
use fault_common::{
    BridgeProcess, BridgeSetup, Run, aliases, assert_instants_apart, broker_addr, unique_base,
    wait_runs,
};
use marstek_bridge::simulator::{SimConfig, Simulator};
use support::TestPgDb;

const BIN: &str = env!("CARGO_BIN_EXE_marstek-bridge");
const JOB: &str = "job_health_check";

fn completed_by<'a>(runs: &'a [Run], instance: &'a str) -> impl Iterator<Item = &'a Run> {
    runs.iter()
        .filter(move |r| r.0 == JOB && r.2 == "completed" && r.4 == instance)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_bridge_takes_over_a_killed_leader_without_running_an_instant_twice() {
    let sim = Simulator::start(SimConfig {
        devices: 1,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let db = TestPgDb::create("fault_leader").await;
    let dir = tempfile::tempdir().unwrap();
    let setup = |name: &str| {
        let base = unique_base(name);
        let mut s = BridgeSetup::new(broker_addr(), &base, &db.url);
        s.devices = aliases(&sim.addrs());
        s.extra = format!(
            "[scheduler]\nmisfire_grace_time = \"1s\"\nleader_ttl = \"3s\"\n\n\
             [scheduler.jobs.{JOB}]\ntrigger = \"interval:2s\"\n"
        );
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).unwrap();
        (base, s.write(&sub), sub)
    };
    let (primary, primary_cfg, primary_dir) = setup("leader_a");
    let (standby, standby_cfg, standby_dir) = setup("leader_b");

    let mut a = BridgeProcess::spawn(BIN, &primary_cfg, &primary_dir);
    let r = wait_runs(&db.url, Duration::from_secs(30), |r| {
        completed_by(r, &primary).count() >= 2
    })
    .await;
    assert!(
        completed_by(&r, &primary).count() >= 2,
        "the primary never ran the job: {r:?}; log:\n{}",
        a.log_text()
    );

    // The standby joins while the primary holds the lease: it must not run anything.
    let b = BridgeProcess::spawn(BIN, &standby_cfg, &standby_dir);
    let joined = completed_by(&r, &primary).count();
    let r = wait_runs(&db.url, Duration::from_secs(30), |r| {
        completed_by(r, &primary).count() >= joined + 3
    })
    .await;
    assert!(
        completed_by(&r, &primary).count() >= joined + 3,
        "the primary stopped running with a standby beside it: {r:?}"
    );
    assert_eq!(
        completed_by(&r, &standby).count(),
        0,
        "the standby ran jobs while the leader was alive: {r:?}; standby log:\n{}",
        b.log_text()
    );

    a.kill();
    let killed_at = Utc::now();
    let r = wait_runs(&db.url, Duration::from_secs(30), |r| {
        completed_by(r, &standby).count() >= 2
    })
    .await;
    let took_over = completed_by(&r, &standby).filter_map(|x| x.3).min();
    let Some(took_over) = took_over else {
        panic!(
            "the standby never took over: {r:?}; standby log:\n{}",
            b.log_text()
        );
    };
    eprintln!(
        "leader hand-over: first standby run {} ms after SIGKILL of the leader (lease 3 s, job every 2 s)",
        (took_over - killed_at).num_milliseconds()
    );

    let job: Vec<&Run> = r.iter().filter(|x| x.0 == JOB).collect();
    // No instant twice, also not shifted: consecutive instants at least one interval apart.
    assert_instants_apart(&job, chrono::Duration::milliseconds(1900));
    // Each side ran only when it held the lease: the primary before the kill, the standby after.
    for x in &job {
        if let Some(started) = x.3 {
            if x.4 == standby {
                assert!(started >= killed_at, "standby run before the kill: {x:?}");
            } else {
                assert_eq!(x.4, primary, "a run by an unknown instance: {x:?}");
                assert!(started <= killed_at, "primary run after its death: {x:?}");
            }
        }
    }
    drop(b);
    sim.shutdown().await;
    db.drop_now().await;
}
