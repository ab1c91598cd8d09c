//! The energy-history story (`Store::energy_history`), one story run on SQLite, plain
//! PostgreSQL and TimescaleDB (continuous aggregates): hourly and daily buckets of SOC
//! min/mean/max and energy charged, discharged, drawn from and delivered to the grid, computed
//! by hand here from the documented definition; unaligned ranges, other batteries and samples
//! without power do not leak in. On the backends without aggregates, pruning raw samples keeps
//! the history (hours are rolled up first).

mod support;

use chrono::{DateTime, Duration, TimeZone, Utc};
use marstek_bridge::domain::{DeviceId, Percent, Sample, Watts};
use marstek_bridge::store::{self, Backend, Bucket, DatabaseSettings, EnergyBucket, Store};
use support::TestPgDb;

fn day0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 0, 0, 0).unwrap()
}

fn hour(h: i64) -> DateTime<Utc> {
    day0() + Duration::hours(h)
}

fn sample(d: &DeviceId, at: DateTime<Utc>, soc: u8, bat: i32, grid: i32) -> Sample {
    let mut s = Sample::empty(d.clone(), at);
    s.soc = Some(Percent(soc));
    s.bat_power = Some(Watts(bat));
    s.grid_power = Some(Watts(grid));
    s
}

/// The story's samples for `d` (and a second battery that must never show up).
fn samples(d: &DeviceId, other: &DeviceId) -> Vec<Sample> {
    let mut v = Vec::new();
    // 10:00–10:59, one a minute: charging 1200 W from the grid at 1250 W, SOC 20 → 49.
    for m in 0..60 {
        v.push(sample(
            d,
            hour(10) + Duration::minutes(m),
            20 + (m / 2) as u8,
            -1200,
            -1250,
        ));
    }
    // 11:00–11:58, every 2 min: discharging 800 W / charging 400 W in turn; grid +780 / −420.
    for k in 0..30 {
        let (bat, grid) = if k % 2 == 0 { (800, 780) } else { (-400, -420) };
        v.push(sample(
            d,
            hour(11) + Duration::minutes(2 * k),
            49 - k as u8,
            bat,
            grid,
        ));
    }
    // 12:00 one full sample, 12:30 one without any reading: the power mean ignores the latter.
    v.push(sample(d, hour(12), 19, -300, -320));
    v.push(Sample::empty(d.clone(), hour(12) + Duration::minutes(30)));
    // Next day 00:00–00:10, one a minute: charging 600 W, grid 650 W.
    for m in 0..11 {
        v.push(sample(d, hour(24) + Duration::minutes(m), 60, -600, -650));
    }
    // Another battery, same hours, other numbers.
    for m in 0..60 {
        v.push(sample(
            other,
            hour(10) + Duration::minutes(m),
            99,
            2500,
            2500,
        ));
    }
    v
}

/// What the documented definition gives, by hand: (start, samples, soc min, soc max, soc mean,
/// charged, discharged, grid in, grid out).
type Expected = (DateTime<Utc>, u64, u8, u8, f64, f64, f64, f64, f64);

fn expected_hours() -> Vec<Expected> {
    let soc_h10: f64 = (0..60).map(|m| f64::from(20 + m / 2)).sum::<f64>() / 60.0;
    let soc_h11: f64 = (0..30).map(|k| f64::from(49 - k)).sum::<f64>() / 30.0;
    vec![
        // Covered time 59 min × 60/59 = 1 h.
        (hour(10), 60, 20, 49, soc_h10, 1200.0, 0.0, 1250.0, 0.0),
        // 58 min × 30/29 = 1 h; mean of the discharging part 400 W, of the charging part 200 W.
        (hour(11), 30, 20, 49, soc_h11, 200.0, 400.0, 210.0, 390.0),
        // 30 min × 2/1 = 1 h at the one reading of 300 W / 320 W.
        (hour(12), 2, 19, 19, 19.0, 300.0, 0.0, 320.0, 0.0),
        // 10 min × 11/10 = 11 min at 600 W / 650 W.
        (
            hour(24),
            11,
            60,
            60,
            60.0,
            600.0 * 11.0 / 60.0,
            0.0,
            650.0 * 11.0 / 60.0,
            0.0,
        ),
    ]
}

fn expected_days() -> Vec<Expected> {
    let h = expected_hours();
    // Every SOC of the first day (hours 10, 11 and the one reading at 12:00), equally weighted.
    let socs: Vec<f64> = (0..60)
        .map(|m| f64::from(20 + m / 2))
        .chain((0..30).map(|k| f64::from(49 - k)))
        .chain([19.0])
        .collect();
    let soc_mean = socs.iter().sum::<f64>() / socs.len() as f64;
    vec![
        (day0(), 92, 19, 49, soc_mean, 1700.0, 400.0, 1780.0, 390.0),
        (h[3].0, 11, 60, 60, 60.0, h[3].5, 0.0, h[3].7, 0.0),
    ]
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

fn check(got: &[EnergyBucket], want: &[Expected], what: &str) {
    assert_eq!(
        got.iter().map(|b| b.start).collect::<Vec<_>>(),
        want.iter().map(|w| w.0).collect::<Vec<_>>(),
        "{what}: bucket starts"
    );
    for (g, w) in got.iter().zip(want) {
        let ctx = format!("{what} at {}: {g:?}", w.0);
        assert_eq!(g.samples, w.1, "{ctx}");
        assert_eq!(g.soc_min, Some(Percent(w.2)), "{ctx}");
        assert_eq!(g.soc_max, Some(Percent(w.3)), "{ctx}");
        assert!(close(g.soc_mean.unwrap_or(-1.0), w.4), "soc mean {ctx}");
        assert!(close(g.charged.0, w.5), "charged {ctx}");
        assert!(close(g.discharged.0, w.6), "discharged {ctx}");
        assert!(close(g.grid_in.0, w.7), "grid in {ctx}");
        assert!(close(g.grid_out.0, w.8), "grid out {ctx}");
    }
}

/// TimescaleDB: what the refresh policies do for recent hours, done now for these old ones
/// (samples older than an aggregate's last refresh appear once it is refreshed again).
async fn refresh_aggregates(url: &str) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    for view in ["battery_hourly", "battery_daily"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CALL refresh_continuous_aggregate('{view}', NULL, NULL)"
        )))
        .execute(&mut c)
        .await
        .unwrap();
    }
}

async fn energy_story(store: &dyn Store, timescale_url: Option<&str>) {
    let d = DeviceId::parse("energy_dev").unwrap();
    let other = DeviceId::parse("energy_other").unwrap();
    let all = samples(&d, &other);
    assert_eq!(store.insert_samples(&all).await.unwrap(), all.len() as u64);
    if let Some(url) = timescale_url {
        refresh_aggregates(url).await;
    }

    // Unaligned range: the buckets whose start lies in [09:30, next day 00:05).
    let hours = store
        .energy_history(
            &d,
            hour(9) + Duration::minutes(30),
            hour(24) + Duration::minutes(5),
            Bucket::Hour,
        )
        .await
        .unwrap();
    check(&hours, &expected_hours(), "hourly");
    let days = store
        .energy_history(&d, day0(), day0() + Duration::days(2), Bucket::Day)
        .await
        .unwrap();
    check(&days, &expected_days(), "daily");

    // Ranges that hold no bucket start, and a battery without samples.
    let none = [
        (hour(11), hour(10), Bucket::Hour),
        (
            hour(10) + Duration::minutes(1),
            hour(10) + Duration::minutes(59),
            Bucket::Hour,
        ),
        (hour(1), hour(2), Bucket::Day),
    ];
    for (from, to, b) in none {
        assert!(
            store
                .energy_history(&d, from, to, b)
                .await
                .unwrap()
                .is_empty(),
            "{from}..{to}"
        );
    }
    let nobody = DeviceId::parse("energy_nobody").unwrap();
    assert!(
        store
            .energy_history(&nobody, day0(), hour(48), Bucket::Day)
            .await
            .unwrap()
            .is_empty()
    );
    let o = store
        .energy_history(&other, day0(), hour(48), Bucket::Hour)
        .await
        .unwrap();
    assert_eq!(o.len(), 1);
    assert!(
        close(o[0].discharged.0, 2500.0) && close(o[0].grid_out.0, 2500.0),
        "{o:?}"
    );

    if store.backend() != Backend::Timescale {
        // Raw rows before the second day go; the history of the first day stays.
        let pruned = store
            .prune_samples(hour(12) + Duration::minutes(15))
            .await
            .unwrap();
        assert_eq!(pruned, 60 + 30 + 1 + 60);
        let after = store
            .energy_history(&d, day0(), hour(25), Bucket::Hour)
            .await
            .unwrap();
        check(&after, &expected_hours(), "hourly after pruning");
        let after = store
            .energy_history(&d, day0(), day0() + Duration::days(2), Bucket::Day)
            .await
            .unwrap();
        check(&after, &expected_days(), "daily after pruning");
    }
}

#[tokio::test]
async fn energy_history_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let settings = DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("e.db").display()),
        ..Default::default()
    };
    let s = store::open(&settings).await.unwrap();
    assert_eq!(s.backend(), Backend::Sqlite);
    energy_story(s.as_ref(), None).await;
}

async fn energy_on_pg(db: TestPgDb, backend: Backend) {
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
    let ts = (backend == Backend::Timescale).then_some(db.url.as_str());
    energy_story(s.as_ref(), ts).await;
    drop(s);
    // The aggregates and the raw table give the same answer (the same SQL builds both).
    let pg = store::PgStore::connect(&settings).await.unwrap();
    let d = DeviceId::parse("energy_dev").unwrap();
    for b in [Bucket::Hour, Bucket::Day] {
        let (from, to) = (day0(), day0() + Duration::days(2));
        let aggregate = pg.energy_history(&d, from, to, b).await.unwrap();
        let raw = pg.energy_history_from_raw(&d, from, to, b).await.unwrap();
        let want: Vec<Expected> = if b == Bucket::Hour {
            expected_hours()
        } else {
            expected_days()
        };
        check(&aggregate, &want, "energy_history");
        check(&raw, &want, "energy_history_from_raw");
    }
    drop(pg);
    db.drop_now().await;
}

#[tokio::test]
async fn energy_history_on_postgres() {
    energy_on_pg(TestPgDb::create("store_energy").await, Backend::Postgres).await;
}

#[tokio::test]
async fn energy_history_on_timescale() {
    if let Some(db) = TestPgDb::create_timescale("store_energy_ts").await {
        energy_on_pg(db, Backend::Timescale).await;
    }
}
