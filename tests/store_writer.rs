//! The telemetry writer on SQLite (temp file): batches by size and by age, flushes what it holds
//! at shutdown, and counts a lagging broadcast receiver's missed samples as dropped.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use marstek_bridge::domain::{DeviceId, Sample, Watts};
use marstek_bridge::store::{self, DatabaseSettings, Store, spawn_writer};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

fn sample(i: i64) -> Sample {
    let mut s = Sample::empty(
        DeviceId::parse("writer_dev").unwrap(),
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(i),
    );
    s.bat_power = Some(Watts(i as i32));
    s
}

async fn open(
    dir: &tempfile::TempDir,
    batch_interval: Duration,
) -> (Arc<dyn Store>, DatabaseSettings) {
    let settings = DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("w.db").display()),
        batch_size: 10,
        batch_interval,
        buffer_capacity: 1000,
        ..Default::default()
    };
    (store::open(&settings).await.unwrap(), settings)
}

async fn all(store: &dyn Store) -> Vec<i32> {
    store
        .sample_history(
            &DeviceId::parse("writer_dev").unwrap(),
            Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).unwrap(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.bat_power.unwrap().0)
        .collect()
}

#[tokio::test]
async fn full_batches_go_at_once_and_a_partial_one_after_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    // A long interval: only full batches can be written before it elapses.
    let (store, settings) = open(&dir, Duration::from_secs(3600)).await;
    let (tx, rx) = mpsc::channel(100);
    let cancel = CancellationToken::new();
    let (h, task) = spawn_writer(store.clone(), rx, &settings, cancel.clone());
    for i in 0..25 {
        tx.send(sample(i)).await.unwrap();
    }
    let s = h.wait_for(|s| s.written == 20, WAIT).await.unwrap();
    assert_eq!(s.batches, 2);
    assert_eq!(all(store.as_ref()).await, (0..20).collect::<Vec<_>>());
    // The last 5 wait for the interval… or for shutdown, which flushes them.
    let s = h.wait_for(|s| s.buffered == 5, WAIT).await.unwrap();
    assert_eq!(s.written, 20);
    cancel.cancel();
    task.await.unwrap();
    let s = h.stats();
    assert_eq!((s.written, s.dropped, s.buffered), (25, 0, 0));
    assert!(s.stopped);
    assert_eq!(all(store.as_ref()).await, (0..25).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_partial_batch_is_written_after_batch_interval_and_closing_ends_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (store, settings) = open(&dir, Duration::from_millis(50)).await;
    let (tx, rx) = mpsc::channel(100);
    let (h, task) = spawn_writer(store.clone(), rx, &settings, CancellationToken::new());
    for i in 0..3 {
        tx.send(sample(i)).await.unwrap();
    }
    h.wait_for(|s| s.written == 3, WAIT).await.unwrap();
    tx.send(sample(3)).await.unwrap();
    drop(tx); // source closed: the writer writes what it holds and ends
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(all(store.as_ref()).await, vec![0, 1, 2, 3]);
    assert_eq!(h.stats().dropped, 0);
}

#[tokio::test]
async fn a_lagging_broadcast_receiver_counts_missed_samples_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (store, settings) = open(&dir, Duration::from_millis(20)).await;
    let (tx, rx) = broadcast::channel(16);
    // 100 samples into a 16-slot channel before the writer reads: 84 are overwritten.
    for i in 0..100 {
        tx.send(sample(i)).unwrap();
    }
    let (h, task) = spawn_writer(store.clone(), rx, &settings, CancellationToken::new());
    drop(tx);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    let s = h.stats();
    assert_eq!((s.dropped, s.written), (84, 16), "{s:?}");
    assert_eq!(all(store.as_ref()).await, (84..100).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_sample_the_database_refuses_is_dropped_after_retries_and_the_rest_flows() {
    let dir = tempfile::tempdir().unwrap();
    let settings = DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("r.db").display()),
        batch_size: 1,
        batch_interval: Duration::from_millis(10),
        buffer_capacity: 100,
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(20),
        ..Default::default()
    };
    let store = store::open(&settings).await.unwrap();
    let (tx, rx) = mpsc::channel(10);
    let (h, task) = spawn_writer(store.clone(), rx, &settings, CancellationToken::new());
    let mut bad = sample(1);
    bad.soc = Some(marstek_bridge::domain::Percent(200)); // violates the CHECK constraint
    for s in [sample(0), bad, sample(2)] {
        tx.send(s).await.unwrap();
    }
    drop(tx);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    let s = h.stats();
    assert_eq!((s.written, s.dropped, s.failed_writes), (2, 1, 3), "{s:?}");
    assert!(s.db_up, "a refused sample is not an outage");
    assert!(s.last_error.is_some());
    assert_eq!(all(store.as_ref()).await, vec![0, 2]);
}
