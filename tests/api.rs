//! The REST API against a running bridge (in-process `app::run_with`, real HTTP on loopback,
//! three simulated batteries over UDP, the real mosquitto, SQLite or PostgreSQL): every route
//! answers, a command posted over HTTP changes the simulated battery, shows in the audit with
//! source `http` and arrives on the event stream; bad input gets the right status and the one
//! JSON error shape and changes nothing; the OpenAPI document matches the routes and validates.

mod api_common;
mod support;

use std::time::Duration;

use api_common::{IDS, Rig, TOKEN, error_code, next_event};
use marstek_bridge::domain::Mode;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn command_story(rig: &Rig) {
    let list = rig.wait_for_samples().await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, IDS);
    let (code, one) = rig.get("/api/v1/batteries/bat-b").await;
    assert_eq!(code, 200);
    assert_eq!(one["online"], true, "{one}");
    assert!(one["firmware"].is_u64(), "{one}");
    let (code, latest) = rig.get("/api/v1/batteries/bat-a/latest").await;
    assert_eq!(code, 200);
    assert_eq!(latest["device"], "bat-a");
    let soc = latest["soc"].as_u64().unwrap();
    assert!(
        (50..=60).contains(&soc),
        "simulated SOC near 55 %: {latest}"
    );

    let mut events = rig.events().await;
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    assert_ne!(rig.sim.state(0).unwrap().mode, Mode::Passive);
    let result = rig
        .command_ok(
            "bat-a",
            r#"{"mode":"passive","power":-800,"duration":600,"id":"h1"}"#,
        )
        .await;
    assert_eq!(result["id"], "h1");
    assert_eq!(result["error"], Value::Null);
    assert!(result["applied"].is_object(), "{result}");
    let st = rig.sim.state(0).unwrap();
    assert_eq!(st.mode, Mode::Passive, "the simulated battery changed");
    assert_eq!(st.passive_power, -800);
    let event = next_event(&mut events, "command").await;
    assert_eq!(event["device"], "bat-a");
    assert_eq!(event["result"]["status"], "ok");
    // The new mode arrives with a following sample.
    loop {
        let s = next_event(&mut events, "sample").await;
        if s["device"] == "bat-a" && s["mode"] == "Passive" {
            break;
        }
    }

    let (code, audit) = rig.get("/api/v1/commands?limit=50").await;
    assert_eq!(code, 200);
    // The reconciler may record its own commands around ours: find the one from HTTP.
    let row = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == "http")
        .unwrap_or_else(|| panic!("no audit row with source http: {audit}"));
    assert_eq!(row["device"], "bat-a");
    assert_eq!(row["status"], "ok");
    assert_eq!(row["payload"]["received"]["power"], -800);
    let (_, one) = rig.get("/api/v1/batteries/bat-a").await;
    assert_eq!(one["intent"]["set_by"], "http", "{one}");
    assert_eq!(one["intent"]["config"]["mode"], "passive", "{one}");

    let (code, hist) = rig.get("/api/v1/batteries/bat-a/history").await;
    assert_eq!(code, 200, "{hist}");
    assert_eq!(
        (&hist["bucket"], &hist["bucket_seconds"]),
        (&json!("hour"), &json!(3600))
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let hour = loop {
        // The writer flushes in batches: wait for the first stored point of this hour.
        let (_, hist) = rig.get("/api/v1/batteries/bat-a/history").await;
        if let Some(p) = hist["points"].as_array().and_then(|p| p.last()) {
            break p.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no history: {hist}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let soc = hour["soc_mean"].as_f64().expect("soc_mean");
    assert!(hour["n"].as_u64().unwrap() >= 1, "{hour}");
    assert!((45.0..=65.0).contains(&soc), "the simulator's SOC: {hour}");
    assert!(
        hour["soc_min"].as_f64() <= Some(soc) && Some(soc) <= hour["soc_max"].as_f64(),
        "{hour}"
    );
    for key in [
        "power_mean",
        "charged_wh",
        "discharged_wh",
        "grid_in_wh",
        "grid_out_wh",
    ] {
        assert!(hour[key].is_number(), "{key}: {hour}");
    }
    // The same samples in daily buckets: today's UTC day holds this hour's samples.
    let (code, days) = rig.get("/api/v1/batteries/bat-a/history?bucket=day").await;
    assert_eq!(code, 200, "{days}");
    assert_eq!(days["bucket_seconds"], 86_400);
    let day_of_hour = format!("{}T00:00:00Z", &hour["t"].as_str().unwrap()[..10]);
    let day = days["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["t"] == day_of_hour.as_str())
        .unwrap_or_else(|| panic!("no day {day_of_hour}: {days}"));
    // The hour in progress also counts the newest sample the writer has not stored yet.
    assert!(
        day["n"].as_u64().unwrap() + 1 >= hour["n"].as_u64().unwrap(),
        "the day has the hour's stored samples: {day} vs {hour}"
    );
}

async fn jobs_and_the_rest(rig: &Rig) {
    let (code, jobs) = rig.get("/api/v1/jobs").await;
    assert_eq!(code, 200);
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == "job_health_check"),
        "{jobs}"
    );
    let job = "job_health_check";
    let paused = |v: &Value| v["paused"].as_bool().unwrap();
    let (code, v) = rig.post(&format!("/api/v1/jobs/{job}/pause"), "{}").await;
    assert_eq!(code, 200, "{v}");
    assert!(paused(&v));
    let (code, v) = rig.post(&format!("/api/v1/jobs/{job}/pause"), "{}").await;
    assert_eq!(error_code(code, &v, StatusCode::CONFLICT), "job_state");
    let (code, v) = rig.post(&format!("/api/v1/jobs/{job}/resume"), "{}").await;
    assert_eq!(code, 200, "{v}");
    assert!(!paused(&v));
    let (code, v) = rig
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/jobs/{job}/trigger"),
            Some(TOKEN),
            r#"{"trigger":"cron:0 7 * * *"}"#,
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["trigger"], "cron:0 7 * * *");
    let (code, v) = rig
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/jobs/{job}/trigger"),
            Some(TOKEN),
            r#"{"trigger":"cron:99 * * * *"}"#,
        )
        .await;
    assert_eq!(
        error_code(code, &v, StatusCode::UNPROCESSABLE_ENTITY),
        "invalid_trigger"
    );
    let (code, v) = rig
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/jobs/{job}/trigger"),
            Some(TOKEN),
            r#"{"trigger":null}"#,
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["trigger_overridden"], false);
    let (code, v) = rig
        .get("/api/v1/jobs/preview?trigger=cron:0%206%20*%20*%20*&count=3")
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 3);
    let (code, v) = rig.post("/api/v1/jobs/job_health_check/run", "{}").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["job_id"], "job_health_check", "{v}");
    // The next actions: every job that will run, soonest first, each with what and why.
    let (code, v) = rig.get("/api/v1/next-actions?count=50").await;
    assert_eq!(code, 200, "{v}");
    let rows = v["actions"].as_array().expect("actions");
    let at: Vec<&str> = rows.iter().map(|r| r["at"].as_str().unwrap()).collect();
    assert!(
        at.windows(2).all(|w| w[0] <= w[1]),
        "not in time order: {v}"
    );
    for job in [
        "job_switch_to_auto",
        "job_switch_to_manual_night",
        "job_health_check",
    ] {
        let row = rows
            .iter()
            .find(|r| r["job"] == job)
            .unwrap_or_else(|| panic!("{job} missing: {v}"));
        assert_eq!(row["source"], "schedule", "{row}");
        assert!(
            row["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{row}"
        );
    }
    assert!(v["tonight"].is_null(), "Tempo is off: {v}");
    assert_eq!(v["dry_run"], false, "{v}");
    assert_eq!(v["timezone"], "Europe/Paris", "{v}");
    let (code, v) = rig.get("/api/v1/next-actions?count=0").await;
    assert_eq!(
        error_code(code, &v, StatusCode::UNPROCESSABLE_ENTITY),
        "invalid_count"
    );
    let (code, v) = rig.post("/api/v1/jobs/no_such_job/run", "{}").await;
    assert_eq!(error_code(code, &v, StatusCode::NOT_FOUND), "unknown_job");
    let (code, v) = rig.get("/api/v1/alerts").await;
    assert_eq!(code, 200);
    assert!(v["open"].is_array() && v["recent"].is_array(), "{v}");
    let (code, v) = rig.get("/api/v1/bridge").await;
    assert_eq!(code, 200);
    assert_eq!(v["token_configured"], true);
    // Tempo is off in this rig: the route answers 503 with the error shape.
    let (code, v) = rig.get("/api/v1/tempo").await;
    assert_eq!(
        error_code(code, &v, StatusCode::SERVICE_UNAVAILABLE),
        "unavailable"
    );
    let (code, v) = rig.get("/api/v1/plan").await;
    assert_eq!(
        error_code(code, &v, StatusCode::SERVICE_UNAVAILABLE),
        "unavailable"
    );
    let (code, v) = rig
        .post("/api/v1/tempo/refresh", r#"{"dry_run":true}"#)
        .await;
    assert_eq!(
        error_code(code, &v, StatusCode::SERVICE_UNAVAILABLE),
        "unavailable"
    );
    let page = rig.client.get(rig.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("/assets/app.js"));
    for asset in ["app.js", "app.css"] {
        let r = rig
            .client
            .get(rig.url(&format!("/assets/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{asset}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_command_over_http_changes_the_battery_and_is_audited_as_http() {
    let rig = Rig::start(None).await;
    command_story(&rig).await;
    jobs_and_the_rest(&rig).await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_command_over_http_changes_the_battery_and_is_audited_as_http() {
    let db = support::TestPgDb::create("mbapi").await;
    let rig = Rig::start(Some(db.url.clone())).await;
    command_story(&rig).await;
    jobs_and_the_rest(&rig).await;
    rig.stop().await;
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_status_and_the_json_error_and_changes_nothing() {
    use reqwest::Method;
    let rig = Rig::start_with(None, Rig::no_mode_jobs).await;
    rig.wait_for_samples().await;
    let before = rig.sim.state(1).unwrap();
    let cmd = "/api/v1/batteries/bat-b/commands";
    let huge = format!(r#"{{"mode":"auto","pad":"{}"}}"#, "x".repeat(10_000));
    type Case<'a> = (
        Method,
        &'a str,
        Option<&'a str>,
        String,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            cmd,
            Some(TOKEN),
            "{\"mode\":".into(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            Method::POST,
            "/api/v1/batteries/nope/commands",
            Some(TOKEN),
            r#"{"mode":"auto"}"#.into(),
            StatusCode::NOT_FOUND,
            "unknown_battery",
        ),
        (
            Method::POST,
            cmd,
            Some(TOKEN),
            r#"{"dod":5}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_command",
        ),
        (
            Method::POST,
            cmd,
            Some(TOKEN),
            r#"{"mode":"warp"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_command",
        ),
        (
            Method::POST,
            cmd,
            Some(TOKEN),
            r#"{"mode":"passive","power":-9000}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "command_rejected",
        ),
        (
            Method::POST,
            cmd,
            None,
            r#"{"mode":"auto"}"#.into(),
            StatusCode::UNAUTHORIZED,
            "token_required",
        ),
        (
            Method::POST,
            cmd,
            Some("wrong-token-0123456789"),
            r#"{"mode":"auto"}"#.into(),
            StatusCode::FORBIDDEN,
            "token_invalid",
        ),
        (
            Method::GET,
            "/api/v1/batteries",
            Some("wrong"),
            String::new(),
            StatusCode::FORBIDDEN,
            "token_invalid",
        ),
        (
            Method::POST,
            cmd,
            Some(TOKEN),
            huge,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            Method::GET,
            "/api/v1/batteries/bat-b/history?from=2016-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&bucket=1d",
            None,
            String::new(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_range",
        ),
        (
            Method::GET,
            "/api/v1/batteries/bat-b/history?bucket=5m",
            None,
            String::new(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_bucket",
        ),
        (
            Method::GET,
            "/api/v1/batteries/bat-b/history?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            None,
            String::new(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_range",
        ),
        (
            Method::GET,
            "/api/v1/batteries/bat-b/history?from=yesterday",
            None,
            String::new(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/api/v1/batteries/nope",
            None,
            String::new(),
            StatusCode::NOT_FOUND,
            "unknown_battery",
        ),
        (
            Method::GET,
            "/api/v1/commands?limit=100000",
            None,
            String::new(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_limit",
        ),
        (
            Method::GET,
            "/api/v1/nothing-here",
            None,
            String::new(),
            StatusCode::NOT_FOUND,
            "unknown_route",
        ),
        (
            Method::DELETE,
            "/api/v1/batteries",
            Some(TOKEN),
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::PUT,
            "/api/v1/jobs/job_switch_to_auto/trigger",
            Some(TOKEN),
            r#"{"trigger":5}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ];
    for (method, path, token, body, want, want_code) in cases {
        let (code, v) = rig.send(method.clone(), path, token, &body).await;
        assert_eq!(
            error_code(code, &v, want),
            want_code,
            "{method} {path}: {v}"
        );
    }
    // Wrong media type.
    let r = rig
        .client
        .post(rig.url(cmd))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body(r#"{"mode":"auto"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A refused command answers with the result object too.
    let (_, v) = rig.post(cmd, r#"{"mode":"warp","id":7}"#).await;
    assert_eq!(v["result"]["status"], "error", "{v}");
    assert_eq!(v["result"]["id"], 7, "{v}");
    let after = rig.sim.state(1).unwrap();
    assert_eq!(
        (after.mode, after.dod, after.passive_power),
        (before.mode, before.dod, before.passive_power)
    );
    let (_, audit) = rig.get("/api/v1/commands").await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] != "ok"),
        "no command took effect: {audit}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_and_validates() {
    let rig = Rig::start(None).await;
    let (code, doc) = rig.get("/api/v1/openapi.json").await;
    assert_eq!(code, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let served: std::collections::BTreeSet<_> =
        marstek_bridge::http::route_table().into_iter().collect();
    assert_eq!(
        served, documented,
        "a route without its schema (or a schema without its route)"
    );
    // Every documented GET without a path parameter answers something other than 404.
    for (m, p) in &served {
        if m == "get" && !p.contains('{') && !p.ends_with("/events") {
            let r = rig.client.get(rig.url(p)).send().await.unwrap();
            assert_ne!(r.status(), 404, "{p}");
        }
    }
    // The document validates with a validator from PyPI (installed by .ci/run).
    let file = rig.dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let validator =
        std::env::var("OPENAPI_VALIDATOR").unwrap_or_else(|_| "openapi-spec-validator".into());
    match std::process::Command::new(&validator).arg(&file).output() {
        Ok(out) => assert!(
            out.status.success(),
            "{validator} refused the document:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if std::env::var("CI").is_ok() => panic!("{validator} is missing in CI: {e}"),
        Err(e) => eprintln!("note: {validator} not installed ({e}); .ci/run installs it"),
    }
    let _ = json!(null);
    rig.stop().await;
}
