//! Store-and-forward from an edge's SQLite store to a central PostgreSQL, and on TimescaleDB when
//! `TEST_TIMESCALE_URL` is set (every test runs on each central server available): a central
//! database cut for a while gets every row exactly once, in order; a restart mid-backlog resumes
//! from the persisted high-water mark without resending; rows the centre already has are not an
//! error; the backlog bound drops the oldest rows, counted; two sites share one central
//! database and `fleet status` (library and command line) shows both; a bad `central.url` is a
//! configuration error naming the key; a bridge started with `[central] url` runs the forwarder.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use marstek_bridge::domain::{CommandSource, CommandStatus, DeviceId, DeviceInfo, ReadingSet};
use marstek_bridge::sites::central::CentralSettings;
use marstek_bridge::sites::forward::{ForwardStats, Forwarder, ForwarderHandle, prepare};
use marstek_bridge::store::central::Central;
use marstek_bridge::store::forward::EdgeQueue;
use marstek_bridge::store::{Backend, CommandRecord, DatabaseSettings, SqliteStore, Store};
use sqlx::Row;
use support::{TcpProxy, TestPgDb};
use tokio_util::sync::CancellationToken;

/// An edge: its SQLite store with forwarding on.
struct Edge {
    _dir: tempfile::TempDir,
    url: String,
    site: String,
    store: Arc<dyn Store>,
}

async fn edge(site: &str) -> Edge {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("edge.db").display());
    let store = open_edge(&url, site, true).await;
    Edge {
        _dir: dir,
        url,
        site: site.into(),
        store,
    }
}

async fn open_edge(url: &str, site: &str, forward: bool) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::connect(&DatabaseSettings {
            url: url.into(),
            site_id: site.into(),
            forward,
            retention_days: 36_500,
            ..DatabaseSettings::default()
        })
        .await
        .unwrap(),
    )
}

/// Every central server available: plain PostgreSQL, and TimescaleDB when configured.
async fn centrals(prefix: &str) -> Vec<TestPgDb> {
    let mut dbs = vec![TestPgDb::create(prefix).await];
    if let Some(ts) = TestPgDb::create_timescale(prefix).await {
        dbs.push(ts);
    }
    dbs
}

fn central_settings(url: &str) -> CentralSettings {
    CentralSettings {
        url: url.into(),
        batch_size: 100,
        max_backlog: 100_000,
        interval: Duration::from_millis(50),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        timeout: Duration::from_secs(3),
        // The synthetic samples are from early 2026: keep retention and compression off them.
        retention_days: 36_500,
        compress_after_days: 36_500,
        ..CentralSettings::default()
    }
}

async fn forwarder(e: &Edge, s: &CentralSettings) -> (Forwarder, ForwarderHandle) {
    prepare(s, &e.site, &e.url, e.store.clone()).await.unwrap()
}

/// Waits for `pred` on the forwarder's statistics; a safety net of 120 s turns a hang into a
/// failure that shows the statistics (the wait itself is on the watch channel).
async fn waited(h: &ForwarderHandle, pred: impl FnMut(&ForwardStats) -> bool) -> ForwardStats {
    match tokio::time::timeout(Duration::from_secs(120), h.wait_for(pred)).await {
        Ok(s) => s,
        Err(_) => panic!("forwarder never got there: {:?}", h.stats()),
    }
}

/// Rounds until the backlog is empty (at most `max` rounds).
async fn drain(f: &mut Forwarder, h: &ForwarderHandle, max: usize) -> ForwardStats {
    for _ in 0..max {
        f.round().await.expect("round");
        if h.stats().backlog == 0 {
            return h.stats();
        }
    }
    panic!("backlog not empty after {max} rounds: {:?}", h.stats());
}

async fn central_count(db: &TestPgDb, site: &str) -> i64 {
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM fleet_battery_status WHERE site_id = $1")
        .bind(site)
        .fetch_one(&pool)
        .await
        .unwrap()
}

/// (device, time µs) of every central row of `site` in edge order, and whether the centre
/// received them in that order (received_at never goes back when ordered by edge_seq).
async fn central_rows(db: &TestPgDb, site: &str) -> (Vec<(String, i64)>, bool) {
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let rows = sqlx::query(
        "SELECT device_id, time, received_at FROM fleet_battery_status WHERE site_id = $1 \
         ORDER BY edge_seq",
    )
    .bind(site)
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut in_order = true;
    let mut last: Option<chrono::DateTime<Utc>> = None;
    let keys = rows
        .iter()
        .map(|r| {
            let at: chrono::DateTime<Utc> = r.get("received_at");
            in_order &= last.is_none_or(|l| l <= at);
            last = Some(at);
            let t: chrono::DateTime<Utc> = r.get("time");
            (r.get::<String, _>("device_id"), t.timestamp_micros())
        })
        .collect();
    (keys, in_order)
}

/// Writes `n` samples over 3 devices on the edge (new times after `offset`); returns their
/// keys in insertion order.
async fn write_samples(e: &Edge, n: usize, offset: &mut i64) -> Vec<(String, i64)> {
    let samples = support::synthetic_samples(n, 3, offset);
    assert_eq!(e.store.insert_samples(&samples).await.unwrap(), n as u64);
    samples
        .iter()
        .map(|s| (s.device.0.clone(), s.at.timestamp_micros()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_outage_loses_nothing_and_every_row_arrives_once_in_order() {
    for db in centrals("fwd_outage").await {
        let (proxy_addr, proxy) = TcpProxy::start(db.server_addr()).await.unwrap();
        let e = edge("site-a").await;
        let s = central_settings(&db.url_via(proxy_addr));
        let (f, h) = forwarder(&e, &s).await;
        let token = CancellationToken::new();
        let task = tokio::spawn(f.run(token.clone()));
        let mut offset = 0;
        let mut written = write_samples(&e, 300, &mut offset).await;
        waited(&h, |s| s.forwarded == 300 && s.backlog == 0).await;

        proxy.cut();
        let failures = h.stats().failures;
        written.extend(write_samples(&e, 500, &mut offset).await);
        let during = waited(&h, |s| s.failures >= failures + 2 && s.backlog == 500).await;
        assert_eq!(during.forwarded, 300, "{during:?}");
        assert!(during.last_error.is_some(), "{during:?}");
        assert_eq!(central_count(&db, "site-a").await, 300);

        proxy.restore();
        let after = waited(&h, |s| s.forwarded == 800 && s.backlog == 0).await;
        assert_eq!(after.duplicates, 0, "{after:?}");
        assert_eq!(after.dropped, 0, "{after:?}");
        assert!(after.last_error.is_none(), "{after:?}");
        let (central, in_order) = central_rows(&db, "site-a").await;
        assert_eq!(central, written, "every row once, in edge order");
        assert!(in_order, "rows were received out of edge order");
        let queue = EdgeQueue::open(&e.url, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(queue.backlog().await.unwrap(), 0);
        assert_eq!(queue.state().await.unwrap().hwm, after.hwm);
        token.cancel();
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_backlog_resumes_from_the_high_water_mark_without_resending() {
    for db in centrals("fwd_restart").await {
        let metrics = marstek_bridge::http::metrics_handle();
        let e = edge("site-r").await;
        let s = central_settings(&db.url);
        let mut offset = 0;
        let written = write_samples(&e, 1000, &mut offset).await;
        let (mut first, h1) = forwarder(&e, &s).await;
        for _ in 0..3 {
            assert!(first.round().await.unwrap().more);
        }
        let stopped = h1.stats();
        assert_eq!((stopped.forwarded, stopped.backlog), (300, 700));
        drop(first);

        // A new process: the store reopened (forwarding still on keeps the queue), a new pool.
        let store = open_edge(&e.url, "site-r", true).await;
        let (mut second, h2) = prepare(&s, "site-r", &e.url, store).await.unwrap();
        assert_eq!(h2.stats().hwm, stopped.hwm, "high-water mark persisted");
        let done = drain(&mut second, &h2, 20).await;
        assert_eq!(
            done.forwarded, 700,
            "only what was not acknowledged: {done:?}"
        );
        assert_eq!(done.duplicates, 0, "{done:?}");
        let text = metrics.render();
        for series in [
            "marstek_forward_rows_total{",
            "marstek_forward_backlog_rows{",
            "marstek_forward_last_success_seconds{",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(series)),
                "{series}: {text}"
            );
        }
        let (central, in_order) = central_rows(&db, "site-r").await;
        assert_eq!(central, written);
        assert!(in_order);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_centre_already_has_are_skipped_not_an_error() {
    for db in centrals("fwd_replay").await {
        let e = edge("site-d").await;
        let s = central_settings(&db.url);
        let mut offset = 0;
        let written = write_samples(&e, 250, &mut offset).await;
        // As after a crash between the central commit and the local acknowledgement.
        let central = Central::connect(&s.target()).await.unwrap();
        let first = DeviceId("bench_0".into());
        let day = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let head = e
            .store
            .sample_history(&first, day, day + chrono::Duration::days(1));
        let head: Vec<_> = head.await.unwrap().into_iter().take(40).collect();
        let seqs: Vec<i64> = (1..=40).map(|i| 3 * i - 2).collect();
        assert_eq!(
            central
                .insert_samples("site-d", &head, &seqs)
                .await
                .unwrap(),
            40
        );
        let (mut f, h) = forwarder(&e, &s).await;
        let done = drain(&mut f, &h, 10).await;
        assert_eq!((done.forwarded, done.duplicates), (250, 40), "{done:?}");
        assert_eq!(central_count(&db, "site-d").await, 250);
        let (rows, _) = central_rows(&db, "site-d").await;
        let mut rows = rows;
        let mut want = written;
        rows.sort();
        want.sort();
        assert_eq!(rows, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_bound_the_oldest_rows_are_dropped_and_counted() {
    let db = TestPgDb::create("fwd_bound").await;
    let (proxy_addr, proxy) = TcpProxy::start(db.server_addr()).await.unwrap();
    let e = edge("site-b").await;
    let s = CentralSettings {
        max_backlog: 200,
        batch_size: 50,
        timeout: Duration::from_millis(500),
        ..central_settings(&db.url_via(proxy_addr))
    };
    let mut offset = 0;
    let written = write_samples(&e, 500, &mut offset).await;
    proxy.cut();
    let (mut f, h) = forwarder(&e, &s).await;
    assert!(f.round().await.unwrap_err().is_transient());
    let cut = h.stats();
    assert_eq!((cut.dropped, cut.forwarded), (300, 0), "{cut:?}");
    let queue = EdgeQueue::open(&e.url, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(queue.backlog().await.unwrap(), 200);
    assert_eq!(queue.state().await.unwrap().dropped, 300);
    // The dropped rows stay in the local store.
    assert_eq!(e.store.latest_samples().await.unwrap().len(), 3);
    proxy.restore();
    let done = drain(&mut f, &h, 10).await;
    assert_eq!(done.forwarded, 200);
    let (central, _) = central_rows(&db, "site-b").await;
    assert_eq!(central, written[300..].to_vec(), "the newest 200 arrive");
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let (backlog, dropped): (i64, i64) =
        sqlx::query_as("SELECT backlog, dropped FROM fleet_sites WHERE site_id = 'site-b'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((backlog, dropped), (0, 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_timescaledb_central_telemetry_is_a_hypertable_segmented_by_site_and_device() {
    let Some(db) = TestPgDb::create_timescale("fwd_ts").await else {
        return;
    };
    let central = Central::connect(&central_settings(&db.url).target())
        .await
        .unwrap();
    assert_eq!(central.backend(), Backend::Timescale);
    let segments: Vec<String> = sqlx::query_scalar(
        "SELECT attname::text FROM timescaledb_information.compression_settings \
         WHERE hypertable_name = 'fleet_battery_status' AND segmentby_column_index IS NOT NULL \
         ORDER BY segmentby_column_index",
    )
    .fetch_all(central.pool())
    .await
    .unwrap();
    assert_eq!(segments, ["site_id", "device_id"]);
    let jobs: Vec<String> = sqlx::query_scalar(
        "SELECT proc_name::text FROM timescaledb_information.jobs \
         WHERE hypertable_name = 'fleet_battery_status' ORDER BY proc_name",
    )
    .fetch_all(central.pool())
    .await
    .unwrap();
    assert_eq!(jobs, ["policy_compression", "policy_retention"]);
    // Connecting again (another edge, a restart) is idempotent.
    Central::connect(&central_settings(&db.url).target())
        .await
        .unwrap();
}

#[tokio::test]
async fn turning_forwarding_off_empties_the_queue_and_stops_filling_it() {
    let e = edge("site-o").await;
    let mut offset = 0;
    write_samples(&e, 30, &mut offset).await;
    let queue = EdgeQueue::open(&e.url, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(queue.backlog().await.unwrap(), 30);
    let off = open_edge(&e.url, "site-o", false).await;
    assert_eq!(queue.backlog().await.unwrap(), 0);
    let more = support::synthetic_samples(30, 3, &mut offset);
    off.insert_samples(&more).await.unwrap();
    assert_eq!(queue.backlog().await.unwrap(), 0);
    assert!(!queue.state().await.unwrap().enabled);
}

async fn add_devices_and_commands(e: &Edge, n: usize, firmware: u32, failed: usize) {
    let at = Utc::now();
    for d in 0..n {
        let info = DeviceInfo {
            id: DeviceId(format!("bench_{d}")),
            model: "VenusE 3.0".into(),
            firmware,
            ble_mac: format!("aabbccddee0{d}"),
            wifi_mac: None,
            address: format!("127.0.0.1:{}", 30000 + d),
            readings: ReadingSet::default(),
            firmware_note: None,
        };
        e.store.upsert_device(&info, at).await.unwrap();
    }
    for k in 0..3 {
        let status = if k < failed {
            CommandStatus::Error
        } else {
            CommandStatus::Ok
        };
        let record = CommandRecord {
            at,
            source: CommandSource::Mqtt,
            device: "bench_0".into(),
            payload: serde_json::json!({ "mode": "Auto" }),
            status,
            error: (k < failed).then(|| "timeout".to_string()),
            latency_ms: Some(4.0),
        };
        e.store.record_command(&record).await.unwrap();
    }
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_marstek-bridge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("MARSTEK_BRIDGE") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_share_one_central_database_and_fleet_status_shows_both() {
    for db in centrals("fwd_fleet").await {
        let s = central_settings(&db.url);
        let (a, b) = (edge("site-a").await, edge("site-b").await);
        add_devices_and_commands(&a, 3, 139, 0).await;
        add_devices_and_commands(&b, 2, 152, 2).await;
        let mut offset = 0;
        let wa = write_samples(&a, 240, &mut offset).await;
        let mut offset = 0;
        let wb = write_samples(&b, 120, &mut offset).await;
        for e in [&a, &b] {
            let (mut f, h) = forwarder(e, &s).await;
            let done = drain(&mut f, &h, 10).await;
            assert_eq!(done.commands, 3, "{done:?}");
        }
        // Same device ids and times on both sites: the site keeps them apart.
        assert_eq!(central_rows(&db, "site-a").await.0, wa);
        assert_eq!(central_rows(&db, "site-b").await.0, wb);

        let sites = marstek_bridge::sites::fleet::status(&s).await.unwrap();
        let summary: Vec<_> = sites
            .iter()
            .map(|x| {
                let f = x.firmware.clone();
                (
                    x.site_id.as_str(),
                    x.online,
                    x.batteries,
                    f,
                    x.samples,
                    x.commands_failed_24h,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("site-a", true, 3, vec![139], 240, 0),
                ("site-b", true, 2, vec![152], 120, 2)
            ]
        );

        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        let db_url = format!("sqlite://{}", dir.path().join("x.db").display());
        std::fs::write(&cfg, format!("[database]\nurl = \"{db_url}\"\n")).unwrap();
        let url_file = dir.path().join("central-url");
        std::fs::write(&url_file, format!("{}\n", db.url)).unwrap();
        let run = |json: bool| {
            let mut c = bin();
            c.args(["fleet", "status", "--config"]).arg(&cfg);
            if json {
                c.arg("--json");
            }
            c.env("MARSTEK_BRIDGE__CENTRAL__URL_FILE", &url_file)
                .output()
                .unwrap()
        };
        let out = run(true);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let listed = v["sites"].as_array().unwrap();
        assert_eq!(listed.len(), 2, "{v}");
        assert_eq!(listed[1]["site_id"], "site-b");
        assert_eq!(listed[1]["batteries"], 2);
        assert_eq!(listed[1]["commands_failed_24h"], 2);
        assert!(listed[1]["saved_eur"].is_null(), "{v}");
        let out = run(false);
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{table}");
        let line_b = table.lines().find(|l| l.starts_with("site-b")).unwrap();
        assert!(
            line_b.contains("online") && line_b.contains("152"),
            "{table}"
        );
        assert!(line_b.trim_end().ends_with("n/a"), "{table}");
    }
}

#[test]
fn a_bad_central_url_is_a_configuration_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (url, why) in [
        ("mysql://u:hunter2@127.0.0.1/db", "unsupported scheme"),
        ("sqlite://central.db", "PostgreSQL URL"),
        ("postgres://u:hunter2@127.0.0.1:notaport/db", "not usable"),
    ] {
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            format!("[database]\nurl = \"sqlite://x.db\"\n\n[central]\nurl = \"{url}\"\n"),
        )
        .unwrap();
        let issues = marstek_bridge::config::load_from(Some(&cfg), Vec::new())
            .unwrap_err()
            .issues;
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].key, "central.url");
        assert!(issues[0].reason.contains(why), "{issues:?}");
        assert!(
            issues[0]
                .location
                .as_deref()
                .is_some_and(|l| l.ends_with(":5"))
        );
        for args in [&["config", "check"][..], &["fleet", "status"][..]] {
            let out = bin().args(args).arg("--config").arg(&cfg).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(
                err.contains("central.url") && !err.contains("hunter2"),
                "{err}"
            );
        }
    }
    // Unset: `fleet status` says which key to set, exit 2.
    let cfg = dir.path().join("none.toml");
    std::fs::write(&cfg, "[database]\nurl = \"sqlite://x.db\"\n").unwrap();
    let out = bin()
        .args(["fleet", "status", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("central.url"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_bridge_with_a_central_url_forwards_what_it_stores() {
    use marstek_bridge::config::Settings;
    let db = TestPgDb::create("fwd_app").await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = Settings::default();
    let base = format!("mbfwd{}", std::process::id());
    s.bridge.site_id = Some("site-app".into());
    s.mqtt.host = "127.0.0.1".into();
    s.mqtt.port = 1883;
    s.mqtt.base_topic = base.clone();
    s.mqtt.discovery_prefix = format!("{base}ha");
    s.mqtt.client_id = base;
    s.database.url = format!("sqlite://{}/b.db", dir.path().display());
    s.marstek.bind_device_port = false;
    s.tempo.enabled = false;
    for job in ["job_switch_to_auto", "job_switch_to_manual_night"] {
        s.scheduler.jobs.entry(job.into()).or_default().enabled = false;
    }
    s.central = central_settings(&db.url);
    assert!(s.validate().is_empty(), "{:?}", s.validate());

    let (tx, rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let bridge = tokio::spawn(marstek_bridge::app::run_with(
        s,
        async move {
            let _ = stop_rx.await;
        },
        move |running| {
            let _ = tx.send((running.core.store.clone(), running.forward.clone()));
        },
    ));
    let (store, forward) = tokio::time::timeout(Duration::from_secs(30), rx)
        .await
        .unwrap()
        .unwrap();
    let forward = forward.expect("the forwarder runs when central.url is set");
    let mut offset = 0;
    let samples = support::synthetic_samples(90, 3, &mut offset);
    assert_eq!(store.insert_samples(&samples).await.unwrap(), 90);
    let done = waited(&forward, |s| s.forwarded == 90 && s.backlog == 0).await;
    assert_eq!(done.duplicates, 0, "{done:?}");
    assert_eq!(central_count(&db, "site-app").await, 90);
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), bridge)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
