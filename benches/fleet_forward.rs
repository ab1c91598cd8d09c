//! Store-and-forward replay into one central database: 50 sites × 3 batteries × 1 h of
//! telemetry at one sample every 5 s (108,000 rows) queued in 50 edge SQLite stores, then every
//! edge's forwarder drains its backlog concurrently into the central database (TimescaleDB at
//! `TEST_TIMESCALE_URL` when set, else PostgreSQL at `TEST_DATABASE_URL`); prints rows/s of the
//! drain. Run: `cargo bench --bench fleet_forward`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use marstek_bridge::sites::central::CentralSettings;
use marstek_bridge::sites::forward::prepare;
use marstek_bridge::store::central::Central;
use marstek_bridge::store::{DatabaseSettings, SqliteStore, Store};

const SITES: usize = 50;
const BATTERIES: usize = 3;
/// One hour at one sample every 5 s.
const SAMPLES_PER_BATTERY: usize = 720;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let db = match support::TestPgDb::create_timescale("bench_fleet").await {
        Some(db) => db,
        None => support::TestPgDb::create("bench_fleet").await,
    };
    let settings = CentralSettings {
        url: db.url.clone(),
        batch_size: 5000,
        max_backlog: 1_000_000,
        timeout: Duration::from_secs(60),
        max_connections: 1,
        retention_days: 36_500,
        compress_after_days: 36_500,
        ..CentralSettings::default()
    };
    let central = Central::connect(&settings.target()).await.expect("central");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut forwarders = Vec::new();
    for site in 0..SITES {
        let url = format!(
            "sqlite://{}",
            dir.path().join(format!("s{site}.db")).display()
        );
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::connect(&DatabaseSettings {
                url: url.clone(),
                site_id: format!("site-{site}"),
                forward: true,
                retention_days: 36_500,
                ..DatabaseSettings::default()
            })
            .await
            .expect("edge store"),
        );
        let mut offset = 0;
        let samples =
            support::synthetic_samples(SAMPLES_PER_BATTERY * BATTERIES, BATTERIES, &mut offset);
        store.insert_samples(&samples).await.expect("edge insert");
        let id = format!("site-{site}");
        forwarders.push(
            prepare(&settings, &id, &url, store)
                .await
                .expect("forwarder"),
        );
    }
    let rows = (SITES * BATTERIES * SAMPLES_PER_BATTERY) as f64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (mut f, h) in forwarders {
        tasks.push(tokio::spawn(async move {
            while h.stats().backlog > 0 || h.stats().last_success.is_none() {
                f.round().await.expect("round");
            }
        }));
    }
    for t in tasks {
        t.await.expect("forwarder task");
    }
    let secs = started.elapsed().as_secs_f64();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM fleet_battery_status")
        .fetch_one(central.pool())
        .await
        .expect("count");
    assert_eq!(n as f64, rows, "every row arrived once");
    println!(
        "fleet_forward: {SITES} sites x {BATTERIES} batteries x 1 h (5 s) = {rows} rows into {:?} \
         in {secs:.2} s: {:.0} rows/s",
        central.backend(),
        rows / secs
    );
}
