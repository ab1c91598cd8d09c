//! TimescaleDB specifics and upgrades. On TimescaleDB (`TEST_TIMESCALE_URL`, set by `.ci/run`):
//! the hypertable, its compression settings (segment by device) and every policy carry the
//! configured intervals, a changed setting replaces its policy, and the aggregate refresh
//! policies neither run at start-up nor are replaced by a restart. On all three backends: a
//! database made by the previous release (migration 0001 only, plus that release's TimescaleDB
//! step with compressed chunks) is upgraded without losing a row, its whole history appears in
//! the energy history, and that history outlives the raw rows (dropped chunks / pruning).

mod support;

use chrono::{DateTime, Duration, Utc};
use marstek_bridge::domain::{Celsius, DeviceId, Mode, Percent, Sample, WattHours, Watts};
use marstek_bridge::store::{self, Backend, Bucket, DatabaseSettings, EnergyBucket, Store};
use sqlx::Connection;
use support::TestPgDb;

/// (policy, relation, interval(s)) of every TimescaleDB job on our relations.
async fn policies(url: &str) -> Vec<(String, String, String)> {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_as(
        "SELECT proc_name::text, hypertable_name::text, \
         coalesce(config->>'compress_after', config->>'drop_after', \
                  (config->>'start_offset') || ' .. ' || (config->>'end_offset')) \
         FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL ORDER BY 1, 2",
    )
    .fetch_all(&mut c)
    .await
    .unwrap()
}

/// (job id, whether its next run is at least 10 minutes away) of each aggregate refresh policy.
async fn refresh_jobs(url: &str) -> Vec<(i32, bool)> {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_as(
        "SELECT job_id, coalesce(next_start > now() + INTERVAL '10 minutes', false) \
         FROM timescaledb_information.jobs \
         WHERE proc_name = 'policy_refresh_continuous_aggregate' ORDER BY hypertable_name",
    )
    .fetch_all(&mut c)
    .await
    .unwrap()
}

/// (column, segment-by index, order-by index, order-by ascending).
type CompressionColumn = (String, Option<i16>, Option<i16>, Option<bool>);

fn job_ids(jobs: &[(i32, bool)]) -> Vec<i32> {
    jobs.iter().map(|(id, _)| *id).collect()
}

fn row(p: &str, r: &str, i: &str) -> (String, String, String) {
    (p.to_string(), r.to_string(), i.to_string())
}

#[tokio::test]
async fn timescale_hypertable_compression_and_policies_follow_the_settings() {
    let Some(db) = TestPgDb::create_timescale("ts_policies").await else {
        return;
    };
    let mut settings = DatabaseSettings {
        url: db.url.clone(),
        retention_days: 30,
        compress_after_days: 3,
        aggregate_retention_days: 400,
        ..Default::default()
    };
    let s = store::open(&settings).await.unwrap();
    assert_eq!(s.backend(), Backend::Timescale);
    drop(s);
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let dims: Vec<(String, String)> = sqlx::query_as(
        "SELECT hypertable_name::text, column_name::text FROM timescaledb_information.dimensions",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert!(
        dims.contains(&("battery_status".into(), "time".into())),
        "battery_status is a hypertable on time: {dims:?}"
    );
    let compression: Vec<CompressionColumn> = sqlx::query_as(
        "SELECT attname::text, segmentby_column_index, orderby_column_index, orderby_asc \
         FROM timescaledb_information.compression_settings \
         WHERE hypertable_name = 'battery_status' ORDER BY attname",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(
        compression,
        [
            ("device_id".into(), Some(1), None, None),
            ("time".into(), None, Some(1), Some(false)),
        ],
        "segment by device, newest first"
    );
    let aggregates: Vec<(String, bool)> = sqlx::query_as(
        "SELECT view_name::text, materialized_only \
         FROM timescaledb_information.continuous_aggregates ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(
        aggregates,
        [
            ("battery_daily".into(), false),
            ("battery_hourly".into(), false)
        ],
        "real-time continuous aggregates"
    );
    let refresh = "policy_refresh_continuous_aggregate";
    let expected = |retention: &str, compress: &str, aggregates: &str| {
        vec![
            row("policy_compression", "battery_status", compress),
            row(refresh, "battery_daily", "3 days .. 01:00:00"),
            row(refresh, "battery_hourly", "3 days .. 01:00:00"),
            row("policy_retention", "battery_daily", aggregates),
            row("policy_retention", "battery_hourly", aggregates),
            row("policy_retention", "battery_status", retention),
        ]
    };
    assert_eq!(
        policies(&db.url).await,
        expected("30 days", "3 days", "400 days")
    );
    // The refresh policies do not run at once (the step has just filled the aggregates, and a
    // policy refreshing meanwhile makes any other refresh fail with 55P03) ...
    let first = refresh_jobs(&db.url).await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(
        first.iter().all(|(_, later)| *later),
        "first runs a period after start: {first:?}"
    );

    // Changed settings replace the policies at the next start (one of each, new intervals).
    settings.retention_days = 45;
    settings.compress_after_days = 5;
    settings.aggregate_retention_days = 800;
    let s = store::open(&settings).await.unwrap();
    assert_eq!(s.backend(), Backend::Timescale);
    drop(s);
    assert_eq!(
        policies(&db.url).await,
        expected("45 days", "5 days", "800 days")
    );
    // ... and, depending on no setting, they are kept as they are by a restart.
    assert_eq!(job_ids(&refresh_jobs(&db.url).await), job_ids(&first));
    c.close().await.unwrap();
    db.drop_now().await;
}

const DEVICES: [&str; 2] = ["upgrade_a", "upgrade_b"];

/// What the previous release stored: every 15 min for 14 days, ending 20 days ago (whole
/// hours; whole chunks older than the compression and drop thresholds used below).
fn old_samples() -> Vec<Sample> {
    let end = Bucket::Hour.floor(Utc::now()) - Duration::days(20);
    let start = end - Duration::days(14);
    let mut v = Vec::new();
    for (d, name) in DEVICES.iter().enumerate() {
        let dev = DeviceId::parse(name).unwrap();
        let mut t = start;
        let mut i = d as i64 * 7;
        while t < end {
            let mut s = Sample::empty(dev.clone(), t);
            s.soc = Some(Percent((i % 101) as u8));
            s.bat_power = Some(Watts(((i * 37) % 2000 - 1000) as i32));
            s.grid_power = Some(Watts(((i * 37) % 2000 - 1020) as i32));
            s.temperature = Some(Celsius(20.5 + (i % 10) as f64));
            s.total_grid_input_energy = Some(WattHours(1000.0 + i as f64 * 12.25));
            s.mode = Some(if i % 3 == 0 {
                Mode::Auto
            } else {
                Mode::Passive
            });
            v.push(s);
            t += Duration::minutes(15);
            i += 1;
        }
    }
    v
}

/// The previous release's TimescaleDB step, as it ran at every start.
const OLD_TIMESCALE_STEP: [&str; 5] = [
    "CREATE EXTENSION IF NOT EXISTS timescaledb",
    "SELECT create_hypertable('battery_status', 'time', if_not_exists => TRUE, \
     migrate_data => TRUE, create_default_indexes => FALSE)",
    "ALTER TABLE battery_status SET (timescaledb.compress, \
     timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'time DESC')",
    "SELECT add_compression_policy('battery_status', make_interval(days => 7))",
    "SELECT add_retention_policy('battery_status', make_interval(days => 90))",
];

/// A PostgreSQL database as the previous release left it (with its TimescaleDB step when
/// `timescale`, and the older chunks compressed).
async fn old_pg_database(url: &str, timescale: bool, samples: &[Sample]) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::migrate!("./migrations/postgres")
        .run_to(1, &pool)
        .await
        .unwrap();
    if timescale {
        for sql in OLD_TIMESCALE_STEP {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
    }
    let col = |f: fn(&Sample) -> Option<f64>| samples.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO battery_status (device_id, time, soc, bat_power, grid_power, temperature, \
         total_grid_input_energy, mode) SELECT * FROM UNNEST($1::text[], $2::timestamptz[], \
         $3::smallint[], $4::int[], $5::int[], $6::float8[], $7::float8[], $8::text[])",
    )
    .bind(
        samples
            .iter()
            .map(|s| s.device.0.clone())
            .collect::<Vec<_>>(),
    )
    .bind(samples.iter().map(|s| s.at).collect::<Vec<_>>())
    .bind(
        samples
            .iter()
            .map(|s| s.soc.map(|p| i16::from(p.0)))
            .collect::<Vec<_>>(),
    )
    .bind(
        samples
            .iter()
            .map(|s| s.bat_power.map(|w| w.0))
            .collect::<Vec<_>>(),
    )
    .bind(
        samples
            .iter()
            .map(|s| s.grid_power.map(|w| w.0))
            .collect::<Vec<_>>(),
    )
    .bind(col(|s| s.temperature.map(|c| c.0)))
    .bind(col(|s| s.total_grid_input_energy.map(|e| e.0)))
    .bind(
        samples
            .iter()
            .map(|s| s.mode.map(|m| m.as_str()))
            .collect::<Vec<_>>(),
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO documents (key, value, updated_at) VALUES ('precharge_plan', '{\"v\": 1}', now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    if timescale {
        let compressed: Vec<String> = sqlx::query_scalar(
            "SELECT compress_chunk(c)::text FROM show_chunks('battery_status', \
             older_than => now() - INTERVAL '10 days') c",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(!compressed.is_empty(), "some old chunks are compressed");
    }
    pool.close().await;
}

/// The same on SQLite.
async fn old_sqlite_database(url: &str, samples: &[Sample]) {
    let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
        .await
        .unwrap();
    sqlx::migrate!("./migrations/sqlite")
        .run_to(1, &pool)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    for s in samples {
        sqlx::query(
            "INSERT INTO battery_status (device_id, time, soc, bat_power, grid_power, \
             temperature, total_grid_input_energy, mode) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(s.device.as_str())
        .bind(s.at.timestamp_micros())
        .bind(s.soc.map(|p| i64::from(p.0)))
        .bind(s.bat_power.map(|w| w.0))
        .bind(s.grid_power.map(|w| w.0))
        .bind(s.temperature.map(|c| c.0))
        .bind(s.total_grid_input_energy.map(|e| e.0))
        .bind(s.mode.map(|m| m.as_str()))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO documents (key, value, updated_at) VALUES ('precharge_plan', '{\"v\": 1}', 0)",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    pool.close().await;
}

/// Hourly and daily history of every device over the samples' span.
async fn history(s: &dyn Store, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<EnergyBucket> {
    let mut out = Vec::new();
    for d in DEVICES {
        let d = DeviceId::parse(d).unwrap();
        for b in [Bucket::Hour, Bucket::Day] {
            out.extend(s.energy_history(&d, from, to, b).await.unwrap());
        }
    }
    out
}

fn assert_same_history(got: &[EnergyBucket], want: &[EnergyBucket], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: bucket count");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
    for (g, w) in got.iter().zip(want) {
        let same = g.start == w.start
            && g.samples == w.samples
            && g.soc_min == w.soc_min
            && g.soc_max == w.soc_max
            && close(g.soc_mean.unwrap_or(-1.0), w.soc_mean.unwrap_or(-1.0))
            && close(g.charged.0, w.charged.0)
            && close(g.discharged.0, w.discharged.0)
            && close(g.grid_in.0, w.grid_in.0)
            && close(g.grid_out.0, w.grid_out.0);
        assert!(same, "{what}:\n got {g:?}\nwant {w:?}");
    }
}

/// Opens the old database with this release and checks that nothing was lost, then that the
/// history outlives the raw rows.
async fn upgrade_story(url: &str, backend: Backend, samples: &[Sample]) {
    let (from, to) = (
        samples[0].at - Duration::days(1),
        Utc::now() + Duration::hours(1),
    );
    // The reference: the same samples written by this release into a fresh SQLite file.
    let dir = tempfile::tempdir().unwrap();
    let reference = store::open(&DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("ref.db").display()),
        ..Default::default()
    })
    .await
    .unwrap();
    reference.insert_samples(samples).await.unwrap();
    let want = history(reference.as_ref(), from, to).await;
    assert!(want.len() > 2 * 14 * 24, "{} buckets", want.len());

    let settings = DatabaseSettings {
        url: url.to_string(),
        ..Default::default()
    };
    let s = store::open(&settings).await.unwrap();
    assert_eq!(s.backend(), backend);
    let mut stored = Vec::new();
    for d in DEVICES {
        let d = DeviceId::parse(d).unwrap();
        stored.extend(s.sample_history(&d, from, to).await.unwrap());
    }
    assert_eq!(stored.len(), samples.len(), "every row is still there");
    assert!(stored == samples, "every field of every row is unchanged");
    assert_eq!(
        s.document("precharge_plan").await.unwrap(),
        Some(serde_json::json!({"v": 1}))
    );
    assert_same_history(&history(s.as_ref(), from, to).await, &want, "after upgrade");

    // Raw rows older than 5 days go (as retention would); the history stays.
    if backend == Backend::Timescale {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(
            "SELECT drop_chunks('battery_status', older_than => now() - INTERVAL '5 days')",
        )
        .execute(&mut c)
        .await
        .unwrap();
        // The refresh policies run now must not erase what they can no longer recompute.
        let jobs: Vec<i32> = sqlx::query_scalar(
            "SELECT job_id FROM timescaledb_information.jobs \
             WHERE proc_name = 'policy_refresh_continuous_aggregate' ORDER BY hypertable_name DESC",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        assert_eq!(jobs.len(), 2);
        for j in jobs {
            sqlx::query("CALL run_job($1)")
                .bind(j)
                .execute(&mut c)
                .await
                .unwrap();
        }
    } else {
        let pruned = store::prune_expired(s.as_ref(), 5, Utc::now())
            .await
            .unwrap();
        assert_eq!(pruned, samples.len() as u64);
    }
    assert!(
        s.latest_samples().await.unwrap().is_empty(),
        "raw rows gone"
    );
    assert_same_history(
        &history(s.as_ref(), from, to).await,
        &want,
        "after retention",
    );
}

#[tokio::test]
async fn upgrade_from_0001_keeps_everything_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    let samples = old_samples();
    old_sqlite_database(&url, &samples).await;
    upgrade_story(&url, Backend::Sqlite, &samples).await;
}

#[tokio::test]
async fn upgrade_from_0001_keeps_everything_on_postgres() {
    let db = TestPgDb::create("store_upgrade").await;
    let samples = old_samples();
    old_pg_database(&db.url, false, &samples).await;
    upgrade_story(&db.url, Backend::Postgres, &samples).await;
    db.drop_now().await;
}

#[tokio::test]
async fn upgrade_from_0001_keeps_everything_on_timescale() {
    let Some(db) = TestPgDb::create_timescale("store_upgrade_ts").await else {
        return;
    };
    let samples = old_samples();
    old_pg_database(&db.url, true, &samples).await;
    upgrade_story(&db.url, Backend::Timescale, &samples).await;
    db.drop_now().await;
}

/// The compose file's first-start script (`timescaledb/init-bridge-role.sh`) against a fresh
/// database of the TimescaleDB test server: its role runs the whole bridge start-up (migrations,
/// hypertable, aggregates, policies) and history, and is no superuser, cannot create databases
/// or roles.
#[tokio::test]
async fn compose_init_role_is_enough_for_the_bridge_and_no_more() {
    let Some(db) = TestPgDb::create_timescale("ts_role").await else {
        return;
    };
    let admin = url::Url::parse(&db.url).unwrap();
    let role = format!("bridge_{}", db.name);
    let status = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/timescaledb/init-bridge-role.sh"
        ))
        .env("PGHOST", admin.host_str().unwrap())
        .env("PGPORT", admin.port().unwrap_or(5432).to_string())
        .env("POSTGRES_USER", admin.username())
        .env("POSTGRES_DB", &db.name)
        .env("BRIDGE_DB_USER", &role)
        .env("BRIDGE_DB_PASSWORD", "pw-for-the-test")
        .status()
        .expect("bash and psql");
    assert!(status.success(), "init script: {status}");
    let mut bridge = admin.clone();
    bridge.set_username(&role).unwrap();
    bridge.set_password(Some("pw-for-the-test")).unwrap();
    let settings = DatabaseSettings {
        url: bridge.to_string(),
        ..Default::default()
    };
    let s = store::open(&settings).await.unwrap();
    assert_eq!(
        s.backend(),
        Backend::Timescale,
        "the role gets every TimescaleDB feature"
    );
    let recent = Sample::empty(
        DeviceId::parse("role_dev").unwrap(),
        Bucket::Hour.floor(Utc::now()),
    );
    assert_eq!(
        s.insert_samples(std::slice::from_ref(&recent))
            .await
            .unwrap(),
        1
    );
    let h = s
        .energy_history(
            &recent.device,
            recent.at,
            recent.at + Duration::hours(1),
            Bucket::Hour,
        )
        .await
        .unwrap();
    assert_eq!(h.len(), 1, "the current hour, real-time from the aggregate");
    drop(s);

    let mut c = sqlx::PgConnection::connect(bridge.as_str()).await.unwrap();
    let (superuser, createdb, createrole): (bool, bool, bool) = sqlx::query_as(
        "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert!(!superuser && !createdb && !createrole);
    for refused in [
        "CREATE DATABASE not_for_the_bridge",
        "CREATE ROLE not_for_the_bridge",
    ] {
        let e = sqlx::query(refused).execute(&mut c).await.unwrap_err();
        assert!(
            e.to_string().contains("permission denied"),
            "{refused}: {e}"
        );
    }
    c.close().await.unwrap();
    db.drop_now().await;
    let mut a = sqlx::PgConnection::connect(&support::timescale_base_url().unwrap())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE \"{role}\"")))
        .execute(&mut a)
        .await
        .unwrap();
}
