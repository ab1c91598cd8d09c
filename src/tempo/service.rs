//! The Tempo service: the 11:30 `job_check_tempo_tomorrow` action (fetch, retry plan, fail-safe,
//! decision persisted as the `tempo_decision` document), the precharge `NightPlanner` consulted
//! by the 22:00 and 06:00 jobs, the `tempo/get` and `tempo/refresh` bridge actions, and the JSON
//! state for the retained `<base>/bridge/tempo` topic (a `watch` channel the MQTT side publishes).
//! Touches the colour sources (HTTP), the `Store` (colour cache and documents), the fleet (reads
//! SOC only; never sends a command) and the alert channel.
//!
//! Retry design: one run of the job waits inside itself until the next retry time of the plan
//! (an injected [`Clock`] sleeps, `ctx.cancel` interrupts), because the scheduler runs a job at
//! most once at a time and the day's decision then lives in one place with one log story. If the
//! bridge restarts during the wait, no decision is stored for tomorrow; the 22:00 `tonight()` call
//! notices and decides at once (one fetch, then the fail-safe), so a restart never loses a night.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::planner::{BatteryNeed, PrechargeOutcome, precharge};
use super::settings::{FailSafe, TempoSettings};
use super::source::{ChainAnswer, SourceChain, TempoResult};
use super::{
    LedgerBook, LivePlanner, Outlook, TempoColour, TempoError, off_peak_hours_left, paris_hhmm,
    skip_reason, tempo_date_at,
};
use crate::control::Fleet;
use crate::domain::{
    Alert, AlertKind, AlertSender, AlertState, JobAction, JobContext, NightPlan, NightPlanner,
    Percent, PrechargeTarget, Severity,
};
use crate::store::{Store, TempoDayRecord};

/// Store document holding the latest decision.
pub const DECISION_DOC: &str = "tempo_decision";
/// Store document holding the plan handed to the 22:00 job (read back at 06:00).
pub const NIGHT_PLAN_DOC: &str = "precharge_plan";

pub use crate::domain::clock::{Clock, ManualClock, SystemClock};

/// How a decision was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionStatus {
    /// A source gave tomorrow's colour.
    Known,
    /// No source answered, the colour cached earlier was used.
    Cached,
    /// Still unknown at the deadline: the configured fail-safe applied.
    FailSafe,
    /// Still unknown, the deadline is not reached yet (`tempo/refresh` before the deadline).
    Pending,
    /// No precharge colour can fall on that date: nobody was asked.
    Skipped,
    /// Tempo is disabled in the configuration.
    Disabled,
}

/// The decision about one Tempo day, persisted as the `tempo_decision` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TempoDecision {
    /// The Tempo day decided about (from 06:00 that day); the precharge night is the one before.
    pub date: NaiveDate,
    /// Its colour, when known.
    pub colour: Option<TempoColour>,
    /// Where the colour came from.
    pub source: Option<String>,
    /// How the decision was reached.
    pub status: DecisionStatus,
    /// Whether the night before `date` precharges.
    pub precharge: bool,
    /// Why, in words.
    pub reason: String,
    /// When the decision was taken (UTC).
    pub decided_at: DateTime<Utc>,
    /// The plan computed at decision time (powers refreshed again at 22:00).
    pub plan: Option<NightPlan>,
}

/// The plan handed to the night job, kept for the 06:00 check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct NightRecord {
    date: NaiveDate,
    computed_at: DateTime<Utc>,
    plan: NightPlan,
}

/// Tempo colours, the 11:30 decision and the precharge planner.
pub struct TempoService {
    settings: TempoSettings,
    chain: SourceChain,
    store: Arc<dyn Store>,
    fleet: Fleet,
    alerts: Option<AlertSender>,
    clock: Arc<dyn Clock>,
    state: watch::Sender<Value>,
    live: Arc<LivePlanner>,
    book: Arc<LedgerBook>,
}

impl TempoService {
    /// Builds the service with the sources named in `settings` and the system clock.
    pub fn new(
        settings: TempoSettings,
        store: Arc<dyn Store>,
        fleet: Fleet,
        alerts: Option<AlertSender>,
    ) -> Result<Self, TempoError> {
        let chain = SourceChain::from_settings(&settings)?;
        let outlook = Outlook::from_settings(&settings, store.clone())?;
        let mut s = Self::with_parts(settings, chain, store, fleet, alerts, Arc::new(SystemClock));
        s.live = Arc::new(LivePlanner::new(
            s.settings.clone(),
            s.store.clone(),
            s.fleet.clone(),
            outlook,
        ));
        Ok(s)
    }

    /// Builds the service from explicit parts (custom source chain, injected clock).
    pub fn with_parts(
        settings: TempoSettings,
        chain: SourceChain,
        store: Arc<dyn Store>,
        fleet: Fleet,
        alerts: Option<AlertSender>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        // Without sources here: the cached stats and forecast are read from the store.
        let live = Arc::new(LivePlanner::new(
            settings.clone(),
            store.clone(),
            fleet.clone(),
            Outlook::new(None, None, store.clone()),
        ));
        let book = Arc::new(LedgerBook::new(
            settings.clone(),
            store.clone(),
            fleet.clone(),
        ));
        Self {
            settings,
            chain,
            store,
            fleet,
            alerts,
            clock,
            live,
            book,
            // Same shape as the published state, so templates work before the first `get()`.
            state: watch::Sender::new(json!({
                "today": { "date": Value::Null, "colour": Value::Null },
                "tomorrow": { "date": Value::Null, "colour": Value::Null },
                "source": Value::Null,
                "fetched_at": Value::Null,
                "decision": Value::Null,
                "precharge": false,
                "reason": "starting",
                "dry_run": false,
            })),
        }
    }

    /// The JSON for the retained `<base>/bridge/tempo` topic, updated after every change; call
    /// [`TempoService::get`] once at startup to fill it from the store.
    pub fn subscribe(&self) -> watch::Receiver<Value> {
        self.state.subscribe()
    }

    /// The planner of the running bridge (plan topic, `plan/get`).
    pub fn live(&self) -> &Arc<LivePlanner> {
        &self.live
    }

    /// The € ledger book (`<base>/bridge/ledger`, `ledger/get`).
    pub fn book(&self) -> &Arc<LedgerBook> {
        &self.book
    }

    /// The settings in use.
    pub fn settings(&self) -> &TempoSettings {
        &self.settings
    }

    /// `tempo/get`: the current state from the cache and the stored decision (no network).
    pub async fn get(&self) -> Value {
        let now = self.clock.now();
        let decision = self.stored_decision().await;
        self.publish(now, decision.as_ref(), false).await
    }

    /// `tempo/refresh`: fetch today and tomorrow now, decide about tomorrow without waiting for
    /// the retry plan, refresh the stats and forecast and the plan; with `dry_run` the decision
    /// is published but not persisted.
    pub async fn refresh(&self, dry_run: bool) -> Result<Value, TempoError> {
        let now = self.clock.now();
        let today = tempo_date_at(now);
        let _ = self.fetch(today).await;
        let decision = self.decide(None, dry_run).await?;
        let state = self.publish(now, Some(&decision), dry_run).await;
        self.live.refresh_outlook(now).await;
        self.live.compute(now, dry_run).await;
        Ok(state)
    }

    /// Bridge actions `tempo/get` (payload ignored) and `tempo/refresh` (`{"dry_run": bool}`,
    /// optional); any other payload shape or action is refused with a reason and changes nothing.
    pub async fn request(&self, action: &str, payload: &Value) -> Result<Value, String> {
        match action {
            "tempo/get" => Ok(self.get().await),
            "ledger/get" => Ok(self.book.refresh(self.clock.now()).await),
            "plan/get" => {
                let dry_run = match payload.get("dry_run") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(other) => {
                        return Err(format!("dry_run must be true or false, got {other}"));
                    }
                };
                Ok(self.live.compute(self.clock.now(), dry_run).await.0)
            }
            "tempo/refresh" => {
                let dry_run = match payload {
                    Value::Null => false,
                    Value::Object(map) => {
                        if let Some(k) = map
                            .keys()
                            .find(|k| !matches!(k.as_str(), "dry_run" | "transaction"))
                        {
                            return Err(format!(
                                "unknown field '{k}' (allowed: dry_run, transaction)"
                            ));
                        }
                        match map.get("dry_run") {
                            None | Some(Value::Null) => false,
                            Some(Value::Bool(b)) => *b,
                            Some(other) => {
                                return Err(format!("dry_run must be true or false, got {other}"));
                            }
                        }
                    }
                    other => return Err(format!("payload must be a JSON object, got {other}")),
                };
                self.refresh(dry_run).await.map_err(|e| e.to_string())
            }
            other => Err(format!(
                "unknown action '{other}' (allowed: tempo/get, tempo/refresh, plan/get, ledger/get)"
            )),
        }
    }

    /// Decides about tomorrow: fetch, and with `cancel` given, wait for each retry time of the
    /// plan while the colour is unknown; at the deadline apply the fail-safe and raise
    /// `tempo_unknown`. Persists the decision unless `dry_run`.
    pub async fn decide(
        &self,
        cancel: Option<&CancellationToken>,
        dry_run: bool,
    ) -> Result<TempoDecision, TempoError> {
        let start = self.clock.now();
        self.check_tariff(start);
        let date = tempo_date_at(start)
            .succ_opt()
            .ok_or_else(|| TempoError::Config("date out of range".into()))?;
        let eve = tempo_date_at(start);
        let decision = if !self.settings.enabled {
            self.decision(
                date,
                None,
                None,
                DecisionStatus::Disabled,
                "tempo is disabled".into(),
            )
        } else if let Some(why) = skip_reason(date, &self.settings.precharge_colours) {
            tracing::info!(%date, reason = %why, "tempo_check_skipped");
            self.decision(date, None, None, DecisionStatus::Skipped, why)
        } else {
            loop {
                let now = self.clock.now();
                let (answer, cached) = self.fetch(date).await;
                if let TempoResult::Colour(c) = answer.result {
                    let status = if cached {
                        DecisionStatus::Cached
                    } else {
                        DecisionStatus::Known
                    };
                    let src = answer.source.clone().unwrap_or_default();
                    let reason = format!(
                        "tomorrow {date} is {c} ({src}{})",
                        if cached { ", cached" } else { "" }
                    );
                    break self.decision(date, Some(c), answer.source, status, reason);
                }
                let next = self
                    .settings
                    .retry_plan
                    .iter()
                    .map(|h| paris_hhmm(eve, *h))
                    .find(|t| *t > now);
                match (next, cancel) {
                    (Some(at), Some(cancel)) => {
                        tracing::info!(%date, next = %at, why = %answer.summary(), "tempo_retry_scheduled");
                        tokio::select! {
                            _ = self.clock.sleep_until(at) => {}
                            _ = cancel.cancelled() => {
                                tracing::info!(%date, "tempo_check_cancelled");
                                return Err(TempoError::Cancelled);
                            }
                        }
                    }
                    (Some(at), None) => {
                        let reason = format!(
                            "tomorrow {date} is not known yet, next check at {} ({})",
                            at.with_timezone(&super::TEMPO_TZ).format("%H:%M"),
                            answer.summary()
                        );
                        break self.decision(date, None, None, DecisionStatus::Pending, reason);
                    }
                    (None, _) => break self.fail_safe(date, &answer, now),
                }
            }
        };
        let mut decision = decision;
        if decision.precharge {
            let now = self.clock.now();
            decision.plan = Some(
                self.plan_for(
                    date,
                    now,
                    &decision.reason,
                    dry_run || self.settings.dry_run,
                )
                .await,
            );
        }
        tracing::info!(
            date = %decision.date,
            precharge = decision.precharge,
            status = ?decision.status,
            reason = %decision.reason,
            "tempo_decision"
        );
        if !dry_run {
            let doc =
                serde_json::to_value(&decision).map_err(|e| TempoError::Store(e.to_string()))?;
            self.store
                .put_document(DECISION_DOC, &doc)
                .await
                .map_err(|e| TempoError::Store(e.to_string()))?;
        }
        Ok(decision)
    }

    fn decision(
        &self,
        date: NaiveDate,
        colour: Option<TempoColour>,
        source: Option<String>,
        status: DecisionStatus,
        reason: String,
    ) -> TempoDecision {
        let precharge = matches!(status, DecisionStatus::Known | DecisionStatus::Cached)
            && colour.is_some_and(|c| self.settings.precharge_colours.contains(&c));
        TempoDecision {
            date,
            colour,
            source,
            status,
            precharge,
            reason,
            decided_at: self.clock.now(),
            plan: None,
        }
    }

    /// Raises the `tariff_outdated` info alert (once per daily check) while the built-in
    /// prices are in use past a known price-change date.
    fn check_tariff(&self, now: DateTime<Utc>) {
        if let Some(alert) = self.settings.tariff.outdated_alert(now) {
            tracing::info!(message = %alert.message, "tariff_outdated");
            if let Some(tx) = &self.alerts {
                let _ = tx.send(alert);
            }
        }
    }

    fn fail_safe(
        &self,
        date: NaiveDate,
        answer: &ChainAnswer,
        now: DateTime<Utc>,
    ) -> TempoDecision {
        let precharge = self.settings.fail_safe == FailSafe::AssumeRed;
        let reason = format!(
            "tomorrow {date} still unknown at the deadline ({}); fail-safe: {}",
            answer.summary(),
            if precharge {
                "assume red, precharge"
            } else {
                "assume not red, no precharge"
            }
        );
        tracing::warn!(%date, reason = %reason, "tempo_fail_safe_applied");
        if let Some(tx) = &self.alerts {
            let _ = tx.send(Alert {
                kind: AlertKind::TempoUnknown,
                severity: Severity::Warning,
                device: None,
                message: reason.clone(),
                value: None,
                threshold: None,
                state: AlertState::Raised,
                at: now,
            });
        }
        let mut d = self.decision(date, None, None, DecisionStatus::FailSafe, reason);
        d.precharge = precharge;
        d
    }

    /// Asks the chain; a definite colour is cached, a failure falls back to the cached colour.
    /// Returns the answer and whether it came from the cache.
    async fn fetch(&self, date: NaiveDate) -> (ChainAnswer, bool) {
        let answer = self.chain.colour(date).await;
        if let (TempoResult::Colour(c), Some(src)) = (&answer.result, &answer.source) {
            let rec = TempoDayRecord {
                date,
                colour: c.as_str().to_string(),
                source: src.clone(),
                fetched_at: self.clock.now(),
            };
            if let Err(e) = self.store.upsert_tempo_day(&rec).await {
                tracing::warn!(%date, error = %e, "tempo_cache_not_saved");
            }
            return (answer, false);
        }
        match self.store.tempo_day(date).await {
            Ok(Some(rec)) => match TempoColour::parse(&rec.colour) {
                Ok(c) => {
                    tracing::info!(%date, colour = %c, source = %rec.source, "tempo_colour_from_cache");
                    let mut a = answer;
                    a.result = TempoResult::Colour(c);
                    a.source = Some(rec.source);
                    (a, true)
                }
                Err(e) => {
                    tracing::warn!(%date, error = %e, "tempo_cache_unreadable");
                    (answer, false)
                }
            },
            Ok(None) => (answer, false),
            Err(e) => {
                tracing::warn!(%date, error = %e, "tempo_cache_unavailable");
                (answer, false)
            }
        }
    }

    async fn stored_decision(&self) -> Option<TempoDecision> {
        match self.store.document(DECISION_DOC).await {
            Ok(Some(v)) => match serde_json::from_value(v) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!(error = %e, "tempo_decision_unreadable");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "tempo_decision_unavailable");
                None
            }
        }
    }

    /// Per-battery precharge for the night before `day`, from each battery's SOC now.
    async fn plan_for(
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

    /// Rebuilds the published state and sends it on the watch channel.
    async fn publish(
        &self,
        now: DateTime<Utc>,
        decision: Option<&TempoDecision>,
        dry_run: bool,
    ) -> Value {
        let today = tempo_date_at(now);
        let tomorrow = today.succ_opt().unwrap_or(today);
        let day = |d: NaiveDate, rec: Option<TempoDayRecord>| match rec {
            Some(r) => {
                json!({ "date": d, "colour": r.colour, "source": r.source, "fetched_at": r.fetched_at })
            }
            None => json!({ "date": d, "colour": Value::Null }),
        };
        let today_rec = self.store.tempo_day(today).await.ok().flatten();
        let tomorrow_rec = self.store.tempo_day(tomorrow).await.ok().flatten();
        let (source, fetched_at) = match tomorrow_rec.as_ref().or(today_rec.as_ref()) {
            Some(r) => (json!(r.source), json!(r.fetched_at)),
            None => (Value::Null, Value::Null),
        };
        let v = json!({
            "today": day(today, today_rec),
            "tomorrow": day(tomorrow, tomorrow_rec),
            "source": source,
            "fetched_at": fetched_at,
            "decision": decision,
            "precharge": decision.is_some_and(|d| d.precharge && d.date == tomorrow),
            "reason": decision.map(|d| d.reason.clone()),
            "dry_run": dry_run || self.settings.dry_run,
            "updated_at": now,
        });
        self.state.send_replace(v.clone());
        v
    }
}

#[async_trait::async_trait]
impl JobAction for TempoService {
    async fn run(&self, ctx: JobContext) -> anyhow::Result<Value> {
        let decision = self.decide(Some(&ctx.cancel), false).await?;
        let now = self.clock.now();
        self.publish(now, Some(&decision), false).await;
        self.live.refresh_outlook(now).await;
        self.live.compute(now, false).await;
        self.book.refresh(now).await;
        Ok(serde_json::to_value(&decision)?)
    }
}

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
                self.plan_for(day, now, &decision.reason, self.settings.dry_run)
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
            alerts.push(Alert {
                kind: AlertKind::PrechargeShort,
                severity: Severity::Warning,
                device: Some(t.device.clone()),
                message,
                value: soc,
                threshold: Some(f64::from(floor)),
                state: AlertState::Raised,
                at: now,
            });
        }
        Ok(alerts)
    }
}
