//! Fault drill: the bridge (child process) runs `job_health_check` every 2 s with its schedule in
//! PostgreSQL, is killed with SIGKILL, stays down 7 s and is restarted on the same database and
//! instance id. Every scheduled instant must appear at most once in `job_runs` (no double run,
//! also not at a shifted instant), and the instants that fell due during the downtime must be
//! recorded honestly: coalesced into one row that is either run late (within the 1 s misfire
//! grace) or recorded `missed`. Prints the time from restart to the first run.

mod fault_common;
mod support;

use std::time::{Duration, Instant};

use chrono::Utc;
use fault_common::{BridgeProcess, Drill, Run, assert_instants_apart, broker_addr, wait_runs};
use support::TestPgDb;

const BIN: &str = env!("CARGO_BIN_EXE_marstek-bridge");
const JOB: &str = "job_health_check";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_schedule_and_restart_runs_no_instant_twice() {
    let db = TestPgDb::create("fault_restart").await;
    let mut drill = Drill::devices("fault_restart", 1, broker_addr(), Some(&db.url)).await;
    let (dir, setup) = (&drill.dir, &mut drill.setup);
    setup.extra = format!(
        "[scheduler]\nmisfire_grace_time = \"1s\"\nleader_ttl = \"3s\"\n\n\
         [scheduler.jobs.{JOB}]\ntrigger = \"interval:2s\"\n"
    );
    let config = setup.write(dir.path());
    let is_done = |r: &Run| r.0 == JOB && r.2 == "completed";

    let mut first = BridgeProcess::spawn(BIN, &config, dir.path());
    let before = wait_runs(&db.url, Duration::from_secs(30), |r| {
        r.iter().filter(|x| is_done(x)).count() >= 2
    })
    .await;
    assert!(
        before.iter().filter(|x| is_done(x)).count() >= 2,
        "job never ran: {before:?}; log:\n{}",
        first.log_text()
    );
    first.kill();
    let killed_at = Utc::now();
    // The outage itself: 7 s down, so 3 to 4 instants of the 2 s job fall due meanwhile.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let restart = Instant::now();
    let restarted_at = Utc::now();
    let second = BridgeProcess::spawn(BIN, &config, dir.path());
    let after = wait_runs(&db.url, Duration::from_secs(30), |r| {
        r.iter()
            .filter(|x| is_done(x) && x.3.is_some_and(|s| s >= restarted_at))
            .count()
            >= 2
    })
    .await;
    let first_after = after
        .iter()
        .filter(|x| is_done(x) && x.3.is_some_and(|s| s >= restarted_at))
        .filter_map(|x| x.3)
        .min();
    let Some(first_after) = first_after else {
        panic!(
            "no run after restart: {after:?}; log:\n{}",
            second.log_text()
        );
    };
    eprintln!(
        "sigkill restart: first run {} ms after restart (spawn {:?} ago)",
        (first_after - restarted_at).num_milliseconds(),
        restart.elapsed()
    );
    drop(second);

    let job: Vec<&Run> = after.iter().filter(|r| r.0 == JOB).collect();
    // (a) No instant twice, and no two instants closer than the interval.
    assert_instants_apart(&job, chrono::Duration::milliseconds(1900));
    // (b) Nothing ran while the bridge was dead.
    for r in &job {
        if let Some(s) = r.3 {
            assert!(
                s <= killed_at || s >= restarted_at,
                "a run started while the bridge was down: {r:?}"
            );
        }
    }
    // (c) The instants due during the downtime are coalesced into one row: the latest due one,
    // either run after the restart (within the misfire grace) or recorded `missed`; the earlier
    // ones are not replayed one by one.
    let last_before = job.iter().filter(|r| r.1 <= killed_at).map(|r| r.1).max();
    let Some(rep) = job.iter().find(|r| r.1 > killed_at) else {
        panic!("no row after the kill: {job:?}");
    };
    assert!(
        rep.2 == "missed" || rep.3.is_some_and(|s| s >= restarted_at),
        "the first instant after the kill is neither missed nor run after the restart: {rep:?}"
    );
    assert!(
        rep.1 >= restarted_at - chrono::Duration::seconds(2),
        "downtime instants replayed instead of coalesced to the latest: {rep:?} (restart {restarted_at})"
    );
    let coalesced = last_before
        .map(|t| (rep.1 - t).num_milliseconds() / 2000 - 1)
        .unwrap_or(0);
    eprintln!(
        "sigkill restart: {coalesced} instant(s) coalesced away, the latest recorded as '{}' (scheduled {}, started {:?})",
        rep.2, rep.1, rep.3
    );
    let stale = job.iter().filter(|r| r.2 == "running").count();
    eprintln!("sigkill restart: {stale} row(s) left 'running' by the killed process");
    drill.sim.shutdown().await;
    db.drop_now().await;
}
