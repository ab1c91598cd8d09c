//! The Tempo routes of the REST API against a running bridge with Tempo on (in-process, real
//! HTTP, three simulated batteries, the real mosquitto, a SQLite file, a local HTTP server
//! playing api-couleur-tempo and open-dpe): `/tempo` and `/tempo/refresh` answer today's blue
//! and tomorrow's colour (red, or white/blue when the calendar forbids red tomorrow), `/plan` carries each battery's slots with reasons, and `/ledger` shows
//! the running ledger and the Tempo day the ledger book closed at start-up from stored samples
//! (yesterday, red, 2 kWh delivered in HP); a bad `days` is refused and changes nothing.

mod api_common;
mod support;

use std::time::Duration;

use api_common::{IDS, Rig, error_code};
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use chrono::{Duration as Days, NaiveDate, NaiveTime, Utc};
use marstek_bridge::domain::{DeviceId, Sample, Watts};
use marstek_bridge::store::{DatabaseSettings, SqliteStore, Store, TempoDayRecord};
use marstek_bridge::tempo::{TempoColour, paris_instant, tempo_date_at};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The colour the local server gives tomorrow: red when the calendar allows it on that date,
/// else white, else blue (no red on weekends or holidays, no white on Sundays), so that the
/// test holds on any day of the week.
fn tomorrows_colour(today: NaiveDate) -> TempoColour {
    let tomorrow = today + Days::days(1);
    [TempoColour::Red, TempoColour::White]
        .into_iter()
        .find(|c| c.possible_on(tomorrow))
        .unwrap_or(TempoColour::Blue)
}

async fn jour(State(today): State<NaiveDate>, Path(date): Path<String>) -> String {
    let code = if date == today.to_string() {
        1
    } else if date == (today + Days::days(1)).to_string() {
        match tomorrows_colour(today) {
            TempoColour::Blue => 1,
            TempoColour::White => 2,
            TempoColour::Red => 3,
        }
    } else {
        0
    };
    json!({"dateJour": date, "codeJour": code, "periode": "2026-2027"}).to_string()
}

async fn stats() -> String {
    json!({
        "periode": "2026-2027", "bissextile": false,
        "joursBleusConsommes": 60, "joursBleusRestants": 240,
        "joursBlancsConsommes": 3, "joursBlancsRestants": 40,
        "joursRougesConsommes": 2, "joursRougesRestants": 20,
    })
    .to_string()
}

async fn forecast(State(today): State<NaiveDate>) -> String {
    json!([{"date": (today + Days::days(2)).to_string(), "couleur": "bleu", "probability": 0.7}])
        .to_string()
}

/// A local api-couleur-tempo and open-dpe: today blue, tomorrow `tomorrows_colour`.
async fn tempo_server(today: NaiveDate) -> String {
    let app = Router::new()
        .route("/api/jourTempo/{date}", get(jour))
        .route("/api/stats", get(stats))
        .route("/assets/tempo_days_lite.json", get(forecast))
        .with_state(today);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

/// Yesterday's Tempo day for `bat-a` in the store before the bridge starts: red, and samples
/// that deliver 2 kWh between 07:00 and 09:00 (HP).
async fn seed_yesterday(url: &str, yesterday: NaiveDate) {
    let store = SqliteStore::connect(&DatabaseSettings {
        url: url.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    store
        .upsert_tempo_day(&TempoDayRecord {
            date: yesterday,
            colour: "red".into(),
            source: "api-couleur-tempo".into(),
            fetched_at: Utc::now(),
        })
        .await
        .unwrap();
    let dev = DeviceId::parse("bat-a").unwrap();
    let mut samples = Vec::new();
    // Delivering 1 kW, one sample every 5 min from 07:00 to 08:55: 2 kWh in the hourly history.
    let start = paris_instant(yesterday, NaiveTime::from_hms_opt(7, 0, 0).unwrap());
    for k in 0..24 {
        let mut s = Sample::empty(dev.clone(), start + Days::minutes(5 * k));
        s.grid_power = Some(Watts(1000));
        samples.push(s);
    }
    store.insert_samples(&samples).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempo_plan_and_ledger_routes_answer_from_the_running_bridge() {
    let today = tempo_date_at(Utc::now());
    let yesterday = today - Days::days(1);
    let colour = tomorrows_colour(today);
    let server = tempo_server(today).await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("tempo.db").display());
    seed_yesterday(&db, yesterday).await;
    let rig = Rig::start_with(Some(db), |s| {
        s.tempo.enabled = true;
        s.tempo.couleur_tempo_url = server.clone();
        s.tempo.forecast_url = format!("{server}/assets/tempo_days_lite.json");
        s.tempo.precharge_colours = vec![colour];
        s.tempo.timeout = Duration::from_secs(2);
        s.tempo.retries = 0;
        s.tempo.capacity_wh = Some(5120);
    })
    .await;
    rig.wait_for_samples().await;

    let (code, v) = rig
        .post("/api/v1/tempo/refresh", r#"{"dry_run":true}"#)
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["today"]["colour"], "blue", "{v}");
    assert_eq!(v["tomorrow"]["colour"], colour.as_str(), "{v}");
    assert_eq!(v["dry_run"], true, "{v}");
    assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
    let (code, v) = rig.get("/api/v1/tempo").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["tomorrow"]["colour"],
        colour.as_str(),
        "the fetched colour is kept: {v}"
    );
    let (code, v) = rig
        .post("/api/v1/tempo/refresh", r#"{"dry_run":"yes"}"#)
        .await;
    assert_eq!(
        error_code(code, &v, StatusCode::UNPROCESSABLE_ENTITY),
        "invalid_body"
    );

    let (code, plan) = rig.get("/api/v1/plan").await;
    assert_eq!(code, 200, "{plan}");
    for id in IDS {
        let slots = plan["batteries"][id]["slots"].as_array();
        assert!(
            slots.is_some_and(|s| !s.is_empty() && s.iter().all(|x| x["reason"].is_string())),
            "{id}: {plan}"
        );
    }

    // The next actions: the night job's reason is tonight's decision (taken and stored now; a
    // refresh touches no battery), the plan's slots come with the plan's own reasons.
    let (code, tempo) = rig.post("/api/v1/tempo/refresh", "{}").await;
    assert_eq!(code, 200, "{tempo}");
    assert!(
        tempo["reason"]
            .as_str()
            .is_some_and(|r| r.contains(colour.as_str())),
        "{tempo}"
    );
    let (code, next) = rig.get("/api/v1/next-actions?count=50").await;
    assert_eq!(code, 200, "{next}");
    assert_eq!(next["tonight"]["tomorrow"], colour.as_str(), "{next}");
    assert_eq!(next["tonight"]["reason"], tempo["reason"], "{next}");
    let rows = next["actions"].as_array().unwrap();
    let night = rows
        .iter()
        .find(|r| r["job"] == "job_switch_to_manual_night")
        .unwrap_or_else(|| panic!("no night job: {next}"));
    assert_eq!(night["reason"], tempo["reason"], "{night}");
    for id in IDS {
        let reasons: Vec<&Value> = plan["batteries"][id]["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| &s["reason"])
            .collect();
        let mine: Vec<&Value> = rows.iter().filter(|r| r["device"] == id).collect();
        assert!(!mine.is_empty(), "{id}: no plan rows in {next}");
        assert!(
            mine.iter().all(|r| reasons.contains(&&r["reason"])),
            "{id}: a plan row's reason is not the plan's: {next}"
        );
    }

    // The ledger book closes yesterday at start-up (a task beside the start): wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let ledger = loop {
        let (code, v) = rig.get("/api/v1/ledger").await;
        assert_eq!(code, 200, "{v}");
        if v["days"].as_array().is_some_and(|d| !d.is_empty()) {
            break v;
        }
        assert!(tokio::time::Instant::now() < deadline, "no closed day: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let day = &ledger["days"][0];
    assert_eq!(
        (&day["device"], &day["date"], &day["colour"]),
        (
            &json!("bat-a"),
            &json!(yesterday.to_string()),
            &json!("red")
        ),
        "{ledger}"
    );
    assert_eq!(day["discharged_hp_kwh"], 2.0, "{day}");
    assert!(day["saved_eur"].as_f64().unwrap() > 0.0, "{day}");
    let current = &ledger["current"];
    assert_eq!(current["date"], today.to_string(), "{current}");
    for id in IDS {
        assert!(current["batteries"][id].is_object(), "{id}: {current}");
    }
    let (code, v) = rig.get("/api/v1/ledger?days=0").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["days"], json!([]), "{v}");
    let (code, v) = rig.get("/api/v1/ledger?days=401").await;
    assert_eq!(
        error_code(code, &v, StatusCode::UNPROCESSABLE_ENTITY),
        "invalid_limit"
    );
    let (_, again) = rig.get("/api/v1/ledger").await;
    assert_eq!(
        again["days"], ledger["days"],
        "a refused request changed nothing"
    );
    rig.stop().await;
}
