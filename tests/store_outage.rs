//! Telemetry survives a database outage: the writer talks to PostgreSQL (plain, and TimescaleDB
//! from `TEST_TIMESCALE_URL`) through a cuttable TCP proxy; while the link is cut, samples are
//! buffered in memory and arrive exactly once, in order, after it is restored. With a tiny
//! bound, the oldest samples are dropped and counted.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use marstek_bridge::domain::{DeviceId, Percent, Sample, Watts};
use marstek_bridge::store::{self, Backend, DatabaseSettings, PgStore, Store, spawn_writer};
use support::{TcpProxy, TestPgDb};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap()
}

fn sample(i: u64) -> Sample {
    let mut s = Sample::empty(
        DeviceId::parse("outage_dev").unwrap(),
        t0() + chrono::Duration::milliseconds(i as i64),
    );
    s.soc = Some(Percent((i % 101) as u8));
    s.bat_power = Some(Watts(i as i32));
    s
}

/// Sends numbered samples every 5 ms until stopped; returns how many it sent.
fn produce(
    tx: broadcast::Sender<Sample>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            tick.tick().await;
            if tx.send(sample(i)).is_err() {
                break;
            }
            i += 1;
            sent.store(i, Ordering::SeqCst);
        }
        i
    })
}

fn writer_settings(url: String, capacity: usize) -> DatabaseSettings {
    DatabaseSettings {
        url,
        max_connections: 2,
        acquire_timeout: Duration::from_secs(1),
        batch_size: 50,
        batch_interval: Duration::from_millis(100),
        buffer_capacity: capacity,
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(800),
        write_timeout: Duration::from_secs(2),
        shutdown_flush_timeout: Duration::from_secs(5),
        // The samples are from February: keep TimescaleDB's background retention and
        // compression jobs off them (compressed rows would lose their inserting xmin).
        retention_days: 36_500,
        aggregate_retention_days: 36_500,
        compress_after_days: 36_500,
        ..DatabaseSettings::default()
    }
}

/// (bat_power = sequence number, xmin of the inserting transaction), ordered by sample time.
async fn stored(db: &TestPgDb) -> Vec<(i64, i64)> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let rows: Vec<(i32, String)> =
        sqlx::query_as("SELECT bat_power, xmin::text FROM battery_status ORDER BY time")
            .fetch_all(&mut c)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(p, x)| (i64::from(p), x.parse::<i64>().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_survive_a_ten_second_outage_exactly_once_in_order_on_postgres() {
    let db = TestPgDb::create("store_outage").await;
    outage_exactly_once_in_order(db, Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_survive_a_ten_second_outage_exactly_once_in_order_on_timescale() {
    if let Some(db) = TestPgDb::create_timescale("store_outage_ts").await {
        outage_exactly_once_in_order(db, Backend::Timescale).await;
    }
}

async fn outage_exactly_once_in_order(db: TestPgDb, backend: Backend) {
    let (addr, proxy) = TcpProxy::start(db.server_addr()).await.unwrap();
    let settings = writer_settings(db.url_via(addr), 100_000);
    let store = store::open(&settings).await.unwrap();
    assert_eq!(store.backend(), backend);

    let (tx, rx) = broadcast::channel(20_000);
    let cancel = CancellationToken::new();
    let (handle, task) = spawn_writer(store, rx, &settings, cancel.clone());
    let mut db_status = handle.db_status();
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let producer = produce(tx, stop.clone(), sent.clone());

    handle
        .wait_for(|s| s.written >= 100, WAIT)
        .await
        .expect("writes flow before the outage");

    proxy.cut();
    tokio::time::timeout(WAIT, db_status.wait_for(|up| !*up))
        .await
        .expect("outage detected")
        .unwrap();
    let written_at_cut = handle.stats().written;
    let sent_at_cut = sent.load(Ordering::SeqCst);
    // Hold the outage for its duration (not synchronisation).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = handle.stats();
    assert!(!during.db_up);
    assert_eq!(during.written, written_at_cut, "nothing written while cut");
    assert!(during.failed_writes >= 2, "{during:?}");
    assert!(during.last_error.is_some());
    let sent_during = sent.load(Ordering::SeqCst) - sent_at_cut;
    handle
        .wait_for(|s| s.buffered as u64 >= sent_during, WAIT)
        .await
        .expect("samples sent while cut are held in memory");

    proxy.restore();
    tokio::time::timeout(WAIT, db_status.wait_for(|up| *up))
        .await
        .expect("recovery detected")
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    let total = producer.await.unwrap();
    let fin = handle
        .wait_for(|s| s.written == total && s.buffered == 0, WAIT)
        .await
        .unwrap_or_else(|s| panic!("not all {total} written: {s:?}"));
    assert_eq!(fin.dropped, 0);
    assert_eq!(fin.inserted, total, "no row inserted twice");

    let rows = stored(&db).await;
    let seq: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(
        seq,
        (0..total as i64).collect::<Vec<_>>(),
        "each exactly once"
    );
    // In order: a later sample was never committed by an earlier transaction.
    assert!(
        rows.windows(2).all(|w| w[0].1 <= w[1].1),
        "flushed in arrival order"
    );
    assert!(total > 1_500, "samples flowed throughout ({total})");

    cancel.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert!(handle.stats().stopped);
    drop(proxy);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_bound_drops_the_oldest_and_counts_them_on_postgres() {
    let db = TestPgDb::create("store_outage_drop").await;
    tiny_bound_drops_the_oldest(db, Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_bound_drops_the_oldest_and_counts_them_on_timescale() {
    if let Some(db) = TestPgDb::create_timescale("store_outage_drop_ts").await {
        tiny_bound_drops_the_oldest(db, Backend::Timescale).await;
    }
}

async fn tiny_bound_drops_the_oldest(db: TestPgDb, backend: Backend) {
    let (addr, proxy) = TcpProxy::start(db.server_addr()).await.unwrap();
    let capacity = 200;
    let settings = writer_settings(db.url_via(addr), capacity);
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(&settings).await.unwrap());
    assert_eq!(store.backend(), backend);

    let (tx, rx) = broadcast::channel(20_000);
    let cancel = CancellationToken::new();
    let (handle, task) = spawn_writer(store, rx, &settings, cancel.clone());
    let mut db_status = handle.db_status();
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let producer = produce(tx, stop.clone(), sent.clone());

    handle.wait_for(|s| s.written >= 50, WAIT).await.unwrap();
    proxy.cut();
    tokio::time::timeout(WAIT, db_status.wait_for(|up| !*up))
        .await
        .unwrap()
        .unwrap();
    // At 200 samples/s, well over `capacity` samples arrive while cut.
    handle
        .wait_for(|s| s.dropped >= 300, WAIT)
        .await
        .expect("drops counted while cut");
    assert!(handle.stats().buffered <= capacity, "bounded memory");
    proxy.restore();
    tokio::time::timeout(WAIT, db_status.wait_for(|up| *up))
        .await
        .unwrap()
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    let total = producer.await.unwrap();
    let fin = handle
        .wait_for(|s| s.written + s.dropped == total && s.buffered == 0, WAIT)
        .await
        .unwrap_or_else(|s| panic!("{total} not accounted for: {s:?}"));
    assert!(fin.dropped >= 300);

    let rows = stored(&db).await;
    assert_eq!(
        rows.len() as u64,
        fin.written,
        "every written sample stored once"
    );
    let seq: Vec<i64> = rows.iter().map(|r| r.0).collect();
    // The newest samples survive: everything sent after the drops stopped is there, in order.
    let first_missing = (0..total as i64).find(|i| seq.binary_search(i).is_err());
    let last_missing = (0..total as i64)
        .rev()
        .find(|i| seq.binary_search(i).is_err());
    let (Some(first_missing), Some(last_missing)) = (first_missing, last_missing) else {
        panic!("some samples must be missing");
    };
    assert!(
        last_missing - first_missing < fin.dropped as i64 + 50,
        "dropped ones are one run of the oldest ({first_missing}..={last_missing})"
    );
    assert!(seq.ends_with(&[total as i64 - 2, total as i64 - 1]));

    cancel.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    drop(proxy);
    db.drop_now().await;
}
