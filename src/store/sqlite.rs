//! Embedded SQLite backend of `Store`: one file created on first use (parent directory too), WAL
//! journal, busy timeout and foreign keys on. Timestamps are INTEGER microseconds since the Unix
//! epoch; samples go in as multi-row inserts inside one transaction. Touches only its file.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};

use super::history::{self, Bucket, EnergyBucket};
use super::house::{self, HouseHour};
use super::rows::sqlite::{
    job_run_from_row, json_from_text, json_to_text, opt_time, sample_from_row,
};
use super::{
    Backend, CommandRecord, DatabaseSettings, DeviceRecord, Document, JobRecord, JobRunRecord,
    RunStatus, Store, StoreError, TempoDayRecord, connect_error, decode_err, enum_name,
    from_micros, migration_error, parse_enum, parse_run_status, to_micros,
};
use crate::domain::{Alert, AlertState, DesiredState, DeviceId, DeviceInfo, Sample};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The database clock in microseconds since the Unix epoch (millisecond resolution).
const NOW_US: &str = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) * 1000";

/// Rows per INSERT statement (22 parameters each, well under SQLite's 32766 limit).
const ROWS_PER_INSERT: usize = 500;

const SAMPLE_COLUMNS: &str = "device_id, time, soc, bat_power, grid_power, offgrid_power, \
    pv_power, temperature, remaining_capacity, rated_capacity, total_pv_energy, \
    total_grid_output_energy, total_grid_input_energy, total_load_energy, mode, ct_connected, \
    ct_power, charge_allowed, discharge_allowed, rssi, readings";

/// A `Store` on an embedded SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Site written into every new row (`bridge.site_id`).
    site: String,
}

impl SqliteStore {
    /// Opens (creating file and parent directory when missing) and applies migrations.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(&settings.url)
            .map_err(|e| StoreError::BadUrl(format!("{}: {e}", settings.redacted_url())))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(settings.acquire_timeout)
            .foreign_keys(true);
        if let Some(parent) = opts.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::BadUrl(format!(
                    "{}: cannot create directory {}: {e}",
                    settings.redacted_url(),
                    parent.display()
                ))
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(opts)
            .await
            .map_err(|e| match connect_error(settings, e) {
                // A file that cannot be opened is a configuration problem, not an outage.
                StoreError::Unavailable(why) => StoreError::BadUrl(why),
                other => other,
            })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| migration_error(&MIGRATOR, "migrations/sqlite", e))?;
        let site = settings.site_id.clone();
        super::site::sqlite_backfill(&pool, &site).await?;
        super::forward::set_enabled(&pool, settings.forward).await?;
        Ok(Self { pool, site })
    }

    /// The underlying pool (tests and benches).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn insert_sql(rows: usize) -> String {
    let mut sql = format!("INSERT INTO battery_status ({SAMPLE_COLUMNS}, site_id) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    }
    sql.push_str(" ON CONFLICT (device_id, time) DO NOTHING");
    sql
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn upsert_device(
        &self,
        info: &DeviceInfo,
        seen_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO devices (id, model, firmware, ble_mac, wifi_mac, address, first_seen_at, \
             last_seen_at, site_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8) \
             ON CONFLICT (id) DO UPDATE SET model = excluded.model, \
             firmware = excluded.firmware, ble_mac = excluded.ble_mac, \
             wifi_mac = excluded.wifi_mac, address = excluded.address, \
             last_seen_at = MAX(COALESCE(devices.last_seen_at, 0), excluded.last_seen_at)",
        )
        .bind(info.id.as_str())
        .bind(&info.model)
        .bind(i64::from(info.firmware))
        .bind(&info.ble_mac)
        .bind(&info.wifi_mac)
        .bind(&info.address)
        .bind(to_micros(seen_at))
        .bind(&self.site)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn touch_device(&self, id: &DeviceId, seen_at: DateTime<Utc>) -> Result<(), StoreError> {
        let r = sqlx::query("UPDATE devices SET last_seen_at = ?2 WHERE id = ?1")
            .bind(id.as_str())
            .bind(to_micros(seen_at))
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, model, firmware, ble_mac, wifi_mac, address, first_seen_at, last_seen_at \
             FROM devices ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let firmware: i64 = r.try_get("firmware")?;
                Ok(DeviceRecord {
                    info: DeviceInfo {
                        id: DeviceId(r.try_get("id")?),
                        model: r.try_get("model")?,
                        firmware: u32::try_from(firmware).map_err(|e| decode_err("firmware", e))?,
                        ble_mac: r.try_get("ble_mac")?,
                        wifi_mac: r.try_get("wifi_mac")?,
                        address: r.try_get("address")?,
                        readings: Default::default(),
                        firmware_note: None,
                    },
                    first_seen_at: from_micros(r.try_get("first_seen_at")?)?,
                    last_seen_at: opt_time(r.try_get("last_seen_at")?)?,
                })
            })
            .collect()
    }

    async fn insert_samples(&self, samples: &[Sample]) -> Result<u64, StoreError> {
        if samples.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        let full_sql = insert_sql(ROWS_PER_INSERT.min(samples.len()));
        for chunk in samples.chunks(ROWS_PER_INSERT) {
            let sql = if chunk.len() == ROWS_PER_INSERT.min(samples.len()) {
                full_sql.clone()
            } else {
                insert_sql(chunk.len())
            };
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for s in chunk {
                q = q
                    .bind(s.device.as_str())
                    .bind(to_micros(s.at))
                    .bind(s.soc.map(|p| i64::from(p.0)))
                    .bind(s.bat_power.map(|w| w.0))
                    .bind(s.grid_power.map(|w| w.0))
                    .bind(s.offgrid_power.map(|w| w.0))
                    .bind(s.pv_power.map(|w| w.0))
                    .bind(s.temperature.map(|c| c.0))
                    .bind(s.remaining_capacity.map(|e| e.0))
                    .bind(s.rated_capacity.map(|e| e.0))
                    .bind(s.total_pv_energy.map(|e| e.0))
                    .bind(s.total_grid_output_energy.map(|e| e.0))
                    .bind(s.total_grid_input_energy.map(|e| e.0))
                    .bind(s.total_load_energy.map(|e| e.0))
                    .bind(s.mode.map(|m| m.as_str()))
                    .bind(s.ct_connected)
                    .bind(s.ct_power.map(|w| w.0))
                    .bind(s.charge_allowed)
                    .bind(s.discharge_allowed)
                    .bind(s.rssi)
                    .bind(s.readings.to_stored_json().map(|v| v.to_string()))
                    .bind(&self.site);
            }
            inserted += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn latest_samples(&self) -> Result<Vec<Sample>, StoreError> {
        // Skip scan over the primary key: a few index probes per device, never a full scan.
        let rows = sqlx::query(
            "WITH RECURSIVE d(device_id) AS ( \
               SELECT (SELECT MIN(device_id) FROM battery_status) \
               UNION ALL \
               SELECT (SELECT MIN(b.device_id) FROM battery_status b \
                       WHERE b.device_id > d.device_id) \
               FROM d WHERE d.device_id IS NOT NULL) \
             SELECT b.* FROM d CROSS JOIN battery_status b \
             ON b.device_id = d.device_id \
             AND b.time = (SELECT MAX(m.time) FROM battery_status m \
                           WHERE m.device_id = d.device_id) \
             ORDER BY b.device_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sample_from_row).collect()
    }

    async fn sample_history(
        &self,
        device: &DeviceId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Sample>, StoreError> {
        let sql = format!(
            "SELECT {SAMPLE_COLUMNS} FROM battery_status \
             WHERE device_id = ?1 AND time >= ?2 AND time < ?3 ORDER BY time"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(device.as_str())
            .bind(to_micros(from))
            .bind(to_micros(to))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(sample_from_row).collect()
    }

    async fn prune_samples(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        history::sqlite_rollup_before(&mut tx, before).await?;
        let r = sqlx::query("DELETE FROM battery_status WHERE time < ?1")
            .bind(to_micros(before))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected())
    }

    async fn energy_history(
        &self,
        device: &DeviceId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket: Bucket,
    ) -> Result<Vec<EnergyBucket>, StoreError> {
        history::sqlite_energy_history(&self.pool, device, from, to, bucket).await
    }

    async fn house_history(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<HouseHour>, StoreError> {
        house::sqlite_house_history(&self.pool, from, to).await
    }

    async fn record_alert(&self, alert: &Alert) -> Result<(), StoreError> {
        let kind = alert.kind.as_str();
        let device = alert.device.as_ref().map(|d| d.as_str()).unwrap_or("");
        match alert.state {
            AlertState::Raised => {
                sqlx::query(
                    "INSERT INTO alerts (kind, device_id, severity, message, value, threshold, \
                     raised_at, site_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (kind, device_id) WHERE cleared_at IS NULL DO UPDATE SET \
                     severity = excluded.severity, message = excluded.message, \
                     value = excluded.value, threshold = excluded.threshold",
                )
                .bind(kind)
                .bind(device)
                .bind(enum_name(&alert.severity)?)
                .bind(&alert.message)
                .bind(alert.value)
                .bind(alert.threshold)
                .bind(to_micros(alert.at))
                .bind(&self.site)
                .execute(&self.pool)
                .await?;
            }
            AlertState::Cleared => {
                sqlx::query(
                    "UPDATE alerts SET cleared_at = ?3 \
                     WHERE kind = ?1 AND device_id = ?2 AND cleared_at IS NULL",
                )
                .bind(kind)
                .bind(device)
                .bind(to_micros(alert.at))
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }

    async fn open_alerts(&self) -> Result<Vec<Alert>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, device_id, severity, message, value, threshold, raised_at \
             FROM alerts WHERE cleared_at IS NULL ORDER BY raised_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                let device: String = r.try_get("device_id")?;
                let severity: String = r.try_get("severity")?;
                Ok(Alert {
                    kind: parse_enum("alert kind", &kind)?,
                    severity: parse_enum("alert severity", &severity)?,
                    device: (!device.is_empty()).then_some(DeviceId(device)),
                    message: r.try_get("message")?,
                    value: r.try_get("value")?,
                    threshold: r.try_get("threshold")?,
                    state: AlertState::Raised,
                    at: from_micros(r.try_get("raised_at")?)?,
                })
            })
            .collect()
    }

    async fn record_command(&self, record: &CommandRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO commands (at, source, device, payload, status, error, latency_ms, \
             site_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(to_micros(record.at))
        .bind(record.source.as_str())
        .bind(&record.device)
        .bind(json_to_text("command payload", &record.payload)?)
        .bind(record.status.as_str())
        .bind(&record.error)
        .bind(record.latency_ms)
        .bind(&self.site)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn recent_commands(&self, limit: u32) -> Result<Vec<CommandRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, source, device, payload, status, error, latency_ms FROM commands \
             ORDER BY at DESC, id DESC LIMIT ?1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CommandRecord {
                    at: from_micros(r.try_get("at")?)?,
                    source: parse_enum("command source", r.try_get("source")?)?,
                    device: r.try_get("device")?,
                    payload: json_from_text("command payload", r.try_get("payload")?)?
                        .unwrap_or_default(),
                    status: parse_enum("command status", r.try_get("status")?)?,
                    error: r.try_get("error")?,
                    latency_ms: r.try_get("latency_ms")?,
                })
            })
            .collect()
    }

    async fn jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, trigger, trigger_overridden, next_run_at, paused, last_run_at, \
             last_status FROM scheduled_jobs ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(JobRecord {
                    id: r.try_get("id")?,
                    trigger: r.try_get("trigger")?,
                    trigger_overridden: r.try_get("trigger_overridden")?,
                    next_run_at: opt_time(r.try_get("next_run_at")?)?,
                    paused: r.try_get("paused")?,
                    last_run_at: opt_time(r.try_get("last_run_at")?)?,
                    last_status: r
                        .try_get::<Option<String>, _>("last_status")?
                        .as_deref()
                        .map(parse_run_status)
                        .transpose()?,
                })
            })
            .collect()
    }

    async fn upsert_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO scheduled_jobs (id, trigger, trigger_overridden, next_run_at, paused, \
             last_run_at, last_status) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (id) DO UPDATE SET trigger = excluded.trigger, \
             trigger_overridden = excluded.trigger_overridden, \
             next_run_at = excluded.next_run_at, paused = excluded.paused, \
             last_run_at = excluded.last_run_at, last_status = excluded.last_status",
        )
        .bind(&job.id)
        .bind(&job.trigger)
        .bind(job.trigger_overridden)
        .bind(job.next_run_at.map(to_micros))
        .bind(job.paused)
        .bind(job.last_run_at.map(to_micros))
        .bind(job.last_status.map(RunStatus::as_str))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim_run(&self, run: &JobRunRecord) -> Result<bool, StoreError> {
        let result = run
            .result
            .as_ref()
            .map(|v| json_to_text("job run result", v))
            .transpose()?;
        let r = sqlx::query(
            "INSERT INTO job_runs (job_id, scheduled_for, status, instance, started_at, \
             finished_at, result, error, site_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (job_id, scheduled_for) DO NOTHING",
        )
        .bind(&run.job_id)
        .bind(to_micros(run.scheduled_for))
        .bind(run.status.as_str())
        .bind(&run.instance)
        .bind(run.started_at.map(to_micros))
        .bind(run.finished_at.map(to_micros))
        .bind(result)
        .bind(&run.error)
        .bind(&self.site)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn finish_run(&self, run: &JobRunRecord) -> Result<(), StoreError> {
        let result = run
            .result
            .as_ref()
            .map(|v| json_to_text("job run result", v))
            .transpose()?;
        let r = sqlx::query(
            "UPDATE job_runs SET status = ?3, finished_at = ?4, result = ?5, error = ?6 \
             WHERE job_id = ?1 AND scheduled_for = ?2",
        )
        .bind(&run.job_id)
        .bind(to_micros(run.scheduled_for))
        .bind(run.status.as_str())
        .bind(run.finished_at.map(to_micros))
        .bind(result)
        .bind(&run.error)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn job_runs(
        &self,
        job_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<JobRunRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT job_id, scheduled_for, status, instance, started_at, finished_at, result, \
             error FROM job_runs WHERE (?1 IS NULL OR job_id = ?1) \
             ORDER BY scheduled_for DESC, id DESC LIMIT ?2",
        )
        .bind(job_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_run_from_row).collect()
    }

    async fn set_desired(&self, desired: &DesiredState) -> Result<(), StoreError> {
        let config =
            serde_json::to_string(&desired.config).map_err(|e| decode_err("mode config", e))?;
        sqlx::query(
            "INSERT INTO desired_state (device_id, config, set_by, set_at, valid_until) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (device_id) DO UPDATE SET \
             config = excluded.config, set_by = excluded.set_by, set_at = excluded.set_at, \
             valid_until = excluded.valid_until",
        )
        .bind(desired.device.as_str())
        .bind(config)
        .bind(&desired.set_by)
        .bind(to_micros(desired.set_at))
        .bind(desired.valid_until.map(to_micros))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn clear_desired(&self, device: &DeviceId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM desired_state WHERE device_id = ?1")
            .bind(device.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn desired_states(&self) -> Result<Vec<DesiredState>, StoreError> {
        let rows = sqlx::query(
            "SELECT device_id, config, set_by, set_at, valid_until FROM desired_state \
             ORDER BY device_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let config: String = r.try_get("config")?;
                Ok(DesiredState {
                    device: DeviceId(r.try_get("device_id")?),
                    config: serde_json::from_str(&config)
                        .map_err(|e| decode_err("mode config", e))?,
                    set_by: r.try_get("set_by")?,
                    set_at: from_micros(r.try_get("set_at")?)?,
                    valid_until: opt_time(r.try_get("valid_until")?)?,
                })
            })
            .collect()
    }

    async fn upsert_tempo_day(&self, day: &TempoDayRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tempo_days (date, colour, source, fetched_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (date) DO UPDATE SET colour = excluded.colour, \
             source = excluded.source, fetched_at = excluded.fetched_at",
        )
        .bind(day.date)
        .bind(&day.colour)
        .bind(&day.source)
        .bind(to_micros(day.fetched_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn tempo_day(&self, date: NaiveDate) -> Result<Option<TempoDayRecord>, StoreError> {
        let row =
            sqlx::query("SELECT date, colour, source, fetched_at FROM tempo_days WHERE date = ?1")
                .bind(date)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(TempoDayRecord {
                date: r.try_get("date")?,
                colour: r.try_get("colour")?,
                source: r.try_get("source")?,
                fetched_at: from_micros(r.try_get("fetched_at")?)?,
            })
        })
        .transpose()
    }

    async fn put_document(&self, key: &str, doc: &Document) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO documents (key, value, updated_at) VALUES (?1, ?2, {NOW_US}) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
             updated_at = excluded.updated_at"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(key)
            .bind(json_to_text("document", doc)?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn document(&self, key: &str) -> Result<Option<Document>, StoreError> {
        let v: Option<String> = sqlx::query_scalar("SELECT value FROM documents WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        json_from_text("document", v)
    }

    async fn documents_under(&self, prefix: &str) -> Result<Vec<(String, Document)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT key, value FROM documents WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(k, v)| Ok((k, json_from_text("document", Some(v))?.unwrap_or_default())))
            .collect()
    }

    async fn try_lead(
        &self,
        lease: &str,
        instance: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let ttl_us = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 2);
        let sql = format!(
            "INSERT INTO leader (name, instance, acquired_at, expires_at) \
             VALUES (?1, ?2, {NOW_US}, {NOW_US} + ?3) \
             ON CONFLICT (name) DO UPDATE SET instance = excluded.instance, \
             expires_at = excluded.expires_at, \
             acquired_at = CASE WHEN leader.instance = excluded.instance \
             THEN leader.acquired_at ELSE excluded.acquired_at END \
             WHERE leader.instance = excluded.instance OR leader.expires_at <= excluded.acquired_at \
             RETURNING instance"
        );
        let row: Option<String> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(lease)
            .bind(instance)
            .bind(ttl_us)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn resign(&self, lease: &str, instance: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leader WHERE name = ?1 AND instance = ?2")
            .bind(lease)
            .bind(instance)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn lease_holder(&self, lease: &str) -> Result<Option<String>, StoreError> {
        let sql = format!("SELECT instance FROM leader WHERE name = ?1 AND expires_at > {NOW_US}");
        Ok(sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(lease)
            .fetch_optional(&self.pool)
            .await?)
    }
}
