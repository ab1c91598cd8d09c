//! The five standard jobs as `JobAction`s: 06:00 AUTO, 22:00 MANUAL night (idle or tonight's
//! precharge plan), the 11:30 Tempo check (action supplied by the `tempo` module), 5-minute
//! monitoring and 1-minute health. Mode changes go through `CommandService::submit` (envelope,
//! audit, desired state); samples go out on the app's broadcast. Touches the fleet, the store
//! (`touch_device`) and the alert channel.
//!
//! While the bridge's dry run is on, the mode jobs compute what they would apply and report it
//! per battery (`"status": "dry_run"`, `would_apply`) without sending anything.
//!
//! Fleet jobs never stop at the first battery: every battery is tried, the result JSON lists one
//! outcome per battery, and the run fails only when every battery failed.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::settings::SchedulerSettings;
use super::trigger::Trigger;
use super::{
    JOB_CHECK_TEMPO_TOMORROW, JOB_HEALTH_CHECK, JOB_MONITOR_BATTERIES, JOB_SWITCH_TO_AUTO,
    JOB_SWITCH_TO_MANUAL_NIGHT,
};
use crate::control::{CommandService, Intent, Origin};
use crate::domain::{
    AlertSender, Command, CommandSource, DayPlan, DesiredState, HhMm, JobAction, JobContext,
    ManualSlot, ModeConfig, NightPlan, NightPlanner, Sample, Watts, WeekMask,
};
use crate::store::{Store, StoreError};

/// Job actions by job id.
pub type JobRegistry = BTreeMap<String, Arc<dyn JobAction>>;

/// What the standard jobs need.
#[derive(Clone)]
pub struct JobDeps {
    /// The one command path (fleet, envelope, audit, desired state).
    pub commands: CommandService,
    /// Store, for `touch_device`.
    pub store: Arc<dyn Store>,
    /// Scheduler settings (zone, mode hours, night slot).
    pub settings: SchedulerSettings,
    /// Tonight's plan and the 06:00 check (Tempo precharge), when configured.
    pub planner: Option<Arc<dyn NightPlanner>>,
    /// The 11:30 Tempo check, provided by the `tempo` module; the job is absent without it.
    pub tempo_check: Option<Arc<dyn JobAction>>,
    /// Where monitoring samples go (store writer, MQTT publisher, alerts, reconciler).
    pub samples: broadcast::Sender<Sample>,
    /// Alert channel (morning check alerts).
    pub alerts: Option<AlertSender>,
}

/// Builds the registry of the standard jobs (four, five with `tempo_check`).
pub fn standard_jobs(deps: JobDeps) -> JobRegistry {
    let mut reg: JobRegistry = BTreeMap::new();
    reg.insert(
        JOB_SWITCH_TO_AUTO.into(),
        Arc::new(SwitchToAuto {
            commands: deps.commands.clone(),
            settings: deps.settings.clone(),
            planner: deps.planner.clone(),
            alerts: deps.alerts.clone(),
        }),
    );
    reg.insert(
        JOB_SWITCH_TO_MANUAL_NIGHT.into(),
        Arc::new(SwitchToManualNight {
            commands: deps.commands.clone(),
            settings: deps.settings.clone(),
            planner: deps.planner.clone(),
        }),
    );
    if let Some(tempo) = deps.tempo_check {
        reg.insert(JOB_CHECK_TEMPO_TOMORROW.into(), tempo);
    } else {
        tracing::info!(
            job_id = JOB_CHECK_TEMPO_TOMORROW,
            "scheduled_job_not_registered"
        );
    }
    reg.insert(
        JOB_MONITOR_BATTERIES.into(),
        Arc::new(MonitorBatteries {
            commands: deps.commands.clone(),
            samples: deps.samples.clone(),
        }),
    );
    reg.insert(
        JOB_HEALTH_CHECK.into(),
        Arc::new(HealthCheck {
            commands: deps.commands,
            store: deps.store,
        }),
    );
    reg
}

/// The next instant after `now` when the local time in the settings' zone is `hour`:00.
pub fn next_local_hour(
    settings: &SchedulerSettings,
    hour: u8,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    Trigger::cron(&format!("0 {hour} * * *"), settings.tz())
        .ok()
        .and_then(|t| t.next_after(now))
}

/// The MANUAL "0 W" slot: the bridge's own slot (`night_slot`) written DISABLED with power 0.
///
/// Why disabled rather than an enabled slot at 0 W (reference `marstek-open-api.md` §2.8): on
/// some firmware `power: 0` in an enabled slot means "no limit", so the battery could still
/// charge or discharge at will; an enabled slot not covering now, or a disabled slot, drives
/// nothing, and Marstek's own "stop" device action is exactly `power 0` with `enable 0`. Manual
/// mode with no enabled slot covering the night keeps the battery idle.
pub fn idle_night_slot(settings: &SchedulerSettings) -> ManualSlot {
    ManualSlot {
        slot: settings.night_slot,
        start: HhMm {
            hour: settings.manual_mode_start_hour,
            minute: 0,
        },
        end: HhMm {
            hour: settings.manual_mode_end_hour,
            minute: 0,
        },
        days: WeekMask::ALL,
        power: Watts(0),
        enable: false,
    }
}

/// The precharge slot: the bridge's slot, enabled, over the night window at the plan's power.
pub fn precharge_slot(settings: &SchedulerSettings, power: Watts) -> ManualSlot {
    ManualSlot {
        power,
        enable: true,
        ..idle_night_slot(settings)
    }
}

/// Turns per-battery outcomes into the run result; an error only when every battery failed.
fn fleet_result(job: &str, outcomes: Vec<Value>, extra: Value) -> anyhow::Result<Value> {
    let failed = outcomes
        .iter()
        .filter(|o| o.get("status").and_then(Value::as_str) == Some("error"))
        .count();
    let total = outcomes.len();
    let result =
        json!({ "batteries": outcomes, "ok": total - failed, "failed": failed, "detail": extra });
    if total > 0 && failed == total {
        anyhow::bail!("{job}: every battery failed ({failed} of {total}): {result}");
    }
    Ok(result)
}

async fn apply_mode(
    commands: &CommandService,
    job_id: &str,
    config: ModeConfig,
    valid_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    devices: Option<&[crate::domain::DeviceId]>,
) -> Vec<Value> {
    let ids = devices
        .map(|d| d.to_vec())
        .unwrap_or_else(|| commands.fleet().ids());
    if commands.dry_run().get() {
        // Dry run: what the job would do, for its result and the logs; no battery is touched.
        tracing::info!(job_id, mode = %config.mode(), devices = ids.len(), "job_dry_run");
        return ids
            .into_iter()
            .map(|id| json!({ "device": id, "status": "dry_run", "would_apply": config, "valid_until": valid_until }))
            .collect();
    }
    let futures = ids.into_iter().map(|id| {
        let config = config.clone();
        async move {
            let intent = DesiredState {
                device: id.clone(),
                config: config.clone(),
                set_by: job_id.to_string(),
                set_at: now,
                valid_until,
            };
            let cmd = Command::SetMode(config);
            let origin = Origin {
                source: CommandSource::Scheduler,
                received: json!({ "job": job_id }),
                intent: Intent::Keep(intent),
            };
            match commands.submit_one(&id, &cmd, origin).await {
                Ok(rep) => json!({
                    "device": id, "status": "ok", "verified": rep.verified,
                    "observed_mode": rep.observed_mode, "applied": rep.applied,
                }),
                Err(e) => json!({ "device": id, "status": "error", "error": e.to_string() }),
            }
        }
    });
    futures::future::join_all(futures).await
}

/// 06:00: every battery → AUTO (intent valid until `auto_mode_end_hour`), except those the
/// planner's day plan holds (idle MANUAL until then), then the planner's morning check, whose
/// alerts go to the alert channel.
pub struct SwitchToAuto {
    commands: CommandService,
    settings: SchedulerSettings,
    planner: Option<Arc<dyn NightPlanner>>,
    alerts: Option<AlertSender>,
}

#[async_trait::async_trait]
impl JobAction for SwitchToAuto {
    async fn run(&self, ctx: JobContext) -> anyhow::Result<Value> {
        let now = ctx.started_at;
        let until = next_local_hour(&self.settings, self.settings.auto_mode_end_hour, now);
        let day = self.day_plan(now).await;
        let hold: Vec<_> = day
            .as_ref()
            .filter(|d| !d.dry_run)
            .map(|d| d.hold.clone())
            .unwrap_or_default();
        let (held, auto): (Vec<_>, Vec<_>) = self
            .commands
            .fleet()
            .ids()
            .into_iter()
            .partition(|id| hold.contains(id));
        let mut outcomes = apply_mode(
            &self.commands,
            &ctx.job_id,
            ModeConfig::Auto,
            until,
            now,
            Some(&auto),
        )
        .await;
        if !held.is_empty() {
            let slot = idle_night_slot(&self.settings);
            outcomes.extend(
                apply_mode(
                    &self.commands,
                    &ctx.job_id,
                    ModeConfig::Manual { slot },
                    until,
                    now,
                    Some(&held),
                )
                .await,
            );
        }
        let mut morning = json!(null);
        if let Some(planner) = &self.planner {
            match planner.morning_check(now).await {
                Ok(alerts) => {
                    morning = json!({ "alerts": alerts.len() });
                    if let Some(tx) = &self.alerts {
                        for a in alerts {
                            let _ = tx.send(a);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "morning_check_failed");
                    morning = json!({ "error": format!("{e:#}") });
                }
            }
        }
        fleet_result(
            &ctx.job_id,
            outcomes,
            json!({ "mode": "Auto", "valid_until": until, "morning_check": morning,
                    "hold": held, "day_plan": day }),
        )
    }
}

impl SwitchToAuto {
    /// The planner's day plan, None without a planner or when it fails (then AUTO for all).
    async fn day_plan(&self, now: DateTime<Utc>) -> Option<DayPlan> {
        let planner = self.planner.as_ref()?;
        match planner.day_plan(now).await {
            Ok(Some(plan)) => {
                tracing::info!(hold = plan.hold.len(), dry_run = plan.dry_run, reason = %plan.reason, "day_plan");
                Some(plan)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "day_plan_unavailable");
                None
            }
        }
    }
}

/// 22:00: tonight's precharge plan for the listed batteries (slot enabled, plan's power), the
/// idle MANUAL slot for the others; a dry-run plan touches nothing. Intents valid until
/// `manual_mode_end_hour`.
pub struct SwitchToManualNight {
    commands: CommandService,
    settings: SchedulerSettings,
    planner: Option<Arc<dyn NightPlanner>>,
}

#[async_trait::async_trait]
impl JobAction for SwitchToManualNight {
    async fn run(&self, ctx: JobContext) -> anyhow::Result<Value> {
        let now = ctx.started_at;
        let until = next_local_hour(&self.settings, self.settings.manual_mode_end_hour, now);
        let plan: Option<NightPlan> = match &self.planner {
            Some(p) => match p.tonight(now).await {
                Ok(plan) => plan,
                Err(e) => {
                    // Fail safe: no plan → idle, never an unplanned charge.
                    tracing::warn!(error = format!("{e:#}"), "night_plan_unavailable");
                    None
                }
            },
            None => None,
        };
        if let Some(plan) = &plan
            && plan.dry_run
        {
            tracing::info!(reason = %plan.reason, "night_plan_dry_run");
            return Ok(json!({ "dry_run": true, "plan": plan, "batteries": [] }));
        }
        let mut outcomes = Vec::new();
        let mut planned = Vec::new();
        if let Some(plan) = &plan {
            for target in &plan.targets {
                if self.commands.fleet().get(&target.device).is_none() {
                    outcomes.push(json!({ "device": target.device, "status": "error", "error": "not in the fleet" }));
                    continue;
                }
                let slot = precharge_slot(&self.settings, target.power);
                outcomes.extend(
                    apply_mode(
                        &self.commands,
                        &ctx.job_id,
                        ModeConfig::Manual { slot },
                        until,
                        now,
                        Some(std::slice::from_ref(&target.device)),
                    )
                    .await,
                );
                planned.push(target.device.clone());
            }
        }
        let idle: Vec<_> = self
            .commands
            .fleet()
            .ids()
            .into_iter()
            .filter(|id| !planned.contains(id))
            .collect();
        let slot = idle_night_slot(&self.settings);
        outcomes.extend(
            apply_mode(
                &self.commands,
                &ctx.job_id,
                ModeConfig::Manual { slot },
                until,
                now,
                Some(&idle),
            )
            .await,
        );
        fleet_result(
            &ctx.job_id,
            outcomes,
            json!({ "mode": "Manual", "valid_until": until, "plan": plan }),
        )
    }
}

/// Every 5 minutes: polls every battery, sends each sample on the broadcast, returns the
/// per-battery outcome.
pub struct MonitorBatteries {
    commands: CommandService,
    samples: broadcast::Sender<Sample>,
}

#[async_trait::async_trait]
impl JobAction for MonitorBatteries {
    async fn run(&self, ctx: JobContext) -> anyhow::Result<Value> {
        let polls = self.commands.fleet().iter().map(|b| async move {
            let id = b.id().clone();
            (id, b.poll().await)
        });
        let mut outcomes = Vec::new();
        for (id, res) in futures::future::join_all(polls).await {
            match res {
                Ok(sample) => {
                    outcomes.push(json!({
                        "device": id, "status": "ok", "soc": sample.soc,
                        "mode": sample.mode, "bat_power": sample.bat_power,
                    }));
                    // No receiver is not an error (nothing wired in tools/tests).
                    let _ = self.samples.send(sample);
                }
                Err(e) => outcomes
                    .push(json!({ "device": id, "status": "error", "error": e.to_string() })),
            }
        }
        fleet_result(&ctx.job_id, outcomes, json!(null))
    }
}

/// Every minute: reachability of every battery from the driver's counters, `last_seen_at` into
/// the store; the result is the per-device health JSON (the lead publishes it). A battery counts
/// as failed when it is unreachable.
pub struct HealthCheck {
    commands: CommandService,
    store: Arc<dyn Store>,
}

#[async_trait::async_trait]
impl JobAction for HealthCheck {
    async fn run(&self, ctx: JobContext) -> anyhow::Result<Value> {
        let mut outcomes = Vec::new();
        for b in self.commands.fleet().iter() {
            let h = b.health();
            let mut touched = Value::Null;
            if let Some(seen) = h.last_seen {
                touched = match self.store.touch_device(b.id(), seen).await {
                    Ok(()) => json!(true),
                    // Not in `devices` yet: register it now when its identity is known.
                    Err(StoreError::NotFound) => match b.info() {
                        Some(info) => match self.store.upsert_device(&info, seen).await {
                            Ok(()) => json!(true),
                            Err(e) => json!(e.to_string()),
                        },
                        None => json!(false),
                    },
                    Err(e) => json!(e.to_string()),
                };
            }
            // The check itself succeeds whatever it finds: an unreachable battery is reported
            // (and alerted on by the alert rules), not a failure of the job. A battery that has
            // not finished its first poll yet is "pending", not unreachable. Only a failure to
            // record `last_seen_at` is an error of this job.
            let status = match (&touched, h.reachable) {
                (Value::String(_), _) => "error",
                (_, true) => "ok",
                (_, false) if h.last_seen.is_none() && h.consecutive_failures == 0 => "pending",
                (_, false) => "unreachable",
            };
            outcomes.push(json!({
                "device": b.id(),
                "status": status,
                "reachable": h.reachable,
                "last_seen": h.last_seen,
                "consecutive_failures": h.consecutive_failures,
                "requests": h.requests,
                "timeouts": h.timeouts,
                "errors": h.errors,
                "last_latency_ms": h.last_latency_ms,
                "queue_depth": h.queue_depth,
                "last_seen_saved": touched,
            }));
        }
        fleet_result(&ctx.job_id, outcomes, json!(null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_slot_is_disabled_zero_watts_on_the_bridge_slot() {
        let s = SchedulerSettings {
            night_slot: 7,
            ..Default::default()
        };
        let slot = idle_night_slot(&s);
        assert_eq!(slot.slot, 7);
        assert!(!slot.enable);
        assert_eq!(slot.power, Watts(0));
        assert_eq!(slot.start.to_string(), "22:00");
        assert_eq!(slot.end.to_string(), "06:00");
        assert_eq!(slot.days, WeekMask::ALL);
        let p = precharge_slot(&s, Watts(-1200));
        assert!(p.enable);
        assert_eq!(p.power, Watts(-1200));
    }

    #[test]
    fn intents_end_at_the_configured_local_hour() {
        let s = SchedulerSettings::default();
        let now = DateTime::parse_from_rfc3339("2026-03-29T04:00:00Z")
            .expect("literal")
            .with_timezone(&Utc);
        // 22:00 CEST on the spring day.
        assert_eq!(
            next_local_hour(&s, 22, now).map(|t| t.to_rfc3339()),
            Some("2026-03-29T20:00:00+00:00".into())
        );
    }

    #[test]
    fn fleet_fails_only_when_every_battery_failed() {
        let ok = json!({ "device": "a", "status": "ok" });
        let bad = json!({ "device": "b", "status": "error", "error": "timeout" });
        assert!(fleet_result("j", vec![ok.clone(), bad.clone()], json!(null)).is_ok());
        assert!(fleet_result("j", vec![bad.clone(), bad], json!(null)).is_err());
        assert!(fleet_result("j", vec![], json!(null)).is_ok());
    }
}
