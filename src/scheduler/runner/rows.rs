//! How a stored job row meets the configuration at start-up: a changed trigger is recomputed
//! from now (no run, no miss), an override keeps the stored trigger, and a new job gets its first
//! fire. Pure functions over `JobRecord`; touches nothing.

use chrono::{DateTime, SubsecRound, Utc};
use chrono_tz::Tz;

use super::super::trigger::Trigger;
use crate::store::JobRecord;

/// Brings a stored row in line with the configuration (trigger change → recompute from now, no
/// run and no miss, like APScheduler's `replace_existing`; an override keeps the stored trigger).
pub(super) fn reconcile_row(
    row: &JobRecord,
    config: &Trigger,
    tz: Tz,
    now: DateTime<Utc>,
) -> JobRecord {
    let mut rec = row.clone();
    if rec.trigger_overridden {
        match Trigger::parse(&rec.trigger, tz) {
            Ok(stored) => {
                if rec.next_run_at.is_none() && !rec.paused {
                    rec.next_run_at = first_fire(&stored, now);
                }
                return rec;
            }
            Err(e) => {
                tracing::warn!(job_id = %rec.id, trigger = %rec.trigger, error = %e, "stored_trigger_invalid");
                rec.trigger_overridden = false;
                rec.trigger = String::new();
            }
        }
    }
    let config_text = config.to_string();
    let same = Trigger::parse(&rec.trigger, tz).is_ok_and(|t| &t == config);
    if !same {
        rec.trigger = config_text;
        rec.next_run_at = if rec.paused {
            None
        } else {
            first_fire(config, now)
        };
    } else if rec.next_run_at.is_none() && !rec.paused {
        rec.next_run_at = first_fire(config, now);
    }
    rec
}

/// First fire of a newly scheduled job: next cron match, or now + interval (APScheduler case I).
pub(super) fn first_fire(trigger: &Trigger, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    trigger.next_after(now.trunc_subsecs(0))
}
