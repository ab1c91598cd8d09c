//! Audit rows for commands refused before they reach the safety envelope: payloads that do not
//! parse or validate, unknown devices, retained commands. Bounded so that a flood cannot fill
//! the database: at most [`PER_MINUTE`] rows a minute, each with at most
//! [`MAX_RECEIVED_CHARS`] characters of the payload, control characters escaped (PostgreSQL
//! stores neither U+0000 in `jsonb` nor NUL in `text`). Refusals over the limit are counted
//! (logged once a minute, readable on the handle) and the count of a minute is recorded as one
//! summary row with the next recorded refusal. Sends the rows to the recorder through
//! `control::Bookkeeping`; touches nothing else.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Shared, lock};
use crate::control::Bookkeeping;
use crate::domain::{CommandSource, CommandStatus};
use crate::store::CommandRecord;

/// Refused commands recorded per minute at most; the others are only counted.
pub const PER_MINUTE: u32 = 30;
/// Characters of a refused payload kept in its audit row.
pub const MAX_RECEIVED_CHARS: usize = 512;
const WINDOW: Duration = Duration::from_secs(60);

/// What to do with one refusal.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Record it, after a summary row when refusals of the previous window were dropped.
    Record {
        /// Refusals not recorded in the previous window.
        dropped_before: u64,
    },
    /// Over the limit: only counted (`first` = the first one dropped in this window).
    Drop {
        /// The first dropped in this window (log it).
        first: bool,
    },
}

/// Fixed one-minute windows of at most [`PER_MINUTE`] recorded refusals.
#[derive(Debug, Default)]
pub(super) struct RefusalLimiter {
    window: Option<Instant>,
    recorded: u32,
    dropped_in_window: u64,
    /// Refusals not recorded since start.
    pub dropped_total: u64,
}

impl RefusalLimiter {
    /// Decides for one refusal arriving at `now`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        let mut dropped_before = 0;
        if self.window.is_none_or(|w| now.duration_since(w) >= WINDOW) {
            dropped_before = std::mem::take(&mut self.dropped_in_window);
            self.window = Some(now);
            self.recorded = 0;
        }
        if self.recorded < PER_MINUTE {
            self.recorded += 1;
            return Admit::Record { dropped_before };
        }
        self.dropped_in_window += 1;
        self.dropped_total += 1;
        Admit::Drop {
            first: self.dropped_in_window == 1,
        }
    }
}

/// `s` with every control character written as `\u{…}`, cut at `max` characters.
pub fn printable(s: &str, max: usize) -> (String, bool) {
    let mut out = String::new();
    let mut truncated = false;
    for (i, c) in s.chars().enumerate() {
        if i == max {
            truncated = true;
            break;
        }
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    (out, truncated)
}

/// The audit payload of a refused message: the text as received (lossy UTF-8, escaped, cut),
/// its size in bytes and whether it was cut.
pub fn received_summary(payload: &[u8]) -> Value {
    let text = String::from_utf8_lossy(payload);
    let (received, truncated) = printable(&text, MAX_RECEIVED_CHARS);
    json!({ "received": received, "bytes": payload.len(), "truncated": truncated })
}

/// Records a refused command on `device` (as written in the topic), within the limits above.
pub(super) fn record_refusal(shared: &Shared, device: &str, payload: &[u8], error: &str) {
    let admit = lock(&shared.refusals).admit(Instant::now());
    let dropped_before = match admit {
        Admit::Drop { first } => {
            if first {
                tracing::warn!(
                    per_minute = PER_MINUTE,
                    "command_refusals_not_recorded: over the audit limit, counted only"
                );
            }
            return;
        }
        Admit::Record { dropped_before } => dropped_before,
    };
    let mut records = Vec::with_capacity(2);
    if dropped_before > 0 {
        tracing::warn!(
            not_recorded = dropped_before,
            per_minute = PER_MINUTE,
            "command_refusals_not_recorded"
        );
        records.push(CommandRecord {
            at: Utc::now(),
            source: CommandSource::Mqtt,
            device: String::new(),
            payload: json!({ "not_recorded": dropped_before, "per_minute": PER_MINUTE }),
            status: CommandStatus::Error,
            error: Some(format!(
                "{dropped_before} refused commands not recorded (at most {PER_MINUTE} a minute)"
            )),
            latency_ms: None,
        });
    }
    records.push(CommandRecord {
        at: Utc::now(),
        source: CommandSource::Mqtt,
        device: printable(device, 128).0,
        payload: received_summary(payload),
        status: CommandStatus::Error,
        error: Some(printable(error, 1024).0),
        latency_ms: None,
    });
    let book = Bookkeeping::records_only(shared.commands.store().cloned(), records);
    if shared.records.try_send(book).is_err() {
        lock(&shared.refusals).dropped_total += 1;
        tracing::warn!("command_refusal_not_recorded: record queue full");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_records_at_most_the_limit_and_counts_the_rest() {
        let mut l = RefusalLimiter::default();
        let t0 = Instant::now();
        for _ in 0..PER_MINUTE {
            assert_eq!(l.admit(t0), Admit::Record { dropped_before: 0 });
        }
        assert_eq!(l.admit(t0), Admit::Drop { first: true });
        assert_eq!(l.admit(t0 + WINDOW / 2), Admit::Drop { first: false });
        assert_eq!(l.dropped_total, 2);
        assert_eq!(l.admit(t0 + WINDOW), Admit::Record { dropped_before: 2 });
        assert_eq!(l.admit(t0 + WINDOW), Admit::Record { dropped_before: 0 });
    }

    #[test]
    fn payloads_are_escaped_and_cut() {
        let v = received_summary(b"{\"id\":\"a\0b\"}");
        assert_eq!(v["received"], "{\"id\":\"a\\u{0}b\"}");
        assert_eq!(v["bytes"], 12);
        let v = received_summary(&[b'x'; 5000]);
        assert_eq!(v["received"].as_str().unwrap().len(), MAX_RECEIVED_CHARS);
        assert_eq!(v["truncated"], true);
        assert_eq!(received_summary(&[0xff, b'a'])["received"], "\u{fffd}a");
    }
}
