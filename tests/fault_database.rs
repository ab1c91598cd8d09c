//! Fault drill: the PostgreSQL connection of a running bridge (child process, 20 simulated
//! batteries polled every second) is cut for 30 s through a `TcpProxy`. The bridge must keep
//! running, buffer the telemetry and, after the database comes back, write every sample it
//! produced (`marstek_samples_total` from `/metrics` against `count(*)` of `battery_status`).
//! Run on plain PostgreSQL and on TimescaleDB (`TEST_TIMESCALE_URL`), whose start-up log must
//! say `backend=Timescale`. Prints the time from restore to the backlog being written.

mod fault_common;
mod support;

use std::time::{Duration, Instant};

use fault_common::{BridgeProcess, Drill, broker_addr, free_addr, metric};
use sqlx::Connection;
use support::{TcpProxy, TestPgDb};

const BIN: &str = env!("CARGO_BIN_EXE_marstek-bridge");
const DEVICES: usize = 20;

async fn rows(url: &str) -> Option<i64> {
    let mut c = sqlx::PgConnection::connect(url).await.ok()?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM battery_status")
        .fetch_one(&mut c)
        .await
        .ok()?;
    let _ = c.close().await;
    Some(n)
}

/// Polls `f` every 100 ms until it returns Some(true) or `limit` passes; returns the last value.
async fn wait_until<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The log without ANSI colour sequences.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ … final letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_of_30s_loses_no_sample_within_the_buffer_on_postgres() {
    outage_drill(TestPgDb::create("fault_db").await, "Postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_of_30s_loses_no_sample_within_the_buffer_on_timescale() {
    if let Some(db) = TestPgDb::create_timescale("fault_db_ts").await {
        outage_drill(db, "Timescale").await;
    }
}

async fn outage_drill(db: TestPgDb, backend: &str) {
    let (proxy_addr, proxy) = TcpProxy::start(db.server_addr()).await.unwrap();
    let url = db.url_via(proxy_addr);
    let mut drill = Drill::devices("fault_db", DEVICES, broker_addr(), Some(&url)).await;
    let (dir, setup) = (&drill.dir, &mut drill.setup);
    let http = free_addr();
    setup.status_interval = "1s".into();
    setup.http_listen = Some(http);
    // Warnings as usual, plus the store's start-up line (`store_opened backend=…`).
    setup.log_level = "warn,marstek_bridge::store=info".into();
    let config = setup.write(dir.path());
    let mut bridge = BridgeProcess::spawn(BIN, &config, dir.path());

    let flowing = wait_until(Duration::from_secs(30), || async {
        rows(&db.url).await.is_some_and(|n| n >= DEVICES as i64)
    })
    .await;
    assert!(flowing, "no telemetry rows; log:\n{}", bridge.log_text());
    let log = plain(&bridge.log_text());
    assert!(
        log.lines()
            .any(|l| l.contains("store_opened") && l.contains(&format!("backend={backend}"))),
        "start-up log names backend={backend}:\n{log}"
    );

    proxy.cut();
    let cut_at = Instant::now();
    let before = metric(http, "marstek_samples_total").await.unwrap_or(0.0);
    // The outage itself: 30 s of wall time with the bridge polling into its buffer.
    while cut_at.elapsed() < Duration::from_secs(30) {
        assert!(
            bridge.try_exit().is_none(),
            "bridge exited during the outage; log:\n{}",
            bridge.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let during = metric(http, "marstek_samples_total").await.unwrap_or(0.0);
    assert!(
        during > before + DEVICES as f64,
        "polling went on during the outage ({before} → {during} samples)"
    );
    proxy.restore();
    let restored = Instant::now();
    let caught_up = wait_until(Duration::from_secs(60), || async {
        rows(&db.url).await.is_some_and(|n| n as f64 >= during)
    })
    .await;
    assert!(
        caught_up,
        "backlog not written; log:\n{}",
        bridge.log_text()
    );
    eprintln!(
        "database outage 30 s: {} samples produced meanwhile, backlog written {:?} after restore",
        during - before,
        restored.elapsed()
    );

    // Quiesce: silence the devices, wait for the sample counter to settle, then compare.
    for i in 0..DEVICES {
        drill.sim.set_silent(i, true);
    }
    let mut last = -1.0;
    let mut settled = false;
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        // Longer than the 1 s status interval: an unchanged counter means polling has stopped.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = metric(http, "marstek_samples_total").await.unwrap_or(-2.0);
        if now == last {
            settled = true;
            break;
        }
        last = now;
    }
    assert!(settled, "sample counter never settled");
    let total = last;
    let written = wait_until(Duration::from_secs(20), || async {
        rows(&db.url).await.is_some_and(|n| n as f64 >= total)
    })
    .await;
    let n = rows(&db.url).await.unwrap_or(-1);
    eprintln!("database outage: {total} samples produced, {n} rows stored");
    assert!(written, "lost samples: {total} produced, {n} rows");
    let dropped = metric(http, "marstek_store_dropped_samples")
        .await
        .unwrap_or(0.0);
    assert_eq!(dropped, 0.0, "the writer dropped samples within its bound");
    assert!(bridge.try_exit().is_none(), "bridge still running");
    let status = bridge.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "orderly exit: {status:?}"
    );
    drill.sim.shutdown().await;
    drop(proxy);
    db.drop_now().await;
}
