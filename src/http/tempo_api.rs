//! The Tempo handlers of `/api/v1`: colours and tonight's decision (`/tempo`, `/tempo/refresh`),
//! the planner's next 48 h (`/plan`) and the € ledger (`/ledger`: today's running ledger and
//! the season per battery, and the closed days stored by the ledger book). Read through the
//! Tempo service and the store; writes only what `tempo/refresh` writes.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::tempo::{DayLedger, LEDGER_PREFIX, TempoService};

use super::api::{ApiQuery, ApiState};
use super::error::{ApiError, ApiJson, ErrorBody};

/// How old the ledger book's running ledger may be before `/ledger` recomputes it, minutes.
const LEDGER_FRESH_MINUTES: i64 = 5;

fn tempo(s: &ApiState) -> Result<&Arc<TempoService>, ApiError> {
    s.tempo
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("Tempo is off ([tempo] enabled = false)"))
}

/// Tempo today and tomorrow, and tonight's precharge decision with its reason.
#[utoipa::path(get, path = "/api/v1/tempo", tag = "tempo",
    responses((status = 200, body = Object, description = "today, tomorrow, decision, precharge, reason, dry_run"),
        (status = 503, body = ErrorBody)))]
pub async fn get_tempo(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(tempo(&s)?.get().await))
}

/// Body of the Tempo refresh route.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    /// Decide without storing the plan or touching a battery.
    #[serde(default)]
    pub dry_run: bool,
}

/// Fetches the colours now and decides about tomorrow (`dry_run`: publish only).
#[utoipa::path(post, path = "/api/v1/tempo/refresh", tag = "tempo", request_body = RefreshBody,
    responses((status = 200, body = Object, description = "The new Tempo state"), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)), security(("bearer" = [])))]
pub async fn refresh_tempo(
    State(s): State<ApiState>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Json<Value>, ApiError> {
    let t = tempo(&s)?;
    t.refresh(body.dry_run)
        .await
        .map(Json)
        .map_err(|e| ApiError::unavailable(e.to_string()))
}

/// The planner's slots for the next 48 h with their reasons, computed now (`plan/get`).
#[utoipa::path(get, path = "/api/v1/plan", tag = "tempo",
    responses((status = 200, body = Object, description = "The plan: slots with power, price and reason"),
        (status = 503, body = ErrorBody)))]
pub async fn get_plan(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    tempo(&s)?
        .request("plan/get", &json!({}))
        .await
        .map(Json)
        .map_err(ApiError::unavailable)
}

/// Query of the ledger route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    /// Closed Tempo days per battery, newest first (0 to 400, default 31).
    pub days: Option<u32>,
}

/// The € ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerView {
    /// Today's running ledger and the season's € saved per battery and in total: the document
    /// of the retained `<base>/bridge/ledger` topic (date, today_saved_eur, season_saved_eur,
    /// batteries, updated_at).
    #[schema(value_type = Object)]
    pub current: Value,
    /// Closed Tempo days (06:00 → 06:00), newest first, at most `days` per battery: device, date,
    /// colour, kWh charged/delivered in HP and HC, charge cost, avoided and saved €, cycles.
    #[schema(value_type = [Object])]
    pub days: Vec<DayLedger>,
}

/// Today's running € ledger, the season's total and the closed days per battery.
#[utoipa::path(get, path = "/api/v1/ledger", tag = "tempo", params(LedgerQuery),
    responses((status = 200, body = LedgerView), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn ledger(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<LedgerQuery>,
) -> Result<Json<LedgerView>, ApiError> {
    let t = tempo(&s)?;
    let limit = q.days.unwrap_or(31);
    if limit > 400 {
        return Err(ApiError::invalid(
            "invalid_limit",
            format!("days: {limit} is out of range (0 to 400)"),
        ));
    }
    let cached = t.book().subscribe().borrow().clone();
    let fresh = cached["updated_at"]
        .as_str()
        .and_then(|u| u.parse::<chrono::DateTime<Utc>>().ok())
        .is_some_and(|u| Utc::now() - u < Duration::minutes(LEDGER_FRESH_MINUTES));
    let current = if fresh {
        cached
    } else {
        t.request("ledger/get", &json!({}))
            .await
            .map_err(ApiError::unavailable)?
    };
    let mut days = Vec::new();
    for id in s.commands.fleet().ids() {
        let docs = s
            .store
            .documents_under(&format!("{LEDGER_PREFIX}{id}/"))
            .await?;
        let mut mine: Vec<DayLedger> = docs
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_value(v).ok())
            .collect();
        mine.sort_by_key(|l| std::cmp::Reverse(l.date));
        mine.truncate(limit as usize);
        days.extend(mine);
    }
    days.sort_by(|a, b| b.date.cmp(&a.date).then_with(|| a.device.cmp(&b.device)));
    Ok(Json(LedgerView { current, days }))
}
