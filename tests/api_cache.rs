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
    let rig = Rig::start_with(Some(db.url_via(addr)), |s| {
        for job in ["job_switch_to_auto", "job_switch_to_manual_night"] {
            s.scheduler.jobs.entry(job.into()).or_default().enabled = false;
        }
    })
    .await;
    rig.wait_for_samples().await;
    let (code, result) = rig
        .post(
            "/api/v1/batteries/bat-b/commands",
            r#"{"mode":"passive","power":-600,"duration":600,"id":"c1"}"#,
        )
        .await;
    assert_eq!(code, 200, "{result}");
    assert_eq!(result["status"], "ok", "{result}");

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
