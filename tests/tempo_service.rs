//! The Tempo service with a real SQLite store (temp dir), a local HTTP colour source and an
//! injected clock: the 11:30 job's decision, retry plan and fail-safe, the colour cache, skipped
//! days, cancellation, a restart during the wait, `tempo/get` and `tempo/refresh`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use marstek_bridge::control::Fleet;
use marstek_bridge::domain::{AlertKind, JobAction, JobContext, NightPlanner};
use marstek_bridge::store::{DatabaseSettings, PgStore, SqliteStore, Store};
use marstek_bridge::tempo::{
    Clock, DECISION_DOC, DecisionStatus, FailSafe, ManualClock, SourceChain, TEMPO_TZ, TempoColour,
    TempoDecision, TempoService, TempoSettings,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

mod support;

/// Scripted api-couleur-tempo.fr: per date a queue of answers (codeJour, or -1 = HTTP 500);
/// the last answer repeats. Counts calls per date.
#[derive(Clone, Default)]
struct Script {
    answers: Arc<Mutex<HashMap<String, Vec<i64>>>>,
    calls: Arc<Mutex<HashMap<String, usize>>>,
    total: Arc<AtomicUsize>,
}

impl Script {
    fn set(&self, date: &str, answers: &[i64]) {
        self.answers
            .lock()
            .unwrap()
            .insert(date.to_string(), answers.to_vec());
    }
    fn calls(&self, date: &str) -> usize {
        self.calls.lock().unwrap().get(date).copied().unwrap_or(0)
    }
}

async fn jour(State(s): State<Script>, Path(date): Path<String>) -> Response {
    s.total.fetch_add(1, Ordering::SeqCst);
    *s.calls.lock().unwrap().entry(date.clone()).or_default() += 1;
    let code = {
        let mut a = s.answers.lock().unwrap();
        match a.get_mut(&date) {
            Some(q) if q.len() > 1 => q.remove(0),
            Some(q) => q[0],
            None => 0,
        }
    };
    if code < 0 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
    }
    json!({"dateJour": date, "codeJour": code, "periode": "2026-2027"})
        .to_string()
        .into_response()
}

struct Rig {
    _dir: tempfile::TempDir,
    pg: Option<support::TestPgDb>,
    store: Arc<dyn Store>,
    script: Script,
    base: String,
}

async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tempo.db").display());
    let store = SqliteStore::connect(&DatabaseSettings {
        url,
        ..Default::default()
    })
    .await
    .unwrap();
    rig_on(dir, None, Arc::new(store)).await
}

async fn pg_rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let db = support::TestPgDb::create("tempo_service").await;
    let store = PgStore::connect(&DatabaseSettings {
        url: db.url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    rig_on(dir, Some(db), Arc::new(store)).await
}

async fn rig_on(
    dir: tempfile::TempDir,
    pg: Option<support::TestPgDb>,
    store: Arc<dyn Store>,
) -> Rig {
    let script = Script::default();
    let app = Router::new()
        .route("/api/jourTempo/{date}", get(jour))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Rig {
        _dir: dir,
        pg,
        store,
        script,
        base,
    }
}

fn paris(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    TEMPO_TZ
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

fn settings(base: &str) -> TempoSettings {
    TempoSettings {
        couleur_tempo_url: base.to_string(),
        timeout: Duration::from_millis(500),
        retries: 0,
        backoff: Duration::from_millis(1),
        ..Default::default()
    }
}

fn service(
    rig: &Rig,
    settings: TempoSettings,
    clock: Arc<dyn Clock>,
) -> (
    TempoService,
    tokio::sync::mpsc::UnboundedReceiver<marstek_bridge::domain::Alert>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let chain = SourceChain::from_settings(&settings).unwrap();
    let svc = TempoService::with_parts(
        settings,
        chain,
        rig.store.clone(),
        Fleet::default(),
        Some(tx),
        clock,
    );
    (svc, rx)
}

fn ctx(at: DateTime<Utc>, cancel: CancellationToken) -> JobContext {
    JobContext {
        job_id: "job_check_tempo_tomorrow".into(),
        scheduled_for: at,
        started_at: at,
        cancel,
    }
}

async fn stored(store: &Arc<dyn Store>) -> Option<TempoDecision> {
    store
        .document(DECISION_DOC)
        .await
        .unwrap()
        .map(|v| serde_json::from_value(v).unwrap())
}

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

// 2026-12-01 is a Tuesday: tomorrow (Wednesday 12-02) may be red.

#[tokio::test]
async fn red_tomorrow_is_decided_stored_cached_and_published() {
    let rig = rig().await;
    rig.script.set("2026-12-02", &[3]);
    let at = paris(2026, 12, 1, 11, 30);
    let clock = Arc::new(ManualClock::auto_advance(at));
    let (svc, mut alerts) = service(&rig, settings(&rig.base), clock);
    let mut state = svc.subscribe();
    let out = svc.run(ctx(at, CancellationToken::new())).await.unwrap();
    assert_eq!(out["precharge"], json!(true));
    let dec = stored(&rig.store).await.unwrap();
    assert_eq!(dec.date, d("2026-12-02"));
    assert_eq!(dec.colour, Some(TempoColour::Red));
    assert_eq!(dec.status, DecisionStatus::Known);
    assert!(dec.precharge);
    assert!(dec.reason.contains("red"), "{}", dec.reason);
    let cached = rig.store.tempo_day(d("2026-12-02")).await.unwrap().unwrap();
    assert_eq!(cached.colour, "red");
    assert_eq!(cached.source, "api-couleur-tempo");
    assert!(state.has_changed().unwrap());
    let v = state.borrow_and_update().clone();
    assert_eq!(v["tomorrow"]["colour"], json!("red"));
    assert_eq!(v["precharge"], json!(true));
    assert_eq!(v["source"], json!("api-couleur-tempo"));
    assert!(v["reason"].as_str().unwrap().contains("red"));
    assert_eq!(rig.script.calls("2026-12-02"), 1);
    assert!(alerts.try_recv().is_err(), "no alert on a known colour");
}

#[tokio::test]
async fn blue_tomorrow_gives_no_plan_tonight() {
    let rig = rig().await;
    rig.script.set("2026-12-02", &[1]);
    let at = paris(2026, 12, 1, 11, 30);
    let clock = Arc::new(ManualClock::auto_advance(at));
    let (svc, _alerts) = service(&rig, settings(&rig.base), clock.clone());
    svc.run(ctx(at, CancellationToken::new())).await.unwrap();
    let dec = stored(&rig.store).await.unwrap();
    assert!(!dec.precharge);
    assert_eq!(dec.colour, Some(TempoColour::Blue));
    clock.set(paris(2026, 12, 1, 22, 0));
    assert_eq!(svc.tonight(paris(2026, 12, 1, 22, 0)).await.unwrap(), None);
    assert_eq!(
        rig.script.calls("2026-12-02"),
        1,
        "night reuses the decision"
    );
}

#[tokio::test]
async fn unknown_then_red_at_the_second_retry() {
    let rig = rig().await;
    rig.script.set("2026-12-02", &[0, 0, 3]);
    let at = paris(2026, 12, 1, 11, 30);
    let clock = Arc::new(ManualClock::auto_advance(at));
    let (svc, mut alerts) = service(&rig, settings(&rig.base), clock.clone());
    svc.run(ctx(at, CancellationToken::new())).await.unwrap();
    let dec = stored(&rig.store).await.unwrap();
    assert_eq!(dec.colour, Some(TempoColour::Red));
    assert_eq!(rig.script.calls("2026-12-02"), 3, "11:30, 12:00, 13:00");
    assert_eq!(clock.now(), paris(2026, 12, 1, 13, 0));
    assert!(alerts.try_recv().is_err());
}

#[tokio::test]
async fn unknown_until_the_deadline_applies_the_fail_safe_and_alerts() {
    for (fail_safe, precharge) in [(FailSafe::AssumeRed, true), (FailSafe::AssumeNotRed, false)] {
        let rig = rig().await;
        rig.script.set("2026-12-02", &[0, -1, 0, 0]);
        let at = paris(2026, 12, 1, 11, 30);
        let clock = Arc::new(ManualClock::auto_advance(at));
        let (svc, mut alerts) = service(
            &rig,
            TempoSettings {
                fail_safe,
                ..settings(&rig.base)
            },
            clock.clone(),
        );
        svc.run(ctx(at, CancellationToken::new())).await.unwrap();
        assert_eq!(
            rig.script.calls("2026-12-02"),
            4,
            "11:30, 12:00, 13:00, 17:00"
        );
        assert_eq!(clock.now(), paris(2026, 12, 1, 17, 0));
        let dec = stored(&rig.store).await.unwrap();
        assert_eq!(dec.status, DecisionStatus::FailSafe);
        assert_eq!(dec.colour, None);
        assert_eq!(dec.precharge, precharge);
        assert!(dec.reason.contains("fail-safe"), "{}", dec.reason);
        let alert = alerts.try_recv().expect("tempo_unknown alert");
        assert_eq!(alert.kind, AlertKind::TempoUnknown);
        assert!(alert.message.contains("2026-12-02"), "{}", alert.message);
        assert!(
            rig.store
                .tempo_day(d("2026-12-02"))
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn cached_colour_survives_a_later_failure() {
    cached_story(rig().await).await;
}

#[tokio::test]
async fn cached_colour_survives_a_later_failure_on_postgres() {
    let rig = pg_rig().await;
    let db = cached_story(rig).await;
    if let Some(db) = db {
        db.drop_now().await;
    }
}

/// Red fetched, then the source fails: the cached colour decides. Returns the PG database.
async fn cached_story(mut rig: Rig) -> Option<support::TestPgDb> {
    rig.script.set("2026-12-02", &[3, -1]);
    let clock = Arc::new(ManualClock::auto_advance(paris(2026, 12, 1, 11, 30)));
    let (svc, mut alerts) = service(&rig, settings(&rig.base), clock.clone());
    svc.refresh(false).await.unwrap();
    // The source is now down (500): the cached red is used, no fail-safe, no alert.
    clock.set(paris(2026, 12, 1, 18, 0));
    let v = svc.refresh(false).await.unwrap();
    let dec = stored(&rig.store).await.unwrap();
    assert_eq!(dec.status, DecisionStatus::Cached);
    assert_eq!(dec.colour, Some(TempoColour::Red));
    assert!(dec.precharge);
    assert_eq!(v["tomorrow"]["colour"], json!("red"));
    assert!(alerts.try_recv().is_err());
    assert_eq!(
        rig.store
            .tempo_day(d("2026-12-02"))
            .await
            .unwrap()
            .unwrap()
            .colour,
        "red"
    );
    // The decision document round-trips through the backend.
    assert!(dec.reason.contains("cached"), "{}", dec.reason);
    assert_eq!(v["decision"]["reason"], json!(dec.reason));
    rig.pg.take()
}

#[tokio::test]
async fn days_that_cannot_be_red_skip_the_call() {
    let rig = rig().await;
    // Friday 2026-12-04 11:30: tomorrow is a Saturday.
    let at = paris(2026, 12, 4, 11, 30);
    let clock = Arc::new(ManualClock::auto_advance(at));
    let (svc, mut alerts) = service(&rig, settings(&rig.base), clock.clone());
    svc.run(ctx(at, CancellationToken::new())).await.unwrap();
    let dec = stored(&rig.store).await.unwrap();
    assert_eq!(dec.status, DecisionStatus::Skipped);
    assert!(!dec.precharge);
    assert!(dec.reason.contains("weekdays"), "{}", dec.reason);
    assert_eq!(rig.script.total.load(Ordering::SeqCst), 0, "no HTTP call");
    assert!(alerts.try_recv().is_err());
    // Summer: out of season.
    let at = paris(2027, 7, 6, 11, 30);
    clock.set(at);
    svc.run(ctx(at, CancellationToken::new())).await.unwrap();
    let dec = stored(&rig.store).await.unwrap();
    assert!(dec.reason.contains("Nov 1"), "{}", dec.reason);
    assert_eq!(rig.script.total.load(Ordering::SeqCst), 0);
    // With white as a precharge colour, Saturday is worth asking.
    rig.script.set("2026-12-05", &[2]);
    let at = paris(2026, 12, 4, 11, 30);
    let clock = Arc::new(ManualClock::auto_advance(at));
    let (svc, _a) = service(
        &rig,
        TempoSettings {
            precharge_colours: vec![TempoColour::Red, TempoColour::White],
            ..settings(&rig.base)
        },
        clock,
    );
    svc.run(ctx(at, CancellationToken::new())).await.unwrap();
    let dec = stored(&rig.store).await.unwrap();
    assert_eq!(dec.colour, Some(TempoColour::White));
    assert!(dec.precharge);
}

#[tokio::test]
async fn cancel_while_waiting_stops_without_a_decision_and_night_decides() {
    let rig = rig().await;
    rig.script.set("2026-12-02", &[0]);
    let at = paris(2026, 12, 1, 11, 30);
    // A clock that does not move by itself: the run waits for 12:00.
    let clock = Arc::new(ManualClock::new(at));
    let (svc, mut alerts) = service(&rig, settings(&rig.base), clock.clone());
    let svc = Arc::new(svc);
    let cancel = CancellationToken::new();
    let state = svc.subscribe();
    let run = tokio::spawn({
        let svc = svc.clone();
        let c = ctx(at, cancel.clone());
        async move { svc.run(c).await }
    });
    // Wait until the first fetch happened (the run is then sleeping until 12:00).
    tokio::time::timeout(Duration::from_secs(10), async {
        while rig.script.calls("2026-12-02") == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    cancel.cancel();
    let res = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap();
    assert!(res.is_err(), "cancelled run reports an error");
    assert!(stored(&rig.store).await.is_none(), "no decision stored");
    assert!(
        !state.has_changed().unwrap(),
        "nothing published without a decision"
    );
    // At 22:00 (after a restart, say) the planner notices and decides at once.
    let night = paris(2026, 12, 1, 22, 0);
    clock.set(night);
    let plan = svc.tonight(night).await.unwrap();
    assert!(plan.is_some(), "fail-safe assume_red gives a plan");
    let dec = stored(&rig.store).await.unwrap();
    assert_eq!(dec.status, DecisionStatus::FailSafe);
    assert_eq!(alerts.try_recv().unwrap().kind, AlertKind::TempoUnknown);
}

#[tokio::test]
async fn refresh_before_the_deadline_is_pending_and_dry_run_stores_nothing() {
    let rig = rig().await;
    rig.script.set("2026-12-01", &[2]);
    rig.script.set("2026-12-02", &[0]);
    let clock = Arc::new(ManualClock::new(paris(2026, 12, 1, 10, 0)));
    let (svc, mut alerts) = service(&rig, settings(&rig.base), clock.clone());
    let v = svc.refresh(true).await.unwrap();
    assert_eq!(v["today"]["colour"], json!("white"));
    assert_eq!(v["decision"]["status"], json!("pending"));
    assert_eq!(v["dry_run"], json!(true));
    assert!(
        stored(&rig.store).await.is_none(),
        "dry run persists no decision"
    );
    assert!(alerts.try_recv().is_err());
    let v = svc.refresh(false).await.unwrap();
    assert_eq!(v["decision"]["status"], json!("pending"));
    assert_eq!(
        stored(&rig.store).await.unwrap().status,
        DecisionStatus::Pending
    );
    // get() reads the cache and the stored decision, no network.
    let before = rig.script.total.load(Ordering::SeqCst);
    let g = svc.get().await;
    assert_eq!(g["today"]["colour"], json!("white"));
    assert_eq!(g["decision"]["status"], json!("pending"));
    assert_eq!(rig.script.total.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn today_before_six_is_yesterdays_colour() {
    let rig = rig().await;
    rig.script.set("2026-12-01", &[3]);
    rig.script.set("2026-12-02", &[1]);
    // 05:59 on 12-02 is still Tempo day 12-01; "tomorrow" is 12-02.
    let clock = Arc::new(ManualClock::new(paris(2026, 12, 2, 5, 59)));
    let (svc, _a) = service(&rig, settings(&rig.base), clock.clone());
    let v = svc.refresh(false).await.unwrap();
    assert_eq!(v["today"]["date"], json!("2026-12-01"));
    assert_eq!(v["today"]["colour"], json!("red"));
    assert_eq!(v["tomorrow"]["colour"], json!("blue"));
    clock.set(paris(2026, 12, 2, 6, 0));
    let g = svc.get().await;
    assert_eq!(g["today"]["date"], json!("2026-12-02"));
    assert_eq!(g["today"]["colour"], json!("blue"));
}

#[tokio::test]
async fn bridge_actions_validate_their_payload() {
    let rig = rig().await;
    rig.script.set("2026-12-02", &[3]);
    let clock = Arc::new(ManualClock::new(paris(2026, 12, 1, 12, 0)));
    let (svc, _a) = service(&rig, settings(&rig.base), clock);
    for (action, payload, needle) in [
        ("tempo/refresh", json!({"dry_run": "yes"}), "true or false"),
        (
            "tempo/refresh",
            json!({"dryrun": true}),
            "unknown field 'dryrun'",
        ),
        ("tempo/refresh", json!([1, 2]), "JSON object"),
        ("tempo/nope", json!({}), "unknown action"),
    ] {
        let err = svc.request(action, &payload).await.unwrap_err();
        assert!(err.contains(needle), "{action} {payload}: {err}");
    }
    assert_eq!(
        rig.script.total.load(Ordering::SeqCst),
        0,
        "refused requests fetch nothing"
    );
    assert!(stored(&rig.store).await.is_none());
    let v = svc
        .request(
            "tempo/refresh",
            &json!({"dry_run": true, "transaction": "t1"}),
        )
        .await
        .unwrap();
    assert_eq!(v["tomorrow"]["colour"], json!("red"));
    assert_eq!(v["dry_run"], json!(true));
    assert!(
        stored(&rig.store).await.is_none(),
        "dry run stores no decision"
    );
    let v = svc.request("tempo/refresh", &json!(null)).await.unwrap();
    assert_eq!(v["precharge"], json!(true));
    let g = svc.request("tempo/get", &json!({})).await.unwrap();
    assert_eq!(g["decision"]["colour"], json!("red"));
}
