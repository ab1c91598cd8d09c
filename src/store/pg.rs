//! PostgreSQL backend of `Store` (with TimescaleDB when the server offers it: `timescale.rs`).
//! Runtime queries with bound parameters only; telemetry rows are read and written by
//! `pg_samples.rs` (one `UNNEST` insert per batch); energy history comes from `history.rs`.
//! Touches only the database it was opened on.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};

use super::history::{self, Bucket, EnergyBucket};
use super::house::{self, HouseHour};
use super::pg_samples;
use super::rows::pg::job_run_from_row;
use super::{
    Backend, CommandRecord, DatabaseSettings, DeviceRecord, Document, JobRecord, JobRunRecord,
    RunStatus, Store, StoreError, TempoDayRecord, connect_error, decode_err, enum_name,
    migration_error, parse_enum, parse_run_status,
};
use crate::domain::{Alert, AlertState, DesiredState, DeviceId, DeviceInfo, Sample};

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// A `Store` on PostgreSQL/TimescaleDB.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    backend: Backend,
    /// Site written into every new row (`bridge.site_id`).
    site: String,
}

impl PgStore {
    /// Connects, applies migrations and the TimescaleDB step (when available).
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, StoreError> {
        let opts = PgConnectOptions::from_str(&settings.url)
            .map_err(|e| StoreError::BadUrl(format!("{}: {e}", settings.redacted_url())))?
            .application_name("marstek-bridge");
        let opts = plain_on_loopback(opts, &settings.url);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(opts)
            .await
            .map_err(|e| connect_error(settings, e))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| migration_error(&MIGRATOR, "migrations/postgres", e))?;
        let backend = super::timescale::enable(&pool, settings).await?;
        let site = settings.site_id.clone();
        super::site::pg_backfill(&pool, &site).await?;
        Ok(Self {
            pool,
            backend,
            site,
        })
    }

    /// The underlying pool (tests and benches).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// `Store::energy_history` computed from `battery_status` (and the rollup table) even on
    /// TimescaleDB, ignoring the continuous aggregates: what plain PostgreSQL does. For checks
    /// and benchmarks that compare the two; the bridge itself uses `energy_history`.
    pub async fn energy_history_from_raw(
        &self,
        device: &DeviceId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket: Bucket,
    ) -> Result<Vec<EnergyBucket>, StoreError> {
        history::pg_energy_history(&self.pool, Backend::Postgres, device, from, to, bucket).await
    }
}

/// TLS to a server on this machine protects nothing and costs ~250 ms of start-up (handshake and
/// root store): without an explicit `sslmode` (URL or `PGSSLMODE`), a loopback host is reached in
/// plain text. Any other host keeps libpq's `prefer`.
pub(super) fn plain_on_loopback(opts: PgConnectOptions, url: &str) -> PgConnectOptions {
    let explicit = url::Url::parse(url)
        .map(|u| {
            u.query_pairs()
                .any(|(k, _)| k == "sslmode" || k == "ssl-mode")
        })
        .unwrap_or(true)
        || std::env::var_os("PGSSLMODE").is_some();
    let host = opts
        .get_host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback && !explicit {
        opts.ssl_mode(PgSslMode::Disable)
    } else {
        opts
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        self.backend
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
             last_seen_at, site_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET model = EXCLUDED.model, \
             firmware = EXCLUDED.firmware, ble_mac = EXCLUDED.ble_mac, \
             wifi_mac = EXCLUDED.wifi_mac, address = EXCLUDED.address, \
             last_seen_at = GREATEST(devices.last_seen_at, EXCLUDED.last_seen_at)",
        )
        .bind(info.id.as_str())
        .bind(&info.model)
        .bind(i64::from(info.firmware))
        .bind(&info.ble_mac)
        .bind(&info.wifi_mac)
        .bind(&info.address)
        .bind(seen_at)
        .bind(&self.site)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn touch_device(&self, id: &DeviceId, seen_at: DateTime<Utc>) -> Result<(), StoreError> {
        let r = sqlx::query("UPDATE devices SET last_seen_at = $2 WHERE id = $1")
            .bind(id.as_str())
            .bind(seen_at)
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
                    first_seen_at: r.try_get("first_seen_at")?,
                    last_seen_at: r.try_get("last_seen_at")?,
                })
            })
            .collect()
    }

    async fn insert_samples(&self, samples: &[Sample]) -> Result<u64, StoreError> {
        pg_samples::insert(&self.pool, samples, &self.site).await
    }

    async fn latest_samples(&self) -> Result<Vec<Sample>, StoreError> {
        pg_samples::latest(&self.pool).await
    }

    async fn sample_history(
        &self,
        device: &DeviceId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Sample>, StoreError> {
        pg_samples::history(&self.pool, device, from, to).await
    }

    async fn prune_samples(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend != Backend::Timescale {
            history::pg_rollup_before(&mut tx, before).await?;
        }
        let r = sqlx::query("DELETE FROM battery_status WHERE time < $1")
            .bind(before)
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
        history::pg_energy_history(&self.pool, self.backend, device, from, to, bucket).await
    }

    async fn house_history(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<HouseHour>, StoreError> {
        house::pg_house_history(&self.pool, from, to).await
    }

    async fn record_alert(&self, alert: &Alert) -> Result<(), StoreError> {
        let kind = alert.kind.as_str();
        let device = alert.device.as_ref().map(|d| d.as_str()).unwrap_or("");
        match alert.state {
            AlertState::Raised => {
                sqlx::query(
                    "INSERT INTO alerts (kind, device_id, severity, message, value, threshold, \
                     raised_at, site_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (kind, device_id) WHERE cleared_at IS NULL DO UPDATE SET \
                     severity = EXCLUDED.severity, message = EXCLUDED.message, \
                     value = EXCLUDED.value, threshold = EXCLUDED.threshold",
                )
                .bind(kind)
                .bind(device)
                .bind(enum_name(&alert.severity)?)
                .bind(&alert.message)
                .bind(alert.value)
                .bind(alert.threshold)
                .bind(alert.at)
                .bind(&self.site)
                .execute(&self.pool)
                .await?;
            }
            AlertState::Cleared => {
                sqlx::query(
                    "UPDATE alerts SET cleared_at = $3 \
                     WHERE kind = $1 AND device_id = $2 AND cleared_at IS NULL",
                )
                .bind(kind)
                .bind(device)
                .bind(alert.at)
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
                    at: r.try_get("raised_at")?,
                })
            })
            .collect()
    }

    async fn record_command(&self, record: &CommandRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO commands (at, source, device, payload, status, error, latency_ms, \
             site_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(record.at)
        .bind(record.source.as_str())
        .bind(&record.device)
        .bind(&record.payload)
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
             ORDER BY at DESC, id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CommandRecord {
                    at: r.try_get("at")?,
                    source: parse_enum("command source", r.try_get("source")?)?,
                    device: r.try_get("device")?,
                    payload: r.try_get("payload")?,
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
                    next_run_at: r.try_get("next_run_at")?,
                    paused: r.try_get("paused")?,
                    last_run_at: r.try_get("last_run_at")?,
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
             last_run_at, last_status) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (id) DO UPDATE SET trigger = EXCLUDED.trigger, \
             trigger_overridden = EXCLUDED.trigger_overridden, \
             next_run_at = EXCLUDED.next_run_at, paused = EXCLUDED.paused, \
             last_run_at = EXCLUDED.last_run_at, last_status = EXCLUDED.last_status",
        )
        .bind(&job.id)
        .bind(&job.trigger)
        .bind(job.trigger_overridden)
        .bind(job.next_run_at)
        .bind(job.paused)
        .bind(job.last_run_at)
        .bind(job.last_status.map(RunStatus::as_str))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim_run(&self, run: &JobRunRecord) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO job_runs (job_id, scheduled_for, status, instance, started_at, \
             finished_at, result, error, site_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (job_id, scheduled_for) DO NOTHING",
        )
        .bind(&run.job_id)
        .bind(run.scheduled_for)
        .bind(run.status.as_str())
        .bind(&run.instance)
        .bind(run.started_at)
        .bind(run.finished_at)
        .bind(&run.result)
        .bind(&run.error)
        .bind(&self.site)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn finish_run(&self, run: &JobRunRecord) -> Result<(), StoreError> {
        let r = sqlx::query(
            "UPDATE job_runs SET status = $3, finished_at = $4, result = $5, error = $6 \
             WHERE job_id = $1 AND scheduled_for = $2",
        )
        .bind(&run.job_id)
        .bind(run.scheduled_for)
        .bind(run.status.as_str())
        .bind(run.finished_at)
        .bind(&run.result)
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
             error FROM job_runs WHERE ($1::text IS NULL OR job_id = $1) \
             ORDER BY scheduled_for DESC, id DESC LIMIT $2",
        )
        .bind(job_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_run_from_row).collect()
    }

    async fn set_desired(&self, desired: &DesiredState) -> Result<(), StoreError> {
        let config =
            serde_json::to_value(&desired.config).map_err(|e| decode_err("mode config", e))?;
        sqlx::query(
            "INSERT INTO desired_state (device_id, config, set_by, set_at, valid_until) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device_id) DO UPDATE SET \
             config = EXCLUDED.config, set_by = EXCLUDED.set_by, set_at = EXCLUDED.set_at, \
             valid_until = EXCLUDED.valid_until",
        )
        .bind(desired.device.as_str())
        .bind(config)
        .bind(&desired.set_by)
        .bind(desired.set_at)
        .bind(desired.valid_until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn clear_desired(&self, device: &DeviceId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM desired_state WHERE device_id = $1")
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
                let config: serde_json::Value = r.try_get("config")?;
                Ok(DesiredState {
                    device: DeviceId(r.try_get("device_id")?),
                    config: serde_json::from_value(config)
                        .map_err(|e| decode_err("mode config", e))?,
                    set_by: r.try_get("set_by")?,
                    set_at: r.try_get("set_at")?,
                    valid_until: r.try_get("valid_until")?,
                })
            })
            .collect()
    }

    async fn upsert_tempo_day(&self, day: &TempoDayRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tempo_days (date, colour, source, fetched_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (date) DO UPDATE SET colour = EXCLUDED.colour, \
             source = EXCLUDED.source, fetched_at = EXCLUDED.fetched_at",
        )
        .bind(day.date)
        .bind(&day.colour)
        .bind(&day.source)
        .bind(day.fetched_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn tempo_day(&self, date: NaiveDate) -> Result<Option<TempoDayRecord>, StoreError> {
        let row =
            sqlx::query("SELECT date, colour, source, fetched_at FROM tempo_days WHERE date = $1")
                .bind(date)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(TempoDayRecord {
                date: r.try_get("date")?,
                colour: r.try_get("colour")?,
                source: r.try_get("source")?,
                fetched_at: r.try_get("fetched_at")?,
            })
        })
        .transpose()
    }

    async fn put_document(&self, key: &str, doc: &Document) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO documents (key, value, updated_at) VALUES ($1, $2, now()) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
        )
        .bind(key)
        .bind(doc)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn document(&self, key: &str) -> Result<Option<Document>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM documents WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn documents_under(&self, prefix: &str) -> Result<Vec<(String, Document)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT key, value FROM documents WHERE left(key, length($1)) = $1 ORDER BY key",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn try_lead(
        &self,
        lease: &str,
        instance: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let ttl_us = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
        let row: Option<String> = sqlx::query_scalar(
            "INSERT INTO leader (name, instance, acquired_at, expires_at) \
             VALUES ($1, $2, now(), now() + make_interval(secs => $3::float8 / 1000000)) \
             ON CONFLICT (name) DO UPDATE SET instance = EXCLUDED.instance, \
             expires_at = EXCLUDED.expires_at, \
             acquired_at = CASE WHEN leader.instance = EXCLUDED.instance \
             THEN leader.acquired_at ELSE EXCLUDED.acquired_at END \
             WHERE leader.instance = EXCLUDED.instance OR leader.expires_at <= now() \
             RETURNING instance",
        )
        .bind(lease)
        .bind(instance)
        .bind(ttl_us as f64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    async fn resign(&self, lease: &str, instance: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leader WHERE name = $1 AND instance = $2")
            .bind(lease)
            .bind(instance)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn lease_holder(&self, lease: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar(
                "SELECT instance FROM leader WHERE name = $1 AND expires_at > now()",
            )
            .bind(lease)
            .fetch_optional(&self.pool)
            .await?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> PgSslMode {
        let opts = PgConnectOptions::from_str(url).unwrap();
        plain_on_loopback(opts, url).get_ssl_mode()
    }

    #[test]
    fn loopback_skips_tls_unless_asked() {
        if std::env::var_os("PGSSLMODE").is_some() {
            return;
        }
        assert!(matches!(
            mode("postgres://u@127.0.0.1/db"),
            PgSslMode::Disable
        ));
        assert!(matches!(
            mode("postgres://u@localhost:5432/db"),
            PgSslMode::Disable
        ));
        assert!(matches!(mode("postgres://u@[::1]/db"), PgSslMode::Disable));
        assert!(matches!(
            mode("postgres://u@127.0.0.1/db?sslmode=require"),
            PgSslMode::Require
        ));
        assert!(matches!(
            mode("postgres://u@db.example/db"),
            PgSslMode::Prefer
        ));
    }
}
