//! Battery history for the API and the page's 24 h chart: the time range and bucket of a
//! request, checked (at most [`MAX_RANGE_DAYS`] days, at most [`MAX_POINTS`] buckets), and the
//! reduction of raw samples into one point per bucket (SOC min/mean/max, mean battery power).
//! Pure: the samples come from the store.

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::Sample;

/// Longest range one request may cover, days.
pub const MAX_RANGE_DAYS: i64 = 31;
/// Most buckets one answer may hold.
pub const MAX_POINTS: i64 = 2000;

/// A checked request: [from, to) in buckets of `bucket`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Start (inclusive).
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
    /// Bucket width.
    pub bucket: Duration,
}

/// One bucket of history.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HistoryPoint {
    /// Start of the bucket (UTC).
    pub t: DateTime<Utc>,
    /// Samples in the bucket.
    pub n: u32,
    /// Lowest SOC, %.
    pub soc_min: Option<f64>,
    /// Mean SOC, %.
    pub soc_mean: Option<f64>,
    /// Highest SOC, %.
    pub soc_max: Option<f64>,
    /// Mean battery power, W (+ discharging, − charging).
    pub power_mean: Option<f64>,
}

/// Parses a bucket such as `5m`, `1h`, `1d` (humantime; 1 s to 1 day).
pub fn parse_bucket(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("bucket: '{s}' is not a duration such as 5m, 1h or 1d ({e})"))?;
    let d = Duration::from_std(d).map_err(|_| format!("bucket: '{s}' is too long"))?;
    if d < Duration::seconds(1) || d > Duration::days(1) {
        return Err(format!("bucket: '{s}' is out of range (1s to 1d)"));
    }
    Ok(d)
}

/// Checks a range: `from` < `to`, at most [`MAX_RANGE_DAYS`], at most [`MAX_POINTS`] buckets.
pub fn window(from: DateTime<Utc>, to: DateTime<Utc>, bucket: Duration) -> Result<Window, String> {
    if from >= to {
        return Err(format!("from ({from}) must be before to ({to})"));
    }
    if to - from > Duration::days(MAX_RANGE_DAYS) {
        return Err(format!(
            "the range {from} .. {to} is longer than {MAX_RANGE_DAYS} days"
        ));
    }
    let points = (to - from).num_seconds() / bucket.num_seconds().max(1);
    if points > MAX_POINTS {
        return Err(format!(
            "{points} buckets of {}s: at most {MAX_POINTS}; choose a larger bucket",
            bucket.num_seconds()
        ));
    }
    Ok(Window { from, to, bucket })
}

/// Reduces samples (oldest first) to one point per non-empty bucket, aligned to the bucket
/// width since the Unix epoch.
pub fn reduce(samples: &[Sample], bucket: Duration) -> Vec<HistoryPoint> {
    let mut out: Vec<(HistoryPoint, f64, u32, f64, u32)> = Vec::new();
    for s in samples {
        let t = s.at.duration_trunc(bucket).unwrap_or(s.at);
        if out.last().is_none_or(|(p, ..)| p.t != t) {
            out.push((
                HistoryPoint {
                    t,
                    n: 0,
                    soc_min: None,
                    soc_mean: None,
                    soc_max: None,
                    power_mean: None,
                },
                0.0,
                0,
                0.0,
                0,
            ));
        }
        let (p, soc_sum, soc_n, pow_sum, pow_n) = out.last_mut().expect("pushed above");
        p.n += 1;
        if let Some(soc) = s.soc.map(|v| f64::from(v.0)) {
            p.soc_min = Some(p.soc_min.map_or(soc, |m| m.min(soc)));
            p.soc_max = Some(p.soc_max.map_or(soc, |m| m.max(soc)));
            *soc_sum += soc;
            *soc_n += 1;
        }
        if let Some(w) = s.bat_power.map(|v| f64::from(v.0)) {
            *pow_sum += w;
            *pow_n += 1;
        }
    }
    out.into_iter()
        .map(|(mut p, soc_sum, soc_n, pow_sum, pow_n)| {
            p.soc_mean = (soc_n > 0).then(|| round1(soc_sum / f64::from(soc_n)));
            p.power_mean = (pow_n > 0).then(|| round1(pow_sum / f64::from(pow_n)));
            p
        })
        .collect()
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeviceId, Percent, Watts};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn ten_years_and_upside_down_ranges_are_refused() {
        let h = Duration::hours(1);
        assert!(window(at("2016-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"), h).is_err());
        assert!(window(at("2026-01-02T00:00:00Z"), at("2026-01-01T00:00:00Z"), h).is_err());
        assert!(
            window(
                at("2026-01-01T00:00:00Z"),
                at("2026-01-31T00:00:00Z"),
                Duration::seconds(1)
            )
            .is_err()
        );
        assert!(window(at("2026-01-01T00:00:00Z"), at("2026-01-02T00:00:00Z"), h).is_ok());
        assert!(
            parse_bucket("0s").is_err()
                && parse_bucket("2d").is_err()
                && parse_bucket("x").is_err()
        );
        assert_eq!(parse_bucket("5m").unwrap(), Duration::minutes(5));
    }

    #[test]
    fn samples_fold_into_aligned_buckets() {
        let mk = |t: &str, soc: u8, p: i32| {
            let mut s = Sample::empty(DeviceId("a".into()), at(t));
            s.soc = Some(Percent(soc));
            s.bat_power = Some(Watts(p));
            s
        };
        let samples = [
            mk("2026-01-01T10:01:00Z", 40, -100),
            mk("2026-01-01T10:59:00Z", 44, -300),
            mk("2026-01-01T12:30:00Z", 50, 250),
        ];
        let pts = reduce(&samples, Duration::hours(1));
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[0].t, at("2026-01-01T10:00:00Z"));
        assert_eq!(
            (pts[0].n, pts[0].soc_min, pts[0].soc_max),
            (2, Some(40.0), Some(44.0))
        );
        assert_eq!(
            (pts[0].soc_mean, pts[0].power_mean),
            (Some(42.0), Some(-200.0))
        );
        assert_eq!(
            (pts[1].t, pts[1].power_mean),
            (at("2026-01-01T12:00:00Z"), Some(250.0))
        );
    }
}
