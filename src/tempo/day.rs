//! Pure Tempo calendar rules: colours, the 06:00→06:00 Tempo day in Europe/Paris, which colours a
//! date can have (red only Mon–Fri from Nov 1 to Mar 31), and the off-peak (HC) window. No I/O.

use std::fmt;

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Timelike, Utc, Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::domain::HhMm;

/// Time zone every Tempo rule is written in.
pub const TEMPO_TZ: Tz = chrono_tz::Europe::Paris;

/// Hour (Paris) a Tempo day starts and the off-peak window ends.
pub const DAY_START_HOUR: u32 = 6;

/// Hour (Paris) the off-peak (HC) window starts.
pub const OFF_PEAK_START_HOUR: u32 = 22;

/// A Tempo day colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TempoColour {
    /// Cheapest days (about 300 a season).
    Blue,
    /// Mid-price days (43 a season, never on Sunday).
    White,
    /// Expensive days (22 a season, Mon–Fri between Nov 1 and Mar 31).
    Red,
}

impl TempoColour {
    /// Lowercase name (`blue`, `white`, `red`), as stored and published.
    pub fn as_str(self) -> &'static str {
        match self {
            TempoColour::Blue => "blue",
            TempoColour::White => "white",
            TempoColour::Red => "red",
        }
    }

    /// Case-insensitive parse of `blue`/`white`/`red` (also RTE's `BLUE`/`WHITE`/`RED`).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "blue" => Ok(TempoColour::Blue),
            "white" => Ok(TempoColour::White),
            "red" => Ok(TempoColour::Red),
            _ => Err(format!(
                "unknown Tempo colour '{}' (allowed: blue, white, red)",
                s.trim()
            )),
        }
    }

    /// Whether this colour can fall on `date` under the Tempo rules (public holidays ignored).
    pub fn possible_on(self, date: NaiveDate) -> bool {
        match self {
            TempoColour::Blue => true,
            TempoColour::White => date.weekday() != Weekday::Sun,
            TempoColour::Red => red_possible(date),
        }
    }
}

impl fmt::Display for TempoColour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `date` may be red: a weekday (Mon–Fri) between Nov 1 and Mar 31, not a French
/// public holiday.
pub fn red_possible(date: NaiveDate) -> bool {
    let in_season = date.month() >= 11 || date.month() <= 3;
    let weekday = !matches!(date.weekday(), Weekday::Sat | Weekday::Sun);
    in_season && weekday && !public_holiday_in_red_season(date)
}

/// French public holidays that can fall in the red season: Nov 1, Nov 11, Dec 25, Jan 1 and
/// Easter Monday (late March in some years).
pub fn public_holiday_in_red_season(date: NaiveDate) -> bool {
    let fixed = matches!(
        (date.month(), date.day()),
        (11, 1) | (11, 11) | (12, 25) | (1, 1)
    );
    fixed || easter_sunday(date.year()).and_then(|e| e.succ_opt()) == Some(date)
}

/// Easter Sunday of `year` (Gregorian calendar, anonymous algorithm).
pub fn easter_sunday(year: i32) -> Option<NaiveDate> {
    let a = year.rem_euclid(19);
    let b = year.div_euclid(100);
    let c = year.rem_euclid(100);
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15).rem_euclid(30);
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k).rem_euclid(7);
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, u32::try_from(month).ok()?, u32::try_from(day).ok()?)
}

/// Why no colour in `colours` can fall on `date`, or None when one can.
pub fn skip_reason(date: NaiveDate, colours: &[TempoColour]) -> Option<String> {
    if colours.iter().any(|c| c.possible_on(date)) {
        return None;
    }
    let names: Vec<&str> = colours.iter().map(|c| c.as_str()).collect();
    let why = if colours.contains(&TempoColour::Red) {
        if date.month() >= 4 && date.month() <= 10 {
            "red days only fall between Nov 1 and Mar 31"
        } else if public_holiday_in_red_season(date) {
            "red days never fall on a public holiday"
        } else {
            "red days only fall on weekdays (Mon-Fri)"
        }
    } else {
        "white days never fall on Sunday"
    };
    Some(format!(
        "{date} ({}) cannot be {}: {why}",
        date.weekday(),
        if names.is_empty() {
            "any precharge colour".to_string()
        } else {
            names.join("/")
        }
    ))
}

/// The Tempo date in force at `at`: the Paris calendar date, or the previous one before 06:00.
pub fn tempo_date_at(at: DateTime<Utc>) -> NaiveDate {
    let local = at.with_timezone(&TEMPO_TZ);
    let date = local.date_naive();
    if local.hour() < DAY_START_HOUR {
        date.pred_opt().unwrap_or(date)
    } else {
        date
    }
}

/// The UTC instant of a Paris wall time on `date`; a time in the spring-forward gap moves to
/// the first valid instant after it, an ambiguous one (fall back) takes the earlier.
pub fn paris_instant(date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let naive = date.and_time(time);
    match TEMPO_TZ.from_local_datetime(&naive).earliest() {
        Some(t) => t.with_timezone(&Utc),
        None => {
            // In the DST gap (02:00–02:59 on the last Sunday of March): step forward one hour.
            let later = naive + Duration::hours(1);
            TEMPO_TZ
                .from_local_datetime(&later)
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|| Utc.from_utc_datetime(&naive))
        }
    }
}

/// The UTC instant of `hhmm` (Paris) on `date`.
pub fn paris_hhmm(date: NaiveDate, hhmm: HhMm) -> DateTime<Utc> {
    paris_instant(date, hhmm.to_naive())
}

/// The off-peak window preceding Tempo day `day`: 22:00 the day before → 06:00 on `day` (Paris).
pub fn off_peak_before(day: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let eve = day.pred_opt().unwrap_or(day);
    let start = paris_instant(
        eve,
        NaiveTime::from_hms_opt(OFF_PEAK_START_HOUR, 0, 0).unwrap_or_default(),
    );
    let end = paris_instant(
        day,
        NaiveTime::from_hms_opt(DAY_START_HOUR, 0, 0).unwrap_or_default(),
    );
    (start, end)
}

/// Hours of the off-peak window before `day` still left at `now` (whole window before it starts,
/// 0 after it ends). 8 h on ordinary nights, 7 h or 9 h across a DST change.
pub fn off_peak_hours_left(day: NaiveDate, now: DateTime<Utc>) -> f64 {
    let (start, end) = off_peak_before(day);
    let from = now.max(start);
    if from >= end {
        return 0.0;
    }
    (end - from).num_seconds() as f64 / 3600.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn paris(s: &str) -> DateTime<Utc> {
        let n = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        TEMPO_TZ
            .from_local_datetime(&n)
            .earliest()
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn tempo_day_changes_at_six_paris() {
        assert_eq!(tempo_date_at(paris("2026-12-02 05:59")), d("2026-12-01"));
        assert_eq!(tempo_date_at(paris("2026-12-02 06:00")), d("2026-12-02"));
        assert_eq!(tempo_date_at(paris("2026-12-02 00:00")), d("2026-12-01"));
        assert_eq!(tempo_date_at(paris("2026-12-01 23:59")), d("2026-12-01"));
        // 05:30 UTC is 06:30 Paris in winter: already the new day.
        let utc = Utc.with_ymd_and_hms(2026, 12, 2, 5, 30, 0).unwrap();
        assert_eq!(tempo_date_at(utc), d("2026-12-02"));
        // 04:30 UTC is 06:30 Paris in summer.
        let utc = Utc.with_ymd_and_hms(2026, 7, 2, 4, 30, 0).unwrap();
        assert_eq!(tempo_date_at(utc), d("2026-07-02"));
        let utc = Utc.with_ymd_and_hms(2026, 7, 2, 3, 59, 0).unwrap();
        assert_eq!(tempo_date_at(utc), d("2026-07-01"));
    }

    #[test]
    fn tempo_day_on_dst_days() {
        // Spring forward 2026-03-29 02:00 → 03:00.
        assert_eq!(tempo_date_at(paris("2026-03-29 05:59")), d("2026-03-28"));
        assert_eq!(tempo_date_at(paris("2026-03-29 06:00")), d("2026-03-29"));
        assert_eq!(tempo_date_at(paris("2026-03-29 03:30")), d("2026-03-28"));
        // Fall back 2026-10-25 03:00 → 02:00.
        assert_eq!(tempo_date_at(paris("2026-10-25 05:59")), d("2026-10-24"));
        assert_eq!(tempo_date_at(paris("2026-10-25 06:00")), d("2026-10-25"));
        // Both 02:30s of the fall-back night belong to the previous Tempo day.
        let first = Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap();
        let second = Utc.with_ymd_and_hms(2026, 10, 25, 1, 30, 0).unwrap();
        assert_eq!(tempo_date_at(first), d("2026-10-24"));
        assert_eq!(tempo_date_at(second), d("2026-10-24"));
    }

    #[test]
    fn off_peak_window_is_eight_hours_except_on_dst_nights() {
        let day = d("2026-12-02");
        let (s, e) = off_peak_before(day);
        assert_eq!(s, paris("2026-12-01 22:00"));
        assert_eq!(e, paris("2026-12-02 06:00"));
        assert_eq!(off_peak_hours_left(day, paris("2026-12-01 11:30")), 8.0);
        assert_eq!(off_peak_hours_left(day, paris("2026-12-01 22:00")), 8.0);
        assert_eq!(off_peak_hours_left(day, paris("2026-12-02 02:00")), 4.0);
        assert_eq!(off_peak_hours_left(day, paris("2026-12-02 06:00")), 0.0);
        assert_eq!(
            off_peak_hours_left(d("2026-03-29"), paris("2026-03-28 22:00")),
            7.0
        );
        assert_eq!(
            off_peak_hours_left(d("2026-10-25"), paris("2026-10-24 22:00")),
            9.0
        );
    }

    #[test]
    fn red_only_on_weekdays_in_winter() {
        assert!(red_possible(d("2026-12-01"))); // Tuesday
        assert!(!red_possible(d("2026-12-05"))); // Saturday
        assert!(!red_possible(d("2026-12-06"))); // Sunday
        assert!(red_possible(d("2026-11-02"))); // Monday, first week of season
        assert!(red_possible(d("2027-03-31"))); // Wednesday, last day of season
        assert!(!red_possible(d("2027-04-01"))); // Thursday, out of season
        assert!(!red_possible(d("2026-10-30"))); // Friday, out of season
        assert!(!red_possible(d("2026-12-25"))); // Friday, Christmas
        assert!(!red_possible(d("2027-01-01"))); // Friday, New Year
        assert!(!red_possible(d("2026-11-11"))); // Wednesday, Armistice
        assert!(!red_possible(d("2027-03-29"))); // Easter Monday 2027
        assert!(red_possible(d("2027-03-30"))); // the Tuesday after
        assert!(TempoColour::White.possible_on(d("2026-12-05")));
        assert!(!TempoColour::White.possible_on(d("2026-12-06")));
        assert!(TempoColour::Blue.possible_on(d("2026-12-06")));
    }

    #[test]
    fn skip_reasons_name_the_rule() {
        let red = [TempoColour::Red];
        assert!(skip_reason(d("2026-12-01"), &red).is_none());
        let why = skip_reason(d("2026-07-01"), &red).unwrap();
        assert!(why.contains("Nov 1"), "{why}");
        let why = skip_reason(d("2026-12-05"), &red).unwrap();
        assert!(why.contains("weekdays"), "{why}");
        assert!(skip_reason(d("2026-12-05"), &[TempoColour::Red, TempoColour::White]).is_none());
        assert!(skip_reason(d("2026-12-06"), &[]).is_some());
    }

    #[test]
    fn easter_dates() {
        assert_eq!(easter_sunday(2024), Some(d("2024-03-31")));
        assert_eq!(easter_sunday(2026), Some(d("2026-04-05")));
        assert_eq!(easter_sunday(2027), Some(d("2027-03-28")));
        assert_eq!(easter_sunday(2038), Some(d("2038-04-25")));
        let why = skip_reason(d("2026-12-25"), &[TempoColour::Red]).unwrap();
        assert!(why.contains("public holiday"), "{why}");
    }

    #[test]
    fn colour_parse_accepts_rte_spelling_and_refuses_others() {
        assert_eq!(TempoColour::parse("RED"), Ok(TempoColour::Red));
        assert_eq!(TempoColour::parse(" white "), Ok(TempoColour::White));
        assert!(TempoColour::parse("PURPLE").is_err());
    }

    #[test]
    fn paris_instant_handles_the_gap() {
        let t = paris_instant(d("2026-03-29"), NaiveTime::from_hms_opt(2, 30, 0).unwrap());
        assert_eq!(t, Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 0).unwrap());
    }
}
