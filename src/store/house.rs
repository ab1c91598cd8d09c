//! Hourly house telemetry per battery, the input of the Tempo consumption model: per device and
//! UTC hour, the mean CT (grid meter) power, the mean AC power at the battery's grid port and
//! the mean solar power, over the samples of that hour whose readings are plausible.
//!
//! The energy aggregates of `history.rs` (the TimescaleDB continuous aggregates and the plain
//! rollup) carry no CT or PV column, and changing them needs a migration, so this is one
//! grouped query over `battery_status` on every backend (one row per device and hour comes
//! back, never the raw samples; raw rows are kept `retention_days`, 90 by default, far more
//! than the model's window). Read-only; touches only the pool it is given.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{AssertSqlSafe, Row};

use super::{StoreError, from_micros, to_micros};
use crate::domain::DeviceId;

/// Largest CT reading taken as real, W (a house connection is at most 36 kVA in France; more
/// is a bad reading).
pub const MAX_CT_W: i64 = 50_000;
/// Largest battery AC port power taken as real, W (a Venus E does 2.5 kW).
pub const MAX_PORT_W: i64 = 10_000;
/// Largest solar power taken as real, W.
pub const MAX_PV_W: i64 = 20_000;

/// One device's hour of house telemetry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HouseHour {
    /// Battery the samples came from.
    pub device: DeviceId,
    /// Start of the UTC hour.
    pub start: DateTime<Utc>,
    /// Samples with both a plausible CT and port power.
    pub samples: u64,
    /// Mean CT power over those samples, W (+ import, − export).
    pub ct_w: f64,
    /// Mean AC power at the battery's grid port over those samples, W (+ delivering).
    pub port_w: f64,
    /// Mean solar power over the samples that had a plausible one, W (None: no PV reading).
    pub pv_w: Option<f64>,
}

/// Row filter: both powers present and plausible.
fn plausible(ct: &str, port: &str) -> String {
    format!(
        "ct_power IS NOT NULL AND grid_power IS NOT NULL \
         AND ct_power BETWEEN -{ct} AND {ct} AND grid_power BETWEEN -{port} AND {port}"
    )
}

/// The aggregate columns after `bucket`; `f` and `i` are the float and integer casts of the
/// backend (empty on SQLite, whose `avg` is already REAL).
fn columns(f: &str, i: &str) -> String {
    format!(
        "device_id, count(*){i} AS samples, avg(ct_power){f} AS ct_w, \
         avg(grid_power){f} AS port_w, \
         avg(CASE WHEN pv_power BETWEEN 0 AND {MAX_PV_W} THEN pv_power END){f} AS pv_w"
    )
}

/// `Store::house_history` on PostgreSQL and TimescaleDB.
pub(crate) async fn pg_house_history(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<HouseHour>, StoreError> {
    if from >= to {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT date_bin(INTERVAL '1 hour', time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket, \
         {cols} FROM battery_status WHERE time >= $1 AND time < $2 AND {filter} \
         GROUP BY 1, device_id ORDER BY 1, device_id",
        cols = columns("::float8", "::int8"),
        filter = plausible(&MAX_CT_W.to_string(), &MAX_PORT_W.to_string()),
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(HouseHour {
                device: device(r.try_get::<String, _>("device_id")?)?,
                start: r.try_get("bucket")?,
                samples: count(r.try_get("samples")?)?,
                ct_w: r.try_get("ct_w")?,
                port_w: r.try_get("port_w")?,
                pv_w: r.try_get("pv_w")?,
            })
        })
        .collect()
}

/// `Store::house_history` on SQLite.
pub(crate) async fn sqlite_house_history(
    pool: &SqlitePool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<HouseHour>, StoreError> {
    if from >= to {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT (time / 3600000000) * 3600000000 AS bucket, {cols} FROM battery_status \
         WHERE time >= ?1 AND time < ?2 AND {filter} GROUP BY 1, device_id ORDER BY 1, device_id",
        cols = columns("", ""),
        filter = plausible(&MAX_CT_W.to_string(), &MAX_PORT_W.to_string()),
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(to_micros(from))
        .bind(to_micros(to))
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(HouseHour {
                device: device(r.try_get::<String, _>("device_id")?)?,
                start: from_micros(r.try_get("bucket")?)?,
                samples: count(r.try_get("samples")?)?,
                ct_w: r.try_get("ct_w")?,
                port_w: r.try_get("port_w")?,
                pv_w: r.try_get("pv_w")?,
            })
        })
        .collect()
}

/// Stored ids were written from a `DeviceId`; read back as they are (as `rows.rs` does).
fn device(s: String) -> Result<DeviceId, StoreError> {
    Ok(DeviceId(s))
}

fn count(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|e| super::decode_err("samples", e))
}
