//! Tempo colour sources against a local HTTP server (axum on 127.0.0.1:0) serving the payload
//! shapes of api-couleur-tempo.fr and RTE's Tempo Like Supply Contract API: colours, unknown,
//! F04, token refresh on 401, 429, 500, timeouts, malformed JSON, unknown colours, fallback order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::NaiveDate;
use marstek_bridge::tempo::{
    ColourSource, CouleurTempoSource, RteSource, Secret, SourceChain, SourceKind, TempoColour,
    TempoResult, TempoSettings,
};
use serde_json::json;

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn settings() -> TempoSettings {
    TempoSettings {
        timeout: Duration::from_millis(500),
        retries: 2,
        backoff: Duration::from_millis(1),
        ..Default::default()
    }
}

#[derive(Clone, Default)]
struct Counters {
    jour: Arc<AtomicUsize>,
    token: Arc<AtomicUsize>,
    rte: Arc<AtomicUsize>,
}

/// api-couleur-tempo.fr as the shapes of reference §A.1; special dates script failures.
async fn jour_tempo(State(c): State<Counters>, Path(date): Path<String>) -> Response {
    let n = c.jour.fetch_add(1, Ordering::SeqCst);
    let body = |code: i64| {
        let lib = ["Inconnu", "Bleu", "Blanc", "Rouge"]
            .get(code as usize)
            .copied()
            .unwrap_or("?");
        json!({"dateJour": date, "codeJour": code, "periode": "2026-2027", "libCouleur": lib})
            .to_string()
    };
    match date.as_str() {
        "2026-12-01" => body(3).into_response(),
        "2026-12-02" => body(2).into_response(),
        "2026-12-03" => body(1).into_response(),
        "2026-12-04" | "2026-12-15" => body(0).into_response(),
        "2026-12-07" => "{\"dateJour\": \"2026-12-07\", \"codeJour\":".into_response(),
        "2026-12-08" => body(7).into_response(),
        "2026-12-09" => json!({"dateJour": "2026-12-10", "codeJour": 3})
            .to_string()
            .into_response(),
        // 429 on the first call, then red.
        "2026-12-10" if n == 0 => (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response(),
        "2026-12-10" => body(3).into_response(),
        "2026-12-11" => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        "2026-12-14" => std::future::pending::<Response>().await,
        _ => (StatusCode::NOT_FOUND, "no such day").into_response(),
    }
}

fn couleur_app(c: Counters) -> Router {
    Router::new()
        .route("/api/jourTempo/{date}", get(jour_tempo))
        .with_state(c)
}

#[tokio::test]
async fn couleur_tempo_colours_and_unknown() {
    let c = Counters::default();
    let base = serve(couleur_app(c.clone())).await;
    let src = CouleurTempoSource::new(&TempoSettings {
        couleur_tempo_url: format!("{base}/"),
        ..settings()
    })
    .unwrap();
    assert_eq!(
        src.colour(d("2026-12-01")).await,
        TempoResult::Colour(TempoColour::Red)
    );
    assert_eq!(
        src.colour(d("2026-12-02")).await,
        TempoResult::Colour(TempoColour::White)
    );
    assert_eq!(
        src.colour(d("2026-12-03")).await,
        TempoResult::Colour(TempoColour::Blue)
    );
    match src.colour(d("2026-12-04")).await {
        TempoResult::Unknown(why) => assert!(why.contains("codeJour 0"), "{why}"),
        other => panic!("expected unknown, got {other:?}"),
    }
    assert_eq!(
        c.jour.load(Ordering::SeqCst),
        4,
        "no retry on definite answers"
    );
}

#[tokio::test]
async fn couleur_tempo_bad_answers_are_errors_without_retry() {
    let c = Counters::default();
    let base = serve(couleur_app(c.clone())).await;
    let src = CouleurTempoSource::new(&TempoSettings {
        couleur_tempo_url: base,
        ..settings()
    })
    .unwrap();
    for (date, needle) in [
        ("2026-12-07", "undecodable"),
        ("2026-12-08", "codeJour 7"),
        ("2026-12-09", "asked for 2026-12-09"),
        ("2026-12-25", "404"),
    ] {
        match src.colour(d(date)).await {
            TempoResult::Error(why) => assert!(why.contains(needle), "{date}: {why}"),
            other => panic!("{date}: expected an error, got {other:?}"),
        }
    }
    assert_eq!(c.jour.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn couleur_tempo_retries_429_and_gives_up_on_persistent_500() {
    let c = Counters::default();
    let base = serve(couleur_app(c.clone())).await;
    let src = CouleurTempoSource::new(&TempoSettings {
        couleur_tempo_url: base,
        ..settings()
    })
    .unwrap();
    assert_eq!(
        src.colour(d("2026-12-10")).await,
        TempoResult::Colour(TempoColour::Red)
    );
    assert_eq!(c.jour.load(Ordering::SeqCst), 2, "one 429, one success");
    match src.colour(d("2026-12-11")).await {
        TempoResult::Error(why) => {
            assert!(why.contains("500") && why.contains("3 attempt"), "{why}")
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(
        c.jour.load(Ordering::SeqCst),
        5,
        "1 + retries(2) attempts on 500"
    );
}

#[tokio::test]
async fn couleur_tempo_timeout_is_an_error() {
    let c = Counters::default();
    let base = serve(couleur_app(c.clone())).await;
    let src = CouleurTempoSource::new(&TempoSettings {
        couleur_tempo_url: base,
        timeout: Duration::from_millis(150),
        retries: 1,
        ..settings()
    })
    .unwrap();
    match src.colour(d("2026-12-14")).await {
        TempoResult::Error(why) => assert!(why.contains("timed out"), "{why}"),
        other => panic!("expected a timeout error, got {other:?}"),
    }
    assert_eq!(c.jour.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unreachable_server_is_an_error() {
    // Bind then drop: nothing listens on that port any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let src = CouleurTempoSource::new(&TempoSettings {
        couleur_tempo_url: format!("http://127.0.0.1:{port}"),
        retries: 0,
        ..settings()
    })
    .unwrap();
    assert!(matches!(
        src.colour(d("2026-12-01")).await,
        TempoResult::Error(_)
    ));
}

/// RTE token endpoint: checks Basic auth and the grant type; issues tok1, tok2, …
async fn rte_token(State(c): State<Counters>, headers: HeaderMap, body: String) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != "Basic aWQ6c2VjcmV0" || body != "grant_type=client_credentials" {
        return (StatusCode::UNAUTHORIZED, "bad client").into_response();
    }
    let n = c.token.fetch_add(1, Ordering::SeqCst) + 1;
    axum::Json(
        json!({"access_token": format!("tok{n}"), "token_type": "Bearer", "expires_in": 7200}),
    )
    .into_response()
}

fn rte_value(date: &str, value: &str) -> serde_json::Value {
    json!({"start_date": format!("{date}T00:00:00+01:00"), "end_date": "x",
           "value": value, "updated_date": format!("{date}T10:20:00+01:00")})
}

/// RTE calendars: rejects tok1 (stale) with 401; answers by start date.
async fn rte_calendars(
    State(c): State<Counters>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    c.rte.fetch_add(1, Ordering::SeqCst);
    let q = q.unwrap_or_default();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !auth.starts_with("Bearer tok") || auth == "Bearer tok1" {
        return (StatusCode::UNAUTHORIZED, "").into_response();
    }
    // The + of the offset must arrive percent-encoded.
    if q.contains('+') || !q.contains("%2B01:00") {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error": "TMPLIKSUPCON_TMPLIKCAL_F06", "error_description": "bad date"})
                .to_string(),
        )
            .into_response();
    }
    let date = q
        .strip_prefix("start_date=")
        .and_then(|r| r.get(..10))
        .unwrap_or("")
        .to_string();
    let calendars = |values: Vec<serde_json::Value>| {
        axum::Json(
            json!({"tempo_like_calendars": {"start_date": "x", "end_date": "y", "values": values}}),
        )
        .into_response()
    };
    match date.as_str() {
        "2026-12-01" => calendars(vec![
            rte_value("2026-12-01", "RED"),
            rte_value("2026-11-30", "BLUE"),
        ]),
        "2026-12-02" => calendars(vec![rte_value("2026-12-02", "WHITE")]),
        "2026-12-15" => calendars(vec![rte_value("2026-12-15", "RED")]),
        "2026-12-03" => calendars(vec![rte_value("2026-12-03", "PURPLE")]),
        "2026-12-04" => (
            StatusCode::BAD_REQUEST,
            json!({"error": "TMPLIKSUPCON_TMPLIKCAL_F04",
                   "error_description": "The value of \"end_date\" field is incorrect.",
                   "error_uri": "", "error_details": {"transaction_id": "Id-1"}})
            .to_string(),
        )
            .into_response(),
        "2026-12-05" => calendars(vec![]),
        "2026-12-06" => (StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response(),
        _ => "not json".into_response(),
    }
}

fn rte_app(c: Counters) -> Router {
    Router::new()
        .route("/token/oauth/", post(rte_token))
        .route("/v1/tempo_like_calendars", get(rte_calendars))
        .with_state(c)
}

fn rte_settings(base: &str) -> TempoSettings {
    TempoSettings {
        sources: vec![SourceKind::Rte],
        rte_token_url: format!("{base}/token/oauth/"),
        rte_api_url: format!("{base}/v1"),
        rte_client_id: Some(Secret::new("id")),
        rte_client_secret: Some(Secret::new("secret")),
        ..settings()
    }
}

#[tokio::test]
async fn rte_refreshes_the_token_after_401_and_caches_it() {
    let c = Counters::default();
    let base = serve(rte_app(c.clone())).await;
    let src = RteSource::new(&rte_settings(&base)).unwrap();
    // tok1 is refused with 401: a fresh token (tok2) is fetched and the call repeated.
    assert_eq!(
        src.colour(d("2026-12-01")).await,
        TempoResult::Colour(TempoColour::Red)
    );
    assert_eq!(
        c.token.load(Ordering::SeqCst),
        2,
        "token endpoint called twice"
    );
    assert_eq!(c.rte.load(Ordering::SeqCst), 2);
    // The cached tok2 serves the next call.
    assert_eq!(
        src.colour(d("2026-12-02")).await,
        TempoResult::Colour(TempoColour::White)
    );
    assert_eq!(
        c.token.load(Ordering::SeqCst),
        2,
        "token reused until expiry"
    );
    // Secrets are not in Debug output.
    let dbg = format!("{src:?}");
    assert!(!dbg.contains("secret\""), "{dbg}");
}

#[tokio::test]
async fn rte_f04_is_unknown_and_bad_answers_are_errors() {
    let c = Counters::default();
    let base = serve(rte_app(c.clone())).await;
    let src = RteSource::new(&rte_settings(&base)).unwrap();
    match src.colour(d("2026-12-04")).await {
        TempoResult::Unknown(why) => assert!(why.contains("F04"), "{why}"),
        other => panic!("expected unknown, got {other:?}"),
    }
    match src.colour(d("2026-12-05")).await {
        TempoResult::Unknown(why) => assert!(why.contains("no value"), "{why}"),
        other => panic!("expected unknown, got {other:?}"),
    }
    match src.colour(d("2026-12-03")).await {
        TempoResult::Error(why) => assert!(why.contains("PURPLE"), "{why}"),
        other => panic!("expected an error, got {other:?}"),
    }
    match src.colour(d("2026-12-20")).await {
        TempoResult::Error(why) => assert!(why.contains("undecodable"), "{why}"),
        other => panic!("expected an error, got {other:?}"),
    }
    let before = c.rte.load(Ordering::SeqCst);
    match src.colour(d("2026-12-06")).await {
        TempoResult::Error(why) => assert!(why.contains("503"), "{why}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(c.rte.load(Ordering::SeqCst) - before, 3, "503 retried");
}

#[tokio::test]
async fn rte_bad_credentials_are_an_error_not_a_loop() {
    let c = Counters::default();
    let base = serve(rte_app(c.clone())).await;
    let src = RteSource::new(&TempoSettings {
        rte_client_secret: Some(Secret::new("wrong")),
        ..rte_settings(&base)
    })
    .unwrap();
    match src.colour(d("2026-12-01")).await {
        TempoResult::Error(why) => {
            assert!(why.contains("token refused"), "{why}");
            assert!(!why.contains("wrong"), "secret leaked: {why}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(c.rte.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn rte_without_credentials_refuses_to_build() {
    let err = RteSource::new(&TempoSettings {
        sources: vec![SourceKind::Rte],
        ..settings()
    })
    .unwrap_err();
    assert!(err.to_string().contains("rte_client_id"), "{err}");
}

#[tokio::test]
async fn fallback_order_first_definite_colour_wins() {
    let c = Counters::default();
    let couleur = serve(couleur_app(c.clone())).await;
    let rte = serve(rte_app(c.clone())).await;
    let both = |order: Vec<SourceKind>| TempoSettings {
        sources: order,
        couleur_tempo_url: couleur.clone(),
        ..rte_settings(&rte)
    };

    // couleur says unknown (codeJour 0) for 12-04; RTE says F04 too → Unknown with both reasons.
    let chain =
        SourceChain::from_settings(&both(vec![SourceKind::CouleurTempo, SourceKind::Rte])).unwrap();
    let a = chain.colour(d("2026-12-04")).await;
    match &a.result {
        TempoResult::Unknown(why) => {
            assert!(
                why.contains("api-couleur-tempo") && why.contains("F04"),
                "{why}"
            )
        }
        other => panic!("expected unknown, got {other:?}"),
    }
    assert_eq!(a.tried.len(), 2);
    assert_eq!(a.source, None);

    // couleur unknown on 12-15, RTE red → red from RTE, with couleur's answer kept.
    let a = chain.colour(d("2026-12-15")).await;
    assert_eq!(a.result, TempoResult::Colour(TempoColour::Red));
    assert_eq!(a.source.as_deref(), Some("rte"));
    assert!(matches!(a.tried[0].1, TempoResult::Unknown(_)));

    // couleur errors (500) on 12-11 and RTE has no such day (undecodable) → Error, both named.
    let a = chain.colour(d("2026-12-11")).await;
    match &a.result {
        TempoResult::Error(why) => assert!(why.contains("500") && why.contains("rte"), "{why}"),
        other => panic!("expected an error, got {other:?}"),
    }

    // couleur first, red on 12-01: RTE is never asked.
    let rte_before = c.rte.load(Ordering::SeqCst);
    let a = chain.colour(d("2026-12-01")).await;
    assert_eq!(a.result, TempoResult::Colour(TempoColour::Red));
    assert_eq!(a.source.as_deref(), Some("api-couleur-tempo"));
    assert_eq!(c.rte.load(Ordering::SeqCst), rte_before);

    // RTE first: its answer (white on 12-02) wins and couleur is not asked.
    let chain =
        SourceChain::from_settings(&both(vec![SourceKind::Rte, SourceKind::CouleurTempo])).unwrap();
    let jour_before = c.jour.load(Ordering::SeqCst);
    let a = chain.colour(d("2026-12-02")).await;
    assert_eq!(a.result, TempoResult::Colour(TempoColour::White));
    assert_eq!(a.source.as_deref(), Some("rte"));
    assert_eq!(c.jour.load(Ordering::SeqCst), jour_before);

    // 12-05: RTE has no value (unknown), couleur answers 404 (error) → Unknown wins over Error.
    let a = chain.colour(d("2026-12-05")).await;
    assert!(
        matches!(a.result, TempoResult::Unknown(_)),
        "{:?}",
        a.result
    );
}
