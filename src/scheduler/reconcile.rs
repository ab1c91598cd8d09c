//! Desired state and reconciliation. At start-up the mode the schedule puts in force now is
//! derived from the last of {AUTO fire, MANUAL fire} before now (even when that run was missed),
//! unless a newer persisted intent (e.g. an MQTT command) is still valid; it is persisted and
//! re-applied where the device reports another mode (applying an intent is not drift: no
//! alert). Afterwards samples
//! (and devices coming back) are checked against the intent — `mode_drift` is raised only when a
//! battery leaves an intent it had reached — and Passive intents are kept alive
//! by renewing `cd_time` before it runs out while `valid_until` lasts; a battery charging under
//! tonight's Tempo precharge slot is switched to the idle slot once it reaches its target SOC.
//! A battery that leaves its intent on its own is re-applied with a backoff and an hourly budget
//! (`holding`), every re-apply in the audit with source `reconciler`. A battery under a
//! maintenance hold is left alone (no re-apply, no renewal) until the hold is released. The intent is read from the
//! command service's in-memory `IntentBoard` (its owner) and the store, the newer winning, so a
//! store that cannot be read never brings back a stale intent, and start-up never overwrites an
//! intent a command set meanwhile.
//! Touches the store (desired state), the fleet through `CommandService::submit`, the night
//! planner (read only) and the alert channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
use super::jobs::idle_night_slot;
use super::runner::SchedulerHandle;
use super::settings::SchedulerSettings;
use super::trigger::Trigger;
use super::{JOB_SWITCH_TO_AUTO, JOB_SWITCH_TO_MANUAL_NIGHT};
use crate::control::holding::Holding;
use crate::control::{CommandService, Intent, Origin};
use crate::domain::{
    Alert, AlertKind, AlertSender, Command, CommandSource, DesiredState, DeviceId, Mode,
    ModeConfig, NightPlanner, Sample, Severity,
};
use crate::store::Store;

/// Which mode job is in force now according to the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduledMode {
    /// The AUTO job fired last.
    Auto {
        /// Its last fire instant.
        since: DateTime<Utc>,
        /// The next MANUAL fire (end of the intent).
        until: Option<DateTime<Utc>>,
    },
    /// The MANUAL night job fired last.
    ManualNight {
        /// Its last fire instant.
        since: DateTime<Utc>,
        /// The next AUTO fire (end of the intent).
        until: Option<DateTime<Utc>>,
    },
}

impl ScheduledMode {
    /// When the mode job fired.
    pub fn since(&self) -> DateTime<Utc> {
        match self {
            ScheduledMode::Auto { since, .. } | ScheduledMode::ManualNight { since, .. } => *since,
        }
    }
}

/// The mode the schedule puts in force at `now`: the later of the last AUTO and MANUAL fires.
/// None when neither trigger has fired before (or they are intervals).
pub fn mode_in_force(
    auto: &Trigger,
    manual: &Trigger,
    now: DateTime<Utc>,
) -> Option<ScheduledMode> {
    let a = auto.last_at_or_before(now);
    let m = manual.last_at_or_before(now);
    match (a, m) {
        (Some(a), m) if m.is_none_or(|m| a >= m) => Some(ScheduledMode::Auto {
            since: a,
            until: manual.next_after(now),
        }),
        (_, Some(m)) => Some(ScheduledMode::ManualNight {
            since: m,
            until: auto.next_after(now),
        }),
        _ => None,
    }
}

/// Re-applies persisted intents.
pub struct Reconciler {
    commands: CommandService,
    store: Arc<dyn Store>,
    settings: SchedulerSettings,
    alerts: Option<AlertSender>,
    clock: Arc<dyn Clock>,
    desired: Mutex<HashMap<DeviceId, DesiredState>>,
    last_applied: Mutex<HashMap<DeviceId, DateTime<Utc>>>,
    /// The intent each battery was last seen holding (its mode reported, or a verified apply).
    reached: Mutex<HashMap<DeviceId, ModeConfig>>,
    /// Least time between two re-applications to one device.
    min_gap: Duration,
    /// Tonight's precharge targets (Tempo), to stop a battery's charge at its target.
    planner: Option<Arc<dyn NightPlanner>>,
}

/// The later set of two intents (either when the other is None; `a` on a tie).
fn newer(a: Option<DesiredState>, b: Option<DesiredState>) -> Option<DesiredState> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.set_at > a.set_at { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn valid_at(d: &DesiredState, now: DateTime<Utc>) -> bool {
    d.valid_until.is_none_or(|u| u > now)
}

impl Reconciler {
    /// Builds a reconciler.
    pub fn new(
        commands: CommandService,
        store: Arc<dyn Store>,
        settings: SchedulerSettings,
        alerts: Option<AlertSender>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            commands,
            store,
            settings,
            alerts,
            clock,
            desired: Mutex::new(HashMap::new()),
            last_applied: Mutex::new(HashMap::new()),
            reached: Mutex::new(HashMap::new()),
            min_gap: Duration::from_secs(60),
            planner: None,
        }
    }

    /// Also watches precharging batteries: once one reaches tonight's target SOC, its slot is
    /// switched to the idle night slot (otherwise it charges until the battery's own limit).
    pub fn with_planner(mut self, planner: Arc<dyn NightPlanner>) -> Self {
        self.planner = Some(planner);
        self
    }

    /// The intent in force for every battery now: a persisted intent set after the last mode
    /// fire and still valid wins; otherwise the schedule's mode (AUTO, or the idle MANUAL slot).
    /// `schedule` is None when a mode job is paused or disabled: only persisted intents apply.
    pub async fn intents_now(
        &self,
        schedule: Option<(&Trigger, &Trigger)>,
    ) -> Result<Vec<DesiredState>, crate::store::StoreError> {
        let now = self.clock.now();
        let derived = schedule.and_then(|(auto, manual)| mode_in_force(auto, manual, now));
        let stored: HashMap<DeviceId, DesiredState> = self
            .store
            .desired_states()
            .await?
            .into_iter()
            .map(|d| (d.device.clone(), d))
            .collect();
        let mut out = Vec::new();
        for id in self.commands.fleet().ids() {
            let kept = stored
                .get(&id)
                .filter(|d| valid_at(d, now) && derived.is_none_or(|m| d.set_at >= m.since()));
            if let Some(d) = kept {
                out.push(d.clone());
                continue;
            }
            let Some(mode) = derived else { continue };
            let (config, set_by, until) = match mode {
                ScheduledMode::Auto { until, .. } => (ModeConfig::Auto, JOB_SWITCH_TO_AUTO, until),
                ScheduledMode::ManualNight { until, .. } => (
                    ModeConfig::Manual {
                        slot: idle_night_slot(&self.settings),
                    },
                    JOB_SWITCH_TO_MANUAL_NIGHT,
                    until,
                ),
            };
            out.push(DesiredState {
                device: id,
                config,
                set_by: format!("reconciler:{set_by}"),
                set_at: now,
                valid_until: until,
            });
        }
        Ok(out)
    }

    /// Start-up reconciliation: persists the intents in force and re-applies them where the
    /// device reports another mode (or cannot be read). Returns one outcome per battery.
    pub async fn startup(&self, auto: &Trigger, manual: &Trigger) -> Vec<Value> {
        self.startup_with(Some((auto, manual))).await
    }

    /// Start-up reconciliation with the mode triggers in force in a scheduler; a paused or
    /// disabled mode job derives nothing (only persisted intents are re-applied).
    pub async fn startup_from(&self, scheduler: &SchedulerHandle) -> Vec<Value> {
        let jobs = scheduler.list().await;
        let active = |id: &str| jobs.iter().any(|j| j.id == id && j.enabled && !j.paused);
        let auto = scheduler.trigger_of(JOB_SWITCH_TO_AUTO).await;
        let manual = scheduler.trigger_of(JOB_SWITCH_TO_MANUAL_NIGHT).await;
        match (auto, manual) {
            (Some(a), Some(m))
                if active(JOB_SWITCH_TO_AUTO) && active(JOB_SWITCH_TO_MANUAL_NIGHT) =>
            {
                self.startup_with(Some((&a, &m))).await
            }
            _ => self.startup_with(None).await,
        }
    }

    async fn startup_with(&self, schedule: Option<(&Trigger, &Trigger)>) -> Vec<Value> {
        let intents = match self.intents_now(schedule).await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "reconcile_startup_failed");
                return vec![json!({ "status": "error", "error": e.to_string() })];
            }
        };
        let mut outcomes = Vec::new();
        for intent in intents {
            if let Ok(mut m) = self.desired.lock() {
                m.insert(intent.device.clone(), intent.clone());
            }
            let observed = match self.commands.fleet().get(&intent.device) {
                Some(b) => b.poll().await.ok().and_then(|s| s.mode),
                None => None,
            };
            // A command set a newer intent while this one was worked out: it stands.
            if let Some(newer) = self.newer_in_memory(&intent) {
                if let Ok(mut m) = self.desired.lock() {
                    m.insert(newer.device.clone(), newer.clone());
                }
                outcomes.push(
                    json!({ "device": intent.device, "status": "superseded", "by": newer.set_by }),
                );
                continue;
            }
            if self.commands.maintenance().held(&intent.device).is_some() {
                outcomes.push(json!({ "device": intent.device, "status": "maintenance_hold" }));
                continue;
            }
            if observed == Some(intent.config.mode()) {
                self.mark_reached(&intent);
                self.commands.intents().set(&intent);
                if let Err(e) = self.store.set_desired(&intent).await {
                    tracing::warn!(device = %intent.device, error = %e, "desired_state_not_saved");
                }
                outcomes.push(
                    json!({ "device": intent.device, "status": "in_sync", "mode": observed }),
                );
                continue;
            }
            outcomes.push(self.apply(&intent, observed).await);
        }
        outcomes
    }

    async fn apply(&self, intent: &DesiredState, observed: Option<Mode>) -> Value {
        let now = self.clock.now();
        // Drift is leaving an intent once reached; first applying it (start-up) is not.
        let had_reached = self.had_reached(intent);
        if let Ok(mut m) = self.last_applied.lock() {
            m.insert(intent.device.clone(), now);
        }
        let mut config = intent.config.clone();
        if let (ModeConfig::Passive { cd_time, .. }, Some(until)) =
            (&mut config, intent.valid_until)
        {
            let left = (until - now).num_seconds().max(1) as u32;
            *cd_time = (*cd_time).min(left);
        }
        let origin = Origin {
            source: CommandSource::Reconciler,
            received: json!({ "intent": intent.set_by, "observed": observed }),
            intent: Intent::Keep(intent.clone()),
        };
        let res = self
            .commands
            .submit_one(&intent.device, &Command::SetMode(config), origin)
            .await;
        if let Ok(rep) = &res
            && rep.verified
        {
            self.mark_reached(intent);
        }
        if let Some(obs) = observed.filter(|_| had_reached) {
            tracing::warn!(device = %intent.device, wanted = %intent.config.mode(), observed = %obs, "mode_drift");
            if let Some(tx) = &self.alerts {
                let message = format!(
                    "{} reported {obs}, intent is {} (set by {}); re-applied: {}",
                    intent.device,
                    intent.config.mode(),
                    intent.set_by,
                    if res.is_ok() { "ok" } else { "failed" }
                );
                let _ = tx.send(Alert::raised(
                    AlertKind::ModeDrift,
                    Severity::Warning,
                    Some(intent.device.clone()),
                    message,
                    now,
                ));
            }
        }
        match res {
            Ok(rep) => {
                json!({ "device": intent.device, "status": "applied", "mode": intent.config.mode(), "observed": observed, "verified": rep.verified })
            }
            Err(e) => json!({ "device": intent.device, "status": "error", "error": e.to_string() }),
        }
    }

    fn mark_reached(&self, intent: &DesiredState) {
        if let Ok(mut m) = self.reached.lock() {
            m.insert(intent.device.clone(), intent.config.clone());
        }
    }

    fn had_reached(&self, intent: &DesiredState) -> bool {
        self.reached
            .lock()
            .ok()
            .and_then(|m| {
                m.get(&intent.device)
                    .map(|c| c.mode() == intent.config.mode())
            })
            .unwrap_or(false)
    }

    /// The intent of a device, if still valid: the newer of the cached one and the one the
    /// command service keeps in memory (a command's intent is there before any reload).
    pub fn intent(&self, device: &DeviceId) -> Option<DesiredState> {
        let now = self.clock.now();
        let cached = self
            .desired
            .lock()
            .ok()
            .and_then(|m| m.get(device).cloned());
        newer(cached, self.commands.intents().get(device)).filter(|d| valid_at(d, now))
    }

    /// Reloads the intents from the store (after commands from other sources).
    pub async fn refresh(&self) {
        match self.store.desired_states().await {
            Ok(list) => {
                self.commands.intents().absorb(list.clone());
                if let Ok(mut m) = self.desired.lock() {
                    *m = list.into_iter().map(|d| (d.device.clone(), d)).collect();
                }
            }
            Err(e) => tracing::warn!(error = %e, "desired_state_not_loaded"),
        }
    }

    /// Checks a sample against the intent (noting what it shows on the holding record);
    /// re-applies when the device reports another mode (at most once a minute per device, with
    /// the backoff and budget of `control::holding`) and raises `mode_drift` when it had held.
    pub async fn on_sample(&self, sample: &Sample) -> Option<Value> {
        self.with_holding(&sample.device, |h| h.observe(sample));
        if let Some(stopped) = self.precharge_reached(sample).await {
            return Some(stopped);
        }
        let observed = sample.mode?;
        let cached = self.intent(&sample.device)?;
        if self.commands.maintenance().held(&sample.device).is_some() {
            // Under a maintenance hold the battery is the user's: nothing is re-applied.
            return None;
        }
        let now = self.clock.now();
        if cached.config.mode() == observed {
            self.mark_reached(&cached);
            self.with_holding(&sample.device, |h| h.held(now));
            return None;
        }
        // A command is being applied (and verified) right now: the mode seen may be the one it
        // is about to make the intent.
        if self.commands.writing(&sample.device) {
            return None;
        }
        // Suspected drift: re-read the intent first, since another source (an MQTT command)
        // may have replaced it since the cache was filled.
        let intent = self.current_intent(&sample.device).await;
        if let Ok(mut m) = self.desired.lock() {
            match &intent {
                Some(d) => m.insert(d.device.clone(), d.clone()),
                None => m.remove(&sample.device),
            };
        }
        let intent = intent.filter(|d| valid_at(d, now))?;
        if intent.config.mode() == observed {
            self.mark_reached(&intent);
            self.with_holding(&sample.device, |h| h.held(now));
            return None;
        }
        let wait = self.with_holding(&sample.device, |h| {
            h.left();
            h.wait(now)
        });
        if self.applied_recently(&sample.device, now) {
            return None;
        }
        if let Some(why) = wait {
            tracing::debug!(device = %sample.device, wait = ?why, "reapply_deferred");
            return None;
        }
        let out = self.apply(&intent, Some(observed)).await;
        let result = match out.get("status").and_then(Value::as_str) {
            Some("applied") => "applied".to_string(),
            _ => format!(
                "error: {}",
                out.get("error").and_then(Value::as_str).unwrap_or("?")
            ),
        };
        self.with_holding(&sample.device, |h| h.reapplied(now, result));
        Some(out)
    }

    /// The newer of the intent in memory (the command service's board, set as commands succeed)
    /// and the stored one (which another instance may have written); the board alone when the
    /// store cannot be read.
    async fn current_intent(&self, device: &DeviceId) -> Option<DesiredState> {
        let board = self.commands.intents().get(device);
        match self.store.desired_states().await {
            Ok(list) => newer(list.into_iter().find(|d| d.device == *device), board),
            Err(e) => {
                tracing::warn!(device = %device, error = %e, "desired_state_not_loaded");
                board
            }
        }
    }

    /// The intent a command kept in memory for `intent`'s battery when it is newer.
    fn newer_in_memory(&self, intent: &DesiredState) -> Option<DesiredState> {
        self.commands
            .intents()
            .get(&intent.device)
            .filter(|b| b.set_at > intent.set_at)
    }

    /// Runs `f` on `device`'s holding record (kept on the command service's intent board).
    fn with_holding<T>(&self, device: &DeviceId, f: impl FnOnce(&mut Holding) -> T) -> T {
        self.commands.intents().update_holding(device, f)
    }

    /// Whether something was applied to `device` less than `min_gap` before `now`.
    fn applied_recently(&self, device: &DeviceId, now: DateTime<Utc>) -> bool {
        self.last_applied
            .lock()
            .ok()
            .and_then(|m| m.get(device).copied())
            .is_some_and(|t| (now - t).to_std().unwrap_or_default() < self.min_gap)
    }

    /// A battery charging under tonight's precharge slot whose SOC reached its target gets the
    /// idle night slot until the night's end: the intent becomes that slot (set by
    /// `precharge_target_reached`), so the 06:00 AUTO job and later samples see it.
    async fn precharge_reached(&self, sample: &Sample) -> Option<Value> {
        let planner = self.planner.as_ref()?;
        let soc = sample.soc?;
        let intent = self.intent(&sample.device)?;
        let ModeConfig::Manual { slot } = &intent.config else {
            return None;
        };
        if !slot.enable || slot.power.0 >= 0 {
            return None;
        }
        let now = self.clock.now();
        let targets = match planner.targets_in_force(now).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "precharge_targets_unavailable");
                return None;
            }
        };
        let target = targets
            .iter()
            .find(|t| t.device == sample.device)?
            .target_soc;
        if soc < target {
            return None;
        }
        if self.applied_recently(&sample.device, now) {
            return None;
        }
        tracing::info!(device = %sample.device, soc = soc.0, target = target.0, "precharge_target_reached");
        let idle = DesiredState {
            device: sample.device.clone(),
            config: ModeConfig::Manual {
                slot: idle_night_slot(&self.settings),
            },
            set_by: "precharge_target_reached".into(),
            set_at: now,
            valid_until: intent.valid_until,
        };
        let out = self.apply(&idle, None).await;
        if out.get("status") == Some(&json!("applied"))
            && let Ok(mut m) = self.desired.lock()
        {
            m.insert(idle.device.clone(), idle);
        }
        Some(out)
    }

    /// A device answered again after being unreachable: read its mode and reconcile.
    pub async fn device_back(&self, device: &DeviceId) -> Option<Value> {
        let battery = self.commands.fleet().get(device)?.clone();
        let sample = battery.poll().await.ok()?;
        if let Ok(mut m) = self.last_applied.lock() {
            m.remove(device);
        }
        self.on_sample(&sample).await
    }

    /// Renews Passive intents whose countdown is two thirds gone while `valid_until` lasts.
    /// Returns how many were renewed.
    pub async fn renew_passive(&self) -> usize {
        let now = self.clock.now();
        let due: Vec<DesiredState> = {
            let desired = self.desired.lock().map(|m| m.clone()).unwrap_or_default();
            let applied = self
                .last_applied
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default();
            desired
                .into_values()
                .filter(|d| valid_at(d, now))
                .filter(|d| self.commands.maintenance().held(&d.device).is_none())
                .filter(|d| match d.config {
                    ModeConfig::Passive { cd_time, .. } => {
                        let last = applied.get(&d.device).copied().unwrap_or(d.set_at);
                        let renew_after = TimeDelta::seconds(i64::from(cd_time) * 2 / 3);
                        now >= last + renew_after
                    }
                    _ => false,
                })
                .collect()
        };
        let mut n = 0;
        for d in due {
            tracing::info!(device = %d.device, "passive_renewed");
            if self.apply(&d, None).await.get("status") == Some(&json!("applied")) {
                n += 1;
            }
        }
        n
    }

    /// Runs the reconciler: checks every sample from the broadcast and renews Passive intents
    /// every `tick`, until cancelled.
    pub fn spawn(
        self: Arc<Self>,
        mut samples: broadcast::Receiver<Sample>,
        tick: Duration,
        cancel: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(tick);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut open = true;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = ticker.tick() => {
                        self.refresh().await;
                        self.renew_passive().await;
                    }
                    s = samples.recv(), if open => match s {
                        Ok(sample) => { self.on_sample(&sample).await; }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(skipped = n, "reconcile_samples_lagged");
                        }
                        Err(broadcast::error::RecvError::Closed) => open = false,
                    },
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Paris;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("literal")
            .with_timezone(&Utc)
    }

    #[test]
    fn started_at_nine_means_auto_since_six() {
        let auto = Trigger::parse("cron:0 6 * * *", Paris).expect("valid");
        let manual = Trigger::parse("cron:0 22 * * *", Paris).expect("valid");
        // 09:00 CET on 2026-11-30.
        let m = mode_in_force(&auto, &manual, utc("2026-11-30T08:00:00Z")).expect("some");
        assert_eq!(
            m,
            ScheduledMode::Auto {
                since: utc("2026-11-30T05:00:00Z"),
                until: Some(utc("2026-11-30T21:00:00Z"))
            }
        );
        // 23:30 → manual since 22:00, until 06:00 next day.
        let m = mode_in_force(&auto, &manual, utc("2026-11-30T22:30:00Z")).expect("some");
        assert_eq!(
            m,
            ScheduledMode::ManualNight {
                since: utc("2026-11-30T21:00:00Z"),
                until: Some(utc("2026-12-01T05:00:00Z"))
            }
        );
        // 03:00 the next morning → still manual.
        let m = mode_in_force(&auto, &manual, utc("2026-12-01T02:00:00Z")).expect("some");
        assert!(matches!(m, ScheduledMode::ManualNight { .. }));
        // Exactly 06:00 → auto.
        let m = mode_in_force(&auto, &manual, utc("2026-12-01T05:00:00Z")).expect("some");
        assert!(matches!(m, ScheduledMode::Auto { .. }));
    }
}
