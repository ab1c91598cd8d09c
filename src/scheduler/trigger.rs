//! Triggers: 5-field cron patterns evaluated in a configured IANA zone (croner ≥ 4.0.3) and fixed
//! intervals in real elapsed time (UTC instant + Duration). Parsed from and formatted to the text
//! stored in `JobRecord.trigger` (`cron:0 6 * * *`, `interval:5m`). Pure: no clock, no I/O.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};

/// Why a trigger text or zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    /// Neither `cron:` nor `interval:`.
    #[error(
        "'{0}' is not a trigger (write 'cron:MIN HOUR DOM MON DOW', e.g. 'cron:0 6 * * *', or 'interval:DURATION', e.g. 'interval:5m')"
    )]
    UnknownKind(String),
    /// The cron pattern does not have exactly 5 fields.
    #[error(
        "cron pattern '{0}' has {1} field(s); exactly 5 are allowed (minute hour day-of-month month day-of-week; no seconds, no year)"
    )]
    FieldCount(String, usize),
    /// croner refused the pattern.
    #[error("invalid cron pattern '{0}': {1}")]
    InvalidCron(String, String),
    /// The pattern matches no instant (e.g. `0 0 31 2 *`).
    #[error("cron pattern '{0}' never fires (no matching date)")]
    NeverFires(String),
    /// The interval is not a humantime duration, or is zero.
    #[error("invalid interval '{0}': {1} (write e.g. '30s', '5m', '1h'; at least 1s)")]
    InvalidInterval(String, String),
    /// The zone is not an IANA zone name.
    #[error("unknown time zone '{0}' (use an IANA name such as 'Europe/Paris' or 'UTC')")]
    UnknownZone(String),
}

/// When a job fires.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// A 5-field cron pattern evaluated in `tz` (POSIX day of week: 0 and 7 = Sunday).
    Cron {
        /// The pattern as written, e.g. `0 6 * * *`.
        expr: String,
        /// Zone the pattern is evaluated in.
        tz: Tz,
        /// The parsed pattern.
        cron: Box<Cron>,
    },
    /// Every `every` of real elapsed time; the phase is kept across downtime.
    Interval {
        /// Period (at least 1 s).
        every: Duration,
    },
}

impl PartialEq for Trigger {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Trigger::Cron {
                    expr: a, tz: ta, ..
                },
                Trigger::Cron {
                    expr: b, tz: tb, ..
                },
            ) => a == b && ta == tb,
            (Trigger::Interval { every: a }, Trigger::Interval { every: b }) => a == b,
            _ => false,
        }
    }
}

/// Parses an IANA zone name.
pub fn parse_zone(name: &str) -> Result<Tz, TriggerError> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| TriggerError::UnknownZone(name.to_string()))
}

impl Trigger {
    /// Builds a cron trigger from a 5-field pattern, refusing 6/7 fields and patterns that never
    /// fire.
    pub fn cron(expr: &str, tz: Tz) -> Result<Self, TriggerError> {
        let expr = expr.split_whitespace().collect::<Vec<_>>().join(" ");
        let fields = expr.split(' ').filter(|s| !s.is_empty()).count();
        if !expr.starts_with('@') && fields != 5 {
            return Err(TriggerError::FieldCount(expr, fields));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(&expr)
            .map_err(|e| TriggerError::InvalidCron(expr.clone(), e.to_string()))?;
        // Far enough in the past that any pattern with a real date fires after it within croner's
        // search window (years up to 4999); the leap-day pattern fires every four years.
        let probe = DateTime::<Utc>::from_timestamp(1_767_225_600, 0) // 2026-01-01T00:00:00Z
            .unwrap_or_default()
            .with_timezone(&tz);
        match cron.find_next_occurrence(&probe, false) {
            Ok(_) => {}
            Err(CronError::TimeSearchLimitExceeded) | Err(CronError::InvalidDate) => {
                return Err(TriggerError::NeverFires(expr));
            }
            Err(e) => return Err(TriggerError::InvalidCron(expr, e.to_string())),
        }
        Ok(Trigger::Cron {
            expr,
            tz,
            cron: Box::new(cron),
        })
    }

    /// Builds an interval trigger (at least 1 s).
    pub fn interval(every: Duration) -> Result<Self, TriggerError> {
        if every < Duration::from_secs(1) {
            return Err(TriggerError::InvalidInterval(
                humantime::format_duration(every).to_string(),
                "shorter than 1s".into(),
            ));
        }
        if TimeDelta::from_std(every).is_err() || every > Duration::from_secs(366 * 24 * 3600) {
            return Err(TriggerError::InvalidInterval(
                humantime::format_duration(every).to_string(),
                "longer than a year".into(),
            ));
        }
        Ok(Trigger::Interval { every })
    }

    /// Parses `cron:EXPR` (evaluated in `tz`) or `interval:DURATION`.
    pub fn parse(text: &str, tz: Tz) -> Result<Self, TriggerError> {
        let text = text.trim();
        if let Some(expr) = text.strip_prefix("cron:") {
            Self::cron(expr, tz)
        } else if let Some(d) = text.strip_prefix("interval:") {
            let d = d.trim();
            let every = humantime::parse_duration(d)
                .map_err(|e| TriggerError::InvalidInterval(d.to_string(), e.to_string()))?;
            Self::interval(every)
        } else {
            Err(TriggerError::UnknownKind(text.to_string()))
        }
    }

    /// The same trigger evaluated in another zone (intervals are zone-free).
    pub fn with_zone(&self, zone: Tz) -> Self {
        match self {
            Trigger::Cron { expr, cron, .. } => Trigger::Cron {
                expr: expr.clone(),
                tz: zone,
                cron: cron.clone(),
            },
            Trigger::Interval { every } => Trigger::Interval { every: *every },
        }
    }

    /// The first fire instant strictly after `t`; None when there is none (out of croner's range).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Trigger::Cron { tz, cron, .. } => cron
                .find_next_occurrence(&t.with_timezone(tz), false)
                .ok()
                .map(|d| d.with_timezone(&Utc)),
            Trigger::Interval { every } => TimeDelta::from_std(*every)
                .ok()
                .and_then(|d| t.checked_add_signed(d)),
        }
    }

    /// The last fire instant at or before `t` (cron only; intervals have no absolute phase).
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Trigger::Cron { tz, cron, .. } => cron
                .find_previous_occurrence(&t.with_timezone(tz), true)
                .ok()
                .map(|d| d.with_timezone(&Utc)),
            Trigger::Interval { .. } => None,
        }
    }

    /// The next `n` fire instants strictly after `from`.
    pub fn preview(&self, from: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n.min(1000));
        let mut t = from;
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    /// Zone used to show local times (UTC for intervals unless given).
    pub fn zone(&self) -> Option<Tz> {
        match self {
            Trigger::Cron { tz, .. } => Some(*tz),
            Trigger::Interval { .. } => None,
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Cron { expr, .. } => write!(f, "cron:{expr}"),
            Trigger::Interval { every } => {
                write!(f, "interval:{}", humantime::format_duration(*every))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono_tz::Europe::Paris;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test literal")
            .with_timezone(&Utc)
    }

    fn daily(hh: u32, mm: u32) -> Trigger {
        Trigger::cron(&format!("{mm} {hh} * * *"), Paris).expect("valid")
    }

    /// The fire on local date `y-m-d`, searching from 12:00 local the day before (§B.4 setup).
    fn fire_on_day(t: &Trigger, y: i32, m: u32, d: u32) -> DateTime<Utc> {
        let start = Paris
            .with_ymd_and_hms(y, m, d, 12, 0, 0)
            .single()
            .expect("unambiguous noon")
            .with_timezone(&Utc)
            - TimeDelta::days(1);
        t.preview(start, 3)
            .into_iter()
            .find(|f| {
                let l = f.with_timezone(&Paris).date_naive();
                l == chrono::NaiveDate::from_ymd_opt(y, m, d).expect("date")
            })
            .expect("fires that day")
    }

    #[test]
    fn spring_forward_day_matches_reference_table() {
        // Sun 2026-03-29, 02:00 CET → 03:00 CEST.
        let cases = [
            ((6, 0), "2026-03-29T04:00:00Z"),
            ((11, 30), "2026-03-29T09:30:00Z"),
            ((22, 0), "2026-03-29T20:00:00Z"),
            // croner: the first instant after the gap (APScheduler would say 03:30 CEST = 01:30Z).
            ((2, 30), "2026-03-29T01:00:00Z"),
            ((2, 0), "2026-03-29T01:00:00Z"),
            ((1, 30), "2026-03-29T00:30:00Z"),
        ];
        for ((h, m), want) in cases {
            let got = fire_on_day(&daily(h, m), 2026, 3, 29);
            assert_eq!(got, utc(want), "daily {h:02}:{m:02} on the spring day");
        }
    }

    #[test]
    fn fall_back_day_matches_reference_table() {
        // Sun 2026-10-25, 03:00 CEST → 02:00 CET.
        let cases = [
            ((6, 0), "2026-10-25T05:00:00Z"),
            ((11, 30), "2026-10-25T10:30:00Z"),
            ((22, 0), "2026-10-25T21:00:00Z"),
            ((2, 30), "2026-10-25T00:30:00Z"),
            ((3, 0), "2026-10-25T02:00:00Z"),
        ];
        for ((h, m), want) in cases {
            let got = fire_on_day(&daily(h, m), 2026, 10, 25);
            assert_eq!(got, utc(want), "daily {h:02}:{m:02} on the fall day");
        }
    }

    #[test]
    fn fixed_time_in_fall_back_hour_fires_once_with_croner() {
        // APScheduler fires 02:30 twice (00:30Z and 01:30Z); croner only on the first pass.
        let t = daily(2, 30);
        let got = t.preview(utc("2026-10-24T10:00:00Z"), 2);
        assert_eq!(
            got,
            vec![utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]
        );
        // From inside the overlap (02:15 CET, second pass) croner goes to the next day.
        assert_eq!(
            t.next_after(utc("2026-10-25T01:15:00Z")),
            Some(utc("2026-10-26T01:30:00Z"))
        );
    }

    #[test]
    fn wildcard_pattern_runs_both_passes_of_the_fall_back() {
        let t = Trigger::cron("*/30 * * * *", Paris).expect("valid");
        let got = t.preview(utc("2026-10-24T23:45:00Z"), 5);
        let want = [
            "2026-10-25T00:00:00Z", // 02:00 CEST
            "2026-10-25T00:30:00Z", // 02:30 CEST
            "2026-10-25T01:00:00Z", // 02:00 CET
            "2026-10-25T01:30:00Z", // 02:30 CET
            "2026-10-25T02:00:00Z", // 03:00 CET
        ];
        assert_eq!(got, want.map(utc).to_vec());
    }

    #[test]
    fn preview_six_am_paris_across_spring_forward() {
        let t = Trigger::parse("cron:0 6 * * *", Paris).expect("valid");
        let got = t.preview(utc("2026-03-28T12:00:00Z"), 3);
        assert_eq!(
            got,
            vec![
                utc("2026-03-29T04:00:00Z"),
                utc("2026-03-30T04:00:00Z"),
                utc("2026-03-31T04:00:00Z")
            ]
        );
    }

    #[test]
    fn only_five_fields_are_accepted() {
        for bad in ["cron:0 6 * * * *", "cron:0 0 6 * * * 2026", "cron:0 6 * *"] {
            let e = Trigger::parse(bad, Paris).expect_err(bad);
            assert!(matches!(e, TriggerError::FieldCount(..)), "{bad}: {e}");
            assert!(e.to_string().contains("exactly 5"), "{e}");
        }
    }

    #[test]
    fn never_firing_patterns_are_rejected() {
        for bad in ["cron:0 0 31 2 *", "cron:0 0 30 2 *", "cron:0 0 31 4 *"] {
            let e = Trigger::parse(bad, Paris).expect_err(bad);
            assert!(matches!(e, TriggerError::NeverFires(_)), "{bad}: {e}");
        }
        // Leap day fires every four years: accepted.
        let t = Trigger::parse("cron:0 0 29 2 *", Paris).expect("leap day");
        assert_eq!(
            t.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2028-02-28T23:00:00Z"))
        );
    }

    #[test]
    fn invalid_inputs_get_clear_errors() {
        assert!(matches!(
            Trigger::parse("every 5 min", Paris),
            Err(TriggerError::UnknownKind(_))
        ));
        assert!(matches!(
            Trigger::parse("cron:61 * * * *", Paris),
            Err(TriggerError::InvalidCron(..))
        ));
        assert!(matches!(
            Trigger::parse("interval:0s", Paris),
            Err(TriggerError::InvalidInterval(..))
        ));
        assert!(matches!(
            Trigger::parse("interval:soon", Paris),
            Err(TriggerError::InvalidInterval(..))
        ));
        assert!(matches!(
            parse_zone("Europe/Atlantis"),
            Err(TriggerError::UnknownZone(_))
        ));
    }

    #[test]
    fn posix_weekdays_zero_is_sunday() {
        let t = Trigger::parse("cron:0 6 * * 0", Paris).expect("valid");
        // Sat 2026-11-28 noon → Sun 2026-11-29 06:00 CET.
        assert_eq!(
            t.next_after(utc("2026-11-28T11:00:00Z")),
            Some(utc("2026-11-29T05:00:00Z"))
        );
    }

    #[test]
    fn text_round_trips() {
        for text in [
            "cron:0 6 * * *",
            "cron:30 11 * * 1-5",
            "interval:5m",
            "interval:1m 30s",
        ] {
            let t = Trigger::parse(text, Paris).expect(text);
            assert_eq!(t.to_string(), text);
            assert_eq!(Trigger::parse(&t.to_string(), Paris).expect("again"), t);
        }
    }

    #[test]
    fn interval_is_real_elapsed_time_across_dst() {
        // 1 day from Sat 06:00 CET on the spring weekend → Sun 07:00 CEST (24 real hours).
        let t = Trigger::parse("interval:1day", Paris).expect("valid");
        assert_eq!(
            t.next_after(utc("2026-03-28T05:00:00Z")),
            Some(utc("2026-03-29T05:00:00Z"))
        );
        let t = Trigger::parse("interval:5m", Paris).expect("valid");
        assert_eq!(
            t.preview(utc("2026-03-29T00:50:00Z"), 3),
            vec![
                utc("2026-03-29T00:55:00Z"),
                utc("2026-03-29T01:00:00Z"),
                utc("2026-03-29T01:05:00Z")
            ]
        );
    }
}
