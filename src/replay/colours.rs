//! The colour history of a replay: a `date,colour` CSV read and checked (one colour per date,
//! every day of the span present, red only where the calendar allows it, no season with more
//! red or white days than its quota). Pure apart from reading the file.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Datelike, Duration, NaiveDate};

use crate::tempo::{RED_QUOTA, TempoColour, WHITE_QUOTA, red_possible};

/// Why a colours file or span is refused.
#[derive(Debug, thiserror::Error)]
pub enum ColoursError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A line does not parse (1-based line number).
    #[error("line {line}: {message}")]
    Line {
        /// Line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The span asked for cannot be replayed.
    #[error("{0}")]
    Span(String),
}

/// Colours by date.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ColourHistory {
    days: BTreeMap<NaiveDate, TempoColour>,
}

/// The Tempo season (Sep 1 → Aug 31) a date belongs to, named by its first year.
fn season_of(d: NaiveDate) -> i32 {
    if d.month() >= 9 {
        d.year()
    } else {
        d.year() - 1
    }
}

impl ColourHistory {
    /// Reads and checks a file.
    pub fn read(path: &Path) -> Result<Self, ColoursError> {
        let text = std::fs::read_to_string(path).map_err(|source| ColoursError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses `date,colour` lines; a first line `date,colour` is a header, blank lines are
    /// skipped.
    pub fn parse(text: &str) -> Result<Self, ColoursError> {
        let mut days = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || (i == 0 && line.eq_ignore_ascii_case("date,colour")) {
                continue;
            }
            let bad = |message: String| ColoursError::Line {
                line: i + 1,
                message,
            };
            let (d, c) = line
                .split_once(',')
                .ok_or_else(|| bad(format!("'{line}' is not date,colour")))?;
            let date = NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d")
                .map_err(|e| bad(format!("'{}' is not a YYYY-MM-DD date: {e}", d.trim())))?;
            let colour = TempoColour::parse(c).map_err(bad)?;
            if colour == TempoColour::Red && !red_possible(date) {
                // Real history never breaks this; a file that does is not Tempo data.
                return Err(bad(format!(
                    "{date} is red, but red days fall only on working days from Nov 1 to Mar 31"
                )));
            }
            if days.insert(date, colour).is_some() {
                return Err(bad(format!("{date} appears twice")));
            }
        }
        let h = Self { days };
        h.check_quotas()?;
        Ok(h)
    }

    fn check_quotas(&self) -> Result<(), ColoursError> {
        let mut per: BTreeMap<i32, (u32, u32)> = BTreeMap::new();
        for (d, c) in &self.days {
            let e = per.entry(season_of(*d)).or_default();
            match c {
                TempoColour::Red => e.0 += 1,
                TempoColour::White => e.1 += 1,
                TempoColour::Blue => {}
            }
        }
        for (y, (r, w)) in per {
            if r > RED_QUOTA {
                return Err(ColoursError::Span(format!(
                    "season {y}-{} has {r} red days, more than the quota of {RED_QUOTA}",
                    y + 1
                )));
            }
            if w > WHITE_QUOTA + 4 {
                // 2019–20 had 47 white days (reds left over were turned white).
                return Err(ColoursError::Span(format!(
                    "season {y}-{} has {w} white days, more than the quota of {WHITE_QUOTA}",
                    y + 1
                )));
            }
        }
        Ok(())
    }

    /// Refuses a span that is empty, reversed or not fully covered (the day after `to` is
    /// needed too: the planner looks one day ahead).
    pub fn check_span(&self, from: NaiveDate, to: NaiveDate) -> Result<(), ColoursError> {
        if to < from {
            return Err(ColoursError::Span(format!(
                "--to {to} is before --from {from}"
            )));
        }
        let mut d = from;
        while d <= to + Duration::days(1) {
            if !self.days.contains_key(&d) {
                return Err(ColoursError::Span(format!("no colour for {d} in the file")));
            }
            d += Duration::days(1);
        }
        Ok(())
    }

    /// The colour of `date`.
    pub fn colour(&self, date: NaiveDate) -> Option<TempoColour> {
        self.days.get(&date).copied()
    }

    /// Red and white days of `date`'s season before `date`.
    pub fn used_before(&self, date: NaiveDate) -> (u32, u32) {
        let start = NaiveDate::from_ymd_opt(season_of(date), 9, 1).unwrap_or(date);
        self.days
            .range(start..date)
            .fold((0, 0), |(r, w), (_, c)| match c {
                TempoColour::Red => (r + 1, w),
                TempoColour::White => (r, w + 1),
                TempoColour::Blue => (r, w),
            })
    }

    /// (blue, white, red) days from `from` to `to` included.
    pub fn counts(&self, from: NaiveDate, to: NaiveDate) -> (u32, u32, u32) {
        self.days
            .range(from..=to)
            .fold((0, 0, 0), |(b, w, r), (_, c)| match c {
                TempoColour::Blue => (b + 1, w, r),
                TempoColour::White => (b, w + 1, r),
                TempoColour::Red => (b, w, r + 1),
            })
    }
}
