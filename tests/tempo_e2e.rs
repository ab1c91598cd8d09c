//! End to end: the 11:30 Tempo check against a local HTTP colour source, a SQLite store, the
//! Marstek driver talking UDP to the in-process simulator, and injected clocks (the service's
//! and the simulator's). Red tomorrow → plan stored and published → `tonight()` at 22:00 gives
//! the computed power → the scheduler's real 22:00 job applies it → by 06:00 the simulated SOC
//! reached the target → the real 06:00 job's `morning_check` is quiet; without the precharge it
//! alerts.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use chrono::{DateTime, Datelike, Days, NaiveDate, TimeZone, Utc};
use marstek_bridge::config::DeviceConfig;
use marstek_bridge::control::CommandService;
use marstek_bridge::domain::{AlertKind, DeviceId, JobAction, JobContext, NightPlanner};
use marstek_bridge::marstek::PollingSettings;
use marstek_bridge::scheduler::{
    JobDeps, JobRegistry, Reconciler, SchedulerSettings, standard_jobs,
};
use marstek_bridge::simulator::{SimConfig, SimProfile};
use marstek_bridge::store::{DatabaseSettings, SqliteStore, Store, TempoDayRecord};
use marstek_bridge::tempo::{
    Clock, DECISION_DOC, ManualClock, SourceChain, TEMPO_TZ, TempoService, TempoSettings,
    red_possible,
};
use serde_json::json;
use support::core_rig::{CoreRig, CoreSetup, on_demand_polling};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// api-couleur-tempo.fr answering `code` for `red_day`, unknown (0) for every other date.
async fn colour_server(red_day: NaiveDate, code: i64) -> String {
    async fn jour(State((day, code)): State<(String, i64)>, Path(date): Path<String>) -> String {
        let c = if date == day { code } else { 0 };
        json!({"dateJour": date, "codeJour": c}).to_string()
    }
    let app = Router::new()
        .route("/api/jourTempo/{date}", get(jour))
        .with_state((red_day.format("%Y-%m-%d").to_string(), code));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

fn paris(date: NaiveDate, h: u32, m: u32) -> DateTime<Utc> {
    TEMPO_TZ
        .with_ymd_and_hms(date.year(), date.month(), date.day(), h, m, 0)
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

/// A future eve whose next day may be red (the simulator only integrates forward in time).
fn future_eve() -> NaiveDate {
    let mut d = Utc::now().date_naive() + Days::new(2);
    while !red_possible(d + Days::new(1)) {
        d = d + Days::new(1);
    }
    d
}

/// One Venus E v3 `bat1` at 40 %, on the simulator's injected clock in Paris time.
async fn rig() -> CoreRig {
    let mut setup = CoreSetup::new(SimConfig {
        profile: SimProfile::VenusE3,
        initial_soc: 40.0,
        timezone: TEMPO_TZ,
        ..SimConfig::default()
    });
    setup.polling = PollingSettings {
        request_timeout: Duration::from_millis(500),
        retries: 2,
        failures_before_unreachable: 3,
        ..on_demand_polling()
    };
    setup.device = |_| DeviceConfig {
        id: Some("bat1".into()),
        ..DeviceConfig::default()
    };
    CoreRig::start(setup).await
}

fn service(
    rig: &CoreRig,
    base: &str,
    clock: Arc<ManualClock>,
) -> (
    TempoService,
    tokio::sync::mpsc::UnboundedReceiver<marstek_bridge::domain::Alert>,
) {
    service_with(rig, base, clock, false)
}

fn service_with(
    rig: &CoreRig,
    base: &str,
    clock: Arc<ManualClock>,
    planner: bool,
) -> (
    TempoService,
    tokio::sync::mpsc::UnboundedReceiver<marstek_bridge::domain::Alert>,
) {
    let settings = TempoSettings {
        couleur_tempo_url: base.to_string(),
        timeout: Duration::from_millis(500),
        retries: 0,
        backoff: Duration::from_millis(1),
        planner,
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let chain = SourceChain::from_settings(&settings).unwrap();
    let svc = TempoService::with_parts(settings, chain, rig.store(), rig.fleet(), Some(tx), clock);
    (svc, rx)
}

fn ctx(at: DateTime<Utc>) -> JobContext {
    JobContext {
        job_id: "job_check_tempo_tomorrow".into(),
        scheduled_for: at,
        started_at: at,
        cancel: CancellationToken::new(),
    }
}

/// The scheduler's standard jobs wired to the Tempo service (planner and 11:30 check).
fn jobs(
    rig: &CoreRig,
    svc: &Arc<TempoService>,
    alerts: tokio::sync::mpsc::UnboundedSender<marstek_bridge::domain::Alert>,
) -> JobRegistry {
    let (samples, _) = broadcast::channel(16);
    standard_jobs(JobDeps {
        commands: CommandService::new(rig.fleet(), Some(rig.store()), None, false),
        store: rig.store(),
        settings: SchedulerSettings::default(),
        planner: Some(svc.clone() as Arc<dyn NightPlanner>),
        tempo_check: Some(svc.clone() as Arc<dyn JobAction>),
        samples,
        alerts: Some(alerts),
    })
}

async fn run_job(reg: &JobRegistry, id: &str, at: DateTime<Utc>) -> serde_json::Value {
    let job = reg.get(id).unwrap_or_else(|| panic!("{id} registered"));
    let mut c = ctx(at);
    c.job_id = id.to_string();
    job.run(c)
        .await
        .unwrap_or_else(|e| panic!("{id} failed: {e:#}"))
}

/// The planner's maths done independently: (95 − SOC) % of 5120 Wh over 8 h, +10 %, up to 50 W.
fn expected_power(soc: u8) -> i32 {
    let wh = f64::from(95 - soc) / 100.0 * 5120.0;
    let w = wh / 8.0 * 1.1;
    -(((w / 50.0).ceil() * 50.0).min(2500.0) as i32)
}

#[tokio::test]
async fn red_tomorrow_precharges_to_target_by_six() {
    let rig = rig().await;
    let eve = future_eve();
    let red_day = eve + Days::new(1);
    let base = colour_server(red_day, 3).await;
    let at = paris(eve, 11, 30);
    rig.sim.clock().set(at);
    let clock = Arc::new(ManualClock::auto_advance(at));
    let (svc, mut alerts) = service(&rig, &base, clock.clone());
    let svc = Arc::new(svc);
    let (jobs_tx, mut jobs_alerts) = tokio::sync::mpsc::unbounded_channel();
    let reg = jobs(&rig, &svc, jobs_tx);
    let state = svc.subscribe();

    // 11:30, the scheduler's job: tomorrow is red → decision and plan stored and published.
    let out = run_job(&reg, "job_check_tempo_tomorrow", at).await;
    assert_eq!(out["precharge"], json!(true));
    let decision = rig
        .core
        .store
        .document(DECISION_DOC)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(decision["precharge"], json!(true));
    assert_eq!(decision["colour"], json!("red"));
    let early = &decision["plan"]["targets"][0];
    assert_eq!(early["device"], json!("bat1"));
    assert!(early["power"].as_i64().unwrap() < 0, "{early}");
    {
        let v = state.borrow();
        assert_eq!(v["precharge"], json!(true));
        assert_eq!(v["tomorrow"]["colour"], json!("red"));
        assert_eq!(v["decision"]["plan"]["targets"][0]["device"], json!("bat1"));
    }

    // 22:00, the scheduler's night job: power refreshed from the SOC the battery has now.
    let night = paris(eve, 22, 0);
    clock.set(night);
    rig.sim.clock().set(night);
    assert!(rig.sim.set_soc(0, 30.4));
    let out = run_job(&reg, "job_switch_to_manual_night", night).await;
    assert_eq!(out["failed"], json!(0), "{out}");
    let plan = &out["detail"]["plan"];
    assert_eq!(plan["dry_run"], json!(false));
    assert_eq!(plan["targets"].as_array().map(Vec::len), Some(1), "{plan}");
    assert_eq!(plan["targets"][0]["target_soc"], json!(95));
    // SOC 30 %: 65 % of 5120 Wh = 3328 Wh over 8 h = 416 W, +10 % = 457.6 W → 500 W.
    assert_eq!(expected_power(30), -500);
    assert_eq!(plan["targets"][0]["power"], json!(-500), "{plan}");
    assert_eq!(
        state.borrow()["decision"]["plan"]["targets"][0]["power"],
        json!(-500)
    );
    let sim = rig.sim.state(0).unwrap();
    assert_eq!(sim.mode, marstek_bridge::domain::Mode::Manual);
    // The plan topic carries tomorrow's colour with its probability (published: certain).
    let tomorrow = svc.live().subscribe().borrow()["tomorrow"].clone();
    assert_eq!(tomorrow["date"], json!(red_day), "{tomorrow}");
    assert_eq!(tomorrow["colour"], json!("red"), "{tomorrow}");
    assert_eq!(tomorrow["probability"], json!(1.0), "{tomorrow}");
    assert_eq!(tomorrow["known"], json!(true), "{tomorrow}");
    let slot = sim
        .slots
        .iter()
        .flatten()
        .find(|s| s.enable)
        .expect("enabled slot");
    assert_eq!(slot.power, -500);

    // The simulated night passes; 06:00, the scheduler's AUTO job runs the morning check.
    let morning = paris(red_day, 6, 0);
    rig.sim.clock().set(morning);
    clock.set(morning);
    let soc = rig.sim.state(0).unwrap().soc;
    assert!(soc >= 95.0 - 5.0, "SOC at 06:00 is {soc}");
    let out = run_job(&reg, "job_switch_to_auto", morning).await;
    assert_eq!(out["detail"]["morning_check"]["alerts"], json!(0), "{out}");
    assert!(jobs_alerts.try_recv().is_err());
    assert!(alerts.try_recv().is_err());
}

#[tokio::test]
async fn precharge_not_applied_is_reported_short_at_six() {
    let rig = rig().await;
    let eve = future_eve();
    let red_day = eve + Days::new(1);
    let base = colour_server(red_day, 3).await;
    let at = paris(eve, 11, 30);
    rig.sim.clock().set(at);
    let clock = Arc::new(ManualClock::auto_advance(at));
    let (svc, _alerts) = service(&rig, &base, clock.clone());
    let svc = Arc::new(svc);
    let (jobs_tx, mut jobs_alerts) = tokio::sync::mpsc::unbounded_channel();
    let reg = jobs(&rig, &svc, jobs_tx);
    run_job(&reg, "job_check_tempo_tomorrow", at).await;
    let night = paris(eve, 22, 0);
    clock.set(night);
    rig.sim.clock().set(night);
    // The plan is made, but nobody applies it: the battery stays in Auto overnight.
    let plan = svc.tonight(night).await.unwrap().expect("a plan tonight");
    assert_eq!(plan.targets.len(), 1);
    let morning = paris(red_day, 6, 0);
    rig.sim.clock().set(morning);
    let direct = svc.morning_check(morning).await.unwrap();
    assert_eq!(direct.len(), 1, "{direct:?}");
    let out = run_job(&reg, "job_switch_to_auto", morning).await;
    assert_eq!(out["detail"]["morning_check"]["alerts"], json!(1), "{out}");
    let short = jobs_alerts.try_recv().expect("precharge_short alert");
    assert_eq!(short.kind, AlertKind::PrechargeShort);
    assert_eq!(short.device.as_ref().map(|d| d.as_str()), Some("bat1"));
    assert_eq!(short.threshold, Some(90.0));
    assert!(short.value.is_some_and(|v| v < 90.0), "{short:?}");
}

#[tokio::test]
async fn blue_tomorrow_no_plan_and_unknown_falls_back_to_fail_safe_with_alert() {
    let rig = rig().await;
    let eve = future_eve();
    let day = eve + Days::new(1);
    // Blue: no plan tonight.
    let base = colour_server(day, 1).await;
    let at = paris(eve, 11, 30);
    let clock = Arc::new(ManualClock::auto_advance(at));
    let (svc, mut alerts) = service(&rig, &base, clock.clone());
    svc.run(ctx(at)).await.unwrap();
    let night = paris(eve, 22, 0);
    clock.set(night);
    assert_eq!(svc.tonight(night).await.unwrap(), None);
    assert!(alerts.try_recv().is_err());

    // Unknown all day (another store, same battery): the 17:00 deadline applies assume_red.
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::connect(&DatabaseSettings {
            url: format!("sqlite://{}", dir.path().join("u.db").display()),
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    let base = colour_server(day, 0).await;
    let clock = Arc::new(ManualClock::auto_advance(at));
    let settings = TempoSettings {
        couleur_tempo_url: base,
        retries: 0,
        ..Default::default()
    };
    let (tx, mut alerts) = tokio::sync::mpsc::unbounded_channel();
    let svc = TempoService::with_parts(
        settings.clone(),
        SourceChain::from_settings(&settings).unwrap(),
        store.clone(),
        rig.fleet(),
        Some(tx),
        clock.clone(),
    );
    svc.run(ctx(at)).await.unwrap();
    assert_eq!(clock.now(), paris(eve, 17, 0));
    let alert = alerts.try_recv().expect("tempo_unknown raised");
    assert_eq!(alert.kind, AlertKind::TempoUnknown);
    let decision = store.document(DECISION_DOC).await.unwrap().unwrap();
    assert_eq!(decision["status"], json!("fail_safe"));
    assert_eq!(decision["precharge"], json!(true));
    clock.set(night);
    rig.sim.clock().set(night);
    let plan = svc.tonight(night).await.unwrap().expect("fail-safe plan");
    assert_eq!(plan.targets.len(), 1);
    assert!(plan.reason.contains("fail-safe"), "{}", plan.reason);
}

#[tokio::test]
async fn precharge_stops_at_the_target_instead_of_charging_to_full() {
    let rig = rig().await;
    let eve = future_eve();
    let red_day = eve + Days::new(1);
    let base = colour_server(red_day, 3).await;
    let noon = paris(eve, 11, 30);
    rig.sim.clock().set(noon);
    let clock = Arc::new(ManualClock::auto_advance(noon));
    let (svc, _alerts) = service(&rig, &base, clock.clone());
    let svc = Arc::new(svc);
    let (jobs_tx, _jobs_alerts) = tokio::sync::mpsc::unbounded_channel();
    let reg = jobs(&rig, &svc, jobs_tx);
    run_job(&reg, "job_check_tempo_tomorrow", noon).await;
    // Both clocks (the bridge's and the simulated battery's) move together.
    let set_time = |t: DateTime<Utc>| {
        clock.set(t);
        rig.sim.clock().set(t);
    };
    let night = paris(eve, 22, 0);
    set_time(night);
    assert!(rig.sim.set_soc(0, 30.4));
    let out = run_job(&reg, "job_switch_to_manual_night", night).await;
    assert_eq!(
        out["detail"]["plan"]["targets"][0]["target_soc"],
        json!(95),
        "{out}"
    );

    // The bridge's reconciler, as wired in the app: with the Tempo service as planner.
    let commands = CommandService::new(rig.fleet(), Some(rig.store()), None, false);
    let reconciler = Reconciler::new(
        commands,
        rig.store(),
        SchedulerSettings::default(),
        None,
        clock.clone(),
    )
    .with_planner(svc.clone());
    reconciler.refresh().await;
    let battery = rig
        .core
        .fleet
        .get(&DeviceId::parse("bat1").unwrap())
        .unwrap()
        .clone();
    let enabled = |rig: &CoreRig| {
        let s = rig.sim.state(0).unwrap();
        s.slots.iter().flatten().any(|s| s.enable && s.power < 0)
    };

    // 01:00: still charging, under the target: nothing changes.
    set_time(paris(red_day, 1, 0));
    let sample = battery.poll().await.unwrap();
    let soc = sample.soc.unwrap().0;
    assert!((40..95).contains(&soc), "SOC at 01:00 is {soc}");
    assert_eq!(reconciler.on_sample(&sample).await, None);
    assert!(enabled(&rig), "the precharge slot still charges");

    // 03:30: the battery reached 95 % (set here, as a faster battery would): the slot is idled.
    set_time(paris(red_day, 3, 30));
    assert!(rig.sim.set_soc(0, 95.2));
    let sample = battery.poll().await.unwrap();
    let out = reconciler.on_sample(&sample).await.expect("the guard acts");
    assert_eq!(out["status"], json!("applied"), "{out}");
    assert!(
        !enabled(&rig),
        "no charging slot left: {:?}",
        rig.sim.state(0).unwrap().slots
    );
    assert_eq!(
        rig.sim.state(0).unwrap().mode,
        marstek_bridge::domain::Mode::Manual
    );
    let desired = rig.core.store.desired_states().await.unwrap();
    assert_eq!(desired[0].set_by, "precharge_target_reached", "{desired:?}");
    // Later samples leave it alone.
    let sample = battery.poll().await.unwrap();
    assert_eq!(reconciler.on_sample(&sample).await, None);

    // 05:59: the battery stayed at the target instead of charging to full.
    set_time(paris(red_day, 5, 59));
    let soc = rig.sim.state(0).unwrap().soc;
    assert!((94.0..96.0).contains(&soc), "SOC at 05:59 is {soc}");
    let morning = paris(red_day, 6, 0);
    set_time(morning);
    let out = run_job(&reg, "job_switch_to_auto", morning).await;
    assert_eq!(out["detail"]["morning_check"]["alerts"], json!(0), "{out}");
}

#[tokio::test]
async fn planner_on_applies_its_night_charge_through_the_night_job() {
    let rig = rig().await;
    let eve = future_eve();
    let red_day = eve + Days::new(1);
    let base = colour_server(red_day, 3).await;
    let at = paris(eve, 11, 30);
    rig.sim.clock().set(at);
    let clock = Arc::new(ManualClock::auto_advance(at));
    let (svc, _alerts) = service_with(&rig, &base, clock.clone(), true);
    let svc = Arc::new(svc);
    let (jobs_tx, _jobs_alerts) = tokio::sync::mpsc::unbounded_channel();
    let reg = jobs(&rig, &svc, jobs_tx);
    let plan_state = svc.live().subscribe();

    // 11:30: the decision, then the plan from the colours just cached.
    run_job(&reg, "job_check_tempo_tomorrow", at).await;
    let reason = plan_state.borrow()["next_action"]
        .as_str()
        .unwrap()
        .to_string();
    // (The simulated battery covered the house from now to that future noon: it is empty.)
    assert_eq!(
        reason,
        "bat1: hold at 12 %: at the floor (12 %, DOD and envelope), nothing to discharge; \
         configured load"
    );
    // The 11:30 job learned the consumption model first (no house history here: every kind
    // keeps the configured profile), stored it and the plan shows it.
    let model = rig
        .store()
        .document(marstek_bridge::tempo::LOAD_PROFILE_DOC)
        .await
        .unwrap()
        .expect("the 11:30 job stores the consumption model");
    assert_eq!(model["days_used"], json!(0), "{model}");
    let shown = plan_state.borrow()["load_profile"].clone();
    assert_eq!(
        shown["kinds"]["weekday_red"]["source"],
        json!("configured"),
        "{shown}"
    );
    assert_eq!(shown["min_days"], json!(3), "{shown}");

    // 22:00: the planner's night slot (charge to 100 %, not the seed's 95 %) goes through the
    // scheduler's night job to the battery.
    let night = paris(eve, 22, 0);
    clock.set(night);
    rig.sim.clock().set(night);
    assert!(rig.sim.set_soc(0, 30.4));
    let out = run_job(&reg, "job_switch_to_manual_night", night).await;
    assert_eq!(out["failed"], json!(0), "{out}");
    let plan = &out["detail"]["plan"];
    assert_eq!(plan["targets"][0]["target_soc"], json!(100), "{plan}");
    // 70 % of 5120 Wh over 8 h = 448 W, +10 % = 492.8 W → 500 W.
    assert_eq!(plan["targets"][0]["power"], json!(-500), "{plan}");
    let why = plan["reason"].as_str().unwrap();
    assert!(
        why.starts_with("planner: bat1: charge to 100 % tonight: tomorrow red (api-couleur-tempo)"),
        "{why}"
    );
    let sim = rig.sim.state(0).unwrap();
    let slot = sim.slots.iter().flatten().find(|s| s.enable).expect("slot");
    assert_eq!(slot.power, -500);
    // The plan topic shows the same night.
    let published = plan_state.borrow().clone();
    assert!(
        published["next_action"]
            .as_str()
            .unwrap()
            .starts_with("bat1: charge to 100 % tonight"),
        "{published}"
    );
}

#[tokio::test]
async fn planner_on_holds_a_full_battery_through_a_blue_day_before_a_red_one() {
    let rig = rig().await;
    let eve = future_eve();
    let red_day = eve + Days::new(1);
    let base = colour_server(red_day, 3).await;
    let six = paris(eve, 6, 0);
    rig.sim.clock().set(six);
    assert!(rig.sim.set_soc(0, 100.0));
    // Today is a published blue day; tomorrow's red comes from the source.
    rig.core
        .store
        .upsert_tempo_day(&TempoDayRecord {
            date: eve,
            colour: "blue".into(),
            source: "rte".into(),
            fetched_at: six,
        })
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::auto_advance(six));
    let (svc, _alerts) = service_with(&rig, &base, clock.clone(), true);
    let svc = Arc::new(svc);
    svc.refresh(false).await.unwrap();
    let (jobs_tx, _jobs_alerts) = tokio::sync::mpsc::unbounded_channel();
    let reg = jobs(&rig, &svc, jobs_tx);

    // 06:00: cycling the full battery on a blue day earns less than wear and refill, and
    // tomorrow is red: the planner holds it instead of the seed's AUTO.
    let out = run_job(&reg, "job_switch_to_auto", six).await;
    assert_eq!(out["failed"], json!(0), "{out}");
    assert_eq!(out["detail"]["hold"], json!(["bat1"]), "{out}");
    let why = out["detail"]["day_plan"]["reason"].as_str().unwrap();
    assert!(
        why.starts_with("planner: bat1: hold at 100 % today: blue (rte) HP saves"),
        "{why}"
    );
    let sim = rig.sim.state(0).unwrap();
    assert_eq!(sim.mode, marstek_bridge::domain::Mode::Manual);
    // The plan topic carries tomorrow's colour with its probability (published: certain).
    let tomorrow = svc.live().subscribe().borrow()["tomorrow"].clone();
    assert_eq!(tomorrow["date"], json!(red_day), "{tomorrow}");
    assert_eq!(tomorrow["colour"], json!("red"), "{tomorrow}");
    assert_eq!(tomorrow["probability"], json!(1.0), "{tomorrow}");
    assert_eq!(tomorrow["known"], json!(true), "{tomorrow}");
    assert!(sim.slots.iter().flatten().all(|s| !s.enable), "{sim:?}");

    // The next morning (red, full from the night): the plan discharges, the battery goes AUTO.
    let red_six = paris(red_day, 6, 0);
    clock.set(red_six);
    rig.sim.clock().set(red_six);
    assert!(rig.sim.set_soc(0, 100.0));
    let out = run_job(&reg, "job_switch_to_auto", red_six).await;
    assert_eq!(out["detail"]["hold"], json!([]), "{out}");
    assert_eq!(
        rig.sim.state(0).unwrap().mode,
        marstek_bridge::domain::Mode::Auto
    );
}

#[tokio::test]
async fn planner_off_keeps_the_seeds_auto_at_six() {
    let rig = rig().await;
    let eve = future_eve();
    let base = colour_server(eve + Days::new(1), 3).await;
    let six = paris(eve, 6, 0);
    rig.sim.clock().set(six);
    assert!(rig.sim.set_soc(0, 100.0));
    let clock = Arc::new(ManualClock::auto_advance(six));
    let (svc, _alerts) = service_with(&rig, &base, clock, false);
    let svc = Arc::new(svc);
    assert_eq!(svc.day_plan(six).await.unwrap(), None);
    let (jobs_tx, _jobs_alerts) = tokio::sync::mpsc::unbounded_channel();
    let reg = jobs(&rig, &svc, jobs_tx);
    let out = run_job(&reg, "job_switch_to_auto", six).await;
    assert_eq!(out["detail"]["hold"], json!([]), "{out}");
    assert_eq!(
        rig.sim.state(0).unwrap().mode,
        marstek_bridge::domain::Mode::Auto
    );
}
