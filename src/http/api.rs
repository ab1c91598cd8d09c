//! The handlers of `/api/v1`: batteries (list, one, latest sample, history), commands, the
//! command audit, jobs (list, run, pause, resume, trigger, preview), alerts (open, recent) and
//! the bridge's identity (Tempo, plan and ledger in `tempo_api`). Each handler reads through the services in
//! [`ApiState`] and answers JSON or an [`ApiError`]; none keeps state of its own.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::control::CommandService;
use crate::domain::{CommandStatus, DeviceId, Sample};
use crate::mqtt::commands::CommandResponse;
use crate::scheduler::{SchedulerError, SchedulerHandle};
use crate::store::{Bucket, Store};
use crate::tempo::TempoService;

use super::error::{ApiError, ApiJson, ErrorBody, JsonBytes};
use super::history::{self, HistoryPoint};
use super::live::Live;

/// What the handlers read and act through.
#[derive(Clone)]
pub struct ApiState {
    /// The one command path (fleet and store inside).
    pub commands: CommandService,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The scheduler, when the bridge runs one.
    pub jobs: Option<SchedulerHandle>,
    /// Tempo, when enabled.
    pub tempo: Option<Arc<TempoService>>,
    /// Newest samples, recent alerts, the event broadcast.
    pub live: Live,
    /// Identity shown by `/api/v1/bridge` (version, instance, read_only, the redacted
    /// configuration …) as JSON text, serialised once: every route holds its own clone of this
    /// state, and a `Value` here was a deep copy of the configuration per route (2 MB at 10
    /// batteries).
    pub bridge: bytes::Bytes,
    /// Largest body accepted, bytes.
    pub max_body: usize,
    /// Cancelled at shutdown (ends the event streams).
    pub cancel: tokio_util::sync::CancellationToken,
}

/// A query string, refused with a 400 JSON error when it does not parse.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded_like(q).map(ApiQuery)
    }
}

fn serde_urlencoded_like<T: serde::de::DeserializeOwned>(q: &str) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{q}")
            .parse()
            .map_err(|_| ApiError::bad_request("unreadable query string"))?,
    )
    .map(|axum::extract::Query(t)| t)
    .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// One battery as the page shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatteryView {
    /// Bridge id (alias or BLE MAC).
    pub id: String,
    /// Whether the battery answers.
    pub online: bool,
    /// When it last answered (UTC).
    pub last_seen: Option<DateTime<Utc>>,
    /// Model, once it answered.
    pub model: Option<String>,
    /// Firmware version (`ver`), once it answered.
    pub firmware: Option<u32>,
    /// The firmware catalogue's note on this model and firmware (what it does, what the bridge
    /// does about it); null until the battery answered.
    pub firmware_note: Option<String>,
    /// Whether the firmware is in a known-bad range (a `firmware_known_bad` alert is raised).
    pub firmware_known_bad: bool,
    /// One-battery view only: the catalogue entry matched, why (model and firmware range), its
    /// severity, known quirks with their sources and the policy the driver follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub firmware_catalogue: Option<Value>,
    /// BLE MAC, once it answered.
    pub ble_mac: Option<String>,
    /// Configured limits (W, %).
    #[schema(value_type = Object)]
    pub limits: Value,
    /// Mode the battery reports.
    pub mode: Option<String>,
    /// State of charge, %.
    pub soc: Option<u8>,
    /// Battery power, W (+ discharging, − charging).
    pub bat_power: Option<i32>,
    /// The intent (desired state) the reconciler keeps, when there is one (from memory).
    #[schema(value_type = Option<Object>)]
    pub intent: Option<Value>,
    /// The newest sample, when one arrived.
    #[schema(value_type = Option<Object>)]
    pub latest: Option<Value>,
    /// Whether a maintenance hold (its own or the bridge-wide one) keeps every write away.
    pub maintenance: bool,
}

fn battery_view(state: &ApiState, id: &DeviceId) -> BatteryView {
    let battery = state.commands.fleet().get(id);
    let health = battery.map(|b| b.health()).unwrap_or_default();
    let info = battery.and_then(|b| b.info());
    let note = info.as_ref().and_then(|i| i.firmware_note.as_ref());
    let latest: Option<Sample> = state.live.latest(id);
    BatteryView {
        id: id.to_string(),
        online: health.reachable,
        last_seen: health.last_seen,
        model: info.as_ref().map(|i| i.model.clone()),
        firmware: info.as_ref().map(|i| i.firmware),
        firmware_note: note.map(|n| n.note.clone()),
        firmware_known_bad: note.is_some_and(|n| n.known_bad()),
        firmware_catalogue: None,
        ble_mac: info.as_ref().map(|i| i.ble_mac.clone()),
        limits: battery
            .map(|b| serde_json::to_value(b.limits()).unwrap_or_default())
            .unwrap_or_default(),
        mode: latest
            .as_ref()
            .and_then(|s| s.mode)
            .map(|m| m.as_str().to_string()),
        soc: latest.as_ref().and_then(|s| s.soc).map(|p| p.0),
        bat_power: latest.as_ref().and_then(|s| s.bat_power).map(|w| w.0),
        intent: state
            .commands
            .intents()
            .get(id)
            .and_then(|d| serde_json::to_value(d).ok()),
        latest: latest.and_then(|s| serde_json::to_value(s).ok()),
        maintenance: state.commands.maintenance().held(id).is_some(),
    }
}

fn known(state: &ApiState, id: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(id)
        .ok()
        .filter(|d| state.commands.fleet().get(d).is_some())
        .ok_or_else(|| ApiError::not_found("unknown_battery", format!("unknown battery '{id}'")))
}

/// Seeds the in-memory intents from the store on the first read after start-up; later reads
/// (and `/api/v1/batteries` on every call) answer from memory, kept by the command service and
/// the reconciler.
async fn seed_intents(state: &ApiState) {
    let board = state.commands.intents();
    if board.is_loaded() {
        return;
    }
    match state.store.desired_states().await {
        Ok(list) => board.absorb(list),
        Err(e) => tracing::warn!(error = %e, "intents_not_loaded"),
    }
}

/// Every battery.
#[utoipa::path(get, path = "/api/v1/batteries", tag = "batteries",
    responses((status = 200, body = [BatteryView])))]
pub async fn list_batteries(State(s): State<ApiState>) -> Json<Vec<BatteryView>> {
    seed_intents(&s).await;
    Json(
        s.commands
            .fleet()
            .ids()
            .iter()
            .map(|id| battery_view(&s, id))
            .collect(),
    )
}

/// One battery.
#[utoipa::path(get, path = "/api/v1/batteries/{id}", tag = "batteries",
    params(("id" = String, Path, description = "Battery id")),
    responses((status = 200, body = BatteryView), (status = 404, body = ErrorBody)))]
pub async fn get_battery(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<BatteryView>, ApiError> {
    let id = known(&s, &id)?;
    seed_intents(&s).await;
    let mut view = battery_view(&s, &id);
    view.firmware_catalogue = s
        .commands
        .fleet()
        .get(&id)
        .and_then(|b| b.info())
        .and_then(|i| i.firmware_note)
        .and_then(|n| serde_json::to_value(n).ok());
    Ok(Json(view))
}

/// The newest sample of one battery.
#[utoipa::path(get, path = "/api/v1/batteries/{id}/latest", tag = "batteries",
    params(("id" = String, Path, description = "Battery id")),
    responses((status = 200, body = Object, description = "A sample (units in the field names' docs)"),
        (status = 404, body = ErrorBody)))]
pub async fn latest_sample(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Sample>, ApiError> {
    let id = known(&s, &id)?;
    s.live
        .latest(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no_sample", format!("no sample of '{id}' yet")))
}

/// Query of the history route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Start, RFC 3339 (default: 24 h before `to` for hours, 30 days for days).
    pub from: Option<DateTime<Utc>>,
    /// End, RFC 3339 (default: now).
    pub to: Option<DateTime<Utc>>,
    /// Bucket: `hour` or `day` (UTC days; default `hour`).
    pub bucket: Option<String>,
}

/// History of one battery.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    /// Battery id.
    pub id: String,
    /// Start (UTC).
    pub from: DateTime<Utc>,
    /// End (UTC).
    pub to: DateTime<Utc>,
    /// `hour` or `day`.
    pub bucket: String,
    /// Bucket width, s.
    pub bucket_seconds: i64,
    /// One point per bucket with samples whose start lies in [from, to), oldest first.
    pub points: Vec<HistoryPoint>,
}

/// SOC and energy of one battery over a range, in hourly or daily buckets (from the store's
/// energy history: TimescaleDB's continuous aggregates, the raw table elsewhere).
#[utoipa::path(get, path = "/api/v1/batteries/{id}/history", tag = "batteries",
    params(("id" = String, Path, description = "Battery id"), HistoryQuery),
    responses((status = 200, body = HistoryView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn history(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryView>, ApiError> {
    let id = known(&s, &id)?;
    let bucket = match &q.bucket {
        Some(b) => history::parse_bucket(b).map_err(|e| ApiError::invalid("invalid_bucket", e))?,
        None => Bucket::Hour,
    };
    let now = Utc::now();
    let to = q.to.unwrap_or(now);
    let from = q.from.unwrap_or(to - history::default_span(bucket));
    let w = history::window(from, to, bucket).map_err(|e| ApiError::invalid("invalid_range", e))?;
    let mut buckets = s.store.energy_history(&id, w.from, w.to, w.bucket).await?;
    if bucket == Bucket::Hour {
        current_hour(&s, &id, &w, now, &mut buckets).await?;
    }
    Ok(Json(HistoryView {
        id: id.to_string(),
        from: w.from,
        to: w.to,
        bucket: match bucket {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
        }
        .into(),
        bucket_seconds: bucket.seconds(),
        points: history::points(&buckets, w.bucket, now),
    }))
}

/// Replaces the hour in progress (when the window covers it) by the one computed from raw
/// samples: the stored ones and the newest sample not yet written by the batching writer.
async fn current_hour(
    s: &ApiState,
    id: &DeviceId,
    w: &history::Window,
    now: DateTime<Utc>,
    buckets: &mut Vec<crate::store::EnergyBucket>,
) -> Result<(), ApiError> {
    let hour = Bucket::Hour.floor(now);
    if hour < w.from || hour >= w.to {
        return Ok(());
    }
    let mut raw = s
        .store
        .sample_history(id, hour, now + chrono::Duration::seconds(1))
        .await?;
    if let Some(latest) = s.live.latest(id)
        && raw.last().is_none_or(|r| r.at < latest.at)
    {
        raw.push(latest);
    }
    if let Some(b) = history::hour_from_samples(hour, &raw) {
        buckets.retain(|x| x.start != hour);
        buckets.push(b);
    }
    Ok(())
}

/// The result object of a command (the payload of `<dev>/response`).
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct CommandResult {
    /// The request's `id`, or null.
    #[schema(value_type = Option<Object>)]
    pub id: Option<Value>,
    /// `ok` or `error`.
    #[schema(value_type = String)]
    pub status: CommandStatus,
    /// Why it failed, or null.
    pub error: Option<String>,
    /// What was sent to the device, or null.
    #[schema(value_type = Option<Object>)]
    pub applied: Option<Value>,
    /// Whether the battery showed the change's effect.
    pub verified: bool,
    /// `pending` when a verdict follows (`verified`, `not_holding`, `superseded`), else absent.
    pub verification: Option<String>,
}

/// Sends a command: the same JSON as `<dev>/set`, e.g. `{"mode":"passive","power":-800}`.
#[utoipa::path(post, path = "/api/v1/batteries/{id}/commands", tag = "commands",
    params(("id" = String, Path, description = "Battery id"), super::commands::CommandQuery),
    request_body(content = Object, description = "The JSON of <dev>/set", content_type = "application/json"),
    responses((status = 200, body = CommandResult), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn post_command(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<super::commands::CommandQuery>,
    JsonBytes(body): JsonBytes,
) -> Result<Json<CommandResponse>, ApiError> {
    let id = known(&s, &id)?;
    let result = super::commands::submit(&s.commands, &id, &body, s.max_body, q.wait).await;
    let data = match &result {
        Ok(r) => serde_json::to_value(r).unwrap_or_default(),
        Err(e) => e.result.clone().unwrap_or_default(),
    };
    s.live.publish_json(
        "command",
        &json!({ "device": id, "source": "http", "result": data }),
    );
    result.map(Json)
}

/// Query of the audit route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// How many entries, newest first (1 to 500, default 50).
    pub limit: Option<u32>,
}

/// The command audit, newest first.
#[utoipa::path(get, path = "/api/v1/commands", tag = "commands", params(AuditQuery),
    responses((status = 200, body = [Object], description = "Audit rows: at, source, device, payload, status, error, latency_ms"),
        (status = 422, body = ErrorBody)))]
pub async fn audit(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid(
            "invalid_limit",
            format!("limit: {limit} is out of range (1 to 500)"),
        ));
    }
    let rows = s.store.recent_commands(limit).await?;
    Ok(Json(serde_json::to_value(rows).unwrap_or_default()))
}

fn jobs(s: &ApiState) -> Result<&SchedulerHandle, ApiError> {
    s.jobs
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("this bridge runs no scheduler"))
}

fn job_error(e: SchedulerError) -> ApiError {
    use axum::http::StatusCode;
    match e {
        SchedulerError::UnknownJob(_) => ApiError::not_found("unknown_job", e.to_string()),
        SchedulerError::Trigger(_) | SchedulerError::InvalidArgument(_) => {
            ApiError::invalid("invalid_trigger", e.to_string())
        }
        SchedulerError::AlreadyPaused(_)
        | SchedulerError::NotPaused(_)
        | SchedulerError::Disabled(_)
        | SchedulerError::AlreadyRunning(_) => {
            ApiError::new(StatusCode::CONFLICT, "job_state", e.to_string())
        }
        SchedulerError::Store(_) | SchedulerError::ShuttingDown | SchedulerError::Settings(_) => {
            ApiError::unavailable(e.to_string())
        }
    }
}

fn to_json(v: impl Serialize) -> Json<Value> {
    Json(serde_json::to_value(v).unwrap_or_default())
}

/// Every job with its trigger, state and next run.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs",
    responses((status = 200, body = [Object], description = "Jobs: id, trigger, paused, running, next_run_utc, next_run_local, last_run_at, last_status")))]
pub async fn list_jobs(State(s): State<ApiState>) -> Result<Json<Value>, ApiError> {
    Ok(to_json(jobs(&s)?.list().await))
}

/// Runs a job now.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/run", tag = "jobs",
    params(("id" = String, Path, description = "Job id, e.g. job_switch_to_auto")),
    responses((status = 200, body = Object, description = "The run record"), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn run_job(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(to_json(jobs(&s)?.run_now(&id).await.map_err(job_error)?))
}

/// Pauses a job.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/pause", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = Object, description = "The job"), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn pause_job(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(to_json(jobs(&s)?.pause(&id).await.map_err(job_error)?))
}

/// Resumes a paused job.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/resume", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = Object, description = "The job"), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn resume_job(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(to_json(jobs(&s)?.resume(&id).await.map_err(job_error)?))
}

/// Body of the trigger route.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// New trigger, e.g. `cron:0 7 * * *` or `interval:5m`; null resets to the configuration.
    pub trigger: Option<String>,
}

/// Changes (or, with `null`, resets) a job's trigger.
#[utoipa::path(put, path = "/api/v1/jobs/{id}/trigger", tag = "jobs",
    params(("id" = String, Path, description = "Job id")), request_body = TriggerBody,
    responses((status = 200, body = Object, description = "The job"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn update_trigger(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TriggerBody>,
) -> Result<Json<Value>, ApiError> {
    let j = jobs(&s)?;
    let r = match body.trigger {
        Some(t) => j.update_trigger(&id, &t).await,
        None => j.reset_trigger(&id).await,
    };
    Ok(to_json(r.map_err(job_error)?))
}

/// Query of the preview route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// A job id, or
    pub id: Option<String>,
    /// a trigger such as `cron:0 6 * * *`.
    pub trigger: Option<String>,
    /// How many fire times (1 to 100, default 5).
    pub count: Option<usize>,
    /// Start, RFC 3339 (default now).
    pub from: Option<DateTime<Utc>>,
}

/// The next fire times of a job or a trigger.
#[utoipa::path(get, path = "/api/v1/jobs/preview", tag = "jobs", params(PreviewQuery),
    responses((status = 200, body = [Object], description = "Fire times: utc, local"),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn preview(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<PreviewQuery>,
) -> Result<Json<Value>, ApiError> {
    let j = jobs(&s)?;
    let spec = q.trigger.or(q.id).ok_or_else(|| {
        ApiError::invalid(
            "invalid_trigger",
            "give id (a job) or trigger (e.g. cron:0 6 * * *)",
        )
    })?;
    let count = q.count.unwrap_or(5);
    if !(1..=100).contains(&count) {
        return Err(ApiError::invalid(
            "invalid_limit",
            format!("count: {count} is out of range (1 to 100)"),
        ));
    }
    let tz = j.timezone();
    let times = j
        .preview(&spec, q.from.unwrap_or_else(Utc::now), count)
        .await
        .map_err(job_error)?;
    Ok(Json(json!(
        times
            .iter()
            .map(|t| json!({"utc": t, "local": t.with_timezone(&tz).to_rfc3339()}))
            .collect::<Vec<_>>()
    )))
}

/// Open and recent alerts.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertsView {
    /// Raised and not cleared (from the store).
    #[schema(value_type = [Object])]
    pub open: Vec<Value>,
    /// The last alert events seen by this process, newest first.
    #[schema(value_type = [Object])]
    pub recent: Vec<Value>,
}

/// Open alerts and recent alert events.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts",
    responses((status = 200, body = AlertsView), (status = 503, body = ErrorBody)))]
pub async fn alerts(State(s): State<ApiState>) -> Result<Json<AlertsView>, ApiError> {
    let open = s.store.open_alerts().await?;
    let v = |a: &crate::domain::Alert| serde_json::to_value(a).unwrap_or_default();
    Ok(Json(AlertsView {
        open: open.iter().map(v).collect(),
        recent: s.live.recent_alerts().iter().map(v).collect(),
    }))
}

/// The bridge's identity: version, instance, backend, read-only, Tempo on, whether a token is
/// configured.
#[utoipa::path(get, path = "/api/v1/bridge", tag = "bridge",
    responses((status = 200, body = Object, description = "version, instance, backend, read_only, tempo, devices")))]
pub async fn bridge(State(s): State<ApiState>) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        s.bridge.clone(),
    )
}
