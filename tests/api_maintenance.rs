//! The maintenance routes of the REST API against a running bridge (in-process `app::run_with`,
//! real HTTP, three simulated batteries over UDP, the real mosquitto, a SQLite file): a toggle
//! needs the token and a well-formed body naming a known battery, and a refused one changes
//! nothing; an accepted one is answered with every hold in force, shows on the battery list and
//! reaches the event stream as a `maintenance` event, the way a second status page sees it.

mod api_common;

use api_common::{Rig, TOKEN, error_code, next_event};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn put(rig: &Rig, token: Option<&str>, body: &str) -> (StatusCode, Value) {
    rig.send(Method::PUT, "/api/v1/maintenance", token, body)
        .await
}

/// Whether each battery of the list is shown held, by id.
async fn held(rig: &Rig) -> Vec<(String, bool)> {
    let (code, list) = rig.get("/api/v1/batteries").await;
    assert_eq!(code, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let on = b["maintenance"].as_bool().expect("maintenance flag");
            (b["id"].as_str().unwrap().to_string(), on)
        })
        .collect()
}

fn none_held() -> Vec<(String, bool)> {
    ["bat-a", "bat-b", "bat-c"]
        .iter()
        .map(|id| (id.to_string(), false))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_maintenance_toggles_are_refused_and_change_nothing() {
    let rig = Rig::start(None).await;
    let on = r#"{"maintenance":true}"#;
    let cases: [(Option<&str>, &str, StatusCode, &str); 8] = [
        (None, on, StatusCode::UNAUTHORIZED, "token_required"),
        (Some("wrong"), on, StatusCode::FORBIDDEN, "token_invalid"),
        (
            Some(TOKEN),
            r#"{"maintenance":true,"device":"nope"}"#,
            StatusCode::NOT_FOUND,
            "unknown_battery",
        ),
        (
            Some(TOKEN),
            r#"{"maintenance":"yes"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            Some(TOKEN),
            r#"{"device":"bat-a"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            Some(TOKEN),
            r#"{"maintenance":true,"devices":"bat-a"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            Some(TOKEN),
            r#"{"maintenance":true,"device":"bat a/b"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            Some(TOKEN),
            r#"{"maintenance":"#,
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
    ];
    for (token, body, want, code_want) in cases {
        let (code, v) = put(&rig, token, body).await;
        assert_eq!(error_code(code, &v, want), code_want, "{body}");
    }
    let (code, v) = rig.get("/api/v1/maintenance").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v,
        json!({"bridge": null, "devices": {}}),
        "a refused toggle"
    );
    assert_eq!(held(&rig).await, none_held());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_set_over_http_is_answered_listed_and_sent_as_a_live_event() {
    let rig = Rig::start(None).await;
    let mut events = rig.events().await;
    assert_eq!(events.status(), 200);

    // One battery's hold: the answer, the event and the list agree.
    let (code, v) = put(
        &rig,
        Some(TOKEN),
        r#"{"maintenance":true,"device":"bat-b"}"#,
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["devices"]["bat-b"]["by"], "http", "{v}");
    assert!(v["devices"]["bat-b"]["since"].is_string(), "{v}");
    assert_eq!(v["bridge"], Value::Null, "{v}");
    let ev = next_event(&mut events, "maintenance").await;
    assert_eq!(ev, v, "the event carries the state answered");
    let mut want = none_held();
    want[1].1 = true;
    assert_eq!(held(&rig).await, want);

    // The bridge-wide hold: every battery held; its release leaves bat-b's own hold.
    let (code, v) = put(&rig, Some(TOKEN), r#"{"maintenance":true}"#).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["bridge"]["by"], "http", "{v}");
    let ev = next_event(&mut events, "maintenance").await;
    assert_eq!(ev["bridge"], v["bridge"], "{ev}");
    assert!(held(&rig).await.iter().all(|(_, on)| *on));
    let (code, v) = put(&rig, Some(TOKEN), r#"{"maintenance":false}"#).await;
    assert_eq!(code, 200, "{v}");
    let ev = next_event(&mut events, "maintenance").await;
    assert_eq!(
        (ev["bridge"].clone(), ev["devices"]["bat-b"]["by"].clone()),
        (Value::Null, json!("http"))
    );
    assert_eq!(held(&rig).await, want);

    let (code, v) = put(
        &rig,
        Some(TOKEN),
        r#"{"maintenance":false,"device":"bat-b"}"#,
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let ev = next_event(&mut events, "maintenance").await;
    assert_eq!(ev, json!({"bridge": null, "devices": {}}));
    assert_eq!(held(&rig).await, none_held());
    rig.stop().await;
}
