//! `/api/v1/batteries` answers from memory: the intents kept by the command service and the
//! reconciler and the newest samples, not a store read per call. The bridge runs on PostgreSQL
//! behind a cuttable proxy; with the database cut, the list still shows every battery with its
//! numbers and the intent just set over HTTP, while a route that does read the store (the
//! audit) answers 503.

mod api_common;
mod support;

use api_common::Rig;
use support::{TcpProxy, TestPgDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_battery_list_answers_from_memory_while_the_database_is_down() {
    let db = TestPgDb::create("api_cache").await;
    let (addr, proxy) = TcpProxy::start(db.server_addr()).await.unwrap();
    // No mode schedule: the reconciler keeps no intent of its own that could replace ours.
    let rig = Rig::start_with(Some(db.url_via(addr)), Rig::no_mode_jobs).await;
    rig.wait_for_samples().await;
    rig.command_ok(
        "bat-b",
        r#"{"mode":"passive","power":-600,"duration":600,"id":"c1"}"#,
    )
    .await;

    proxy.cut();
    let (code, audit) = rig.get("/api/v1/commands").await;
    assert_eq!(
        code, 503,
        "the audit reads the store, which is down: {audit}"
    );
    let (code, list) = rig.get("/api/v1/batteries").await;
    assert_eq!(code, 200, "{list}");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|b| b["soc"].is_u64()), "{list:?}");
    let b = list.iter().find(|b| b["id"] == "bat-b").unwrap();
    assert_eq!(b["intent"]["set_by"], "http", "{b}");
    assert_eq!(b["intent"]["config"]["mode"], "passive", "{b}");
    let (code, one) = rig.get("/api/v1/batteries/bat-b").await;
    assert_eq!(code, 200, "{one}");
    assert_eq!(one["intent"]["config"]["mode"], "passive", "{one}");
    proxy.restore();
    rig.stop().await;
}

/// A fresh start whose writer has not flushed yet (batches of an hour): the 24 h history still
/// holds the hour in progress, computed from the newest sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_holds_the_hour_in_progress_before_anything_is_stored() {
    let rig = Rig::start_with(None, |s| {
        s.database.batch_interval = std::time::Duration::from_secs(3600);
        s.database.batch_size = 50_000;
    })
    .await;
    rig.wait_for_samples().await;
    let (code, hist) = rig.get("/api/v1/batteries/bat-a/history").await;
    assert_eq!(code, 200, "{hist}");
    let points = hist["points"].as_array().unwrap();
    assert_eq!(points.len(), 1, "only the hour in progress: {hist}");
    let p = &points[0];
    assert!(p["n"].as_u64().unwrap() >= 1, "{p}");
    let soc = p["soc_mean"].as_f64().expect("soc_mean");
    assert!((45.0..=65.0).contains(&soc), "the simulator's SOC: {p}");
    let now = chrono::Utc::now();
    let t: chrono::DateTime<chrono::Utc> = p["t"].as_str().unwrap().parse().unwrap();
    assert!(t <= now && now - t <= chrono::Duration::hours(1), "{p}");
    rig.stop().await;
}
