//! The storage story, run on SQLite (temp file), plain PostgreSQL and TimescaleDB (a fresh
//! database per run; TimescaleDB from `TEST_TIMESCALE_URL`, which `.ci/run` always sets):
//! samples with a duplicate, latest and window queries, alerts, command audit, jobs and runs,
//! desired state, Tempo days, documents and the leader lease. Plus open/migration errors.

mod support;

use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use marstek_bridge::domain::{
    Alert, AlertKind, AlertState, Amperes, Celsius, CommandSource, CommandStatus, DesiredState,
    DeviceId, DeviceInfo, Mode, ModeConfig, Percent, Readings, Sample, Severity, Volts, WattHours,
    Watts,
};
use marstek_bridge::store::{
    self, Backend, CommandRecord, DatabaseSettings, JobRecord, JobRunRecord, RunStatus, Store,
    StoreError, TempoDayRecord,
};
use support::TestPgDb;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 10, 0, 0).unwrap()
}

fn dev(s: &str) -> DeviceId {
    DeviceId::parse(s).unwrap()
}

fn full_sample(d: &DeviceId, at: DateTime<Utc>, soc: u8) -> Sample {
    Sample {
        device: d.clone(),
        at,
        soc: Some(Percent(soc)),
        bat_power: Some(Watts(-800)),
        grid_power: Some(Watts(-790)),
        offgrid_power: Some(Watts(0)),
        pv_power: Some(Watts(120)),
        temperature: Some(Celsius(24.5)),
        remaining_capacity: Some(WattHours(2560.0)),
        rated_capacity: Some(WattHours(5120.0)),
        total_pv_energy: Some(WattHours(1000.5)),
        total_grid_output_energy: Some(WattHours(2000.25)),
        total_grid_input_energy: Some(WattHours(3000.0)),
        total_load_energy: Some(WattHours(400.0)),
        mode: Some(Mode::Ai),
        ct_connected: Some(true),
        ct_power: Some(Watts(-15)),
        charge_allowed: Some(true),
        discharge_allowed: Some(false),
        rssi: Some(-61),
        readings: Box::new(Readings {
            ct_a_power: Some(Watts(-15)),
            ct_input_energy: Some(WattHours(1234.5)),
            pv1_power: Some(Watts(120)),
            pv1_voltage: Some(Volts(38.5)),
            pv1_working: Some(true),
            bat_voltage: Some(Volts(52.1)),
            bat_current: Some(Amperes(-15.25)),
            error_code: Some(0),
            wifi_ssid: Some("home".into()),
            poll_failures: Some(2),
            ..Readings::default()
        }),
    }
}

async fn story(store: &dyn Store) {
    store.ping().await.unwrap();
    assert!(store.latest_samples().await.unwrap().is_empty());
    let a = dev("venus_a");
    let b = dev("venus-b");

    // Devices: upsert keeps first_seen_at; touch moves last_seen_at; unknown device → NotFound.
    let info = DeviceInfo {
        id: a.clone(),
        model: "VenusE 3.0".into(),
        firmware: 150,
        ble_mac: "aabbccddeeff".into(),
        wifi_mac: None,
        address: "127.0.0.1:30000".into(),
        readings: Default::default(),
        firmware_note: None,
    };
    store.upsert_device(&info, t0()).await.unwrap();
    let mut info2 = info.clone();
    info2.firmware = 151;
    info2.wifi_mac = Some("112233445566".into());
    store
        .upsert_device(&info2, t0() + chrono::Duration::minutes(5))
        .await
        .unwrap();
    store
        .touch_device(&a, t0() + chrono::Duration::minutes(7))
        .await
        .unwrap();
    assert!(matches!(
        store.touch_device(&b, t0()).await,
        Err(StoreError::NotFound)
    ));
    let devices = store.devices().await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].info, info2);
    assert_eq!(devices[0].first_seen_at, t0());
    assert_eq!(
        devices[0].last_seen_at,
        Some(t0() + chrono::Duration::minutes(7))
    );

    // Samples: 10 for a (one duplicated in the batch, one re-sent later), 1 sparse for b.
    let mut batch: Vec<Sample> = (0..10)
        .map(|i| {
            full_sample(
                &a,
                t0() + chrono::Duration::milliseconds(i * 1500 + 7),
                50 + i as u8,
            )
        })
        .collect();
    batch.push(batch[3].clone());
    let mut sparse = Sample::empty(b.clone(), t0() + chrono::Duration::seconds(3));
    sparse.soc = Some(Percent(0));
    sparse.mode = Some(Mode::Ups);
    batch.push(sparse.clone());
    assert_eq!(store.insert_samples(&batch).await.unwrap(), 11);
    assert_eq!(store.insert_samples(&batch[5..6]).await.unwrap(), 0);
    assert_eq!(store.insert_samples(&[]).await.unwrap(), 0);

    let latest = store.latest_samples().await.unwrap();
    assert_eq!(latest.len(), 2);
    let la = latest.iter().find(|s| s.device == a).unwrap();
    assert_eq!(la, &batch[9], "latest of a, every field round-trips");
    let lb = latest.iter().find(|s| s.device == b).unwrap();
    assert_eq!(lb, &sparse, "NULL fields round-trip");

    // Window [t0+3s, t0+9s): samples 2..=5 (times 3.007, 4.507, 6.007, 7.507 s), oldest first.
    let w = store
        .sample_history(
            &a,
            t0() + chrono::Duration::seconds(3),
            t0() + chrono::Duration::seconds(9),
        )
        .await
        .unwrap();
    assert_eq!(w, batch[2..6].to_vec());
    assert!(
        store
            .sample_history(&b, t0() + chrono::Duration::seconds(4), t0())
            .await
            .unwrap()
            .is_empty()
    );

    // Prune before t0+5s: a's first four (0.007, 1.507, 3.007, 4.507) and b's one.
    assert_eq!(
        store
            .prune_samples(t0() + chrono::Duration::seconds(5))
            .await
            .unwrap(),
        5
    );
    assert_eq!(store.latest_samples().await.unwrap().len(), 1);

    // Alerts: raise twice (one open row, updated), raise a bridge-level one, clear the first.
    let mut low = Alert {
        kind: AlertKind::LowSoc,
        severity: Severity::Warning,
        device: Some(a.clone()),
        message: "SOC 12 % below 15 %".into(),
        value: Some(12.0),
        threshold: Some(15.0),
        state: AlertState::Raised,
        at: t0(),
    };
    store.record_alert(&low).await.unwrap();
    low.message = "SOC 11 % below 15 %".into();
    low.value = Some(11.0);
    low.at = t0() + chrono::Duration::minutes(1);
    store.record_alert(&low).await.unwrap();
    let db_alert = Alert {
        kind: AlertKind::DatabaseUnavailable,
        severity: Severity::Critical,
        device: None,
        message: "down".into(),
        value: None,
        threshold: None,
        state: AlertState::Raised,
        at: t0() + chrono::Duration::minutes(2),
    };
    store.record_alert(&db_alert).await.unwrap();
    let open = store.open_alerts().await.unwrap();
    assert_eq!(open.len(), 2);
    assert_eq!(open[0].message, "SOC 11 % below 15 %");
    assert_eq!(open[0].at, t0(), "raised_at is the first raise");
    assert_eq!(open[1], db_alert);
    let mut cleared = low.clone();
    cleared.state = AlertState::Cleared;
    cleared.at = t0() + chrono::Duration::minutes(3);
    store.record_alert(&cleared).await.unwrap();
    let open = store.open_alerts().await.unwrap();
    assert_eq!(open, vec![db_alert.clone()]);
    // Raised again after clearing: a new open alert.
    store.record_alert(&low).await.unwrap();
    assert_eq!(store.open_alerts().await.unwrap().len(), 2);

    // Command audit, newest first, limit respected.
    for i in 0..3 {
        store
            .record_command(&CommandRecord {
                at: t0() + chrono::Duration::seconds(i),
                source: CommandSource::Mqtt,
                device: if i == 2 {
                    "unknown-dev".into()
                } else {
                    a.0.clone()
                },
                payload: serde_json::json!({"mode": "Auto", "i": i}),
                status: if i == 2 {
                    CommandStatus::Error
                } else {
                    CommandStatus::Ok
                },
                error: (i == 2).then(|| "unknown device".to_string()),
                latency_ms: Some(12.5),
            })
            .await
            .unwrap();
    }
    let cmds = store.recent_commands(2).await.unwrap();
    assert_eq!(cmds.len(), 2);
    assert_eq!(cmds[0].payload["i"], 2);
    assert_eq!(cmds[0].error.as_deref(), Some("unknown device"));
    assert_eq!(
        (cmds[0].source, cmds[0].status, cmds[1].status),
        (CommandSource::Mqtt, CommandStatus::Error, CommandStatus::Ok)
    );
    // The API shows them by their stored names.
    let shown = serde_json::to_value(&cmds[0]).unwrap();
    assert_eq!(
        (&shown["source"], &shown["status"]),
        (&serde_json::json!("mqtt"), &serde_json::json!("error"))
    );
    assert_eq!(cmds[1].payload["i"], 1);

    // Jobs: insert then replace.
    let mut job = JobRecord {
        id: "job_switch_to_auto".into(),
        trigger: "cron:0 6 * * *".into(),
        trigger_overridden: false,
        next_run_at: Some(t0() + chrono::Duration::hours(20)),
        paused: false,
        last_run_at: None,
        last_status: None,
    };
    store.upsert_job(&job).await.unwrap();
    job.trigger = "cron:30 6 * * *".into();
    job.trigger_overridden = true;
    job.paused = true;
    job.next_run_at = None;
    job.last_run_at = Some(t0());
    job.last_status = Some(RunStatus::Completed);
    store.upsert_job(&job).await.unwrap();
    assert_eq!(store.jobs().await.unwrap(), vec![job.clone()]);

    // Runs: claim twice → second false and nothing written; finish; unknown run → NotFound.
    let mut run = JobRunRecord {
        job_id: job.id.clone(),
        scheduled_for: t0() + chrono::Duration::hours(20),
        status: RunStatus::Running,
        instance: "inst-1".into(),
        started_at: Some(t0() + chrono::Duration::hours(20)),
        finished_at: None,
        result: None,
        error: None,
    };
    assert!(store.claim_run(&run).await.unwrap());
    let mut other = run.clone();
    other.instance = "inst-2".into();
    assert!(!store.claim_run(&other).await.unwrap());
    run.status = RunStatus::Completed;
    run.finished_at = Some(t0() + chrono::Duration::hours(20) + chrono::Duration::seconds(2));
    run.result = Some(serde_json::json!({"venus_a": "ok"}));
    store.finish_run(&run).await.unwrap();
    let mut earlier = run.clone();
    earlier.scheduled_for = t0();
    earlier.status = RunStatus::Missed;
    assert!(store.claim_run(&earlier).await.unwrap());
    let runs = store.job_runs(Some(&job.id), 10).await.unwrap();
    assert_eq!(runs, vec![run.clone(), earlier.clone()]);
    assert_eq!(store.job_runs(None, 1).await.unwrap(), vec![run.clone()]);
    assert!(store.job_runs(Some("nope"), 10).await.unwrap().is_empty());
    let mut ghost = run.clone();
    ghost.job_id = "ghost".into();
    assert!(matches!(
        store.finish_run(&ghost).await,
        Err(StoreError::NotFound)
    ));

    // Desired state: set, replace, clear.
    let mut desired = DesiredState {
        device: a.clone(),
        config: ModeConfig::Passive {
            power: Watts(-1200),
            cd_time: 3600,
        },
        set_by: "job_precharge".into(),
        set_at: t0(),
        valid_until: Some(t0() + chrono::Duration::hours(1)),
    };
    store.set_desired(&desired).await.unwrap();
    desired.config = ModeConfig::Auto;
    desired.valid_until = None;
    store.set_desired(&desired).await.unwrap();
    assert_eq!(store.desired_states().await.unwrap(), vec![desired.clone()]);
    store.clear_desired(&a).await.unwrap();
    assert!(store.desired_states().await.unwrap().is_empty());

    // Tempo days: upsert overwrites.
    let date = NaiveDate::from_ymd_opt(2026, 1, 16).unwrap();
    let mut day = TempoDayRecord {
        date,
        colour: "white".into(),
        source: "rte".into(),
        fetched_at: t0(),
    };
    store.upsert_tempo_day(&day).await.unwrap();
    day.colour = "red".into();
    day.source = "api-couleur-tempo".into();
    store.upsert_tempo_day(&day).await.unwrap();
    assert_eq!(store.tempo_day(date).await.unwrap(), Some(day));
    assert_eq!(
        store.tempo_day(date.succ_opt().unwrap()).await.unwrap(),
        None
    );

    // Documents.
    assert_eq!(store.document("precharge_plan").await.unwrap(), None);
    let doc = serde_json::json!({"target_soc": 80, "devices": ["venus_a"], "nested": {"x": 1.5}});
    store.put_document("precharge_plan", &doc).await.unwrap();
    store
        .put_document("precharge_plan", &serde_json::json!({"v": 2}))
        .await
        .unwrap();
    store.put_document("tempo_decision", &doc).await.unwrap();
    assert_eq!(
        store.document("precharge_plan").await.unwrap(),
        Some(serde_json::json!({"v": 2}))
    );
    assert_eq!(store.document("tempo_decision").await.unwrap(), Some(doc));
    for (key, v) in [("ctl/b", 2), ("ctl/a", 1), ("ctl_c", 3), ("ct", 4)] {
        store
            .put_document(key, &serde_json::json!({ "v": v }))
            .await
            .unwrap();
    }
    let under = store.documents_under("ctl/").await.unwrap();
    assert_eq!(
        under,
        vec![
            ("ctl/a".to_string(), serde_json::json!({"v": 1})),
            ("ctl/b".to_string(), serde_json::json!({"v": 2})),
        ],
        "only the keys under the prefix, by key"
    );
    assert!(store.documents_under("nothing/").await.unwrap().is_empty());

    // Leader lease (one per site): first instance leads and renews; the second cannot until
    // resign or expiry; another site's lease is independent.
    let ttl = Duration::from_secs(30);
    let (a, b) = ("site:a", "site:b");
    assert!(store.try_lead(a, "inst-1", ttl).await.unwrap());
    assert!(!store.try_lead(a, "inst-2", ttl).await.unwrap());
    assert!(
        store.try_lead(b, "inst-3", ttl).await.unwrap(),
        "another site's bridge leads its own site beside site a's leader"
    );
    assert_eq!(
        store.lease_holder(a).await.unwrap().as_deref(),
        Some("inst-1")
    );
    assert_eq!(
        store.lease_holder(b).await.unwrap().as_deref(),
        Some("inst-3")
    );
    assert_eq!(store.lease_holder("site:none").await.unwrap(), None);
    assert!(store.try_lead(a, "inst-1", ttl).await.unwrap(), "renewal");
    store.resign(a, "inst-2").await.unwrap(); // not the leader: no effect
    store.resign(b, "inst-1").await.unwrap(); // not this site's leader: no effect
    assert!(!store.try_lead(a, "inst-2", ttl).await.unwrap());
    assert!(!store.try_lead(b, "inst-4", ttl).await.unwrap());
    store.resign(a, "inst-1").await.unwrap();
    assert_eq!(store.lease_holder(a).await.unwrap(), None);
    assert!(store.try_lead(a, "inst-2", ttl).await.unwrap());
    assert!(!store.try_lead(a, "inst-1", ttl).await.unwrap());
    // A lease of zero length is expired at once (database clock): the other takes over.
    assert!(store.try_lead(a, "inst-2", Duration::ZERO).await.unwrap());
    assert_eq!(store.lease_holder(a).await.unwrap(), None, "expired");
    assert!(store.try_lead(a, "inst-1", ttl).await.unwrap());
    assert_eq!(
        store.lease_holder(b).await.unwrap().as_deref(),
        Some("inst-3")
    );
}

/// Retention: only samples older than the retention period go: deleted by `prune_expired`
/// without TimescaleDB; on TimescaleDB `prune_expired` does nothing and the retention policy
/// (its job run now, as the scheduler would) drops the chunks past 90 days.
async fn retention(store: &dyn Store, timescale_url: Option<&str>) {
    let now = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    let d = dev("retention_dev");
    // 100 days: its 7-day chunk lies wholly beyond the 90 days, as drop_chunks requires.
    let old = Sample::empty(d.clone(), now - chrono::Duration::days(100));
    let recent = Sample::empty(d.clone(), now - chrono::Duration::days(89));
    assert_eq!(
        store.insert_samples(&[old, recent.clone()]).await.unwrap(),
        2
    );
    let deleted = store::prune_expired(store, 90, now).await.unwrap();
    if let Some(url) = timescale_url {
        assert_eq!(deleted, 0, "TimescaleDB's policy does it");
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let job: i32 = sqlx::query_scalar(
            "SELECT job_id FROM timescaledb_information.jobs \
             WHERE proc_name = 'policy_retention' AND hypertable_name = 'battery_status'",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        sqlx::query("CALL run_job($1)")
            .bind(job)
            .execute(&mut c)
            .await
            .unwrap();
    } else {
        assert_eq!(deleted, 1);
    }
    let left = store
        .sample_history(&d, now - chrono::Duration::days(365), now)
        .await
        .unwrap();
    assert_eq!(left.iter().map(|s| s.at).collect::<Vec<_>>(), [recent.at]);
}

fn sqlite_settings(dir: &tempfile::TempDir, file: &str) -> DatabaseSettings {
    DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join(file).display()),
        ..Default::default()
    }
}

#[tokio::test]
async fn story_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let settings = sqlite_settings(&dir, "nested/dir/bridge.db");
    let s = store::open(&settings).await.unwrap();
    assert_eq!(s.backend(), Backend::Sqlite);
    assert!(dir.path().join("nested/dir/bridge.db").exists());
    story(s.as_ref()).await;
    // WAL journal and foreign keys are on.
    let lite = store::SqliteStore::connect(&settings).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(lite.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(lite.pool())
        .await
        .unwrap();
    assert_eq!(fk, 1);
    // Re-opening applies no migration twice and keeps the data.
    drop(s);
    let s = store::open(&settings).await.unwrap();
    assert_eq!(s.devices().await.unwrap().len(), 1);
}

/// The story on a PostgreSQL database, expecting `backend`; re-opening keeps the data.
async fn story_on_pg(db: TestPgDb, backend: Backend) {
    let settings = DatabaseSettings {
        url: db.url.clone(),
        // The story's samples are from January: keep TimescaleDB's background retention and
        // compression jobs (which start at once) off them while the story runs.
        retention_days: 36_500,
        aggregate_retention_days: 36_500,
        compress_after_days: 36_500,
        ..Default::default()
    };
    let s = store::open(&settings).await.unwrap();
    assert_eq!(s.backend(), backend);
    story(s.as_ref()).await;
    drop(s);
    let s = store::open(&settings).await.unwrap();
    assert_eq!(s.backend(), backend, "the TimescaleDB step is idempotent");
    assert_eq!(s.devices().await.unwrap().len(), 1);
    drop(s);
    db.drop_now().await;
}

#[tokio::test]
async fn story_on_postgres() {
    story_on_pg(TestPgDb::create("store_story").await, Backend::Postgres).await;
}

#[tokio::test]
async fn story_on_timescale() {
    if let Some(db) = TestPgDb::create_timescale("store_story_ts").await {
        story_on_pg(db, Backend::Timescale).await;
    }
}

#[tokio::test]
async fn failing_migration_names_the_file_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let settings = sqlite_settings(&dir, "pre.db");
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&format!("{}?mode=rwc", settings.url))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE devices (x INTEGER)")
            .execute(&mut c)
            .await
            .unwrap();
    }
    let err = store::open(&settings).await.err().expect("must fail");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Migration(_)), "{msg}");
    assert!(msg.contains("migrations/sqlite/0001_init.sql"), "{msg}");
}

#[tokio::test]
async fn failing_migration_names_the_file_postgres() {
    failing_migration_names_the_file_pg(TestPgDb::create("store_migfail").await).await;
}

#[tokio::test]
async fn failing_migration_names_the_file_timescale() {
    if let Some(db) = TestPgDb::create_timescale("store_migfail_ts").await {
        failing_migration_names_the_file_pg(db).await;
    }
}

async fn failing_migration_names_the_file_pg(db: TestPgDb) {
    {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query("CREATE TABLE devices (x INTEGER)")
            .execute(&mut c)
            .await
            .unwrap();
    }
    let settings = DatabaseSettings {
        url: db.url.clone(),
        ..Default::default()
    };
    let err = store::open(&settings).await.err().expect("must fail");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Migration(_)), "{msg}");
    assert!(msg.contains("migrations/postgres/0001_init.sql"), "{msg}");
    db.drop_now().await;
}

#[tokio::test]
async fn open_errors_name_the_url_without_password() {
    // Wrong credentials (unknown role) → BadUrl.
    let base = url::Url::parse(&support::pg_base_url()).unwrap();
    let mut bad = base.clone();
    bad.set_username("no_such_role_marstek").unwrap();
    bad.set_password(Some("s3cret-pw")).unwrap();
    let settings = DatabaseSettings {
        url: bad.to_string(),
        acquire_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let err = store::open(&settings).await.err().expect("must fail");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::BadUrl(_)), "{msg}");
    assert!(msg.contains("database.url") && msg.contains("***"), "{msg}");
    assert!(!msg.contains("s3cret-pw"), "{msg}");

    // Nothing listens → Unavailable, still naming database.url.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let settings = DatabaseSettings {
        url: format!("postgres://u:s3cret-pw@127.0.0.1:{port}/x"),
        acquire_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let err = store::open(&settings).await.err().expect("must fail");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Unavailable(_)), "{msg}");
    assert!(
        msg.contains("database.url") && !msg.contains("s3cret-pw"),
        "{msg}"
    );

    // SQLite path that cannot be created (parent is a file) → BadUrl.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let settings = sqlite_settings(&dir, "file/sub/x.db");
    let err = store::open(&settings).await.err().expect("must fail");
    assert!(matches!(err, StoreError::BadUrl(_)), "{err}");
    assert!(err.to_string().contains("database.url"), "{err}");
}

#[tokio::test]
async fn retention_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let s = store::open(&sqlite_settings(&dir, "r.db")).await.unwrap();
    retention(s.as_ref(), None).await;
}

async fn retention_on_pg(db: TestPgDb, backend: Backend) {
    let settings = DatabaseSettings {
        url: db.url.clone(),
        ..Default::default()
    };
    let s = store::open(&settings).await.unwrap();
    assert_eq!(s.backend(), backend);
    let ts = (backend == Backend::Timescale).then_some(db.url.as_str());
    retention(s.as_ref(), ts).await;
    drop(s);
    db.drop_now().await;
}

#[tokio::test]
async fn retention_on_postgres() {
    retention_on_pg(TestPgDb::create("store_retention").await, Backend::Postgres).await;
}

#[tokio::test]
async fn retention_on_timescale() {
    if let Some(db) = TestPgDb::create_timescale("store_retention_ts").await {
        retention_on_pg(db, Backend::Timescale).await;
    }
}
