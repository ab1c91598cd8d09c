//! The next scheduled actions with their reason, for the status page (`/api/v1/next-actions`):
//! each job's next run from the scheduler with what it will do and why (the night job's reason is
//! tonight's Tempo decision), and the planner's coming slots per battery with their one-line
//! reasons, in time order; plus tonight's Tempo decision on its own. Reads only what is in memory
//! (the scheduler's job list, the retained Tempo and plan documents, the dry-run switch); the
//! row builders are pure functions of those documents.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::api::{ApiQuery, ApiState};
use super::error::{ApiError, ErrorBody};
use crate::scheduler::{
    JOB_CHECK_TEMPO_TOMORROW, JOB_HEALTH_CHECK, JOB_MONITOR_BATTERIES, JOB_SWITCH_TO_AUTO,
    JOB_SWITCH_TO_MANUAL_NIGHT, JobView,
};

/// Rows answered when `count` is not given.
const DEFAULT_COUNT: usize = 12;
/// Most rows one request may ask for.
const MAX_COUNT: usize = 50;
/// Plan slots shown per battery.
const SLOTS_PER_BATTERY: usize = 3;

/// Query of the next-actions route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NextQuery {
    /// Rows, soonest first (1 to 50, default 12).
    pub count: Option<usize>,
}

/// One coming action.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct NextAction {
    /// When it happens (UTC).
    pub at: DateTime<Utc>,
    /// `schedule` (a job's next run) or `plan` (a planner slot).
    pub source: String,
    /// The job, for a schedule row.
    pub job: Option<String>,
    /// The battery, for a plan row.
    pub device: Option<String>,
    /// What will be done, in words.
    pub action: String,
    /// Why, in words.
    pub reason: String,
}

/// The coming actions and tonight's decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct NextActionsView {
    /// The scheduler's zone (IANA name), to show the times in.
    pub timezone: String,
    /// True while dry run is on: the rows are computed and published, nothing is applied.
    pub dry_run: bool,
    /// Whether the 22:00 and 06:00 jobs apply the plan (`tempo.planner`); the plan rows are
    /// shown either way.
    pub plan_applied: bool,
    /// Tonight's Tempo decision (`precharge`, `reason`, `tomorrow`, `status`); null with Tempo off.
    #[schema(value_type = Option<Object>)]
    pub tonight: Option<Value>,
    /// The rows, soonest first.
    pub actions: Vec<NextAction>,
}

/// The next scheduled actions with their reasons, and tonight's Tempo decision.
#[utoipa::path(get, path = "/api/v1/next-actions", tag = "jobs", params(NextQuery),
    responses((status = 200, body = NextActionsView), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn next_actions(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<NextQuery>,
) -> Result<Json<NextActionsView>, ApiError> {
    let count = q.count.unwrap_or(DEFAULT_COUNT);
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(ApiError::invalid(
            "invalid_count",
            format!("count: {count} is out of range (1 to {MAX_COUNT})"),
        ));
    }
    let scheduler = s
        .jobs
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("this bridge runs no scheduler"))?;
    let jobs = scheduler.list().await;
    let tempo = s.tempo.as_ref().map(|t| t.subscribe().borrow().clone());
    let plan = s
        .tempo
        .as_ref()
        .map(|t| t.live().subscribe().borrow().clone());
    let dry_run = s.commands.dry_run().get();
    let mut actions = schedule_rows(&jobs, tempo.as_ref(), dry_run);
    if let Some(plan) = &plan {
        actions.extend(plan_rows(plan, Utc::now()));
    }
    // At the same instant the job comes first: it is what runs; the slots say what it plans.
    actions.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| b.source.cmp(&a.source)));
    actions.truncate(count);
    Ok(Json(NextActionsView {
        timezone: scheduler.timezone().name().to_string(),
        dry_run,
        plan_applied: plan.as_ref().is_some_and(|p| p["applied"] == true),
        tonight: tempo.as_ref().map(tonight),
        actions,
    }))
}

/// Tonight's decision out of the Tempo document.
fn tonight(t: &Value) -> Value {
    serde_json::json!({
        "precharge": t["precharge"],
        "reason": t["reason"],
        "tomorrow": t["tomorrow"]["colour"],
        "status": t["decision"]["status"],
    })
}

/// One row per job that will run (paused or disabled jobs have no next run).
pub fn schedule_rows(jobs: &[JobView], tempo: Option<&Value>, dry_run: bool) -> Vec<NextAction> {
    jobs.iter()
        .filter(|j| !j.paused)
        .filter_map(|j| {
            let at = j.next_run_utc?;
            let (action, reason) = describe_job(j, tempo);
            let action = if dry_run {
                format!("{action} (dry run: computed, not applied)")
            } else {
                action
            };
            Some(NextAction {
                at,
                source: "schedule".into(),
                job: Some(j.id.clone()),
                device: None,
                action,
                reason,
            })
        })
        .collect()
}

/// What a job does and why, in words.
fn describe_job(j: &JobView, tempo: Option<&Value>) -> (String, String) {
    let decision = tempo.and_then(|t| t["reason"].as_str()).map(str::to_string);
    let precharge = tempo.is_some_and(|t| t["precharge"] == true);
    match j.id.as_str() {
        JOB_SWITCH_TO_AUTO => (
            "every battery → Auto".into(),
            "peak hours: the batteries cover the house on their own".into(),
        ),
        JOB_SWITCH_TO_MANUAL_NIGHT if precharge => (
            "precharge from the grid (Manual slot), the others idle".into(),
            decision.unwrap_or_default(),
        ),
        JOB_SWITCH_TO_MANUAL_NIGHT => (
            "every battery → Manual, idle (0 W)".into(),
            decision
                .map(|d| format!("off-peak hours, no precharge: {d}"))
                .unwrap_or_else(|| "off-peak hours: keep the charge for the day".into()),
        ),
        JOB_CHECK_TEMPO_TOMORROW => (
            "fetch tomorrow's Tempo colour and decide tonight".into(),
            "tomorrow's colour is published by 10:30–11:00".into(),
        ),
        JOB_MONITOR_BATTERIES => (
            "poll every battery (store, MQTT, alerts)".into(),
            format!("monitoring, {}", j.trigger),
        ),
        JOB_HEALTH_CHECK => (
            "check every battery's reachability".into(),
            format!("health, {}", j.trigger),
        ),
        other => (format!("run {other}"), j.trigger.clone()),
    }
}

/// The planner's coming slots per battery (at most [`SLOTS_PER_BATTERY`] each, the one in
/// progress shown from `now`).
pub fn plan_rows(plan: &Value, now: DateTime<Utc>) -> Vec<NextAction> {
    let Some(batteries) = plan["batteries"].as_object() else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for (device, p) in batteries {
        let Some(slots) = p["slots"].as_array() else {
            continue;
        };
        for slot in slots
            .iter()
            .filter(|s| end_of(s).is_some_and(|e| e > now))
            .take(SLOTS_PER_BATTERY)
        {
            let Some(start) = slot["start"].as_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            rows.push(NextAction {
                at: std::cmp::max(start, now),
                source: "plan".into(),
                job: None,
                device: Some(device.clone()),
                action: slot_action(slot),
                reason: slot["reason"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    rows
}

fn end_of(slot: &Value) -> Option<DateTime<Utc>> {
    slot["end"].as_str().and_then(|t| t.parse().ok())
}

/// A slot's action in words: `charge to 88 % (1200 W)`, `discharge down to 20 %`, `hold`.
fn slot_action(slot: &Value) -> String {
    let period = slot["period"].as_str().unwrap_or("").to_uppercase();
    let what = match slot["action"].as_str() {
        Some("charge") => format!(
            "charge to {} % ({} W)",
            slot["target_soc"],
            slot["power_w"].as_i64().map(i64::abs).unwrap_or_default()
        ),
        Some("discharge") => format!("discharge down to {} %", slot["floor_soc"]),
        Some("hold") => "hold".to_string(),
        other => other.unwrap_or("unknown").to_string(),
    };
    format!(
        "{period} {}: {what}",
        slot["colour"].as_str().unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn job(id: &str, next: Option<&str>, paused: bool) -> JobView {
        JobView {
            id: id.into(),
            trigger: "cron:0 22 * * *".into(),
            trigger_overridden: false,
            enabled: true,
            paused,
            running: false,
            next_run_utc: next.map(at),
            next_run_local: None,
            last_run_at: None,
            last_status: None,
            last_error: None,
        }
    }

    #[test]
    fn the_night_job_gives_tonights_decision_as_its_reason_and_paused_jobs_are_left_out() {
        let tempo = json!({ "precharge": true, "reason": "tomorrow red (rte): precharge to 95 %",
                            "tomorrow": { "colour": "red" }, "decision": { "status": "known" } });
        let jobs = [
            job(
                JOB_SWITCH_TO_MANUAL_NIGHT,
                Some("2026-12-02T21:00:00Z"),
                false,
            ),
            job(JOB_SWITCH_TO_AUTO, Some("2026-12-03T05:00:00Z"), true),
            job(JOB_HEALTH_CHECK, None, false),
        ];
        let rows = schedule_rows(&jobs, Some(&tempo), false);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].job.as_deref(), Some(JOB_SWITCH_TO_MANUAL_NIGHT));
        assert!(rows[0].action.starts_with("precharge"), "{rows:?}");
        assert_eq!(rows[0].reason, "tomorrow red (rte): precharge to 95 %");
        let rows = schedule_rows(&jobs, None, true);
        assert!(rows[0].action.starts_with("every battery → Manual, idle"));
        assert!(rows[0].action.ends_with("(dry run: computed, not applied)"));
        assert_eq!(tonight(&tempo)["tomorrow"], "red");
    }

    #[test]
    fn plan_rows_skip_ended_slots_start_the_current_one_now_and_say_what_and_why() {
        let plan = json!({ "batteries": {
            "bat1": { "slots": [
                { "start": "2026-12-02T05:00:00Z", "end": "2026-12-02T21:00:00Z", "period": "hp",
                  "colour": "blue", "action": "hold", "reason": "ended" },
                { "start": "2026-12-02T21:00:00Z", "end": "2026-12-03T05:00:00Z", "period": "hc",
                  "colour": "blue", "action": "charge", "target_soc": 88, "power_w": -1200,
                  "reason": "charge to 88 % tonight: tomorrow red" },
                { "start": "2026-12-03T05:00:00Z", "end": "2026-12-03T21:00:00Z", "period": "hp",
                  "colour": "red", "action": "discharge", "floor_soc": 12, "reason": "red HP" },
            ]},
            "bat2": { "error": "no SOC yet" },
        }});
        let now = at("2026-12-02T22:00:00Z");
        let rows = plan_rows(&plan, now);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].at, now, "the slot in progress starts now");
        assert_eq!(rows[0].action, "HC blue: charge to 88 % (1200 W)");
        assert_eq!(rows[0].reason, "charge to 88 % tonight: tomorrow red");
        assert_eq!(rows[1].action, "HP red: discharge down to 12 %");
        assert_eq!(rows[1].device.as_deref(), Some("bat1"));
        assert!(plan_rows(&json!({}), now).is_empty());
    }
}
