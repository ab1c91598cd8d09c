//! The season stats (api-couleur-tempo `/api/stats`) and the J+2…J+9 forecast (open-dpe
//! `tempo_days_lite.json`) against a local HTTP server (axum on 127.0.0.1:0) replaying their
//! payload shapes: good, malformed, over the quota, probability outside 0–1, slow, 429 then
//! good, 500; the last good answer cached in a SQLite store file and still there after the
//! store is reopened.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{NaiveDate, TimeZone, Utc};
use marstek_bridge::store::{DatabaseSettings, SqliteStore, Store};
use marstek_bridge::tempo::{
    CouleurTempoStats, ForecastSource, OpenDpeForecast, Outlook, StatsSource, TempoColour,
    TempoSettings,
};
use serde_json::json;

/// What the server answers, switched by the test.
#[derive(Clone, Default)]
struct Script {
    mode: Arc<std::sync::Mutex<&'static str>>,
    calls: Arc<AtomicUsize>,
}

impl Script {
    fn set(&self, m: &'static str) {
        *self.mode.lock().unwrap() = m;
        self.calls.store(0, Ordering::SeqCst);
    }
    fn mode(&self) -> &'static str {
        *self.mode.lock().unwrap()
    }
}

/// The `/api/stats` shape of api-couleur-tempo.fr (entity `Statistiques`).
fn stats_body(red_used: u32, red_left: u32) -> String {
    json!({
        "periode": "2026-2027",
        "bissextile": false,
        "dernierJourInclus": "2026-12-02",
        "joursBleusConsommes": 80, "joursBleusRestants": 220,
        "joursBlancsConsommes": 5, "joursBlancsRestants": 38,
        "joursRougesConsommes": red_used, "joursRougesRestants": red_left,
    })
    .to_string()
}

async fn common(s: &Script) -> Option<Response> {
    let n = s.calls.fetch_add(1, Ordering::SeqCst);
    match s.mode() {
        "slow" => Some(std::future::pending::<Response>().await),
        "429" if n == 0 => Some((StatusCode::TOO_MANY_REQUESTS, "slow down").into_response()),
        "500" => Some((StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()),
        "malformed" => Some("{\"joursRougesRestants\": ".into_response()),
        _ => None,
    }
}

async fn stats(State(s): State<Script>) -> Response {
    if let Some(r) = common(&s).await {
        return r;
    }
    match s.mode() {
        "over_quota" => stats_body(15, 9).into_response(),
        "negative" => stats_body(3, 0)
            .replace("\"joursRougesRestants\":0", "\"joursRougesRestants\":-2")
            .into_response(),
        _ => stats_body(3, 19).into_response(),
    }
}

async fn forecast(State(s): State<Script>) -> Response {
    if let Some(r) = common(&s).await {
        return r;
    }
    let good = json!([
        {"date": "2026-12-04", "couleur": "rouge", "probability": 0.72},
        {"date": "2026-12-05", "couleur": "blanc", "probability": 0.55},
        {"date": "2026-12-07", "couleur": "rouge", "probability": 0.64},
    ]);
    match s.mode() {
        "percent" => json!([{"date": "2026-12-04", "couleur": "rouge", "probability": 72}])
            .to_string()
            .into_response(),
        "french_keys" => json!([
            {"dateJour": "2026-12-04", "couleurJour": "BLEU", "probabilite": 0.9}
        ])
        .to_string()
        .into_response(),
        _ => good.to_string().into_response(),
    }
}

async fn serve(s: Script) -> String {
    let app = Router::new()
        .route("/api/stats", get(stats))
        .route("/assets/tempo_days_lite.json", get(forecast))
        .with_state(s);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn settings(base: &str) -> TempoSettings {
    TempoSettings {
        couleur_tempo_url: base.into(),
        forecast_url: format!("{base}/assets/tempo_days_lite.json"),
        timeout: Duration::from_millis(400),
        retries: 1,
        backoff: Duration::from_millis(1),
        ..Default::default()
    }
}

#[tokio::test]
async fn stats_good_malformed_over_quota_slow_429_500() {
    let script = Script::default();
    let base = serve(script.clone()).await;
    let src = CouleurTempoStats::new(&settings(&base)).unwrap();
    let s = src.stats().await.unwrap();
    assert_eq!((s.red_used, s.red_left, s.white_left), (3, 19, 38));

    script.set("malformed");
    assert!(
        src.stats()
            .await
            .unwrap_err()
            .contains("undecodable answer")
    );
    script.set("over_quota");
    assert_eq!(
        src.stats().await.unwrap_err(),
        "24 red days in the season, more than the quota of 22"
    );
    script.set("negative");
    assert!(src.stats().await.unwrap_err().contains("undecodable"));
    script.set("slow");
    assert!(src.stats().await.unwrap_err().contains("timed out"));
    script.set("429");
    assert_eq!(src.stats().await.unwrap().red_left, 19, "retried after 429");
    assert_eq!(script.calls.load(Ordering::SeqCst), 2);
    script.set("500");
    let e = src.stats().await.unwrap_err();
    assert!(e.contains("500") && e.contains("after 2 attempt(s)"), "{e}");
}

#[tokio::test]
async fn forecast_good_malformed_out_of_range_slow_500() {
    let script = Script::default();
    let base = serve(script.clone()).await;
    let src = OpenDpeForecast::new(&settings(&base)).unwrap();
    let f = src.forecast().await.unwrap();
    assert_eq!(f.len(), 3);
    assert_eq!(f[0].date, NaiveDate::from_ymd_opt(2026, 12, 4).unwrap());
    assert_eq!(f[0].colour, TempoColour::Red);
    assert!((f[0].odds.red - 0.72).abs() < 1e-12);
    script.set("french_keys");
    let f = src.forecast().await.unwrap();
    assert_eq!(f[0].colour, TempoColour::Blue);
    script.set("percent");
    assert_eq!(
        src.forecast().await.unwrap_err(),
        "2026-12-04: probability 72 is outside 0–1"
    );
    script.set("malformed");
    assert!(src.forecast().await.unwrap_err().contains("undecodable"));
    script.set("slow");
    assert!(src.forecast().await.unwrap_err().contains("timed out"));
    script.set("500");
    assert!(src.forecast().await.unwrap_err().contains("HTTP 500"));
}

async fn sqlite(path: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::connect(&DatabaseSettings {
            url: format!("sqlite://{}", path.display()),
            ..Default::default()
        })
        .await
        .unwrap(),
    )
}

#[tokio::test]
async fn outlook_caches_the_last_good_answer_across_restarts() {
    let script = Script::default();
    let base = serve(script.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outlook.db");
    let now = Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap();
    {
        let outlook = Outlook::from_settings(&settings(&base), sqlite(&db).await).unwrap();
        let (stats, forecast) = outlook.refresh(now).await;
        let stats = stats.expect("stats cached");
        assert_eq!(stats.value.red_left, 19);
        assert_eq!(stats.source, "api-couleur-tempo");
        assert_eq!(forecast.expect("forecast cached").value.len(), 3);
    }
    // A refused payload and a failing server change nothing in the cache.
    script.set("over_quota");
    let later = now + chrono::Duration::hours(6);
    let store = sqlite(&db).await;
    let outlook = Outlook::from_settings(&settings(&base), store.clone()).unwrap();
    let (stats, _) = outlook.refresh(later).await;
    let stats = stats.unwrap();
    assert_eq!(stats.value.red_left, 19);
    assert_eq!(
        stats.fetched_at, now,
        "the refused answer did not replace it"
    );
    // (that refresh got a good forecast at `later`); now the forecast is refused.
    script.set("percent");
    let (_, forecast) = outlook.refresh(later + chrono::Duration::hours(1)).await;
    let forecast = forecast.unwrap();
    assert_eq!(forecast.fetched_at, later);
    assert_eq!(forecast.value[2].colour, TempoColour::Red);
    // Reopened from the file with every source down: still known.
    script.set("500");
    drop(outlook);
    let outlook = Outlook::from_settings(&settings(&base), sqlite(&db).await).unwrap();
    assert_eq!(outlook.stats().await.unwrap().value.red_left, 19);
    assert_eq!(outlook.forecast().await.unwrap().value.len(), 3);
    // A good answer replaces the cache.
    script.set("good");
    let last = later + chrono::Duration::hours(2);
    let (stats, _) = outlook.refresh(last).await;
    assert_eq!(stats.unwrap().fetched_at, last);
}
