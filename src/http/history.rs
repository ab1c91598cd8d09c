//! Battery history for the API and the page's 24 h chart: the bucket (`hour` or `day`) and
//! time range of a request, checked (at most [`MAX_HOUR_DAYS`] days of hours, at most
//! [`MAX_DAY_DAYS`] days of days), and the store's energy buckets (`Store::energy_history`, the
//! continuous aggregates on TimescaleDB) turned into the points the API answers; the hour in
//! progress is computed here from raw samples (stored, plus the newest one not yet written), so
//! a fresh start's chart is not empty. Pure: the buckets and samples come from the caller.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{Percent, Sample, WattHours};
use crate::store::{Bucket, EnergyBucket};

/// Longest range of hourly buckets one request may cover, days.
pub const MAX_HOUR_DAYS: i64 = 92;
/// Longest range of daily buckets one request may cover, days (five years).
pub const MAX_DAY_DAYS: i64 = 1830;

/// A checked request: the buckets starting in [from, to).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Start (inclusive).
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
    /// Bucket width.
    pub bucket: Bucket,
}

/// One bucket of history.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HistoryPoint {
    /// Start of the bucket (UTC; hours on the hour, days at 00:00 UTC).
    pub t: DateTime<Utc>,
    /// Samples stored in the bucket.
    pub n: u64,
    /// Lowest SOC, %.
    pub soc_min: Option<f64>,
    /// Mean SOC, %.
    pub soc_mean: Option<f64>,
    /// Highest SOC, %.
    pub soc_max: Option<f64>,
    /// Mean battery power over the part of the bucket that has passed, W (+ discharging,
    /// − charging): (discharged − charged) / elapsed hours.
    pub power_mean: f64,
    /// Energy into the battery, Wh.
    pub charged_wh: f64,
    /// Energy out of the battery, Wh.
    pub discharged_wh: f64,
    /// Energy drawn from the grid at the battery's AC port, Wh.
    pub grid_in_wh: f64,
    /// Energy delivered to the grid at the battery's AC port, Wh.
    pub grid_out_wh: f64,
}

/// Parses a bucket: `hour` (or `1h`) and `day` (or `1d`).
pub fn parse_bucket(s: &str) -> Result<Bucket, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "hour" | "1h" | "hourly" => Ok(Bucket::Hour),
        "day" | "1d" | "daily" => Ok(Bucket::Day),
        _ => Err(format!("bucket: '{s}' is not one of hour, day")),
    }
}

/// The default range of a bucket ending at `to`: 24 h of hours, 30 days of days.
pub fn default_span(bucket: Bucket) -> Duration {
    match bucket {
        Bucket::Hour => Duration::hours(24),
        Bucket::Day => Duration::days(30),
    }
}

/// Checks a range: `from` < `to`, at most [`MAX_HOUR_DAYS`] of hours or [`MAX_DAY_DAYS`] of
/// days.
pub fn window(from: DateTime<Utc>, to: DateTime<Utc>, bucket: Bucket) -> Result<Window, String> {
    if from >= to {
        return Err(format!("from ({from}) must be before to ({to})"));
    }
    let (max, name) = match bucket {
        Bucket::Hour => (MAX_HOUR_DAYS, "hour"),
        Bucket::Day => (MAX_DAY_DAYS, "day"),
    };
    if to - from > Duration::days(max) {
        return Err(format!(
            "the range {from} .. {to} is longer than {max} days, the most one request of \
             {name} buckets covers"
        ));
    }
    Ok(Window { from, to, bucket })
}

/// The points of the store's buckets (oldest first); `now` bounds the elapsed part of the
/// newest bucket for its mean power.
pub fn points(buckets: &[EnergyBucket], bucket: Bucket, now: DateTime<Utc>) -> Vec<HistoryPoint> {
    let width = Duration::seconds(bucket.seconds());
    buckets
        .iter()
        .map(|b| {
            let elapsed = (now.min(b.start + width) - b.start).num_seconds();
            let hours = elapsed.max(60) as f64 / 3600.0;
            HistoryPoint {
                t: b.start,
                n: b.samples,
                soc_min: b.soc_min.map(|p| f64::from(p.0)),
                soc_mean: b.soc_mean.map(round1),
                soc_max: b.soc_max.map(|p| f64::from(p.0)),
                power_mean: round1((b.discharged.0 - b.charged.0) / hours),
                charged_wh: round1(b.charged.0),
                discharged_wh: round1(b.discharged.0),
                grid_in_wh: round1(b.grid_in.0),
                grid_out_wh: round1(b.grid_out.0),
            }
        })
        .collect()
}

/// The hourly bucket starting at `start` computed from raw `samples` (those outside the hour are
/// ignored) with the definition of [`EnergyBucket`]: each power part's mean over the samples
/// that have it, times `span × n / (n − 1)` capped at one hour. None without a sample.
pub fn hour_from_samples(start: DateTime<Utc>, samples: &[Sample]) -> Option<EnergyBucket> {
    let end = start + Duration::hours(1);
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= start && s.at < end)
        .collect();
    let first = inside.iter().map(|s| s.at).min()?;
    let last = inside.iter().map(|s| s.at).max()?;
    let n = inside.len() as f64;
    let covered_s = if inside.len() > 1 {
        ((last - first).num_milliseconds() as f64 / 1000.0 * n / (n - 1.0)).min(3600.0)
    } else {
        0.0
    };
    let energy = |part: fn(i32) -> i32, get: fn(&Sample) -> Option<i32>| {
        let v: Vec<f64> = inside
            .iter()
            .filter_map(|s| get(s))
            .map(|w| f64::from(part(w)))
            .collect();
        if v.is_empty() {
            return WattHours(0.0);
        }
        WattHours(v.iter().sum::<f64>() / v.len() as f64 * covered_s / 3600.0)
    };
    let bat = |s: &Sample| s.bat_power.map(|w| w.0);
    let grid = |s: &Sample| s.grid_power.map(|w| w.0);
    let socs: Vec<u8> = inside.iter().filter_map(|s| s.soc.map(|p| p.0)).collect();
    Some(EnergyBucket {
        start,
        samples: inside.len() as u64,
        soc_min: socs.iter().min().map(|v| Percent(*v)),
        soc_mean: (!socs.is_empty())
            .then(|| socs.iter().map(|v| f64::from(*v)).sum::<f64>() / socs.len() as f64),
        soc_max: socs.iter().max().map(|v| Percent(*v)),
        charged: energy(|w| (-w).max(0), bat),
        discharged: energy(|w| w.max(0), bat),
        grid_in: energy(|w| (-w).max(0), grid),
        grid_out: energy(|w| w.max(0), grid),
    })
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Percent, WattHours};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn ten_years_and_upside_down_ranges_are_refused() {
        let (h, d) = (Bucket::Hour, Bucket::Day);
        assert!(window(at("2016-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"), d).is_err());
        assert!(window(at("2026-01-02T00:00:00Z"), at("2026-01-01T00:00:00Z"), h).is_err());
        assert!(window(at("2025-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"), h).is_err());
        assert!(window(at("2025-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"), d).is_ok());
        assert!(window(at("2026-01-01T00:00:00Z"), at("2026-01-02T00:00:00Z"), h).is_ok());
        assert!(parse_bucket("5m").is_err() && parse_bucket("x").is_err());
        assert_eq!(parse_bucket("Hour").unwrap(), Bucket::Hour);
        assert_eq!(parse_bucket("1d").unwrap(), Bucket::Day);
    }

    #[test]
    fn buckets_become_points_with_the_mean_power_of_their_elapsed_part() {
        let mk = |t: &str, charged: f64, discharged: f64| EnergyBucket {
            start: at(t),
            samples: 60,
            soc_min: Some(Percent(40)),
            soc_mean: Some(42.04),
            soc_max: Some(Percent(44)),
            charged: WattHours(charged),
            discharged: WattHours(discharged),
            grid_in: WattHours(charged),
            grid_out: WattHours(0.0),
        };
        let buckets = [
            mk("2026-01-01T10:00:00Z", 300.0, 100.0),
            mk("2026-01-01T11:00:00Z", 0.0, 125.0),
        ];
        let pts = points(&buckets, Bucket::Hour, at("2026-01-01T11:30:00Z"));
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[0].t, at("2026-01-01T10:00:00Z"));
        assert_eq!((pts[0].soc_min, pts[0].soc_mean), (Some(40.0), Some(42.0)));
        assert_eq!(pts[0].power_mean, -200.0, "a whole hour: net Wh per hour");
        assert_eq!(pts[1].power_mean, 250.0, "half an hour has passed");
        assert_eq!((pts[0].charged_wh, pts[0].grid_in_wh), (300.0, 300.0));
    }

    #[test]
    fn the_hour_in_progress_from_raw_samples_follows_the_bucket_definition() {
        let dev = crate::domain::DeviceId::parse("a").unwrap();
        let mk = |m: i64, soc: u8, bat: i32| {
            let mut x = Sample::empty(
                dev.clone(),
                at("2026-01-01T10:00:00Z") + Duration::minutes(m),
            );
            x.soc = Some(Percent(soc));
            x.bat_power = Some(crate::domain::Watts(bat));
            x
        };
        let start = at("2026-01-01T10:00:00Z");
        // Three samples over 20 min cover 30 min: mean charge 600 W → 300 Wh; the 11:00 one
        // belongs to the next hour.
        let samples = [
            mk(0, 40, -600),
            mk(10, 42, -600),
            mk(20, 44, -600),
            mk(60, 90, 0),
        ];
        let b = hour_from_samples(start, &samples).unwrap();
        assert_eq!(b.samples, 3);
        assert_eq!(
            (b.soc_min, b.soc_max),
            (Some(Percent(40)), Some(Percent(44)))
        );
        assert_eq!(b.soc_mean, Some(42.0));
        assert!((b.charged.0 - 300.0).abs() < 1e-9, "{b:?}");
        assert_eq!((b.discharged.0, b.grid_in.0), (0.0, 0.0));
        let one = hour_from_samples(start, &samples[..1]).unwrap();
        assert_eq!(
            (one.samples, one.charged.0),
            (1, 0.0),
            "one sample: a point, no energy"
        );
        assert_eq!(hour_from_samples(start, &samples[3..]), None);
    }
}
