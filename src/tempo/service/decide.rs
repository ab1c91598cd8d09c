//! The 11:30 decision about tomorrow: fetch through the source chain (a definite colour is
//! cached, a failure falls back to the cache), wait for each retry time of the plan, apply the
//! fail-safe at the deadline (`tempo_unknown` alert), raise `tariff_outdated`, and persist the
//! decision document. Touches the colour sources, the store (colour cache, decision document)
//! and the alert channel.

use chrono::{DateTime, NaiveDate, Utc};
use tokio_util::sync::CancellationToken;

use super::super::settings::FailSafe;
use super::super::source::{ChainAnswer, TempoResult};
use super::super::{TempoColour, TempoError, paris_hhmm, skip_reason, tempo_date_at};
use super::{DECISION_DOC, DecisionStatus, TempoDecision, TempoService};
use crate::domain::{Alert, AlertKind, Severity};
use crate::store::TempoDayRecord;

impl TempoService {
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
            self.ask_until_known(date, eve, cancel).await?
        };
        let mut decision = decision;
        if decision.precharge {
            let now = self.clock.now();
            decision.plan = Some(
                self.plan_for(date, now, &decision.reason, dry_run || self.dry_run.get())
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

    /// Asks the chain until tomorrow's colour is known: with `cancel` given, waits for each
    /// retry time of the plan; without, answers Pending before the deadline; at the deadline
    /// the fail-safe.
    async fn ask_until_known(
        &self,
        date: NaiveDate,
        eve: NaiveDate,
        cancel: Option<&CancellationToken>,
    ) -> Result<TempoDecision, TempoError> {
        let decision = loop {
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
                        at.with_timezone(&super::super::TEMPO_TZ).format("%H:%M"),
                        answer.summary()
                    );
                    break self.decision(date, None, None, DecisionStatus::Pending, reason);
                }
                (None, _) => break self.fail_safe(date, &answer, now),
            }
        };
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
            let _ = tx.send(Alert::raised(
                AlertKind::TempoUnknown,
                Severity::Warning,
                None,
                reason.clone(),
                now,
            ));
        }
        let mut d = self.decision(date, None, None, DecisionStatus::FailSafe, reason);
        d.precharge = precharge;
        d
    }

    /// Asks the chain; a definite colour is cached, a failure falls back to the cached colour.
    /// Returns the answer and whether it came from the cache.
    pub(super) async fn fetch(&self, date: NaiveDate) -> (ChainAnswer, bool) {
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

    pub(super) async fn stored_decision(&self) -> Option<TempoDecision> {
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
}
