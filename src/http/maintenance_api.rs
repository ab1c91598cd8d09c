//! The maintenance-hold handlers of `/api/v1`: read every hold in force and set or release one
//! (`/maintenance`, bridge-wide or for one battery), through the command service so that HTTP,
//! MQTT and Home Assistant share one hold. Touches only the command service's hold.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;

use super::api::ApiState;
use super::error::{ApiError, ApiJson, ErrorBody};
use crate::control::{MaintenanceError, MaintenanceState};
use crate::domain::DeviceId;

/// Body of the maintenance toggle.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceBody {
    /// Hold (`true`) or release (`false`).
    pub maintenance: bool,
    /// One battery's id; absent = the bridge-wide hold (every battery).
    pub device: Option<String>,
}

/// Every maintenance hold in force.
#[utoipa::path(get, path = "/api/v1/maintenance", tag = "bridge",
    responses((status = 200, body = MaintenanceState)))]
pub async fn get_maintenance(State(s): State<ApiState>) -> Json<MaintenanceState> {
    Json(s.commands.maintenance().state())
}

/// Sets or releases a maintenance hold: no write reaches a held battery from any source until
/// it is released (stored, so it survives a restart).
#[utoipa::path(put, path = "/api/v1/maintenance", tag = "bridge", request_body = MaintenanceBody,
    responses((status = 200, body = MaintenanceState), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put_maintenance(
    State(s): State<ApiState>,
    ApiJson(body): ApiJson<MaintenanceBody>,
) -> Result<Json<MaintenanceState>, ApiError> {
    let device = body
        .device
        .as_deref()
        .map(DeviceId::parse)
        .transpose()
        .map_err(|e| ApiError::invalid("invalid_body", format!("device: {e}")))?;
    let state = s
        .commands
        .set_maintenance(device.as_ref(), body.maintenance, "http")
        .await
        .map_err(|e| match e {
            MaintenanceError::UnknownDevice(_) => {
                ApiError::not_found("unknown_battery", e.to_string())
            }
            _ => ApiError::unavailable(format!("maintenance hold not changed: {e}")),
        })?;
    Ok(Json(state))
}
