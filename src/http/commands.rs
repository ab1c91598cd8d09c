//! `POST /api/v1/batteries/{id}/commands`: the body is the JSON of `<dev>/set`, parsed by the
//! same `mqtt::commands::parse_set`, applied through the same `control::CommandService` entry
//! point with source `http`, and answered with the same result object as `<dev>/response`
//! (`CommandResponse::from_outcome`). With `?wait=verified` the answer waits for the verdict
//! of a mode write's effect verification (`CommandResponse::from_verdict`; 502 `not_holding`
//! when it did not hold); without it a write still being verified answers at once with
//! `"verification": "pending"`. Touches the command service only (which records the audit rows
//! and the desired state before answering).

use serde::Deserialize;
use serde_json::Value;

use crate::control::{CommandError, CommandService, Origin, Verdict};
use crate::domain::{CommandSource, DeviceId};
use crate::mqtt::commands::{Action, CommandResponse, parse_set};

use super::error::ApiError;

/// The query of the command route.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CommandQuery {
    /// `verified`: answer once the effect of a mode write was verified (or did not hold).
    #[param(inline)]
    pub wait: Option<WaitFor>,
}

/// What a command answer may wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WaitFor {
    /// The verdict of the effect verification.
    Verified,
}

/// Parses `body`, applies it to `device` and returns the result object, or the error answer
/// (with the result object attached) when it was refused or failed; with `wait`, the verdict
/// of the effect verification instead of the first answer.
pub async fn submit(
    commands: &CommandService,
    device: &DeviceId,
    body: &[u8],
    max: usize,
    wait: Option<WaitFor>,
) -> Result<CommandResponse, ApiError> {
    serde_json::from_slice::<Value>(body)
        .map_err(|e| ApiError::malformed(format!("the body is not JSON: {e}")))?;
    let parsed = parse_set(body, max).map_err(|r| {
        let result = CommandResponse::error(r.id.clone(), r.error.clone());
        ApiError::invalid("invalid_command", r.error).with_result(to_value(&result))
    })?;
    let Action::Submit(list) = parsed.action else {
        return Err(ApiError::invalid(
            "invalid_command",
            "this body does not describe a command",
        ));
    };
    let origin = Origin::new(CommandSource::Http, parsed.received);
    let outcome = commands.submit(device, &list, origin).await;
    if let (Some(WaitFor::Verified), Some(pending), true) =
        (wait, outcome.pending.clone(), outcome.is_ok())
    {
        let verdict = pending.verdict().await;
        let result = CommandResponse::from_verdict(parsed.id, &verdict);
        return match verdict {
            Verdict::Verified { .. } | Verdict::Superseded => Ok(result),
            Verdict::NotHolding(_) => Err(ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "not_holding",
                "the battery acknowledged the command but does not carry it out",
            )
            .with_result(to_value(&result))),
            Verdict::Stopped => Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the bridge stopped before the command could be verified",
            )
            .with_result(to_value(&result))),
        };
    }
    let first_error = outcome
        .results
        .iter()
        .find_map(|r| r.as_ref().err().cloned());
    let result = CommandResponse::from_outcome(parsed.id, outcome);
    let Some(err) = first_error else {
        return Ok(result);
    };
    let message = result.error.clone().unwrap_or_else(|| err.to_string());
    let api = match err {
        CommandError::UnknownDevice(_) => ApiError::not_found("unknown_battery", message),
        CommandError::Rejected(_) => ApiError::invalid("command_rejected", message),
        CommandError::NotHolding(_) => {
            ApiError::new(axum::http::StatusCode::BAD_GATEWAY, "not_holding", message)
        }
        CommandError::Driver(_) => {
            ApiError::new(axum::http::StatusCode::BAD_GATEWAY, "device_error", message)
        }
        CommandError::Maintenance { .. } => {
            ApiError::new(axum::http::StatusCode::CONFLICT, "maintenance", message)
        }
        CommandError::Standby { .. } => {
            ApiError::new(axum::http::StatusCode::CONFLICT, "standby", message)
        }
        // HTTP is a person's source: never held back, kept for completeness.
        CommandError::DryRun(..) => ApiError::invalid("dry_run", message),
    };
    Err(api.with_result(to_value(&result)))
}

fn to_value(r: &CommandResponse) -> Value {
    serde_json::to_value(r).unwrap_or_default()
}
