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

use super::settings::TempoSettings;
use super::source::SourceChain;
use super::{LedgerBook, LivePlanner, Outlook, TempoColour, TempoError, tempo_date_at};
use crate::control::{DryRun, Fleet};
use crate::domain::{AlertSender, JobAction, JobContext, NightPlan};
use crate::store::{Store, TempoDayRecord};

mod decide;
mod night;

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
    dry_run: DryRun,
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
            dry_run: DryRun::fixed(settings.dry_run),
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

    /// Reads dry run from the bridge's switch (toggled at run time) instead of `settings.dry_run`;
    /// call it right after building the service, before it is shared.
    pub fn with_dry_run(mut self, dry_run: DryRun) -> Self {
        match Arc::get_mut(&mut self.live) {
            Some(live) => live.set_dry_run(dry_run.clone()),
            None => tracing::warn!("tempo_dry_run_not_shared_with_the_planner"),
        }
        self.dry_run = dry_run;
        self
    }

    /// Whether dry run is on now.
    pub fn dry_run(&self) -> bool {
        self.dry_run.get()
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
            "dry_run": dry_run || self.dry_run.get(),
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
        self.live.relearn(now).await;
        self.live.compute(now, false).await;
        self.book.refresh(now).await;
        Ok(serde_json::to_value(&decision)?)
    }
}
