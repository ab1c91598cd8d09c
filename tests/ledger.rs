//! The € ledger for a simulated red day whose energy flows are known: the simulator's battery
//! model runs minute by minute (Passive discharge 1 kW 06:00–08:00, a charge of 2 kW at noon for
//! 30 min, 0.5 kW 22:00–02:00), its AC power and lifetime counters become samples, stored on
//! SQLite, plain PostgreSQL and TimescaleDB; the ledger reads the store's hourly energy history
//! (the continuous aggregate on TimescaleDB) and must match the flows to the Wh and the € to the
//! cent on each. A counter reset during the day is not counted as energy. The book closes a
//! stored day and sums the season.

mod support;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Timelike, Utc};
use marstek_bridge::domain::{DeviceId, Mode, Sample, WattHours, Watts};
use marstek_bridge::simulator::model::{ModelState, SimProfile};
use marstek_bridge::store::{Backend, Bucket, DatabaseSettings, EnergyBucket, SqliteStore, Store};
use marstek_bridge::tempo::{
    TEMPO_TZ, Tariff, TempoColour, day_ledger, paris_instant, tempo_day_span,
};
use support::TestPgDb;

fn at(d: NaiveDate, h: u32, m: u32) -> DateTime<Utc> {
    paris_instant(d, NaiveTime::from_hms_opt(h, m, 0).unwrap())
}

/// The simulated day: one sample a minute from 05:59 to 06:01 the next day.
fn simulated_day(date: NaiveDate, reset_at_15: bool) -> Vec<Sample> {
    let spec = SimProfile::VenusE3.spec();
    let mut t = at(date, 5, 59);
    let end = at(date + Duration::days(1), 6, 1);
    let mut s = ModelState::new(&spec, 80.0, t);
    let dev = DeviceId::parse("bat1").unwrap();
    let mut out = Vec::new();
    let mut offset = (0.0, 0.0);
    while t <= end {
        let local = t.with_timezone(&TEMPO_TZ);
        let minute = local.hour() * 60 + local.minute();
        let power = match minute {
            m if (360..480).contains(&m) && local.date_naive() == date => 1000,
            m if (720..750).contains(&m) => -2000,
            m if !(120..22 * 60).contains(&m) => -500,
            _ => 0,
        };
        if power == 0 {
            s.mode = Mode::Manual;
        } else {
            s.mode = Mode::Passive;
            s.passive_power = power;
            s.passive_until = Some(t + Duration::minutes(5));
        }
        if reset_at_15 && t == at(date, 15, 0) {
            // The firmware restarted its counters (idle at that time: no energy lost).
            offset = (s.in_wh, s.out_wh);
        }
        let mut sample = Sample::empty(dev.clone(), t);
        sample.total_grid_input_energy = Some(WattHours(s.in_wh - offset.0));
        sample.total_grid_output_energy = Some(WattHours(s.out_wh - offset.1));
        sample.grid_power = Some(Watts(s.ongrid().round() as i32));
        out.push(sample);
        let next = t + Duration::minutes(1);
        s.advance(&spec, next, TEMPO_TZ);
        t = next;
    }
    out
}

fn red_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2027, 1, 12).unwrap()
}

fn assert_known_flows(l: &marstek_bridge::tempo::DayLedger) {
    // HP: 2.000 kWh delivered (1 kW × 2 h), 1.000 kWh drawn (2 kW × 0.5 h); HC: 2.000 kWh drawn.
    assert_eq!(l.discharged_hp_kwh, 2.0, "{l:?}");
    assert_eq!(l.discharged_hc_kwh, 0.0, "{l:?}");
    assert_eq!(l.charged_hp_kwh, 1.0, "{l:?}");
    assert_eq!(l.charged_hc_kwh, 2.0, "{l:?}");
    // Red: 1 × 0.7295 + 2 × 0.1615 = 1.0525 € spent; 2 × 0.7295 = 1.459 € avoided.
    assert_eq!(l.charge_cost_eur, 1.05);
    assert_eq!(l.avoided_eur, 1.46);
    assert_eq!(l.saved_eur, 0.41);
    assert_eq!(l.cycles, 0.391);
    // 1.0525 € / 2 kWh = 0.52625 €/kWh (the last digit is float rounding).
    assert!(
        (l.cost_per_cycled_kwh.unwrap() - 0.52625).abs() < 1e-4,
        "{l:?}"
    );
    assert_eq!(l.colour, TempoColour::Red);
}

/// The hourly energy history of the simulated day as `store` computes it.
async fn hours_of(store: &dyn Store, samples: &[Sample]) -> Vec<EnergyBucket> {
    store.insert_samples(samples).await.unwrap();
    let (from, to) = tempo_day_span(red_day());
    let hours = store
        .energy_history(&DeviceId::parse("bat1").unwrap(), from, to, Bucket::Hour)
        .await
        .unwrap();
    assert_eq!(hours.len(), 24, "{} hours", hours.len());
    hours
}

/// The known flows to the cent from `store`'s hourly history, red and blue.
async fn ledger_story(store: &dyn Store, reset_at_15: bool) {
    let hours = hours_of(store, &simulated_day(red_day(), reset_at_15)).await;
    let l = day_ledger(
        "bat1",
        red_day(),
        TempoColour::Red,
        &hours,
        &Tariff::default(),
        5120.0,
    );
    assert_known_flows(&l);
    // The same flows on a blue day: the noon charge costs less, the discharge saves less.
    let blue = day_ledger(
        "bat1",
        red_day(),
        TempoColour::Blue,
        &hours,
        &Tariff::default(),
        5120.0,
    );
    // 2 × 0.1654 − (1 × 0.1654 + 2 × 0.1356) = 0.3308 − 0.4366 = −0.1058 €.
    assert_eq!(blue.saved_eur, -0.11);
    // Hours of the neighbouring days do not leak in.
    let next = day_ledger(
        "bat1",
        red_day() + Duration::days(1),
        TempoColour::Red,
        &hours,
        &Tariff::default(),
        5120.0,
    );
    assert_eq!(next.saved_eur, 0.0);
    assert_eq!(next.cost_per_cycled_kwh, None);
}

async fn sqlite(dir: &tempfile::TempDir, name: &str) -> SqliteStore {
    SqliteStore::connect(&DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join(name).display()),
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn simulated_red_day_to_the_cent_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    ledger_story(&sqlite(&dir, "ledger.db").await, false).await;
}

#[tokio::test]
async fn simulated_red_day_to_the_cent_on_postgres() {
    let db = TestPgDb::create("ledger_pg").await;
    let store = db.open_store().await;
    assert_eq!(store.backend(), Backend::Postgres);
    ledger_story(store.as_ref(), false).await;
}

#[tokio::test]
async fn simulated_red_day_to_the_cent_on_timescale() {
    let Some(db) = TestPgDb::create_timescale("ledger_ts").await else {
        return;
    };
    let store = db.open_store().await;
    assert_eq!(store.backend(), Backend::Timescale);
    ledger_story(store.as_ref(), false).await;
}

/// The ledger reads power-based hourly energy, so a firmware counter reset changes nothing.
#[tokio::test]
async fn a_counter_reset_is_not_energy() {
    let dir = tempfile::tempdir().unwrap();
    ledger_story(&sqlite(&dir, "reset.db").await, true).await;
}

/// The book in the bridge: yesterday's simulated red day closed and stored as a document, the
/// season total summed from the stored days, the retained JSON ready for `<base>/bridge/ledger`.
#[tokio::test]
async fn the_book_closes_yesterday_and_sums_the_season() {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::sync::Arc;

    use marstek_bridge::control::Fleet;
    use marstek_bridge::domain::{BatteryRef, DeviceLimits};
    use marstek_bridge::marstek::{DeviceSpec, MarstekBattery, PollingSettings, Transport};
    use marstek_bridge::simulator::{SimConfig, Simulator};
    use marstek_bridge::store::TempoDayRecord;
    use marstek_bridge::tempo::{LedgerBook, TempoSettings};
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::connect(&DatabaseSettings {
            url: format!("sqlite://{}", dir.path().join("book.db").display()),
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let transport = Transport::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), &cancel)
        .await
        .unwrap();
    let (tx, _rx) = tokio::sync::broadcast::channel(16);
    let battery = MarstekBattery::spawn(
        transport,
        DeviceSpec {
            id: DeviceId::parse("bat1").unwrap(),
            addr: sim.addrs()[0],
            limits: DeviceLimits::default(),
        },
        PollingSettings::default(),
        tx,
        cancel.clone(),
        &tracker,
    );
    let fleet = Fleet::new([Arc::new(battery) as BatteryRef]);
    // Yesterday: the simulated red day; the day before: a stored ledger of 1.00 € saved.
    store
        .insert_samples(&simulated_day(red_day(), false))
        .await
        .unwrap();
    store
        .upsert_tempo_day(&TempoDayRecord {
            date: red_day(),
            colour: "red".into(),
            source: "rte".into(),
            fetched_at: Utc::now(),
        })
        .await
        .unwrap();
    let mut earlier = day_ledger(
        "bat1",
        red_day() - Duration::days(1),
        TempoColour::Blue,
        &[],
        &Tariff::default(),
        5120.0,
    );
    earlier.saved_eur = 1.0;
    store
        .put_document(
            "ledger/bat1/2027-01-11",
            &serde_json::to_value(&earlier).unwrap(),
        )
        .await
        .unwrap();
    let settings = TempoSettings {
        capacity_wh: Some(5120),
        ..Default::default()
    };
    let book = LedgerBook::new(settings, store.clone(), fleet);
    let rx = book.subscribe();
    let now = at(red_day() + Duration::days(1), 6, 30);
    let v = book.refresh(now).await;
    let stored = store
        .document("ledger/bat1/2027-01-12")
        .await
        .unwrap()
        .expect("yesterday stored");
    let l: marstek_bridge::tempo::DayLedger = serde_json::from_value(stored).unwrap();
    assert_known_flows(&l);
    // Today has no colour cached yet: nothing today; the season is 1.00 + 0.41.
    assert_eq!(v["today_saved_eur"], serde_json::json!(0.0), "{v}");
    assert_eq!(v["season_saved_eur"], serde_json::json!(1.41), "{v}");
    assert_eq!(
        v["batteries"]["bat1"]["season_saved_eur"],
        serde_json::json!(1.41)
    );
    // Where each total restarted (Home Assistant's last_reset): 06:00 Paris of today's Tempo
    // day and of Sep 1, with the Paris offset.
    let instant = |k: &str| {
        chrono::DateTime::parse_from_rfc3339(v[k].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{k}: {e} in {v}"))
    };
    assert_eq!(
        instant("today_start"),
        at(red_day() + Duration::days(1), 6, 0)
    );
    let sep1 = NaiveDate::from_ymd_opt(2026, 9, 1).unwrap();
    assert_eq!(instant("season_start"), at(sep1, 6, 0));
    assert_eq!(v["today_start"], "2027-01-13T06:00:00+01:00", "{v}");
    assert_eq!(*rx.borrow(), v, "published on the watch channel");
    cancel.cancel();
    tracker.close();
}
