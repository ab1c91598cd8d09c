//! The bridge's dry-run switch, shared by everything that acts on its own: while it is on, the
//! scheduler's mode jobs and the Tempo planner compute and publish what they would do, and the
//! command service sends nothing from the bridge's own loops (scheduler, reconciler, regulator)
//! to a battery. Commands a person sends (MQTT, HTTP, CLI) and the SOC envelope's own stops still
//! go through. The switch starts from the stored `bridge_dry_run` document when there is one
//! (a toggle survives a restart), else from the configured `tempo.dry_run`; [`DryRun::set`]
//! writes that document before the switch changes. Touches the `Store` (one document) only.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::domain::CommandSource;
use crate::store::{Store, StoreError};

/// Store document holding the toggled dry-run state.
pub const DRY_RUN_DOC: &str = "bridge_dry_run";

/// The dry-run state as stored, published (`<base>/bridge/dry_run`) and answered by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunState {
    /// True while the bridge's own loops touch no battery.
    pub dry_run: bool,
    /// Where the value comes from: `config` (never toggled) or `stored` (a toggle).
    pub origin: String,
    /// Who toggled it last (`http`, `mqtt`), when it was toggled.
    pub changed_by: Option<String>,
    /// When it was toggled last (UTC).
    pub changed_at: Option<DateTime<Utc>>,
}

impl DryRunState {
    fn configured(on: bool) -> Self {
        Self {
            dry_run: on,
            origin: "config".into(),
            changed_by: None,
            changed_at: None,
        }
    }
}

/// The shared switch (cheap to clone; every clone sees every change).
#[derive(Clone)]
pub struct DryRun {
    tx: Arc<watch::Sender<DryRunState>>,
}

impl std::fmt::Debug for DryRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DryRun").field(&self.get()).finish()
    }
}

impl Default for DryRun {
    fn default() -> Self {
        Self::fixed(false)
    }
}

impl DryRun {
    /// A switch at `on`, from the configuration (nothing stored).
    pub fn fixed(on: bool) -> Self {
        Self {
            tx: Arc::new(watch::channel(DryRunState::configured(on)).0),
        }
    }

    /// The switch as stored in `store`, else `configured`; an unreadable document is logged and
    /// the configured value used.
    pub async fn load(store: &dyn Store, configured: bool) -> Self {
        let state = match store.document(DRY_RUN_DOC).await {
            Ok(Some(doc)) => match serde_json::from_value::<DryRunState>(doc) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "dry_run_document_unreadable");
                    DryRunState::configured(configured)
                }
            },
            Ok(None) => DryRunState::configured(configured),
            Err(e) => {
                tracing::warn!(error = %e, "dry_run_document_unavailable");
                DryRunState::configured(configured)
            }
        };
        tracing::info!(dry_run = state.dry_run, origin = %state.origin, "dry_run_loaded");
        Self {
            tx: Arc::new(watch::channel(state).0),
        }
    }

    /// Whether dry run is on now.
    pub fn get(&self) -> bool {
        self.tx.borrow().dry_run
    }

    /// The whole state now.
    pub fn state(&self) -> DryRunState {
        self.tx.borrow().clone()
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> watch::Receiver<DryRunState> {
        self.tx.subscribe()
    }

    /// Whether a command from `source` is held back now (the bridge's own loops while on).
    pub fn holds_back(&self, source: CommandSource) -> bool {
        self.get()
            && matches!(
                source,
                CommandSource::Scheduler | CommandSource::Reconciler | CommandSource::Regulator
            )
    }

    /// Turns dry run `on` or off for `by` (`http`, `mqtt`): stores the document first, then
    /// switches; a store failure changes nothing. Returns the new state.
    pub async fn set(
        &self,
        store: &dyn Store,
        on: bool,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<DryRunState, StoreError> {
        let state = DryRunState {
            dry_run: on,
            origin: "stored".into(),
            changed_by: Some(by.to_string()),
            changed_at: Some(now),
        };
        let doc = serde_json::to_value(&state).unwrap_or_default();
        store.put_document(DRY_RUN_DOC, &doc).await?;
        self.tx.send_replace(state.clone());
        tracing::info!(dry_run = on, by, "dry_run_changed");
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bridges_own_loops_are_held_back_and_only_while_on() {
        let d = DryRun::fixed(false);
        assert!(!d.holds_back(CommandSource::Scheduler));
        let d = DryRun::fixed(true);
        for s in [
            CommandSource::Scheduler,
            CommandSource::Reconciler,
            CommandSource::Regulator,
        ] {
            assert!(d.holds_back(s), "{s:?}");
        }
        for s in [
            CommandSource::Mqtt,
            CommandSource::Http,
            CommandSource::Cli,
            CommandSource::Safety,
        ] {
            assert!(!d.holds_back(s), "{s:?}");
        }
        assert_eq!(d.state().origin, "config");
    }
}
