//! Batched insert throughput of telemetry samples into PostgreSQL (a fresh database on the test
//! server, `TEST_DATABASE_URL`) and SQLite (temp file). Every iteration writes new rows.
//! Run: `cargo bench --bench store_ingest`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use marstek_bridge::domain::{Celsius, DeviceId, Mode, Percent, Sample, WattHours, Watts};
use marstek_bridge::store::{self, DatabaseSettings, Store};

const DEVICES: usize = 4;

/// `n` fully populated samples spread over `DEVICES` devices, times after `offset` seconds.
fn batch(n: usize, offset: &mut i64) -> Vec<Sample> {
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let devices: Vec<DeviceId> = (0..DEVICES)
        .map(|d| DeviceId(format!("bench_{d}")))
        .collect();
    let out = (0..n)
        .map(|i| {
            let k = *offset + (i / DEVICES) as i64;
            Sample {
                device: devices[i % DEVICES].clone(),
                at: base + chrono::Duration::seconds(k),
                soc: Some(Percent((k % 101) as u8)),
                bat_power: Some(Watts(-(k % 2500) as i32)),
                grid_power: Some(Watts((k % 2500) as i32)),
                offgrid_power: Some(Watts(0)),
                pv_power: Some(Watts(300)),
                temperature: Some(Celsius(25.5)),
                remaining_capacity: Some(WattHours(2500.0)),
                rated_capacity: Some(WattHours(5120.0)),
                total_pv_energy: Some(WattHours(k as f64)),
                total_grid_output_energy: Some(WattHours(k as f64 * 2.0)),
                total_grid_input_energy: Some(WattHours(k as f64 * 3.0)),
                total_load_energy: Some(WattHours(k as f64 * 4.0)),
                mode: Some(Mode::Auto),
                ct_connected: Some(true),
                ct_power: Some(Watts(12)),
                charge_allowed: Some(true),
                discharge_allowed: Some(true),
                rssi: Some(-60),
            }
        })
        .collect();
    *offset += n.div_ceil(DEVICES) as i64;
    out
}

fn bench_store(c: &mut Criterion, name: &str, rt: &tokio::runtime::Runtime, store: Arc<dyn Store>) {
    let mut group = c.benchmark_group(format!("insert_samples/{name}"));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.warm_up_time(Duration::from_secs(1));
    // Shared by both sizes so every batch has new (device, time) keys.
    let mut offset = 0i64;
    for n in [500usize, 5_000, 20_000] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("batch_{n}"), |b| {
            b.to_async(rt).iter_batched(
                || batch(n, &mut offset),
                |samples| {
                    let store = store.clone();
                    async move {
                        let inserted = store.insert_samples(&samples).await.expect("insert");
                        assert_eq!(inserted, samples.len() as u64, "fresh rows every time");
                    }
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    let db = rt.block_on(support::TestPgDb::create("bench_ingest"));
    let pg = rt
        .block_on(store::open(&DatabaseSettings {
            url: db.url.clone(),
            ..Default::default()
        }))
        .expect("open postgres");
    bench_store(c, "postgres", &rt, pg.clone());
    drop(pg);
    rt.block_on(db.drop_now());

    let dir = tempfile::tempdir().expect("temp dir");
    let lite = rt
        .block_on(store::open(&DatabaseSettings {
            url: format!("sqlite://{}", dir.path().join("bench.db").display()),
            ..Default::default()
        }))
        .expect("open sqlite");
    bench_store(c, "sqlite", &rt, lite);
}

criterion_group!(benches, ingest);
criterion_main!(benches);
