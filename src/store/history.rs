//! Energy history per battery: hourly and daily buckets of SOC min/mean/max, energy charged and
//! discharged (battery side) and energy drawn from / delivered to the grid port, the numbers
//! the REST history, the status page's charts and the € ledger read instead of raw samples.
//!
//! One definition, three implementations that agree: TimescaleDB reads the continuous
//! aggregates `battery_hourly` / `battery_daily` (defined here, created by `timescale.rs`);
//! plain PostgreSQL and SQLite compute the same hourly rows from `battery_status` with the same
//! expressions, add the hours kept in `battery_hourly_rollup` (written before raw rows are
//! pruned) and fold hours into days here. Touches only the pool it is given; read-only except
//! for `*_rollup_before`, which writes the rollup table.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{AssertSqlSafe, Row};

use super::{Backend, StoreError, decode_err, from_micros, to_micros};
use crate::domain::{DeviceId, Percent, WattHours};

/// Width of one history bucket. Buckets are aligned in UTC: hours on the hour, days at 00:00 UTC
/// (sum hourly buckets for local days, e.g. Tempo's 06:00→06:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    /// One hour (3600 s).
    Hour,
    /// One UTC day (86 400 s), the sum of its 24 hourly buckets.
    Day,
}

impl Bucket {
    /// Length of the bucket, seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Bucket::Hour => 3_600,
            Bucket::Day => 86_400,
        }
    }

    /// The first bucket start at or after `t`.
    pub fn ceil(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let len = self.seconds() * 1_000_000;
        let us = t.timestamp_micros();
        let floor = us.div_euclid(len) * len;
        let start = if floor == us {
            us
        } else {
            floor.saturating_add(len)
        };
        DateTime::from_timestamp_micros(start).unwrap_or(t)
    }

    /// The bucket start at or before `t`.
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let len = self.seconds() * 1_000_000;
        let us = t.timestamp_micros();
        DateTime::from_timestamp_micros(us.div_euclid(len) * len).unwrap_or(t)
    }
}

/// One bucket of one battery's history.
///
/// Energies are estimated per hour from the samples of that hour: the mean of the power's part
/// (charging, discharging, drawing, delivering; a sample without that power does not count)
/// times the time the samples cover, `span × n / (n − 1)` capped at one hour, where `span` is
/// last − first sample time and `n` the number of samples (an hour with one sample counts 0 Wh).
/// A day is the sum of its hours. Power sign conventions are those of `Sample`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyBucket {
    /// Start of the bucket (UTC); the bucket is [start, start + width).
    pub start: DateTime<Utc>,
    /// Samples stored in the bucket.
    pub samples: u64,
    /// Lowest SOC seen, % (None when no sample had one).
    pub soc_min: Option<Percent>,
    /// Mean SOC over the samples that had one, %.
    pub soc_mean: Option<f64>,
    /// Highest SOC seen, %.
    pub soc_max: Option<Percent>,
    /// Energy into the battery (`bat_power` < 0), Wh.
    pub charged: WattHours,
    /// Energy out of the battery (`bat_power` > 0), Wh.
    pub discharged: WattHours,
    /// Energy drawn from the grid at the battery's AC port (`grid_power` < 0), Wh.
    pub grid_in: WattHours,
    /// Energy delivered to the grid at the battery's AC port (`grid_power` > 0), Wh.
    pub grid_out: WattHours,
}

/// One bucket as the SQL returns it (SOC as sum and count so buckets can be added up).
#[derive(Debug, Clone, PartialEq)]
struct Partial {
    start: DateTime<Utc>,
    samples: i64,
    soc_min: Option<i64>,
    soc_max: Option<i64>,
    soc_sum: f64,
    soc_count: i64,
    charged: f64,
    discharged: f64,
    grid_in: f64,
    grid_out: f64,
}

impl Partial {
    fn add(&mut self, o: &Partial) {
        self.samples += o.samples;
        self.soc_min = min_opt(self.soc_min, o.soc_min);
        self.soc_max = max_opt(self.soc_max, o.soc_max);
        self.soc_sum += o.soc_sum;
        self.soc_count += o.soc_count;
        self.charged += o.charged;
        self.discharged += o.discharged;
        self.grid_in += o.grid_in;
        self.grid_out += o.grid_out;
    }

    fn finish(self) -> Result<EnergyBucket, StoreError> {
        let pct = |v: Option<i64>| {
            v.map(|v| Percent::parse(v).map_err(|e| decode_err("soc", e)))
                .transpose()
        };
        Ok(EnergyBucket {
            start: self.start,
            samples: u64::try_from(self.samples).map_err(|e| decode_err("samples", e))?,
            soc_min: pct(self.soc_min)?,
            soc_mean: (self.soc_count > 0).then(|| self.soc_sum / self.soc_count as f64),
            soc_max: pct(self.soc_max)?,
            charged: WattHours(self.charged),
            discharged: WattHours(self.discharged),
            grid_in: WattHours(self.grid_in),
            grid_out: WattHours(self.grid_out),
        })
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Adds hourly rows up into UTC days (input and output ordered by start).
fn fold_days(hours: Vec<Partial>) -> Vec<Partial> {
    let mut days: Vec<Partial> = Vec::new();
    for h in hours {
        let day = Bucket::Day.floor(h.start);
        match days.last_mut() {
            Some(d) if d.start == day => d.add(&h),
            _ => days.push(Partial { start: day, ..h }),
        }
    }
    days
}

/// Hours from the rollup table win over hours recomputed from raw rows (whose hour may have
/// been pruned in part); result ordered by start.
fn merge(rollup: Vec<Partial>, raw: Vec<Partial>) -> Vec<Partial> {
    let mut by_start: BTreeMap<DateTime<Utc>, Partial> =
        raw.into_iter().map(|p| (p.start, p)).collect();
    for p in rollup {
        by_start.insert(p.start, p);
    }
    by_start.into_values().collect()
}

/// Hourly aggregate columns over `battery_status` (PostgreSQL), after the bucket column. The
/// TimescaleDB continuous aggregate `battery_hourly` and the plain PostgreSQL query both use
/// exactly this text, so they cannot disagree.
pub(crate) const PG_HOURLY_COLUMNS: &str = "count(*)::int8 AS samples, \
    min(soc)::int8 AS soc_min, max(soc)::int8 AS soc_max, \
    COALESCE(sum(soc), 0)::float8 AS soc_sum, count(soc)::int8 AS soc_count, \
    COALESCE(avg(CASE WHEN bat_power < 0 THEN -bat_power WHEN bat_power >= 0 THEN 0 END)::float8 \
      * LEAST(3600.0, extract(epoch FROM max(time) - min(time))::float8 * count(*) \
      / NULLIF(count(*) - 1, 0)) / 3600.0, 0) AS charged_wh, \
    COALESCE(avg(CASE WHEN bat_power > 0 THEN bat_power WHEN bat_power <= 0 THEN 0 END)::float8 \
      * LEAST(3600.0, extract(epoch FROM max(time) - min(time))::float8 * count(*) \
      / NULLIF(count(*) - 1, 0)) / 3600.0, 0) AS discharged_wh, \
    COALESCE(avg(CASE WHEN grid_power < 0 THEN -grid_power WHEN grid_power >= 0 THEN 0 END)::float8 \
      * LEAST(3600.0, extract(epoch FROM max(time) - min(time))::float8 * count(*) \
      / NULLIF(count(*) - 1, 0)) / 3600.0, 0) AS grid_in_wh, \
    COALESCE(avg(CASE WHEN grid_power > 0 THEN grid_power WHEN grid_power <= 0 THEN 0 END)::float8 \
      * LEAST(3600.0, extract(epoch FROM max(time) - min(time))::float8 * count(*) \
      / NULLIF(count(*) - 1, 0)) / 3600.0, 0) AS grid_out_wh";

/// Daily columns over the hourly rows (the continuous aggregate `battery_daily`).
pub(crate) const PG_DAILY_COLUMNS: &str = "sum(samples)::int8 AS samples, \
    min(soc_min)::int8 AS soc_min, max(soc_max)::int8 AS soc_max, \
    sum(soc_sum)::float8 AS soc_sum, sum(soc_count)::int8 AS soc_count, \
    sum(charged_wh)::float8 AS charged_wh, sum(discharged_wh)::float8 AS discharged_wh, \
    sum(grid_in_wh)::float8 AS grid_in_wh, sum(grid_out_wh)::float8 AS grid_out_wh";

/// The same hourly columns for SQLite (times in µs; `max`/`min` with two arguments are scalar).
const SQLITE_HOURLY_COLUMNS: &str = "count(*) AS samples, \
    min(soc) AS soc_min, max(soc) AS soc_max, \
    CAST(COALESCE(sum(soc), 0) AS REAL) AS soc_sum, count(soc) AS soc_count, \
    COALESCE(avg(CASE WHEN bat_power < 0 THEN -bat_power WHEN bat_power >= 0 THEN 0 END) \
      * min(3600.0, (max(time) - min(time)) / 1000000.0 * count(*) \
      / NULLIF(count(*) - 1, 0)) / 3600.0, 0.0) AS charged_wh, \
    COALESCE(avg(CASE WHEN bat_power > 0 THEN bat_power WHEN bat_power <= 0 THEN 0 END) \
      * min(3600.0, (max(time) - min(time)) / 1000000.0 * count(*) \
      / NULLIF(count(*) - 1, 0)) / 3600.0, 0.0) AS discharged_wh, \
    COALESCE(avg(CASE WHEN grid_power < 0 THEN -grid_power WHEN grid_power >= 0 THEN 0 END) \
      * min(3600.0, (max(time) - min(time)) / 1000000.0 * count(*) \
      / NULLIF(count(*) - 1, 0)) / 3600.0, 0.0) AS grid_in_wh, \
    COALESCE(avg(CASE WHEN grid_power > 0 THEN grid_power WHEN grid_power <= 0 THEN 0 END) \
      * min(3600.0, (max(time) - min(time)) / 1000000.0 * count(*) \
      / NULLIF(count(*) - 1, 0)) / 3600.0, 0.0) AS grid_out_wh";

/// Columns every query returns after `bucket`, in order.
const OUT_COLUMNS: &str = "samples, soc_min, soc_max, soc_sum, soc_count, charged_wh, \
    discharged_wh, grid_in_wh, grid_out_wh";

fn partial_from_row<R>(r: &R, start: DateTime<Utc>) -> Result<Partial, StoreError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    f64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Partial {
        start,
        samples: r.try_get("samples")?,
        soc_min: r.try_get("soc_min")?,
        soc_max: r.try_get("soc_max")?,
        soc_sum: r.try_get("soc_sum")?,
        soc_count: r.try_get("soc_count")?,
        charged: r.try_get("charged_wh")?,
        discharged: r.try_get("discharged_wh")?,
        grid_in: r.try_get("grid_in_wh")?,
        grid_out: r.try_get("grid_out_wh")?,
    })
}

/// Bucket-aligned [from, to) for `bucket`: the buckets whose start lies in the range.
fn aligned(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: Bucket,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let (from, to) = (bucket.ceil(from), bucket.ceil(to));
    (from < to).then_some((from, to))
}

/// `Store::energy_history` on PostgreSQL: from the continuous aggregates on TimescaleDB, from
/// `battery_status` plus `battery_hourly_rollup` otherwise.
pub(crate) async fn pg_energy_history(
    pool: &PgPool,
    backend: Backend,
    device: &DeviceId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: Bucket,
) -> Result<Vec<EnergyBucket>, StoreError> {
    let Some((from, to)) = aligned(from, to, bucket) else {
        return Ok(Vec::new());
    };
    let parts = if backend == Backend::Timescale {
        let view = match bucket {
            Bucket::Hour => "battery_hourly",
            Bucket::Day => "battery_daily",
        };
        let sql = format!(
            "SELECT bucket, {OUT_COLUMNS} FROM {view} \
             WHERE device_id = $1 AND bucket >= $2 AND bucket < $3 ORDER BY bucket"
        );
        pg_partials(pool, sql, device, from, to).await?
    } else {
        let raw = format!(
            "SELECT date_bin(INTERVAL '1 hour', time, TIMESTAMPTZ '2000-01-01 00:00:00+00') \
             AS bucket, {PG_HOURLY_COLUMNS} FROM battery_status \
             WHERE device_id = $1 AND time >= $2 AND time < $3 GROUP BY 1 ORDER BY 1"
        );
        let rollup = format!(
            "SELECT bucket, {OUT_COLUMNS} FROM battery_hourly_rollup \
             WHERE device_id = $1 AND bucket >= $2 AND bucket < $3 ORDER BY bucket"
        );
        let hours = merge(
            pg_partials(pool, rollup, device, from, to).await?,
            pg_partials(pool, raw, device, from, to).await?,
        );
        match bucket {
            Bucket::Hour => hours,
            Bucket::Day => fold_days(hours),
        }
    };
    parts.into_iter().map(Partial::finish).collect()
}

async fn pg_partials(
    pool: &PgPool,
    sql: String,
    device: &DeviceId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Partial>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(device.as_str())
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| partial_from_row(r, r.try_get("bucket")?))
        .collect()
}

/// `Store::energy_history` on SQLite: `battery_status` plus `battery_hourly_rollup`.
pub(crate) async fn sqlite_energy_history(
    pool: &SqlitePool,
    device: &DeviceId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: Bucket,
) -> Result<Vec<EnergyBucket>, StoreError> {
    let Some((from, to)) = aligned(from, to, bucket) else {
        return Ok(Vec::new());
    };
    let raw = format!(
        "SELECT (time / 3600000000) * 3600000000 AS bucket, {SQLITE_HOURLY_COLUMNS} \
         FROM battery_status WHERE device_id = ?1 AND time >= ?2 AND time < ?3 \
         GROUP BY 1 ORDER BY 1"
    );
    let rollup = format!(
        "SELECT bucket, {OUT_COLUMNS} FROM battery_hourly_rollup \
         WHERE device_id = ?1 AND bucket >= ?2 AND bucket < ?3 ORDER BY bucket"
    );
    let hours = merge(
        sqlite_partials(pool, rollup, device, from, to).await?,
        sqlite_partials(pool, raw, device, from, to).await?,
    );
    let parts = match bucket {
        Bucket::Hour => hours,
        Bucket::Day => fold_days(hours),
    };
    parts.into_iter().map(Partial::finish).collect()
}

async fn sqlite_partials(
    pool: &SqlitePool,
    sql: String,
    device: &DeviceId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Partial>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(device.as_str())
        .bind(to_micros(from))
        .bind(to_micros(to))
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| partial_from_row(r, from_micros(r.try_get("bucket")?)?))
        .collect()
}

/// Plain PostgreSQL, before pruning raw rows older than `before`: writes the hourly rows of
/// every hour that starts before `before` (computed from all of that hour's rows) into
/// `battery_hourly_rollup`; an hour already there is kept. Returns rows written.
pub(crate) async fn pg_rollup_before(
    conn: &mut sqlx::PgConnection,
    before: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let sql = format!(
        "INSERT INTO battery_hourly_rollup (device_id, bucket, {OUT_COLUMNS}) \
         SELECT device_id, date_bin(INTERVAL '1 hour', time, TIMESTAMPTZ '2000-01-01 00:00:00+00') \
         AS bucket, {PG_HOURLY_COLUMNS} FROM battery_status WHERE time < $1 GROUP BY 1, 2 \
         ON CONFLICT (device_id, bucket) DO NOTHING"
    );
    let r = sqlx::query(AssertSqlSafe(sql))
        .bind(Bucket::Hour.ceil(before))
        .execute(conn)
        .await?;
    Ok(r.rows_affected())
}

/// SQLite twin of `pg_rollup_before`.
pub(crate) async fn sqlite_rollup_before(
    conn: &mut sqlx::SqliteConnection,
    before: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let sql = format!(
        "INSERT INTO battery_hourly_rollup (device_id, bucket, {OUT_COLUMNS}) \
         SELECT device_id, (time / 3600000000) * 3600000000 AS bucket, {SQLITE_HOURLY_COLUMNS} \
         FROM battery_status WHERE time < ?1 GROUP BY 1, 2 \
         ON CONFLICT (device_id, bucket) DO NOTHING"
    );
    let r = sqlx::query(AssertSqlSafe(sql))
        .bind(to_micros(Bucket::Hour.ceil(before)))
        .execute(conn)
        .await?;
    Ok(r.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, m, 0).unwrap()
    }

    fn part(start: DateTime<Utc>, soc: (i64, i64), wh: f64) -> Partial {
        Partial {
            start,
            samples: 2,
            soc_min: Some(soc.0),
            soc_max: Some(soc.1),
            soc_sum: (soc.0 + soc.1) as f64,
            soc_count: 2,
            charged: wh,
            discharged: 0.0,
            grid_in: wh,
            grid_out: 0.0,
        }
    }

    #[test]
    fn buckets_align_in_utc() {
        assert_eq!(Bucket::Hour.ceil(at(10, 0)), at(10, 0));
        assert_eq!(Bucket::Hour.ceil(at(10, 1)), at(11, 0));
        assert_eq!(Bucket::Hour.floor(at(10, 59)), at(10, 0));
        assert_eq!(Bucket::Day.ceil(at(0, 0)), at(0, 0));
        assert_eq!(
            Bucket::Day.ceil(at(0, 1)),
            at(0, 0) + chrono::Duration::days(1)
        );
        assert_eq!(aligned(at(10, 30), at(10, 45), Bucket::Hour), None);
        assert_eq!(
            aligned(at(9, 30), at(11, 10), Bucket::Hour),
            Some((at(10, 0), at(12, 0)))
        );
    }

    #[test]
    fn days_add_their_hours_and_rollup_wins() {
        let next = at(0, 0) + chrono::Duration::days(1);
        let hours = merge(
            vec![part(at(1, 0), (40, 60), 100.0)],
            vec![
                part(at(0, 0), (50, 55), 10.0),
                part(at(1, 0), (1, 2), 999.0),
                part(next, (80, 90), 5.0),
            ],
        );
        assert_eq!(
            hours[1].charged, 100.0,
            "the rollup row replaces the raw one"
        );
        let days = fold_days(hours);
        assert_eq!(days.len(), 2);
        let d = days[0].clone().finish().unwrap();
        assert_eq!(d.start, at(0, 0));
        assert_eq!(d.samples, 4);
        assert_eq!(
            (d.soc_min, d.soc_max),
            (Some(Percent(40)), Some(Percent(60)))
        );
        assert_eq!(d.soc_mean, Some(51.25));
        assert_eq!(d.charged, WattHours(110.0));
        assert_eq!(days[1].start, next);
    }

    #[test]
    fn a_bad_stored_soc_is_a_decode_error() {
        let mut p = part(at(0, 0), (0, 101), 0.0);
        assert!(p.clone().finish().is_err());
        p.soc_max = Some(100);
        p.soc_count = 0;
        assert_eq!(p.finish().unwrap().soc_mean, None);
    }
}
