//! Site identity in the store (migration 0008), on SQLite, PostgreSQL and TimescaleDB: every
//! new row of devices, telemetry, alerts, the command audit and job runs carries the configured
//! site; rows from before the migration (site NULL, no `site` document) get the local site at the
//! next start, once; a later start under another site leaves old rows as they are.

mod support;

use chrono::{TimeZone, Utc};
use marstek_bridge::domain::{
    Alert, AlertKind, AlertState, DeviceId, DeviceInfo, ReadingSet, Severity,
};
use marstek_bridge::store::{CommandRecord, DatabaseSettings, JobRunRecord, Store};
use support::TestPgDb;

const TABLES: [&str; 5] = [
    "devices",
    "battery_status",
    "alerts",
    "commands",
    "job_runs",
];

fn settings(url: &str, site: &str) -> DatabaseSettings {
    DatabaseSettings {
        url: url.to_string(),
        site_id: site.to_string(),
        // The samples are from early 2026: keep retention and compression off them.
        retention_days: 36_500,
        aggregate_retention_days: 36_500,
        compress_after_days: 36_500,
        ..DatabaseSettings::default()
    }
}

/// One row in each of the five tables, at `k` (distinct keys per call).
async fn write_one_of_each(store: &dyn Store, k: i64) {
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(k);
    let dev = DeviceId::parse(&format!("dev_{k}")).unwrap();
    let info = DeviceInfo {
        id: dev.clone(),
        model: "VenusE 3.0".into(),
        firmware: 139,
        ble_mac: format!("00112233440{k}"),
        wifi_mac: None,
        address: "127.0.0.1:30000".into(),
        readings: ReadingSet::default(),
        firmware_note: None,
    };
    store.upsert_device(&info, at).await.unwrap();
    let mut offset = k * 1000;
    let samples = support::synthetic_samples(3, 1, &mut offset);
    assert_eq!(store.insert_samples(&samples).await.unwrap(), 3);
    store
        .record_alert(&Alert {
            kind: AlertKind::LowSoc,
            severity: Severity::Warning,
            device: Some(dev.clone()),
            message: "low".into(),
            value: Some(9.0),
            threshold: Some(10.0),
            state: AlertState::Raised,
            at,
        })
        .await
        .unwrap();
    store
        .record_command(&CommandRecord {
            at,
            source: marstek_bridge::domain::CommandSource::Mqtt,
            device: dev.0.clone(),
            payload: serde_json::json!({"mode": "Auto"}),
            status: marstek_bridge::domain::CommandStatus::Ok,
            error: None,
            latency_ms: Some(3.0),
        })
        .await
        .unwrap();
    let run = JobRunRecord::started(&format!("job_{k}"), at, "test", at);
    assert!(store.claim_run(&run).await.unwrap());
}

/// Raw SQL on either backend: statements and "site_id → rows" counts per table.
#[async_trait::async_trait]
trait Raw {
    async fn exec(&self, sql: &str);
    async fn sites(&self, table: &str) -> Vec<(Option<String>, i64)>;
}

#[async_trait::async_trait]
impl Raw for sqlx::SqlitePool {
    async fn exec(&self, sql: &str) {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(self)
            .await
            .unwrap();
    }
    async fn sites(&self, table: &str) -> Vec<(Option<String>, i64)> {
        let sql = format!("SELECT site_id, COUNT(*) FROM {table} GROUP BY site_id ORDER BY 1");
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(self)
            .await
            .unwrap()
    }
}

#[async_trait::async_trait]
impl Raw for sqlx::PgPool {
    async fn exec(&self, sql: &str) {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(self)
            .await
            .unwrap();
    }
    async fn sites(&self, table: &str) -> Vec<(Option<String>, i64)> {
        let sql = format!("SELECT site_id, COUNT(*) FROM {table} GROUP BY site_id ORDER BY 1");
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(self)
            .await
            .unwrap()
    }
}

fn expect(raw: Vec<(Option<String>, i64)>, want: &[(&str, i64)], table: &str) {
    let want: Vec<(Option<String>, i64)> = want
        .iter()
        .map(|(s, n)| (Some(s.to_string()), *n))
        .collect();
    assert_eq!(raw, want, "{table}");
}

/// Rows per table in one call of `write_one_of_each`.
fn per_call(table: &str) -> i64 {
    if table == "battery_status" { 3 } else { 1 }
}

/// The story on one backend; `open` opens the store under a site and hands back its raw pool.
async fn story<P: Raw, S: Store + 'static>(open: impl AsyncFn(&str) -> (S, P)) {
    let (a, raw) = open("site-a").await;
    write_one_of_each(&a, 1).await;
    for t in TABLES {
        expect(raw.sites(t).await, &[("site-a", per_call(t))], t);
    }
    drop(a);
    // As before migration 0008: rows without a site, no `site` document.
    for t in TABLES {
        raw.exec(&format!("UPDATE {t} SET site_id = NULL")).await;
    }
    raw.exec("DELETE FROM documents WHERE key = 'site'").await;
    let (b, _) = open("site-b").await;
    for t in TABLES {
        expect(raw.sites(t).await, &[("site-b", per_call(t))], t);
    }
    assert_eq!(
        b.document("site").await.unwrap(),
        Some(serde_json::json!({"site_id": "site-b"}))
    );
    drop(b);
    // Another site later: old rows keep theirs, new rows get the new one; the document stays.
    let (c, _) = open("site-c").await;
    write_one_of_each(&c, 2).await;
    for t in TABLES {
        let n = per_call(t);
        expect(raw.sites(t).await, &[("site-b", n), ("site-c", n)], t);
    }
    assert_eq!(
        c.document("site").await.unwrap(),
        Some(serde_json::json!({"site_id": "site-b"}))
    );
}

#[tokio::test]
async fn sqlite_rows_carry_the_site() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("site.db").display());
    story(async |site: &str| {
        let s = marstek_bridge::store::SqliteStore::connect(&settings(&url, site))
            .await
            .unwrap();
        let pool = s.pool().clone();
        (s, pool)
    })
    .await;
}

#[tokio::test]
async fn postgres_rows_carry_the_site() {
    let db = TestPgDb::create("sites_store").await;
    story(async |site: &str| {
        let s = marstek_bridge::store::PgStore::connect(&settings(&db.url, site))
            .await
            .unwrap();
        let pool = s.pool().clone();
        (s, pool)
    })
    .await;
    db.drop_now().await;
}

#[tokio::test]
async fn timescale_rows_carry_the_site() {
    let Some(db) = TestPgDb::create_timescale("sites_store_ts").await else {
        return;
    };
    story(async |site: &str| {
        let s = marstek_bridge::store::PgStore::connect(&settings(&db.url, site))
            .await
            .unwrap();
        let pool = s.pool().clone();
        (s, pool)
    })
    .await;
    db.drop_now().await;
}
