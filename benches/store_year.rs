//! One simulated year of telemetry for 3 batteries at 1 sample/min (1,576,800 fully populated
//! samples) written through `Store::insert_samples` into TimescaleDB (`TEST_TIMESCALE_URL`),
//! plain PostgreSQL (`TEST_DATABASE_URL`) and SQLite (temp file), each in a fresh database.
//! Reports per backend: insert rate, raw table size (TimescaleDB before and after compressing
//! every chunk), size of the energy history once the raw rows are gone, and the time of a
//! 30-day daily `energy_history` query — from the continuous aggregates and from the raw table.
//! Prints a Markdown table for docs/benchmarks.md.
//!
//! Run: `TEST_TIMESCALE_URL=postgres://… cargo bench --profile dev --bench store_year`
//! (the work is the databases'; `BENCH_DAYS=30` for a shorter run). Not a test: no assertion
//! on speed.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, TimeZone, Utc};
use marstek_bridge::domain::{Celsius, DeviceId, Mode, Percent, Sample, WattHours, Watts};
use marstek_bridge::store::{self, Backend, Bucket, DatabaseSettings, PgStore, Store};
use sqlx::Connection;

const DEVICES: usize = 3;
const BATCH: usize = 5_000;

/// A battery's day in 1-minute steps: grid charging 02:00–06:00 (off-peak), discharging
/// 18:00–23:00, solar around noon, small noise everywhere (xorshift), counters that only grow.
struct Battery {
    id: DeviceId,
    soc: f64,
    rng: u64,
    pv_total: f64,
    grid_in_total: f64,
    grid_out_total: f64,
    load_total: f64,
}

impl Battery {
    fn new(i: usize) -> Self {
        Self {
            id: DeviceId(format!("year_{i}")),
            soc: 50.0,
            rng: 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1),
            pv_total: 0.0,
            grid_in_total: 0.0,
            grid_out_total: 0.0,
            load_total: 0.0,
        }
    }

    fn noise(&mut self, span: i32) -> i32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % (2 * span as u64 + 1)) as i32 - span
    }

    fn sample(&mut self, at: DateTime<Utc>) -> Sample {
        use chrono::{Datelike, Timelike};
        let minute = at.hour() * 60 + at.minute();
        let pv = if (8 * 60..18 * 60).contains(&minute) {
            let x = (f64::from(minute) - 780.0) / 300.0;
            (400.0 * (1.0 - x * x)).max(0.0) as i32 + self.noise(15)
        } else {
            0
        };
        let mut bat = match minute {
            120..360 if self.soc < 95.0 => -1500 + self.noise(40),
            1080..1380 if self.soc > 12.0 => 800 + self.noise(60),
            _ => self.noise(20),
        };
        if self.soc >= 100.0 && bat < 0 {
            bat = 0;
        }
        let grid = bat + pv - 15 + self.noise(10);
        self.soc = (self.soc - f64::from(bat) / 60.0 / 5120.0 * 100.0).clamp(0.0, 100.0);
        self.pv_total += f64::from(pv.max(0)) / 60.0;
        self.grid_in_total += f64::from((-grid).max(0)) / 60.0;
        self.grid_out_total += f64::from(grid.max(0)) / 60.0;
        self.load_total += 3.0;
        let day = f64::from(at.ordinal());
        Sample {
            device: self.id.clone(),
            at,
            soc: Some(Percent(self.soc.round() as u8)),
            bat_power: Some(Watts(bat)),
            grid_power: Some(Watts(grid)),
            offgrid_power: Some(Watts(0)),
            pv_power: Some(Watts(pv.max(0))),
            temperature: Some(Celsius(
                22.0 + 6.0 * (day / 58.0).sin() + f64::from(self.noise(5)) / 10.0,
            )),
            remaining_capacity: Some(WattHours((self.soc * 51.2).round())),
            rated_capacity: Some(WattHours(5120.0)),
            total_pv_energy: Some(WattHours(self.pv_total.round())),
            total_grid_output_energy: Some(WattHours(self.grid_out_total.round())),
            total_grid_input_energy: Some(WattHours(self.grid_in_total.round())),
            total_load_energy: Some(WattHours(self.load_total)),
            mode: Some(Mode::Auto),
            ct_connected: Some(true),
            ct_power: Some(Watts(self.noise(300))),
            charge_allowed: Some(self.soc < 100.0),
            discharge_allowed: Some(self.soc > 10.0),
            rssi: Some(-60 + self.noise(5)),
            readings: Default::default(),
        }
    }
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

/// Writes `days` days for every battery; returns (rows, seconds spent in `insert_samples`).
async fn fill(store: &dyn Store, days: i64) -> (u64, f64) {
    let mut batteries: Vec<Battery> = (0..DEVICES).map(Battery::new).collect();
    let (mut rows, mut spent) = (0u64, StdDuration::ZERO);
    let mut batch = Vec::with_capacity(BATCH);
    let minutes = days * 1440;
    for m in 0..minutes {
        let at = start() + Duration::minutes(m);
        for b in batteries.iter_mut() {
            batch.push(b.sample(at));
        }
        if batch.len() >= BATCH || m == minutes - 1 {
            let t = Instant::now();
            rows += store.insert_samples(&batch).await.expect("insert");
            spent += t.elapsed();
            batch.clear();
        }
    }
    (rows, spent.as_secs_f64())
}

/// Median wall time of `runs` 30-day daily queries for battery 0, ms, and the buckets returned.
async fn time_query<F, Fut>(runs: usize, mut q: F) -> (f64, usize)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let mut times = Vec::with_capacity(runs);
    let mut n = 0;
    for _ in 0..runs {
        let t = Instant::now();
        n = q().await;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], n)
}

fn quiet(url: &str) -> DatabaseSettings {
    DatabaseSettings {
        url: url.to_string(),
        // Keep the background jobs away: this bench compresses and prunes itself.
        retention_days: 36_500,
        aggregate_retention_days: 36_500,
        compress_after_days: 36_500,
        ..Default::default()
    }
}

async fn scalar_i64(url: &str, sql: &str) -> i64 {
    let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut c)
        .await
        .expect(sql)
}

async fn exec(url: &str, sql: &str) -> f64 {
    let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
    let t = Instant::now();
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut c)
        .await
        .expect(sql);
    t.elapsed().as_secs_f64()
}

struct Row {
    backend: &'static str,
    rows: u64,
    insert_s: f64,
    raw_mb: f64,
    compressed_mb: Option<f64>,
    history_mb: f64,
    aggregate_ms: Option<f64>,
    raw_ms: f64,
    notes: String,
}

fn mb(bytes: i64) -> f64 {
    bytes as f64 / 1_048_576.0
}

const AGGREGATES_SIZE: &str = "SELECT sum(hypertable_size(format('%I.%I', \
    materialization_hypertable_schema, materialization_hypertable_name)::regclass))::int8 \
    FROM timescaledb_information.continuous_aggregates";

async fn timescale(days: i64) -> Option<Row> {
    let db = support::TestPgDb::create_timescale("bench_year_ts").await?;
    let settings = quiet(&db.url);
    let s = PgStore::connect(&settings).await.expect("open timescale");
    assert_eq!(s.backend(), Backend::Timescale);
    let (rows, insert_s) = fill(&s, days).await;
    let raw = scalar_i64(&db.url, "SELECT hypertable_size('battery_status')").await;
    let refresh_s = exec(
        &db.url,
        "CALL refresh_continuous_aggregate('battery_hourly', NULL, NULL)",
    )
    .await
        + exec(
            &db.url,
            "CALL refresh_continuous_aggregate('battery_daily', NULL, NULL)",
        )
        .await;
    let compress_s = exec(
        &db.url,
        "SELECT count(compress_chunk(c, if_not_compressed => TRUE)) \
         FROM show_chunks('battery_status') c",
    )
    .await;
    let compressed = scalar_i64(&db.url, "SELECT hypertable_size('battery_status')").await;
    let history = scalar_i64(&db.url, AGGREGATES_SIZE).await;
    let dev = DeviceId("year_0".into());
    let end = start() + Duration::days(days);
    let from = end - Duration::days(30);
    let (aggregate_ms, n_agg) = time_query(20, || async {
        s.energy_history(&dev, from, end, Bucket::Day)
            .await
            .unwrap()
            .len()
    })
    .await;
    let (raw_ms, n_raw) = time_query(5, || async {
        s.energy_history_from_raw(&dev, from, end, Bucket::Day)
            .await
            .unwrap()
            .len()
    })
    .await;
    assert_eq!(n_agg, n_raw);
    drop(s);
    db.drop_now().await;
    Some(Row {
        backend: "TimescaleDB 2.28.3 (PostgreSQL 15)",
        rows,
        insert_s,
        raw_mb: mb(raw),
        compressed_mb: Some(mb(compressed)),
        history_mb: mb(history),
        aggregate_ms: Some(aggregate_ms),
        raw_ms,
        notes: format!(
            "aggregates refreshed over the year in {refresh_s:.1} s, every chunk compressed in \
             {compress_s:.1} s; raw query over compressed chunks"
        ),
    })
}

async fn postgres(days: i64) -> Row {
    let db = support::TestPgDb::create("bench_year_pg").await;
    let s = store::open(&quiet(&db.url)).await.expect("open postgres");
    assert_eq!(s.backend(), Backend::Postgres);
    let (rows, insert_s) = fill(s.as_ref(), days).await;
    let raw = scalar_i64(&db.url, "SELECT pg_total_relation_size('battery_status')").await;
    let dev = DeviceId("year_0".into());
    let end = start() + Duration::days(days);
    let from = end - Duration::days(30);
    let (raw_ms, _) = time_query(5, || async {
        s.energy_history(&dev, from, end, Bucket::Day)
            .await
            .unwrap()
            .len()
    })
    .await;
    let t = Instant::now();
    s.prune_samples(end).await.expect("prune");
    let prune_s = t.elapsed().as_secs_f64();
    let history = scalar_i64(
        &db.url,
        "SELECT pg_total_relation_size('battery_hourly_rollup')",
    )
    .await;
    drop(s);
    db.drop_now().await;
    Row {
        backend: "PostgreSQL 15",
        rows,
        insert_s,
        raw_mb: mb(raw),
        compressed_mb: None,
        history_mb: mb(history),
        aggregate_ms: None,
        raw_ms,
        notes: format!("roll-up + delete of the year (prune) in {prune_s:.1} s"),
    }
}

async fn sqlite(days: i64) -> Row {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("year.db").display()),
        ..quiet("")
    };
    let s = store::SqliteStore::connect(&settings)
        .await
        .expect("open sqlite");
    let (rows, insert_s) = fill(&s, days).await;
    let size = |s: &store::SqliteStore| {
        let pool = s.pool().clone();
        async move {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&pool)
                .await
                .expect("checkpoint");
            let (pages, page): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT page_count FROM pragma_page_count()), \
                 (SELECT page_size FROM pragma_page_size())",
            )
            .fetch_one(&pool)
            .await
            .expect("pages");
            pages * page
        }
    };
    let raw = size(&s).await;
    let dev = DeviceId("year_0".into());
    let end = start() + Duration::days(days);
    let from = end - Duration::days(30);
    let (raw_ms, _) = time_query(5, || async {
        s.energy_history(&dev, from, end, Bucket::Day)
            .await
            .unwrap()
            .len()
    })
    .await;
    s.prune_samples(end).await.expect("prune");
    sqlx::query("VACUUM")
        .execute(s.pool())
        .await
        .expect("vacuum");
    let history = size(&s).await;
    Row {
        backend: "SQLite",
        rows,
        insert_s,
        raw_mb: mb(raw),
        compressed_mb: None,
        history_mb: mb(history),
        aggregate_ms: None,
        raw_ms,
        notes: "history size = whole file after prune + VACUUM".into(),
    }
}

fn main() {
    let days: i64 = std::env::var("BENCH_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(365);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut rows = Vec::new();
    match rt.block_on(timescale(days)) {
        Some(r) => rows.push(r),
        None => eprintln!("TimescaleDB skipped: TEST_TIMESCALE_URL is unset"),
    }
    rows.push(rt.block_on(postgres(days)));
    rows.push(rt.block_on(sqlite(days)));
    let per_year = 365.0 / days as f64 / DEVICES as f64;
    println!(
        "\n{days} days × {DEVICES} batteries × 1 sample/min\n\n\
         | backend | rows | insert (samples/s) | raw table (MB) | compressed (MB) | \
         raw per battery-year (MB) | energy history (MB) | history per battery-year (MB) | \
         30-day daily query, aggregate (ms) | same from raw (ms) | notes |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in rows {
        let stored = r.compressed_mb.unwrap_or(r.raw_mb);
        println!(
            "| {} | {} | {:.0} | {:.1} | {} | {:.1} | {:.2} | {:.3} | {} | {:.1} | {} |",
            r.backend,
            r.rows,
            r.rows as f64 / r.insert_s,
            r.raw_mb,
            r.compressed_mb
                .map_or("—".to_string(), |m| format!("{m:.1}")),
            stored * per_year,
            r.history_mb,
            r.history_mb * per_year,
            r.aggregate_ms
                .map_or("—".to_string(), |m| format!("{m:.2}")),
            r.raw_ms,
            r.notes
        );
    }
}
