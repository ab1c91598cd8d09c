//! The planner in the running bridge: the binary (`run`) with one simulated Venus E on UDP, the
//! real mosquitto, a SQLite file and a local HTTP server playing api-couleur-tempo (today blue,
//! tomorrow red, `/api/stats`) and open-dpe (J+2, J+3 forecast). After `tempo/refresh` over the
//! request API, the retained `<base>/bridge/plan` carries the battery's slots with reasons that
//! name tomorrow's published red and the forecast; `marstek-bridge plan preview` prints them,
//! `--json` returns the same plan marked dry-run; a bad `plan/get` payload is refused. With two
//! batteries (5.12 and 2.56 kWh) each plan covers its share of the house by capacity.

mod fault_common;
mod support;

use std::process::Command;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use chrono::{Duration as Days, NaiveDate, Utc};
use fault_common::{BridgeProcess, Drill, Watcher, broker_addr};
use marstek_bridge::simulator::SimConfig;
use marstek_bridge::tempo::{red_possible, tempo_date_at};
use rumqttc::QoS;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_marstek-bridge");

async fn jour(State(today): State<NaiveDate>, Path(date): Path<String>) -> String {
    let code = if date == today.to_string() {
        1
    } else if date == (today + Days::days(1)).to_string() {
        3
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

/// The forecast's red day: the first day from J+2 that the calendar lets be red (J+2 itself
/// on a weekday in season; the Monday after when J+2 is a weekend), so that the story does not
/// depend on the day it runs; out of season, J+2 forecast white.
fn forecast_day(today: NaiveDate) -> (NaiveDate, &'static str, &'static str) {
    (2..=9)
        .map(|n| today + Days::days(n))
        .find(|d| red_possible(*d))
        .map_or((today + Days::days(2), "blanc", "white"), |d| {
            (d, "rouge", "red")
        })
}

async fn forecast(State(today): State<NaiveDate>) -> String {
    let (day, colour, _) = forecast_day(today);
    json!([
        {"date": day.to_string(), "couleur": colour, "probability": 0.8},
        {"date": (day + Days::days(1)).to_string(), "couleur": "bleu", "probability": 0.6},
    ])
    .to_string()
}

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

fn cli(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["plan", "preview", "--config"])
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("MARSTEK_BRIDGE_CONFIG")
        .output()
        .unwrap()
}

/// The slot reasons of battery `dev` in a plan document.
fn reasons_of(plan: &Value, dev: &str) -> Vec<String> {
    plan["batteries"][dev]["slots"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["reason"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A drill of `devices` simulated batteries at 30 % SOC whose `bridge.toml` enables Tempo on
/// a local server playing today's colours, with `extra` lines added to its `[tempo]` table;
/// returns today's Tempo date, the drill and the config's path.
async fn tempo_drill(
    tag: &str,
    devices: usize,
    extra: &str,
) -> (NaiveDate, Drill, std::path::PathBuf) {
    let today = tempo_date_at(Utc::now());
    let http = tempo_server(today).await;
    let sim = SimConfig {
        devices,
        initial_soc: 30.0,
        ..SimConfig::default()
    };
    let drill = Drill::start(tag, sim, broker_addr(), None).await;
    let toml = drill.setup.to_toml().replace(
        "[tempo]\nenabled = false\n",
        &format!(
            "[tempo]\nenabled = true\ncouleur_tempo_url = \"{http}\"\n\
             forecast_url = \"{http}/assets/tempo_days_lite.json\"\ntimeout = \"2s\"\n\
             retries = 0\ncapacity_wh = 5120\n{extra}"
        ),
    );
    let config = drill.dir.path().join("bridge.toml");
    std::fs::write(&config, toml).unwrap();
    (today, drill, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_is_published_retained_and_previewed() {
    let extra = "precharge_colours = [\"blue\", \"white\", \"red\"]\n";
    let (today, drill, config) = tempo_drill("plan_e2e", 1, extra).await;
    let (dir, base) = (&drill.dir, drill.base.clone());
    let topic = format!("{base}/bridge/plan");
    let mut watcher = Watcher::start(
        broker_addr(),
        &format!("{base}_watch"),
        &[topic.clone(), format!("{base}/bridge/response/#")],
    )
    .await;
    let bridge = BridgeProcess::spawn(BIN, &config, dir.path());

    // The first plan comes at start-up, from what is known then (nothing about the colours).
    let first = watcher
        .next_matching(Duration::from_secs(30), |s| {
            s.topic == topic && s.text.contains("\"slots\"")
        })
        .await
        .unwrap_or_else(|| panic!("no plan published; log:\n{}", bridge.log_text()));
    let first: Value = serde_json::from_str(&first.text).unwrap();
    assert!(!reasons_of(&first, "d0000").is_empty(), "{first}");

    // Fetch the colours, the stats and the forecast now.
    watcher
        .client
        .publish(
            format!("{base}/bridge/request/tempo/refresh"),
            QoS::AtLeastOnce,
            false,
            "{}",
        )
        .await
        .unwrap();
    let plan = watcher
        .next_matching(Duration::from_secs(30), |s| {
            s.topic == topic && s.text.contains("tomorrow red (api-couleur-tempo)")
        })
        .await
        .unwrap_or_else(|| panic!("no plan with tomorrow's red; log:\n{}", bridge.log_text()));
    // A client subscribing later gets it from the broker, retained.
    let mut late = Watcher::start(
        broker_addr(),
        &format!("{base}_late"),
        std::slice::from_ref(&topic),
    )
    .await;
    let kept = late
        .next_matching(Duration::from_secs(10), |s| s.topic == topic)
        .await
        .expect("retained plan");
    assert!(kept.retain, "the plan topic is retained");
    assert!(kept.text.contains("tomorrow red (api-couleur-tempo)"));
    let plan: Value = serde_json::from_str(&plan.text).unwrap();
    let r = reasons_of(&plan, "d0000");
    assert!(
        r.iter()
            .any(|x| x.contains(&format!("{} 80 % (open-dpe)", forecast_day(today).2))),
        "the forecast is in the reasons: {r:#?}"
    );
    assert_eq!(
        plan["stock"]["red_left"],
        json!(19),
        "tomorrow's red taken off: {plan}"
    );
    assert!(plan["next_action"].as_str().unwrap().starts_with("d0000: "));
    let hc = plan["batteries"]["d0000"]["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["period"] == "hc")
        .cloned()
        .unwrap();
    assert_eq!(hc["action"], "charge", "the night before red charges: {hc}");
    // As far as the charge power allows in what is left of that night (8 h from 22:00, less
    // when the test runs after 22:00 Paris): 100 % or 30 % + 2500 W × hours left.
    let hours = (chrono::DateTime::parse_from_rfc3339(hc["end"].as_str().unwrap()).unwrap()
        - chrono::DateTime::parse_from_rfc3339(hc["start"].as_str().unwrap()).unwrap())
    .num_seconds() as f64
        / 3600.0;
    let reachable = (30.0 + (2500.0 * hours / 5120.0 * 100.0 + 1e-9).floor()).min(100.0);
    assert_eq!(hc["target_soc"], json!(reachable as u64), "{hc}");

    // The command line asks the running bridge.
    let out = cli(&config, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("d0000\n"), "{text}");
    assert!(text.contains("tomorrow red (api-couleur-tempo)"), "{text}");
    let out = cli(&config, &["--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dry_run"], json!(true));
    assert_eq!(
        reasons_of(&v, "d0000").len(),
        reasons_of(&plan, "d0000").len()
    );

    // A bad payload is refused with the reason and computes nothing.
    watcher
        .client
        .publish(
            format!("{base}/bridge/request/plan/get"),
            QoS::AtLeastOnce,
            false,
            "{\"dry_run\": \"yes\", \"transaction\": \"t1\"}",
        )
        .await
        .unwrap();
    let answer = watcher
        .next_matching(Duration::from_secs(20), |s| {
            s.topic.ends_with("/response/plan/get") && s.text.contains("t1")
        })
        .await
        .expect("an answer");
    assert!(
        answer.text.contains("dry_run must be true or false"),
        "{}",
        answer.text
    );
    drop(bridge);
    drop(drill);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_batteries_share_the_house_by_capacity_in_the_running_bridge() {
    // d0000 5.12 kWh, d0001 2.56 kWh (same SOC window): two thirds and one third of the house.
    let extra = "device_capacity_wh = { d0000 = 5120, d0001 = 2560 }\n";
    let (_, drill, config) = tempo_drill("plan_share_e2e", 2, extra).await;
    let (dir, base) = (&drill.dir, drill.base.clone());
    let topic = format!("{base}/bridge/plan");
    let mut watcher = Watcher::start(
        broker_addr(),
        &format!("{base}_watch"),
        std::slice::from_ref(&topic),
    )
    .await;
    let bridge = BridgeProcess::spawn(BIN, &config, dir.path());
    let shared = |v: &Value, dev: &str, pct: &str| {
        let r = reasons_of(v, dev);
        !r.is_empty()
            && r.iter()
                .all(|x| x.ends_with(&format!(", {pct} % of it for this battery (by capacity)")))
    };
    // A plan is made at start-up and on each refresh; ask until both batteries were read.
    let mut plan = None;
    for _ in 0..10 {
        let Some(msg) = watcher
            .next_matching(Duration::from_secs(30), |s| {
                s.topic == topic && s.text.contains("\"slots\"")
            })
            .await
        else {
            break;
        };
        let v: Value = serde_json::from_str(&msg.text).unwrap();
        if shared(&v, "d0000", "67") && shared(&v, "d0001", "33") {
            plan = Some(v);
            break;
        }
        watcher
            .client
            .publish(
                format!("{base}/bridge/request/tempo/refresh"),
                QoS::AtLeastOnce,
                false,
                "{}",
            )
            .await
            .unwrap();
    }
    let plan = plan.unwrap_or_else(|| {
        panic!(
            "no plan sharing the house 67/33 by capacity; log:\n{}",
            bridge.log_text()
        )
    });
    // Neither plans for the whole house: the smaller one expects half the larger one's kWh.
    let kwh = |dev: &str| -> Vec<f64> {
        reasons_of(&plan, dev)
            .iter()
            .filter_map(|r| {
                let (before, _) = r.split_once(" kWh expected")?;
                before.rsplit(' ').next()?.parse().ok()
            })
            .collect()
    };
    let (big, small) = (kwh("d0000"), kwh("d0001"));
    assert!(!big.is_empty() && big.len() == small.len(), "{plan}");
    for (b, s) in big.iter().zip(&small) {
        assert!((b - 2.0 * s).abs() <= 0.15, "{b} vs {s}: {plan}");
    }
    drop(bridge);
    drop(drill);
}
