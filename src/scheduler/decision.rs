//! The run decision, pure and clock-free (APScheduler 3.11 as measured, reference §B.1/B.2): on a
//! wake-up list every due time from the stored `next_run_at` up to now, coalesce to the latest,
//! refuse the submission when the job is still running (max_instances 1), advance `next_run_at`
//! from the last listed time (phase kept); then, when a worker actually starts a listed time, run
//! it only if it is at most `misfire_grace_time` late.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::trigger::Trigger;

/// Most due times listed for one wake-up; older ones beyond this are dropped (they are far
/// beyond any grace time anyway).
pub const MAX_LISTED: usize = 1000;

/// What one wake-up decides for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakeOutcome {
    /// Times handed to a worker as one unit (one when coalescing), oldest first.
    pub submit: Vec<DateTime<Utc>>,
    /// Times refused because the job is still running (logged `scheduled_job_skipped`).
    pub skipped: Vec<DateTime<Utc>>,
    /// How many due times were folded away by coalescing (or dropped past `MAX_LISTED`).
    pub coalesced: usize,
    /// The new `next_run_at` (None only when the trigger has no further fire time).
    pub next_run_at: Option<DateTime<Utc>>,
}

/// Decides what a wake-up at `now` does for a job whose stored next fire time is `next_run_at`.
/// Returns None when the job is not due yet.
pub fn on_wake(
    trigger: &Trigger,
    next_run_at: DateTime<Utc>,
    now: DateTime<Utc>,
    coalesce: bool,
    running: bool,
) -> Option<WakeOutcome> {
    if next_run_at > now {
        return None;
    }
    let mut listed: Vec<DateTime<Utc>> = Vec::new();
    let mut dropped = 0usize;
    match trigger {
        Trigger::Interval { every } => {
            // Arithmetic, so a long downtime with a short interval costs nothing.
            let step = TimeDelta::from_std(*every).unwrap_or(TimeDelta::MAX);
            let step_ms = step.num_milliseconds().max(1);
            let late_ms = (now - next_run_at).num_milliseconds();
            let count = (late_ms / step_ms) as usize + 1;
            let first_kept = count.saturating_sub(MAX_LISTED);
            dropped = first_kept;
            for k in first_kept..count {
                if let Some(t) = TimeDelta::try_milliseconds(step_ms * k as i64)
                    .and_then(|d| next_run_at.checked_add_signed(d))
                {
                    listed.push(t);
                }
            }
        }
        Trigger::Cron { .. } => {
            let mut t = next_run_at;
            loop {
                listed.push(t);
                if listed.len() > MAX_LISTED {
                    listed.remove(0);
                    dropped += 1;
                }
                match trigger.next_after(t) {
                    Some(n) if n <= now => t = n,
                    _ => break,
                }
                if dropped > 100_000 {
                    // Years of downtime with a fine pattern: jump to the last occurrence.
                    if let Some(last) = trigger.last_at_or_before(now)
                        && last > t
                    {
                        listed.push(last);
                        dropped += 1;
                    }
                    break;
                }
            }
        }
    }
    let last = *listed.last()?;
    let next = trigger.next_after(last);
    let mut coalesced = dropped;
    if coalesce && listed.len() > 1 {
        coalesced += listed.len() - 1;
        listed = vec![last];
    }
    let (submit, skipped) = if running {
        (Vec::new(), listed)
    } else {
        (listed, Vec::new())
    };
    Some(WakeOutcome {
        submit,
        skipped,
        coalesced,
        next_run_at: next,
    })
}

/// What a worker does with one listed time when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartDecision {
    /// Run it.
    Run,
    /// Record it as missed: it started `late` after its scheduled time, beyond the grace.
    Missed {
        /// How late the start was.
        late: Duration,
    },
}

/// The grace check, made when the worker starts (time spent queueing counts as lateness).
pub fn start_decision(
    scheduled_for: DateTime<Utc>,
    started_at: DateTime<Utc>,
    grace: Duration,
) -> StartDecision {
    let late = (started_at - scheduled_for).to_std().unwrap_or_default();
    if late > grace {
        StartDecision::Missed { late }
    } else {
        StartDecision::Run
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::clock::{Clock, ManualClock};
    use chrono_tz::Europe::Paris;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test literal")
            .with_timezone(&Utc)
    }

    const GRACE: Duration = Duration::from_secs(300);

    #[test]
    fn case_a_daily_job_three_minutes_late_runs_once_and_keeps_phase() {
        let clock = ManualClock::new(utc("2026-11-30T05:03:00Z"));
        let t = Trigger::parse("cron:0 6 * * *", Paris).expect("valid");
        let stored = utc("2026-11-30T05:00:00Z"); // 06:00 CET
        let out = on_wake(&t, stored, clock.now(), true, false).expect("due");
        assert_eq!(out.submit, vec![stored]);
        assert_eq!(out.next_run_at, Some(utc("2026-12-01T05:00:00Z")));
        // The worker starts right away.
        assert_eq!(
            start_decision(stored, clock.now(), GRACE),
            StartDecision::Run
        );
    }

    #[test]
    fn case_b_daily_job_ten_minutes_late_is_missed_and_moves_on() {
        let clock = ManualClock::new(utc("2026-11-30T05:10:02Z"));
        let t = Trigger::parse("cron:0 6 * * *", Paris).expect("valid");
        let stored = utc("2026-11-30T05:00:00Z");
        let out = on_wake(&t, stored, clock.now(), true, false).expect("due");
        assert_eq!(out.submit, vec![stored]);
        assert_eq!(
            start_decision(stored, clock.now(), GRACE),
            StartDecision::Missed {
                late: Duration::from_secs(602)
            }
        );
        assert_eq!(out.next_run_at, Some(utc("2026-12-01T05:00:00Z")));
    }

    #[test]
    fn case_c_interval_down_twelve_and_a_half_minutes_coalesces_to_latest() {
        let t = Trigger::parse("interval:1m", Paris).expect("valid");
        let stored = utc("2026-11-30T10:00:00Z");
        let clock = ManualClock::new(utc("2026-11-30T10:12:30Z"));
        let out = on_wake(&t, stored, clock.now(), true, false).expect("due");
        // 13 due times (10:00 … 10:12) collapse into the latest, 30 s late, which runs.
        assert_eq!(out.submit, vec![utc("2026-11-30T10:12:00Z")]);
        assert_eq!(out.coalesced, 12);
        assert_eq!(
            start_decision(out.submit[0], clock.now(), GRACE),
            StartDecision::Run
        );
        // Phase kept: next at 10:13:00, not 10:13:30.
        assert_eq!(out.next_run_at, Some(utc("2026-11-30T10:13:00Z")));
    }

    #[test]
    fn case_d_without_coalesce_old_times_are_missed_recent_ones_run() {
        let t = Trigger::parse("interval:1m", Paris).expect("valid");
        let stored = utc("2026-11-30T10:00:00Z");
        let now = utc("2026-11-30T10:12:30Z");
        let out = on_wake(&t, stored, now, false, false).expect("due");
        assert_eq!(out.submit.len(), 13);
        let missed = out
            .submit
            .iter()
            .filter(|s| start_decision(**s, now, GRACE) != StartDecision::Run)
            .count();
        assert_eq!(missed, 8);
    }

    #[test]
    fn case_h_running_job_is_skipped_not_queued() {
        // 1 s interval, a 2.5 s job, max_instances 1: simulate wake-ups with a manual clock.
        let t = Trigger::parse("interval:1s", Paris).expect("valid");
        let clock = ManualClock::new(utc("2026-11-30T10:00:00Z"));
        let mut next = clock.now();
        let mut running_until: Option<DateTime<Utc>> = None;
        let (mut ran, mut skipped) = (Vec::new(), Vec::new());
        for _ in 0..8 {
            let now = clock.now();
            if running_until.is_some_and(|end| end <= now) {
                running_until = None;
            }
            if let Some(out) = on_wake(&t, next, now, true, running_until.is_some()) {
                for s in &out.submit {
                    assert_eq!(start_decision(*s, now, GRACE), StartDecision::Run);
                    ran.push(*s);
                    running_until = Some(now + TimeDelta::milliseconds(2500));
                }
                skipped.extend(out.skipped);
                next = out.next_run_at.expect("interval continues");
            }
            clock.advance(Duration::from_secs(1));
        }
        // Runs at 0 s, 3 s, 6 s; 1, 2, 4, 5, 7 s skipped; no burst after a run ends.
        let secs = |v: &[DateTime<Utc>]| {
            v.iter()
                .map(|t| (*t - utc("2026-11-30T10:00:00Z")).num_seconds())
                .collect::<Vec<_>>()
        };
        assert_eq!(secs(&ran), vec![0, 3, 6]);
        assert_eq!(secs(&skipped), vec![1, 2, 4, 5, 7]);
    }

    #[test]
    fn case_j_queueing_behind_busy_workers_counts_as_lateness() {
        let scheduled = utc("2026-11-30T10:00:00Z");
        let started = utc("2026-11-30T10:00:04Z");
        assert!(matches!(
            start_decision(scheduled, started, Duration::from_secs(2)),
            StartDecision::Missed { .. }
        ));
    }

    #[test]
    fn not_due_yet_does_nothing() {
        let t = Trigger::parse("interval:1m", Paris).expect("valid");
        assert_eq!(
            on_wake(
                &t,
                utc("2026-11-30T10:01:00Z"),
                utc("2026-11-30T10:00:59Z"),
                true,
                false
            ),
            None
        );
    }

    #[test]
    fn long_downtime_with_short_interval_is_bounded() {
        let t = Trigger::parse("interval:1s", Paris).expect("valid");
        let out = on_wake(
            &t,
            utc("2025-11-30T10:00:00Z"),
            utc("2026-11-30T10:00:00Z"),
            false,
            false,
        )
        .expect("due");
        assert_eq!(out.submit.len(), MAX_LISTED);
        assert_eq!(out.submit.last(), Some(&utc("2026-11-30T10:00:00Z")));
    }
}
