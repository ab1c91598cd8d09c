//! The bridge's dry-run switch over the REST API, against a running bridge (in-process
//! `app::run_with`, real HTTP, three simulated batteries over UDP, the real mosquitto, a SQLite
//! file or PostgreSQL): a toggle needs the token and a well-formed body, is answered with the
//! result object, reaches the retained `<base>/bridge/dry_run` topic and the event stream, keeps
//! the scheduler's mode jobs from writing to any battery (their run says what they would do),
//! leaves a person's command alone, and is still on after a restart on the same database.

mod api_common;
mod fault_common;
mod support;

use std::time::Duration;

use api_common::{Rig, TOKEN, error_code, next_event};
use fault_common::{Watcher, broker_addr};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Mode writes the three simulated batteries received so far.
fn mode_writes(rig: &Rig) -> Vec<u64> {
    (0..3)
        .map(|i| rig.sim.stats(i).expect("battery").mode_writes)
        .collect()
}

async fn put_dry_run(rig: &Rig, token: Option<&str>, body: &str) -> (StatusCode, Value) {
    rig.send(Method::PUT, "/api/v1/dry-run", token, body).await
}

/// Waits for a retained-topic update on `topic` whose `dry_run` is `want`.
async fn dry_run_published(watcher: &mut Watcher, topic: &str, want: bool) -> Value {
    let seen = watcher
        .next_matching(Duration::from_secs(10), |s| {
            s.topic == topic
                && serde_json::from_str::<Value>(&s.text)
                    .is_ok_and(|v| v["dry_run"] == Value::Bool(want))
        })
        .await
        .unwrap_or_else(|| panic!("no {topic} with dry_run = {want}"));
    serde_json::from_str(&seen.text).unwrap()
}

async fn toggle_story(db_url: String) {
    let mut base = String::new();
    let rig = Rig::start_with(Some(db_url.clone()), |s| {
        base = s.mqtt.base_topic.clone();
    })
    .await;
    rig.wait_for_samples().await;
    let topic = format!("{base}/bridge/dry_run");
    let mut watcher = Watcher::start(
        broker_addr(),
        &format!("{base}_dry"),
        std::slice::from_ref(&topic),
    )
    .await;
    let first = dry_run_published(&mut watcher, &topic, false).await;
    assert_eq!(first["origin"], "config", "{first}");

    let (code, v) = rig.get("/api/v1/dry-run").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["dry_run"].clone(), v["origin"].clone()),
        (false.into(), "config".into())
    );

    // Refused: no token, a wrong one, a body of the wrong shape; nothing changes.
    let (code, v) = put_dry_run(&rig, None, r#"{"dry_run":true}"#).await;
    assert_eq!(
        error_code(code, &v, StatusCode::UNAUTHORIZED),
        "token_required"
    );
    let (code, v) = put_dry_run(&rig, Some("wrong"), r#"{"dry_run":true}"#).await;
    assert_eq!(error_code(code, &v, StatusCode::FORBIDDEN), "token_invalid");
    let (code, v) = put_dry_run(&rig, Some(TOKEN), r#"{"dry_run":"yes"}"#).await;
    assert_eq!(
        error_code(code, &v, StatusCode::UNPROCESSABLE_ENTITY),
        "invalid_body"
    );
    let (code, v) = put_dry_run(&rig, Some(TOKEN), r#"{"dry_run":true,"x":1}"#).await;
    assert_eq!(
        error_code(code, &v, StatusCode::UNPROCESSABLE_ENTITY),
        "invalid_body"
    );
    let (code, v) = put_dry_run(&rig, Some(TOKEN), r#"{"dry_run":"#).await;
    assert_eq!(
        error_code(code, &v, StatusCode::BAD_REQUEST),
        "malformed_json"
    );
    let (_, v) = rig.get("/api/v1/dry-run").await;
    assert_eq!(v["dry_run"], false, "a refused toggle changed it: {v}");

    // On: answered with the result object, published retained and as a live event.
    let mut events = rig.events().await;
    let (code, v) = put_dry_run(&rig, Some(TOKEN), r#"{"dry_run":true}"#).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(
        (v["dry_run"].clone(), v["previous"].clone()),
        (true.into(), false.into())
    );
    assert_eq!(
        (v["origin"].clone(), v["changed_by"].clone()),
        ("stored".into(), "http".into())
    );
    assert!(v["changed_at"].is_string(), "{v}");
    let ev = next_event(&mut events, "dry_run").await;
    assert_eq!(ev["dry_run"], true, "{ev}");
    let published = dry_run_published(&mut watcher, &topic, true).await;
    assert_eq!(published["changed_by"], "http", "{published}");

    // The night job computes and reports, and writes to no battery.
    let before = mode_writes(&rig);
    let (code, run) = rig
        .post("/api/v1/jobs/job_switch_to_manual_night/run", "{}")
        .await;
    assert_eq!(code, 200, "{run}");
    let outcomes = run["result"]["batteries"]
        .as_array()
        .unwrap_or_else(|| panic!("per-battery outcomes: {run}"));
    assert_eq!(outcomes.len(), 3, "{run}");
    for o in outcomes {
        assert_eq!(o["status"], "dry_run", "{run}");
        assert_eq!(o["would_apply"]["mode"], "manual", "{run}");
    }
    let (code, audit) = rig.get("/api/v1/commands?limit=50").await;
    assert_eq!(code, 200, "{audit}");
    assert!(
        !audit.to_string().contains("\"scheduler\""),
        "a scheduler command reached the audit in dry run: {audit}"
    );
    // A person's command still goes through (and is the only write since).
    let (code, v) = rig
        .post("/api/v1/batteries/bat-a/commands", r#"{"mode":"auto"}"#)
        .await;
    assert_eq!(code, 200, "{v}");
    let after = mode_writes(&rig);
    assert!(
        after[0] > before[0],
        "the HTTP command was sent: {before:?} → {after:?}"
    );
    assert_eq!(
        (after[1], after[2]),
        (before[1], before[2]),
        "the dry-run job wrote to a battery"
    );
    rig.stop().await;
    drop(watcher);

    // Still on after a restart on the same database; off again answers `previous: true`.
    let rig = Rig::start(Some(db_url)).await;
    let (code, v) = rig.get("/api/v1/dry-run").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["dry_run"].clone(), v["origin"].clone()),
        (true.into(), "stored".into())
    );
    let (code, v) = put_dry_run(&rig, Some(TOKEN), r#"{"dry_run":false}"#).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["dry_run"].clone(), v["previous"].clone()),
        (false.into(), true.into())
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_dry_run_is_toggled_over_http_holds_the_jobs_back_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    toggle_story(format!("sqlite://{}/dry.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dry_run_is_toggled_over_http_holds_the_jobs_back_and_survives_a_restart() {
    let db = support::TestPgDb::create("mbdry").await;
    toggle_story(db.url.clone()).await;
    db.drop_now().await;
}
