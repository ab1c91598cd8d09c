//! The Tempo service as the scheduler's `NightPlanner`: tonight's plan for the 22:00 job (the
//! planner's when `tempo.planner` is on and it could plan, else the seed's red-day precharge),
//! recorded as the `precharge_plan` document; the targets in force for the reconciler; the
//! 06:00 check of last night's targets. Reads SOC through the fleet and the store; never
//! commands a battery.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::super::planner::{BatteryNeed, PrechargeOutcome, precharge};
use super::super::{off_peak_hours_left, tempo_date_at};
use super::{DecisionStatus, NIGHT_PLAN_DOC, TempoService};
use crate::domain::{
    Alert, AlertKind, DayPlan, NightPlan, NightPlanner, Percent, PrechargeTarget, Severity,
};

/// The plan handed to the night job, kept for the 06:00 check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct NightRecord {
    date: NaiveDate,
    computed_at: DateTime<Utc>,
    plan: NightPlan,
}

impl TempoService {
    /// Per-battery precharge for the night before `day`, from each battery's SOC now.
    pub(super) async fn plan_for(
        &self,
        day: NaiveDate,
        now: DateTime<Utc>,
        reason: &str,
        dry_run: bool,
    ) -> NightPlan {
        let hours = off_peak_hours_left(day, now);
        let mut targets = Vec::new();
        let mut notes = Vec::new();
        for battery in self.fleet.iter() {
            let id = battery.id().clone();
            let limits = battery.limits();
            let sample = match battery.poll().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(device = %id, error = %e, "precharge_poll_failed");
                    notes.push(format!("{id}: no reading ({e})"));
                    continue;
                }
            };
            let capacity = self
                .settings
                .device_capacity_wh
                .get(id.as_str())
                .map(|c| f64::from(*c))
                .or(sample.rated_capacity.map(|c| c.0))
                .or(self.settings.capacity_wh.map(f64::from));
            let need = BatteryNeed {
                soc: sample.soc,
                capacity_wh: capacity,
                max_charge_w: limits.max_charge_w,
                max_soc: limits.max_soc,
            };
            match precharge(&need, self.settings.target_soc, hours, self.settings.margin) {
                PrechargeOutcome::Charge {
                    power, target_soc, ..
                } => targets.push(PrechargeTarget {
                    device: id,
                    power,
                    target_soc,
                }),
                PrechargeOutcome::Full => notes.push(format!("{id}: already at target")),
                PrechargeOutcome::MissingSoc => {
                    tracing::warn!(device = %id, "precharge_soc_unknown");
                    notes.push(format!("{id}: SOC unknown"));
                }
                PrechargeOutcome::MissingCapacity => {
                    tracing::warn!(device = %id, "precharge_capacity_unknown");
                    notes.push(format!("{id}: capacity unknown (set tempo.capacity_wh)"));
                }
                PrechargeOutcome::NoTimeLeft => notes.push(format!("{id}: no off-peak time left")),
            }
        }
        let reason = if notes.is_empty() {
            reason.to_string()
        } else {
            format!("{reason}; {}", notes.join("; "))
        };
        NightPlan {
            targets,
            reason,
            dry_run,
        }
    }
}

#[async_trait::async_trait]
#[async_trait::async_trait]
impl NightPlanner for TempoService {
    async fn tonight(&self, now: DateTime<Utc>) -> anyhow::Result<Option<NightPlan>> {
        if !self.settings.enabled {
            return Ok(None);
        }
        let day = tempo_date_at(now)
            .succ_opt()
            .ok_or_else(|| anyhow::anyhow!("date out of range"))?;
        let decision = match self.stored_decision().await {
            Some(d) if d.date == day && d.status != DecisionStatus::Pending => d,
            _ => {
                // The 11:30 run never finished (restart, cancelled): decide now, past the deadline.
                tracing::warn!(%day, "tempo_decision_missing_at_night");
                self.decide(None, false).await?
            }
        };
        let planned = if self.settings.planner {
            self.live.night_plan(now, false).await
        } else {
            None
        };
        if planned.is_none() && !decision.precharge {
            self.publish(now, Some(&decision), false).await;
            return Ok(None);
        }
        let plan = match planned {
            Some(p) => p,
            None => {
                self.plan_for(day, now, &decision.reason, self.dry_run.get())
                    .await
            }
        };
        let record = NightRecord {
            date: day,
            computed_at: now,
            plan: plan.clone(),
        };
        self.store
            .put_document(NIGHT_PLAN_DOC, &serde_json::to_value(&record)?)
            .await?;
        tracing::info!(%day, targets = plan.targets.len(), dry_run = plan.dry_run, "precharge_planned");
        let mut shown = decision.clone();
        shown.plan = Some(plan.clone());
        self.publish(now, Some(&shown), plan.dry_run).await;
        Ok(Some(plan))
    }

    async fn targets_in_force(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<PrechargeTarget>> {
        // The plan recorded at 22:00 is for the next Tempo day, which starts at 06:00.
        let Some(next_day) = tempo_date_at(now).succ_opt() else {
            return Ok(Vec::new());
        };
        let record: NightRecord = match self.store.document(NIGHT_PLAN_DOC).await? {
            Some(v) => serde_json::from_value(v)?,
            None => return Ok(Vec::new()),
        };
        if record.date != next_day || record.plan.dry_run {
            return Ok(Vec::new());
        }
        Ok(record.plan.targets)
    }

    async fn day_plan(&self, now: DateTime<Utc>) -> anyhow::Result<Option<DayPlan>> {
        if !self.settings.enabled || !self.settings.planner {
            return Ok(None);
        }
        Ok(self.live.day_plan(now, false).await)
    }

    async fn morning_check(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<Alert>> {
        self.book.refresh(now).await; // closes the Tempo day that just ended
        let day = tempo_date_at(now);
        let record: NightRecord = match self.store.document(NIGHT_PLAN_DOC).await? {
            Some(v) => serde_json::from_value(v)?,
            None => return Ok(Vec::new()),
        };
        if record.date != day || record.plan.dry_run {
            return Ok(Vec::new());
        }
        let tolerance = self.settings.tolerance;
        let mut alerts = Vec::new();
        for t in &record.plan.targets {
            let Some(battery) = self.fleet.get(&t.device) else {
                continue;
            };
            let floor = t.target_soc.0.saturating_sub(tolerance);
            let (soc, message) = match battery.poll().await {
                Ok(s) => match s.soc {
                    Some(Percent(soc)) if soc >= floor => continue,
                    Some(Percent(soc)) => (
                        Some(f64::from(soc)),
                        format!(
                            "precharge for {day} reached {soc} %, target {} % (tolerance {tolerance})",
                            t.target_soc.0
                        ),
                    ),
                    None => (None, "SOC unknown after the precharge night".to_string()),
                },
                Err(e) => (
                    None,
                    format!("could not read SOC after the precharge night: {e}"),
                ),
            };
            tracing::warn!(device = %t.device, message = %message, "precharge_short");
            alerts.push(
                Alert::raised(
                    AlertKind::PrechargeShort,
                    Severity::Warning,
                    Some(t.device.clone()),
                    message,
                    now,
                )
                .with_values(soc, Some(f64::from(floor))),
            );
        }
        Ok(alerts)
    }
}
