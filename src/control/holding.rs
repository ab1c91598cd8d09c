//! How the reconciler keeps an intent that a battery drops (firmware that reverts to Auto on
//! its own, `firmware-quirks-2026.md` §3): per battery, the reverts counted and the re-applies
//! made, a backoff between consecutive re-applies (doubling from [`REAPPLY_BASE`] up to
//! [`REAPPLY_MAX`] while the intent does not stay held) and an hourly budget
//! ([`REAPPLY_BUDGET`]), so that a battery that refuses is never written in a tight loop. It is
//! also what the `<dev>/intent` document reports (observed mode and power, holding since,
//! reverts, last re-apply and its result). Kept per battery on the `IntentBoard`, written by
//! the reconciler. Pure: the reconciler gives it the times and samples; no I/O.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::domain::{Mode, Sample};

/// Pause before the second consecutive re-apply, doubled for each further one.
pub const REAPPLY_BASE: Duration = Duration::from_secs(60);
/// Longest pause between two consecutive re-applies.
pub const REAPPLY_MAX: Duration = Duration::from_secs(30 * 60);
/// Re-applies per battery within any hour, at most.
pub const REAPPLY_BUDGET: usize = 10;

/// Why a re-apply waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The pause after the previous consecutive re-apply is not over.
    Backoff,
    /// The hour's budget of re-applies is spent.
    Budget,
}

/// One battery's record of holding its intent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Holding {
    /// The mode the battery reported last.
    pub observed_mode: Option<Mode>,
    /// The battery power it reported last, W (+ discharge, − charge).
    pub observed_power_w: Option<i32>,
    /// Since when the battery has been seen in its intent's mode (None: not holding now).
    pub holding_since: Option<DateTime<Utc>>,
    /// Times the battery left its intent after holding it.
    pub reverts: u64,
    /// When the reconciler last re-applied the intent.
    pub last_reapply: Option<DateTime<Utc>>,
    /// What that re-apply gave (`applied`, `error: …`).
    pub last_result: Option<String>,
    /// Re-applies since the intent last stayed held.
    #[serde(skip)]
    consecutive: u32,
    /// When the re-applies of the last hour were made.
    #[serde(skip)]
    recent: VecDeque<DateTime<Utc>>,
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

impl Holding {
    /// Notes what a sample shows.
    pub fn observe(&mut self, sample: &Sample) {
        self.observed_mode = sample.mode.or(self.observed_mode);
        self.observed_power_w = sample.bat_power.map(|w| w.0).or(self.observed_power_w);
    }

    /// The battery was seen in its intent's mode at `now`. It counts as having stayed held
    /// (which ends the backoff) once seen at least [`REAPPLY_BASE`] after the last re-apply.
    pub fn held(&mut self, now: DateTime<Utc>) {
        self.holding_since.get_or_insert(now);
        if self
            .last_reapply
            .is_none_or(|t| now - t >= delta(REAPPLY_BASE))
        {
            self.consecutive = 0;
        }
    }

    /// The battery was seen in another mode: a revert when it was holding.
    pub fn left(&mut self) {
        if self.holding_since.take().is_some() {
            self.reverts += 1;
        }
    }

    /// Why a re-apply at `now` must wait, or None when it may go.
    pub fn wait(&self, now: DateTime<Utc>) -> Option<Wait> {
        let hour_ago = now - TimeDelta::hours(1);
        if self.recent.iter().filter(|t| **t > hour_ago).count() >= REAPPLY_BUDGET {
            return Some(Wait::Budget);
        }
        let (Some(last), 1..) = (self.last_reapply, self.consecutive) else {
            return None;
        };
        let pause = REAPPLY_BASE
            .saturating_mul(2u32.saturating_pow(self.consecutive - 1))
            .min(REAPPLY_MAX);
        (now < last + delta(pause)).then_some(Wait::Backoff)
    }

    /// A re-apply was sent at `now` and gave `result`.
    pub fn reapplied(&mut self, now: DateTime<Utc>, result: impl Into<String>) {
        self.consecutive = self.consecutive.saturating_add(1);
        self.last_reapply = Some(now);
        self.last_result = Some(result.into());
        let hour_ago = now - TimeDelta::hours(1);
        self.recent.retain(|t| *t > hour_ago);
        self.recent.push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(min: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
            .expect("literal")
            .with_timezone(&Utc)
            + TimeDelta::minutes(min)
    }

    #[test]
    fn a_battery_that_keeps_refusing_is_written_ever_less_often() {
        let mut h = Holding::default();
        h.held(at(0));
        h.left();
        assert_eq!(h.reverts, 1);
        assert_eq!(h.wait(at(0)), None, "the first re-apply goes at once");
        h.reapplied(at(0), "applied");
        // it does not take: 1 min, then 2, 4, 8 … up to 30 min between writes
        let mut t = 0;
        let mut gaps = Vec::new();
        for _ in 0..8 {
            let mut next = t + 1;
            while h.wait(at(next)).is_some() {
                next += 1;
            }
            gaps.push(next - t);
            h.reapplied(at(next), "applied");
            t = next;
        }
        assert_eq!(gaps, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(h.reverts, 1, "never held again: one revert");
    }

    #[test]
    fn an_intent_that_stays_held_ends_the_backoff_and_the_budget_caps_an_hour() {
        let mut h = Holding::default();
        // reverts every 3 minutes, each re-apply holding for a while
        for i in 0..REAPPLY_BUDGET as i64 {
            h.held(at(3 * i));
            h.left();
            assert_eq!(h.wait(at(3 * i + 1)), None, "revert {i}");
            h.reapplied(at(3 * i + 1), "applied");
        }
        assert_eq!(h.reverts, REAPPLY_BUDGET as u64);
        let t = 3 * REAPPLY_BUDGET as i64;
        h.held(at(t));
        h.left();
        assert_eq!(h.wait(at(t + 1)), Some(Wait::Budget));
        assert_eq!(h.wait(at(62)), None, "an hour after the first, one more");
        assert_eq!(h.holding_since, None);
        h.held(at(63));
        assert_eq!(h.holding_since, Some(at(63)));
    }
}
