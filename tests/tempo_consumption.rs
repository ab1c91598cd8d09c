//! The learned consumption model against a real store, on SQLite, PostgreSQL and (when
//! `TEST_TIMESCALE_URL` is set) TimescaleDB: a fortnight of a house's samples (CT, battery port,
//! PV) and the Tempo colours of those days are stored; the model is learned from the store's
//! hourly house telemetry, kept as the `tempo_load_profile` document (read back, not recomputed
//! the same day), and the planner, given it, charges less before a red day than with the
//! configured profile and says "learned load (N days)" where it used to say "configured load".

mod support;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};
use marstek_bridge::domain::{DeviceId, Percent, Sample, Watts};
use marstek_bridge::store::{self, Backend, DatabaseSettings, Store, TempoDayRecord};
use marstek_bridge::tempo::consumption::{self, LEARN_DAYS};
use marstek_bridge::tempo::{
    BatteryPlan, ColourInfo, ConsumptionModel, DEFAULT_LOAD_PROFILE_W, DayKind, DayOutlook,
    LOAD_PROFILE_DOC, LoadSource, PlanBattery, PlannerParams, SlotAction, TEMPO_TZ, Tariff,
    TempoColour, paris_instant, plan,
};
use support::TestPgDb;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// Thursday 15 Jan 2026, 12:00 in Paris: today blue, tomorrow (Friday) red.
fn now() -> DateTime<Utc> {
    TEMPO_TZ
        .with_ymd_and_hms(2026, 1, 15, 12, 0, 0)
        .unwrap()
        .with_timezone(&Utc)
}

/// The stored days: Mon 5 – Fri 9 Jan red (the house sheds load: 200 W), Mon 12 – Wed 14 blue
/// (500 W), Sat 10 white (only one day of its kind).
fn history() -> Vec<(NaiveDate, TempoColour, f64)> {
    let mut v: Vec<_> = (5..=9)
        .map(|d| (date(2026, 1, d), TempoColour::Red, 200.0))
        .collect();
    v.push((date(2026, 1, 10), TempoColour::White, 900.0));
    v.extend((12..=14).map(|d| (date(2026, 1, d), TempoColour::Blue, 500.0)));
    v
}

/// One Tempo day (06:00 → 06:00) of samples every 10 min: the house uses `load` W; the battery
/// delivers 150 W through its port, of which PV (100 W from 12:00 to 14:00); the CT sees the
/// rest. One glitching CT reading (99 kW) at 19:00 must not count.
fn day_samples(dev: &DeviceId, day: NaiveDate, load: f64) -> Vec<Sample> {
    let start = paris_instant(day, NaiveTime::from_hms_opt(6, 0, 0).unwrap());
    (0..24 * 6)
        .map(|k| {
            let at = start + Duration::minutes(10 * k);
            let hour = at.with_timezone(&TEMPO_TZ).hour();
            let pv = if (12..14).contains(&hour) { 100 } else { 0 };
            let port = 150;
            let mut s = Sample::empty(dev.clone(), at);
            s.soc = Some(Percent(50));
            s.bat_power = Some(Watts(port - pv));
            s.grid_power = Some(Watts(port));
            s.pv_power = Some(Watts(pv));
            s.ct_connected = Some(true);
            s.ct_power = Some(Watts(load as i32 - port));
            if hour == 19 && k % 6 == 0 {
                s.ct_power = Some(Watts(99_000));
            }
            s
        })
        .collect()
}

async fn store_history(s: &dyn Store) {
    let dev = DeviceId::parse("house_dev").unwrap();
    for (day, colour, load) in history() {
        s.insert_samples(&day_samples(&dev, day, load))
            .await
            .unwrap();
        s.upsert_tempo_day(&TempoDayRecord {
            date: day,
            colour: colour.as_str().into(),
            source: "rte".into(),
            fetched_at: paris_instant(day, NaiveTime::from_hms_opt(10, 30, 0).unwrap()),
        })
        .await
        .unwrap();
    }
}

fn venus(soc: f64) -> PlanBattery {
    PlanBattery {
        device: "house_dev".into(),
        soc,
        capacity_wh: 5120.0,
        min_soc: 12.0,
        max_soc: 100.0,
        max_charge_w: 2500.0,
        max_discharge_w: 2500.0,
        load_share: 1.0,
    }
}

/// Today (blue) and tomorrow (red), both published, with `model`'s profiles.
fn plan_with(model: &ConsumptionModel) -> BatteryPlan {
    let days: Vec<DayOutlook> = [
        (date(2026, 1, 15), TempoColour::Blue),
        (date(2026, 1, 16), TempoColour::Red),
    ]
    .into_iter()
    .map(|(d, c)| DayOutlook {
        date: d,
        colour: ColourInfo::Known {
            colour: c,
            source: "rte".into(),
        },
        load: model.day_loads(d, &DEFAULT_LOAD_PROFILE_W),
    })
    .collect();
    let params = PlannerParams {
        tariff: Tariff::default(),
        efficiency: 0.9,
        margin: 0.1,
        fail_safe_red: false,
    };
    plan(now(), &days, None, &venus(20.0), &params).unwrap()
}

fn tonight_target(p: &BatteryPlan) -> u8 {
    match p.slots[1].action {
        SlotAction::Charge { target_soc, .. } => target_soc,
        ref other => panic!("tonight should charge before the red day: {other:?}"),
    }
}

async fn consumption_story(s: &dyn Store) {
    store_history(s).await;
    let model = consumption::relearn(s, now()).await.unwrap();
    assert_eq!(model.to, date(2026, 1, 14));
    assert_eq!(model.from, date(2026, 1, 15) - Duration::days(LEARN_DAYS));
    assert_eq!((model.days_used, model.days_skipped), (9, 0), "{model:#?}");
    let red = model.learned(DayKind::Weekday, TempoColour::Red).unwrap();
    assert_eq!(red.days, 5);
    for h in [0, 8, 12, 19, 23] {
        let w = red.load_w[h].unwrap();
        assert!((w - 200.0).abs() < 1e-6, "red hour {h}: {w} W");
    }
    let pv = red.pv_w.expect("the samples carry PV power");
    assert!((pv[12].unwrap() - 100.0).abs() < 1e-6 && pv[20] == Some(0.0));
    assert!(model.learned(DayKind::Weekday, TempoColour::Blue).is_some());
    assert!(
        model
            .learned(DayKind::Weekend, TempoColour::White)
            .is_none()
    );

    // Stored as a document, read back as it is the same day (no recompute).
    let doc = s.document(LOAD_PROFILE_DOC).await.unwrap().expect("stored");
    assert_eq!(doc["profiles"]["weekday_red"]["days"], 5, "{doc}");
    let later = now() + Duration::hours(2);
    assert_eq!(consumption::current(s, later).await, model);

    // The planner with the configured profile fills the battery for 6.0 kWh of red HP; with
    // the learned one it charges for 200 W less the noon PV: 16 h × 200 W − 2 h × 100 W.
    let configured = plan_with(&ConsumptionModel::empty(now(), model.from, model.to));
    let learned = plan_with(&model);
    assert_eq!(tonight_target(&configured), 100);
    assert!(configured.slots[1].reason.ends_with("; configured load"));
    // 3.0 kWh of 5.12 kWh above the 12 % floor is 58.6 points; the part step still covers red
    // HP, so 71 %.
    assert_eq!(tonight_target(&learned), 71, "{:#?}", learned.slots);
    assert!(tonight_target(&learned) < tonight_target(&configured));
    assert_eq!(
        learned.slots[1].reason,
        "charge to 71 % tonight: tomorrow red (rte), 3.0 kWh expected in red HP; learned load \
         (5 days)"
    );
    // Today's blue peak hours come from the three blue weekdays.
    assert!(
        learned.slots[0].reason.ends_with("; learned load (3 days)"),
        "{}",
        learned.slots[0].reason
    );
    assert_eq!(
        model
            .day_load(
                date(2026, 1, 17),
                TempoColour::White,
                &DEFAULT_LOAD_PROFILE_W
            )
            .source,
        LoadSource::Configured
    );
}

#[tokio::test]
async fn consumption_model_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let settings = DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("c.db").display()),
        ..Default::default()
    };
    let s = store::open(&settings).await.unwrap();
    assert_eq!(s.backend(), Backend::Sqlite);
    consumption_story(s.as_ref()).await;
    drop(s);
    // A restart keeps the model: the reopened store hands back the same document.
    let s = store::open(&settings).await.unwrap();
    let back = consumption::stored(s.as_ref())
        .await
        .expect("survives a restart");
    assert_eq!(back.days_used, 9);
    assert_eq!(consumption::current(s.as_ref(), now()).await, back);
    // The next Paris day it is recomputed over the window moved by one day (Thursday 15 Jan,
    // blue, has no samples: not counted).
    let next = consumption::current(s.as_ref(), now() + Duration::days(1)).await;
    assert_eq!(next.to, date(2026, 1, 15));
    assert!(next.computed_at > back.computed_at);
    assert_eq!(next.days_used, 9);
    // A document that is not a model is not used: the configured profile takes over.
    s.put_document(LOAD_PROFILE_DOC, &serde_json::json!({"profiles": 3}))
        .await
        .unwrap();
    assert_eq!(consumption::stored(s.as_ref()).await, None);
}

async fn on_pg(db: TestPgDb, backend: Backend) {
    let settings = DatabaseSettings {
        url: db.url.clone(),
        // The story's samples are from January: keep TimescaleDB's background policies off them.
        retention_days: 36_500,
        aggregate_retention_days: 36_500,
        compress_after_days: 36_500,
        ..Default::default()
    };
    let s = store::open(&settings).await.unwrap();
    assert_eq!(s.backend(), backend);
    consumption_story(s.as_ref()).await;
    drop(s);
    db.drop_now().await;
}

#[tokio::test]
async fn consumption_model_on_postgres() {
    on_pg(
        TestPgDb::create("tempo_consumption").await,
        Backend::Postgres,
    )
    .await;
}

#[tokio::test]
async fn consumption_model_on_timescale() {
    if let Some(db) = TestPgDb::create_timescale("tempo_consumption_ts").await {
        on_pg(db, Backend::Timescale).await;
    }
}
