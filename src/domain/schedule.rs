//! Contracts between the scheduler and what its jobs call: a job's action, the context a run
//! gets, and the night planner (Tempo precharge) the 22:00 and 06:00 jobs consult. Pure types.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Alert, DeviceId, Percent, Watts};

/// What one run of a job gets.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// Job id, e.g. `job_switch_to_auto`.
    pub job_id: String,
    /// The scheduled instant this run answers (UTC).
    pub scheduled_for: DateTime<Utc>,
    /// The instant the run started (from the injected clock).
    pub started_at: DateTime<Utc>,
    /// Cancelled when the bridge shuts down; long jobs should stop early.
    pub cancel: CancellationToken,
}

/// The body of a scheduled job. The returned JSON is stored as the run's result (per-battery
/// outcomes); an error marks the run failed and never affects other jobs.
#[async_trait::async_trait]
pub trait JobAction: Send + Sync {
    /// Runs the job once.
    async fn run(&self, ctx: JobContext) -> anyhow::Result<serde_json::Value>;
}

/// The precharge a battery should get tonight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrechargeTarget {
    /// Battery concerned.
    pub device: DeviceId,
    /// Grid charge power to apply, W (negative = charge, device convention).
    pub power: Watts,
    /// SOC to reach by the end of the off-peak window, %.
    pub target_soc: Percent,
}

/// Tonight's plan: either precharge some batteries or keep them idle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NightPlan {
    /// Per-battery precharge; batteries not listed stay idle (0 W).
    pub targets: Vec<PrechargeTarget>,
    /// Why (e.g. "tomorrow 2026-12-01 is red (api-couleur-tempo)").
    pub reason: String,
    /// Compute and publish only, touch no battery.
    pub dry_run: bool,
}

/// The day's plan at 06:00: batteries listed in `hold` stay idle through the peak hours (their
/// charge is kept for a dearer day), the others go to AUTO and cover the house.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayPlan {
    /// Batteries that hold (MANUAL, no enabled slot) until the end of the AUTO window.
    pub hold: Vec<DeviceId>,
    /// Why, per battery (e.g. "bat1: hold at 100 % today: blue (rte) HP saves …").
    pub reason: String,
    /// Compute and publish only: every battery gets the seed's AUTO.
    pub dry_run: bool,
    /// Per battery in AUTO, the SOC its discharge stops at through the peak hours (the plan's
    /// `floor_soc`), %; enforced by the command service until the end of the AUTO window.
    #[serde(default)]
    pub floors: std::collections::BTreeMap<DeviceId, Percent>,
}

/// Source of tonight's plan, consulted by the 22:00 job, and the 06:00 verification.
#[async_trait::async_trait]
pub trait NightPlanner: Send + Sync {
    /// The plan for the night starting at `now` (refreshing power from current SOC), if any.
    async fn tonight(&self, now: DateTime<Utc>) -> anyhow::Result<Option<NightPlan>>;
    /// At 06:00: alerts for batteries short of last night's target.
    async fn morning_check(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<Alert>>;
    /// The precharge targets of the night in progress at `now` (empty outside one, or when the
    /// plan was a dry run): the reconciler stops a battery's charge once it reached its target.
    async fn targets_in_force(&self, _now: DateTime<Utc>) -> anyhow::Result<Vec<PrechargeTarget>> {
        Ok(Vec::new())
    }
    /// At 06:00: the day's hold/discharge decisions, None when the seed's AUTO applies to all.
    async fn day_plan(&self, _now: DateTime<Utc>) -> anyhow::Result<Option<DayPlan>> {
        Ok(None)
    }
}
