//! The dry-run handlers of `/api/v1`: read the bridge's dry-run switch and toggle it
//! (`/dry-run`). A toggle is stored before it takes effect (it survives a restart) and is
//! answered with a result object the page shows. Touches only the switch and its store document.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api::ApiState;
use super::error::{ApiError, ApiJson, ErrorBody};
use crate::control::DryRunState;

/// The dry-run switch as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DryRunView {
    /// `ok` (a toggle answers the same shape as a read).
    pub status: String,
    /// True while the scheduler, the planner, the reconciler and the regulator touch no battery.
    pub dry_run: bool,
    /// The value before this request (equal to `dry_run` for a read or a repeat).
    pub previous: bool,
    /// `config` (from `tempo.dry_run`, never toggled) or `stored` (a toggle, kept across restarts).
    pub origin: String,
    /// Who toggled it last (`http`, `mqtt`).
    pub changed_by: Option<String>,
    /// When it was toggled last (UTC).
    pub changed_at: Option<DateTime<Utc>>,
}

impl DryRunView {
    fn new(state: DryRunState, previous: bool) -> Self {
        Self {
            status: "ok".into(),
            dry_run: state.dry_run,
            previous,
            origin: state.origin,
            changed_by: state.changed_by,
            changed_at: state.changed_at,
        }
    }
}

/// Body of the dry-run toggle.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunBody {
    /// On (`true`) or off (`false`).
    pub dry_run: bool,
}

/// The bridge's dry-run switch.
#[utoipa::path(get, path = "/api/v1/dry-run", tag = "bridge",
    responses((status = 200, body = DryRunView)))]
pub async fn get_dry_run(State(s): State<ApiState>) -> Json<DryRunView> {
    let state = s.commands.dry_run().state();
    let previous = state.dry_run;
    Json(DryRunView::new(state, previous))
}

/// Turns dry run on or off (stored, so it survives a restart).
#[utoipa::path(put, path = "/api/v1/dry-run", tag = "bridge", request_body = DryRunBody,
    responses((status = 200, body = DryRunView), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)), security(("bearer" = [])))]
pub async fn put_dry_run(
    State(s): State<ApiState>,
    ApiJson(body): ApiJson<DryRunBody>,
) -> Result<Json<DryRunView>, ApiError> {
    let switch = s.commands.dry_run();
    let previous = switch.get();
    let state = switch
        .set(s.store.as_ref(), body.dry_run, "http", Utc::now())
        .await
        .map_err(|e| {
            ApiError::unavailable(format!("dry run not changed: the store refused it ({e})"))
        })?;
    Ok(Json(DryRunView::new(state, previous)))
}
