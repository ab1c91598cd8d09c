//! The `<dev>/response` payload: an answer built from a command's outcome (one report per
//! command, errors named by slot) or from the verification verdict that follows it. Pure: no I/O.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::control::{CommandError, Outcome, Verdict};
use crate::domain::CommandStatus;

/// The `<dev>/response` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResponse {
    /// The request's `id`, or null.
    pub id: Option<Value>,
    /// `ok` or `error`.
    pub status: CommandStatus,
    /// Why it failed, or null.
    pub error: Option<String>,
    /// What was sent to the device (driver report), or null.
    pub applied: Option<Value>,
    /// Whether the battery showed the change's effect (mode read back and, for Passive, power).
    pub verified: bool,
    /// What the battery showed: in a verdict, and when a write did not hold, else absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Value>,
    /// Effect verification: `pending` in the answer when a verdict follows on the same topic
    /// with the same id (`verified`, `not_holding` or `superseded`), else absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<String>,
    /// Why an accepted write is not verified when its effect cannot be seen on this firmware
    /// (the firmware catalogue's policy), else absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl CommandResponse {
    /// An error response.
    pub fn error(id: Option<Value>, error: impl Into<String>) -> Self {
        Self {
            id,
            status: CommandStatus::Error,
            error: Some(error.into()),
            applied: None,
            verified: false,
            observed: None,
            verification: None,
            note: None,
        }
    }

    /// A success response.
    pub fn ok(id: Option<Value>, applied: Value, verified: bool) -> Self {
        Self {
            id,
            status: CommandStatus::Ok,
            error: None,
            applied: Some(applied),
            verified,
            observed: None,
            verification: None,
            note: None,
        }
    }

    /// The verdict message of a verification that followed an answer: `ok` and `verified`
    /// when the battery showed the effect, `error: "not_holding"` when it never did, `ok` and
    /// not verified when a newer command superseded it; `observed` says what it showed.
    pub fn from_verdict(id: Option<Value>, verdict: &Verdict) -> Self {
        let mut r = match verdict {
            Verdict::NotHolding(_) => Self::error(id, "not_holding"),
            Verdict::Stopped => Self::error(id, "stopped"),
            Verdict::Verified { .. } | Verdict::Superseded => Self::ok(id, Value::Null, false),
        };
        r.applied = None;
        r.verified = matches!(verdict, Verdict::Verified { .. });
        r.observed = verdict.observed_json();
        r.verification = Some(verdict.name().to_string());
        r
    }
}

impl CommandResponse {
    /// The answer to a batch: for one command its report (`applied`) or error; for several
    /// (Manual slots) one report per command in `applied`, errors named `slots[i]`, and
    /// `status: error` with the first error when any failed. `verified` only when all were.
    pub fn from_outcome(id: Option<Value>, outcome: Outcome) -> Self {
        let pending = outcome.pending.is_some().then(|| "pending".to_string());
        let mut r = Self::from_results(id, outcome);
        if r.status == CommandStatus::Ok {
            r.verification = pending;
        }
        r
    }

    fn from_results(id: Option<Value>, outcome: Outcome) -> Self {
        let verified = outcome.verified();
        let many = outcome.results.len() > 1;
        let mut first_error: Option<String> = None;
        let mut observed = None;
        let mut note: Option<String> = None;
        let mut reports: Vec<Value> = Vec::with_capacity(outcome.results.len());
        for (i, result) in outcome.results.into_iter().enumerate() {
            reports.push(match result {
                Ok(r) => {
                    let mut v = serde_json::json!({
                        "status": "ok", "applied": r.applied, "verified": r.verified,
                    });
                    if let Some(n) = r.note {
                        v["note"] = Value::String(n.clone());
                        note.get_or_insert(n);
                    }
                    v
                }
                Err(e) => {
                    let msg = slot_error(many, i, &e);
                    if first_error.is_none()
                        && let CommandError::NotHolding(n) = &e
                    {
                        observed = Some(n.to_json());
                    }
                    first_error.get_or_insert_with(|| msg.clone());
                    serde_json::json!({ "status": "error", "error": msg })
                }
            });
        }
        match (first_error, many) {
            (None, false) => {
                let applied = reports
                    .pop()
                    .and_then(|mut r| r.get_mut("applied").map(Value::take))
                    .unwrap_or(Value::Null);
                Self {
                    note,
                    ..Self::ok(id, applied, verified)
                }
            }
            (None, true) => Self {
                note,
                ..Self::ok(id, Value::Array(reports), verified)
            },
            (Some(e), _) => {
                let mut r = Self::error(id, e);
                r.observed = observed;
                if many {
                    r.applied = Some(Value::Array(reports));
                }
                r
            }
        }
    }
}

fn slot_error(many: bool, i: usize, e: &CommandError) -> String {
    if many {
        format!("slots[{i}]: {e}")
    } else {
        e.to_string()
    }
}
