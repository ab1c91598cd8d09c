//! The central side of store-and-forward, on PostgreSQL/TimescaleDB: connecting (the bridge's
//! migrations, then the TimescaleDB step for `fleet_battery_status`), writing what an edge
//! forwards — telemetry, the command audit, its devices and its contact — keyed by site so that
//! a replay is ignored (`ON CONFLICT DO NOTHING`), and reading the per-site fleet view. Each
//! edge also claims its site as an instance with its batteries (`fleet_instances`): another
//! instance recently claiming the same site with other batteries is a site-id conflict. Touches
//! only the `fleet_*` tables of the central database (and its migrations).

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};

use super::pg_samples::{Columns, SAMPLE_COLUMNS};
use super::{Backend, CommandRecord, DeviceRecord, StoreError, migration_error, redact_url};
use crate::domain::Sample;

/// How to reach the central database.
#[derive(Debug, Clone)]
pub struct CentralTarget {
    /// `postgres://…` of the central database.
    pub url: String,
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// Longest wait for a connection, s.
    pub timeout: Duration,
    /// TimescaleDB: raw central telemetry kept this many days.
    pub retention_days: u32,
    /// TimescaleDB: chunks older than this many days are compressed.
    pub compress_after_days: u32,
}

/// An edge instance claiming a site: who it is and which batteries it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claim {
    /// Its instance id (`bridge.instance_id`, or derived from the host).
    pub instance: String,
    /// The host it runs on.
    pub host: String,
    /// Its configured battery ids, sorted.
    pub devices: Vec<String>,
}

/// A connection pool on the central database.
#[derive(Debug, Clone)]
pub struct Central {
    pool: PgPool,
    backend: Backend,
}

/// One site in the fleet view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteStatus {
    /// `bridge.site_id` of the edge.
    pub site_id: String,
    /// Last time its forwarder reached the central database (central clock).
    pub last_contact: DateTime<Utc>,
    /// Whether `last_contact` is more recent than the offline threshold.
    pub online: bool,
    /// Telemetry rows the edge still had to forward at its last contact.
    pub backlog: i64,
    /// Telemetry rows the edge gave up (backlog bound, local retention), total.
    pub dropped: i64,
    /// Batteries the edge knows.
    pub batteries: i64,
    /// Distinct firmware versions of its batteries, ascending.
    pub firmware: Vec<i64>,
    /// Telemetry rows received from it.
    pub samples: i64,
    /// Instance ids claiming this site with different batteries (seen within the offline
    /// threshold): a `site_id_conflict`; empty when there is none.
    pub conflict: Vec<String>,
    /// Commands that ended in an error in the last 24 h.
    pub commands_failed_24h: i64,
    /// € saved, when a ledger is kept centrally (none is yet: always None).
    pub saved_eur: Option<f64>,
}

impl Central {
    /// Connects, applies the bridge's PostgreSQL migrations and the TimescaleDB step.
    pub async fn connect(target: &CentralTarget) -> Result<Self, StoreError> {
        let pool = Self::pool_for(target).await?;
        let m = &super::pg::MIGRATOR;
        m.run(&pool)
            .await
            .map_err(|e| migration_error(m, "migrations/postgres", e))?;
        let backend = super::timescale::enable_fleet(
            &pool,
            target.retention_days,
            target.compress_after_days,
        )
        .await?;
        Ok(Self { pool, backend })
    }

    /// Connects for reading only (`fleet status`): no migration, nothing written.
    pub async fn connect_read_only(target: &CentralTarget) -> Result<Self, StoreError> {
        let pool = Self::pool_for(target).await?;
        Ok(Self {
            pool,
            backend: Backend::Postgres,
        })
    }

    async fn pool_for(target: &CentralTarget) -> Result<PgPool, StoreError> {
        let shown = redact_url(&target.url);
        let opts = PgConnectOptions::from_str(&target.url)
            .map_err(|e| StoreError::BadUrl(format!("central.url = {shown}: {e}")))?
            .application_name("marstek-bridge-forward");
        let opts = super::pg::plain_on_loopback(opts, &target.url);
        let pool = PgPoolOptions::new()
            .max_connections(target.max_connections.max(1))
            .acquire_timeout(target.timeout)
            .connect_with(opts)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Unavailable(why) => StoreError::Unavailable(format!(
                    "central.url = {shown} cannot be reached: {why}"
                )),
                other => StoreError::BadUrl(format!("central.url = {shown}: {other}")),
            })?;
        Ok(pool)
    }

    /// Which backend the central database runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool (tests and benches).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Writes telemetry of `site` with its edge order `seqs` in one statement; rows already
    /// there are ignored. Returns how many were new.
    pub async fn insert_samples(
        &self,
        site: &str,
        samples: &[Sample],
        seqs: &[i64],
    ) -> Result<u64, StoreError> {
        if samples.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "INSERT INTO fleet_battery_status ({SAMPLE_COLUMNS}, edge_seq, site_id) \
             SELECT u.*, $23::text FROM UNNEST($1::text[], $2::timestamptz[], $3::smallint[], \
             $4::int[], $5::int[], $6::int[], $7::int[], $8::float8[], $9::float8[], \
             $10::float8[], $11::float8[], $12::float8[], $13::float8[], $14::float8[], \
             $15::text[], $16::bool[], $17::int[], $18::bool[], $19::bool[], $20::int[], \
             $21::jsonb[], $22::bigint[]) AS u ORDER BY 22 \
             ON CONFLICT (site_id, device_id, time) DO NOTHING"
        );
        let query = Columns::of(samples).bind(sqlx::query(AssertSqlSafe(sql)));
        let r = query
            .bind(seqs.to_vec())
            .bind(site)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Writes command audit rows of `site` (edge id, record); rows already there are ignored.
    pub async fn insert_commands(
        &self,
        site: &str,
        commands: &[(i64, CommandRecord)],
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut new = 0;
        for (id, c) in commands {
            new += sqlx::query(
                "INSERT INTO fleet_commands (site_id, edge_id, at, source, device, payload, \
                 status, error, latency_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (site_id, edge_id) DO NOTHING",
            )
            .bind(site)
            .bind(id)
            .bind(c.at)
            .bind(c.source.as_str())
            .bind(&c.device)
            .bind(&c.payload)
            .bind(c.status.as_str())
            .bind(&c.error)
            .bind(c.latency_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(new)
    }

    /// Replaces what the centre knows of the devices of `site`.
    pub async fn upsert_devices(
        &self,
        site: &str,
        devices: &[DeviceRecord],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for d in devices {
            sqlx::query(
                "INSERT INTO fleet_devices (site_id, id, model, firmware, address, last_seen_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (site_id, id) DO UPDATE SET \
                 model = EXCLUDED.model, firmware = EXCLUDED.firmware, \
                 address = EXCLUDED.address, last_seen_at = EXCLUDED.last_seen_at",
            )
            .bind(site)
            .bind(d.info.id.as_str())
            .bind(&d.info.model)
            .bind(i64::from(d.info.firmware))
            .bind(&d.info.address)
            .bind(d.last_seen_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records a contact of `site` now (central clock) with what it still has to send.
    pub async fn contact(&self, site: &str, backlog: u64, dropped: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO fleet_sites (site_id, first_contact, last_contact, backlog, dropped, \
             version) VALUES ($1, now(), now(), $2, $3, $4) ON CONFLICT (site_id) DO UPDATE SET \
             last_contact = now(), backlog = EXCLUDED.backlog, dropped = EXCLUDED.dropped, \
             version = EXCLUDED.version",
        )
        .bind(site)
        .bind(i64::try_from(backlog).unwrap_or(i64::MAX))
        .bind(dropped)
        .bind(env!("CARGO_PKG_VERSION"))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that `me` forwards for `site` now (central clock) with these batteries, and
    /// returns the other instances that claimed `site` within `within` with other batteries.
    pub async fn claim(
        &self,
        site: &str,
        me: &Claim,
        within: Duration,
    ) -> Result<Vec<Claim>, StoreError> {
        let devices = me.devices.join(",");
        sqlx::query(
            "INSERT INTO fleet_instances (site_id, instance_id, host, devices, first_contact, \
             last_contact) VALUES ($1, $2, $3, $4, now(), now()) \
             ON CONFLICT (site_id, instance_id) DO UPDATE SET host = EXCLUDED.host, \
             devices = EXCLUDED.devices, last_contact = now()",
        )
        .bind(site)
        .bind(&me.instance)
        .bind(&me.host)
        .bind(&devices)
        .execute(&self.pool)
        .await?;
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT instance_id, host, devices FROM fleet_instances WHERE site_id = $1 \
             AND instance_id <> $2 AND devices <> $3 \
             AND last_contact > now() - make_interval(secs => $4) ORDER BY instance_id",
        )
        .bind(site)
        .bind(&me.instance)
        .bind(&devices)
        .bind(within.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(instance, host, devices)| Claim {
                instance,
                host,
                devices: devices
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(String::from)
                    .collect(),
            })
            .collect())
    }

    /// Every site that ever forwarded, by site id; online when seen within `offline_after`.
    pub async fn fleet_status(
        &self,
        offline_after: Duration,
    ) -> Result<Vec<SiteStatus>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.site_id, s.last_contact, s.backlog, s.dropped, \
               s.last_contact > now() - make_interval(secs => $1) AS online, \
               (SELECT count(*) FROM fleet_devices d WHERE d.site_id = s.site_id) AS batteries, \
               (SELECT coalesce(array_agg(DISTINCT d.firmware ORDER BY d.firmware), '{}') \
                  FROM fleet_devices d WHERE d.site_id = s.site_id) AS firmware, \
               (SELECT count(*) FROM fleet_battery_status b WHERE b.site_id = s.site_id) \
                  AS samples, \
               (SELECT count(*) FROM fleet_commands c WHERE c.site_id = s.site_id \
                  AND c.status = 'error' AND c.at > now() - INTERVAL '24 hours') AS failed, \
               (SELECT CASE WHEN count(DISTINCT i.devices) > 1 \
                  THEN array_agg(i.instance_id ORDER BY i.instance_id) ELSE '{}' END \
                  FROM fleet_instances i WHERE i.site_id = s.site_id \
                  AND i.last_contact > now() - make_interval(secs => $1)) AS conflict \
             FROM fleet_sites s ORDER BY s.site_id",
        )
        .bind(offline_after.as_secs_f64())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Other(why) if why.contains("fleet_") => StoreError::Other(format!(
                "{why}: no fleet tables in the central database (no edge has forwarded to it yet)"
            )),
            other => other,
        })?;
        rows.iter()
            .map(|r| {
                Ok(SiteStatus {
                    site_id: r.try_get("site_id")?,
                    last_contact: r.try_get("last_contact")?,
                    online: r.try_get("online")?,
                    backlog: r.try_get("backlog")?,
                    dropped: r.try_get("dropped")?,
                    batteries: r.try_get("batteries")?,
                    firmware: r.try_get("firmware")?,
                    samples: r.try_get("samples")?,
                    conflict: r.try_get("conflict")?,
                    commands_failed_24h: r.try_get("failed")?,
                    saved_eur: None,
                })
            })
            .collect()
    }
}
