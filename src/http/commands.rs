//! `POST /api/v1/batteries/{id}/commands`: the body is the JSON of `<dev>/set`, parsed by the
//! same `mqtt::commands::parse_set`, applied through the same `control::CommandService` with
//! source `http`, and answered with the same result object as `<dev>/response`. Touches the
//! command service only (which records the audit row and the desired state).

use chrono::Utc;
use serde_json::{Value, json};

use crate::control::{CommandError, CommandService};
use crate::domain::{CommandSource, DeviceId};
use crate::mqtt::commands::{Action, CommandResponse, intent_for, parse_set};

use super::error::ApiError;

/// Parses `body`, applies it to `device` and returns the result object, or the error answer
/// (with the result object attached) when it was refused or failed.
pub async fn submit(
    commands: &CommandService,
    device: &DeviceId,
    body: &[u8],
    max: usize,
) -> Result<CommandResponse, ApiError> {
    let audit: Value = serde_json::from_slice(body)
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
    let id = parsed.id;
    let many = list.len() > 1;
    let mut reports = Vec::with_capacity(list.len());
    let mut first_error: Option<CommandError> = None;
    let mut all_verified = true;
    for (i, cmd) in list.iter().enumerate() {
        let intent = intent_for(device, cmd, Utc::now()).map(|mut d| {
            d.set_by = CommandSource::Http.as_str().into();
            d
        });
        let result = commands
            .submit(
                device.as_str(),
                cmd,
                CommandSource::Http,
                audit.clone(),
                intent,
            )
            .await;
        match result {
            Ok(r) => {
                all_verified &= r.verified;
                reports
                    .push(json!({ "status": "ok", "applied": r.applied, "verified": r.verified }));
            }
            Err(e) => {
                all_verified = false;
                let msg = if many {
                    format!("slots[{i}]: {e}")
                } else {
                    e.to_string()
                };
                reports.push(json!({ "status": "error", "error": msg }));
                first_error.get_or_insert(e);
            }
        }
    }
    let Some(err) = first_error else {
        let applied = if many {
            Value::Array(reports)
        } else {
            reports
                .pop()
                .and_then(|mut r| r.get_mut("applied").map(Value::take))
                .unwrap_or(Value::Null)
        };
        return Ok(CommandResponse::ok(id, applied, all_verified));
    };
    let message = reports
        .iter()
        .find_map(|r| r.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| err.to_string());
    let mut result = CommandResponse::error(id, message.clone());
    if many {
        result.applied = Some(Value::Array(reports));
    }
    let api = match err {
        CommandError::UnknownDevice(_) => ApiError::not_found("unknown_battery", message),
        CommandError::Rejected(_) => ApiError::invalid("command_rejected", message),
        CommandError::Driver(_) => {
            ApiError::new(axum::http::StatusCode::BAD_GATEWAY, "device_error", message)
        }
    };
    Err(api.with_result(to_value(&result)))
}

fn to_value(r: &CommandResponse) -> Value {
    serde_json::to_value(r).unwrap_or_default()
}
