//! Telemetry rows (`battery_status`) on PostgreSQL/TimescaleDB: a batch goes in as one `UNNEST`
//! insert of column arrays, the latest sample per device comes from a skip scan over the primary
//! key, and a device's history from a range scan. Called by `PgStore`; touches only its pool.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Postgres};

use super::StoreError;
use super::rows::pg::sample_from_row;
use crate::domain::{DeviceId, Sample};

/// The columns of `battery_status`, in the order every query here reads and writes them.
pub(super) const SAMPLE_COLUMNS: &str = "device_id, time, soc, bat_power, grid_power, offgrid_power, \
    pv_power, temperature, remaining_capacity, rated_capacity, total_pv_energy, \
    total_grid_output_energy, total_grid_input_energy, total_load_energy, mode, ct_connected, \
    ct_power, charge_allowed, discharge_allowed, rssi, readings";

/// Inserts a batch in one statement, every row of `site` (a row already stored for the same
/// device and time is kept); returns how many rows were added.
pub(super) async fn insert(
    pool: &PgPool,
    samples: &[Sample],
    site: &str,
) -> Result<u64, StoreError> {
    if samples.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "INSERT INTO battery_status ({SAMPLE_COLUMNS}, site_id) \
         SELECT u.*, $22::text FROM UNNEST($1::text[], $2::timestamptz[], $3::smallint[], $4::int[], \
         $5::int[], $6::int[], $7::int[], $8::float8[], $9::float8[], $10::float8[], \
         $11::float8[], $12::float8[], $13::float8[], $14::float8[], $15::text[], \
         $16::bool[], $17::int[], $18::bool[], $19::bool[], $20::int[], $21::jsonb[]) AS u \
         ON CONFLICT (device_id, time) DO NOTHING"
    );
    let query = sqlx::query(AssertSqlSafe(sql));
    let r = Columns::of(samples)
        .bind(query)
        .bind(site)
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}

/// The newest sample of every device that has one, ordered by device id.
pub(super) async fn latest(pool: &PgPool) -> Result<Vec<Sample>, StoreError> {
    // Skip scan over the primary key: a few index probes per device, never a full scan.
    let sql = format!(
        "WITH RECURSIVE d AS ( \
           (SELECT device_id FROM battery_status ORDER BY device_id LIMIT 1) \
           UNION ALL \
           SELECT (SELECT b.device_id FROM battery_status b \
                   WHERE b.device_id > d.device_id ORDER BY b.device_id LIMIT 1) \
           FROM d WHERE d.device_id IS NOT NULL) \
         SELECT s.* FROM d CROSS JOIN LATERAL (SELECT {SAMPLE_COLUMNS} FROM battery_status b \
         WHERE b.device_id = d.device_id ORDER BY b.time DESC LIMIT 1) s \
         ORDER BY s.device_id"
    );
    let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(pool).await?;
    rows.iter().map(sample_from_row).collect()
}

/// The samples of `device` in `[from, to)`, oldest first.
pub(super) async fn history(
    pool: &PgPool,
    device: &DeviceId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Sample>, StoreError> {
    let sql = format!(
        "SELECT {SAMPLE_COLUMNS} FROM battery_status \
         WHERE device_id = $1 AND time >= $2 AND time < $3 ORDER BY time"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(device.as_str())
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
    rows.iter().map(sample_from_row).collect()
}

pub(super) type Query<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// A batch of samples as one array a column, in `SAMPLE_COLUMNS` order (the `UNNEST` parameters).
pub(super) struct Columns<'a> {
    device: Vec<&'a str>,
    time: Vec<DateTime<Utc>>,
    soc: Vec<Option<i16>>,
    bat: Vec<Option<i32>>,
    grid: Vec<Option<i32>>,
    offgrid: Vec<Option<i32>>,
    pv: Vec<Option<i32>>,
    temp: Vec<Option<f64>>,
    remaining: Vec<Option<f64>>,
    rated: Vec<Option<f64>>,
    tpv: Vec<Option<f64>>,
    tout: Vec<Option<f64>>,
    tin: Vec<Option<f64>>,
    tload: Vec<Option<f64>>,
    mode: Vec<Option<&'static str>>,
    ct_conn: Vec<Option<bool>>,
    ct_pow: Vec<Option<i32>>,
    chg: Vec<Option<bool>>,
    dis: Vec<Option<bool>>,
    rssi: Vec<Option<i32>>,
    readings: Vec<Option<serde_json::Value>>,
}

impl<'a> Columns<'a> {
    /// Splits `samples` into columns.
    pub(super) fn of(samples: &'a [Sample]) -> Self {
        let mut c = Self::with_capacity(samples.len());
        for s in samples {
            c.device.push(s.device.as_str());
            c.time.push(s.at);
            c.soc.push(s.soc.map(|p| i16::from(p.0)));
            c.bat.push(s.bat_power.map(|w| w.0));
            c.grid.push(s.grid_power.map(|w| w.0));
            c.offgrid.push(s.offgrid_power.map(|w| w.0));
            c.pv.push(s.pv_power.map(|w| w.0));
            c.temp.push(s.temperature.map(|t| t.0));
            c.remaining.push(s.remaining_capacity.map(|e| e.0));
            c.rated.push(s.rated_capacity.map(|e| e.0));
            c.tpv.push(s.total_pv_energy.map(|e| e.0));
            c.tout.push(s.total_grid_output_energy.map(|e| e.0));
            c.tin.push(s.total_grid_input_energy.map(|e| e.0));
            c.tload.push(s.total_load_energy.map(|e| e.0));
            c.mode.push(s.mode.map(|m| m.as_str()));
            c.ct_conn.push(s.ct_connected);
            c.ct_pow.push(s.ct_power.map(|w| w.0));
            c.chg.push(s.charge_allowed);
            c.dis.push(s.discharge_allowed);
            c.rssi.push(s.rssi);
            c.readings.push(s.readings.to_stored_json());
        }
        c
    }

    fn with_capacity(n: usize) -> Self {
        Self {
            device: Vec::with_capacity(n),
            time: Vec::with_capacity(n),
            soc: Vec::with_capacity(n),
            bat: Vec::with_capacity(n),
            grid: Vec::with_capacity(n),
            offgrid: Vec::with_capacity(n),
            pv: Vec::with_capacity(n),
            temp: Vec::with_capacity(n),
            remaining: Vec::with_capacity(n),
            rated: Vec::with_capacity(n),
            tpv: Vec::with_capacity(n),
            tout: Vec::with_capacity(n),
            tin: Vec::with_capacity(n),
            tload: Vec::with_capacity(n),
            mode: Vec::with_capacity(n),
            ct_conn: Vec::with_capacity(n),
            ct_pow: Vec::with_capacity(n),
            chg: Vec::with_capacity(n),
            dis: Vec::with_capacity(n),
            rssi: Vec::with_capacity(n),
            readings: Vec::with_capacity(n),
        }
    }

    /// Binds the columns as `$1` … `$21`.
    pub(super) fn bind(self, query: Query<'a>) -> Query<'a> {
        query
            .bind(self.device)
            .bind(self.time)
            .bind(self.soc)
            .bind(self.bat)
            .bind(self.grid)
            .bind(self.offgrid)
            .bind(self.pv)
            .bind(self.temp)
            .bind(self.remaining)
            .bind(self.rated)
            .bind(self.tpv)
            .bind(self.tout)
            .bind(self.tin)
            .bind(self.tload)
            .bind(self.mode)
            .bind(self.ct_conn)
            .bind(self.ct_pow)
            .bind(self.chg)
            .bind(self.dis)
            .bind(self.rssi)
            .bind(self.readings)
    }
}
