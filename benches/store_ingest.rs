//! Batched insert throughput of telemetry samples into PostgreSQL (a fresh database on the test
//! server, `TEST_DATABASE_URL`) and SQLite (temp file). Every iteration writes new rows.
//! Run: `cargo bench --bench store_ingest`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use marstek_bridge::store::{self, DatabaseSettings, Store};

const DEVICES: usize = 4;

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
                || support::synthetic_samples(n, DEVICES, &mut offset),
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
