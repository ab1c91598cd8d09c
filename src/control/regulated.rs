//! The batteries in `regulate` mode: one set every adapter shares (MQTT and HTTP add and
//! remove, the regulator reads it, the command service removes a battery that another source
//! gives a mode command). Persisted as one store document ([`MEMBERS_KEY`]) so that regulation
//! survives a restart: [`Regulated::restore`] at start-up, then [`Regulated::run_writer`] saves
//! changes off the command path. Touches the store only through those two.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Bookkeeping, CommandError, CommandService, Origin};
use crate::domain::{CommandSource, DeviceId, Rejection};
use crate::store::{CommandRecord, Store};

/// Store document key of the members: `{"members": ["<dev>", …]}`.
pub const MEMBERS_KEY: &str = "regulator/members";

/// Longest wait for the store when restoring or saving.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before a failed save is tried again.
const RETRY: Duration = Duration::from_secs(10);

/// The set of batteries the regulator drives; cheap to clone (shared).
#[derive(Clone)]
pub struct Regulated {
    enabled: bool,
    members: Arc<watch::Sender<BTreeSet<DeviceId>>>,
}

impl Default for Regulated {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Regulated {
    /// An empty set; `enabled` = the regulator runs (`[regulator] enabled`).
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            members: Arc::new(watch::channel(BTreeSet::new()).0),
        }
    }

    /// Whether the regulator runs (a battery can only join when it does).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Adds `dev`; true when it was not a member.
    pub fn join(&self, dev: &DeviceId) -> bool {
        let added = self.members.send_if_modified(|m| m.insert(dev.clone()));
        if added {
            tracing::info!(device = %dev, "regulate_joined");
        }
        added
    }

    /// Removes `dev`; true when it was a member.
    pub fn leave(&self, dev: &DeviceId) -> bool {
        let removed = self.members.send_if_modified(|m| m.remove(dev));
        if removed {
            tracing::info!(device = %dev, "regulate_left");
        }
        removed
    }

    /// Whether `dev` is a member.
    pub fn contains(&self, dev: &DeviceId) -> bool {
        self.members.borrow().contains(dev)
    }

    /// The members now.
    pub fn members(&self) -> BTreeSet<DeviceId> {
        self.members.borrow().clone()
    }

    /// The members, watched.
    pub fn subscribe(&self) -> watch::Receiver<BTreeSet<DeviceId>> {
        self.members.subscribe()
    }

    /// Loads the members saved by the last run, keeping only the configured batteries in
    /// `known` (a failure or an unreadable document keeps the set empty and is logged).
    pub async fn restore(&self, store: &dyn Store, known: &[DeviceId]) {
        let doc = match tokio::time::timeout(STORE_TIMEOUT, store.document(MEMBERS_KEY)).await {
            Ok(Ok(doc)) => doc,
            Ok(Err(e)) => return tracing::warn!(error = %e, "regulate_members_not_restored"),
            Err(_) => return tracing::warn!("regulate_members_not_restored: store timeout"),
        };
        let Some(doc) = doc else { return };
        let Some(list) = doc.get("members").and_then(Value::as_array) else {
            return tracing::warn!(doc = %doc, "regulate_members_document_unreadable");
        };
        let restored: BTreeSet<DeviceId> = list
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|s| DeviceId::parse(s).ok())
            .filter(|d| known.contains(d))
            .collect();
        if !restored.is_empty() {
            tracing::info!(members = ?restored, "regulate_members_restored");
        }
        self.members.send_replace(restored);
    }

    /// Saves the members to `store` whenever they change, until `cancel` (then once more). A
    /// failed save is retried after a pause and logged once per outage.
    pub async fn run_writer(self, store: Arc<dyn Store>, cancel: CancellationToken) {
        let mut rx = self.members.subscribe();
        rx.mark_unchanged();
        let mut pending = false;
        let mut failing = false;
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                r = rx.changed() => if r.is_err() { break } else { pending = true },
                () = tokio::time::sleep(RETRY), if pending => {}
            }
            if pending {
                pending = !self.save(store.as_ref(), &mut failing).await;
            }
        }
        if pending || rx.has_changed().unwrap_or(false) {
            self.save(store.as_ref(), &mut failing).await;
        }
    }

    async fn save(&self, store: &dyn Store, failing: &mut bool) -> bool {
        let doc = json!({ "members": self.members() });
        let r = tokio::time::timeout(STORE_TIMEOUT, store.put_document(MEMBERS_KEY, &doc))
            .await
            .map_err(|_| "the store did not answer in time".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match r {
            Ok(()) => {
                *failing = false;
                true
            }
            Err(e) => {
                if !*failing {
                    tracing::warn!(error = %e, "regulate_members_not_saved");
                }
                *failing = true;
                false
            }
        }
    }
}

/// Whether a mode command from `source` takes its battery out of `regulate` mode: a person's
/// or a job's choice does; the bridge's own loops (regulator, reconciler, SOC guard) do not.
pub fn leaves_regulation(source: CommandSource) -> bool {
    source.is_user() || source == CommandSource::Scheduler
}

impl CommandService {
    /// The batteries in `regulate` mode.
    pub fn regulated(&self) -> &Regulated {
        &self.regulated
    }

    /// Shares this set of regulated batteries (the one the regulator reads).
    pub fn with_regulated(mut self, regulated: Regulated) -> Self {
        self.regulated = regulated;
        self
    }

    /// Puts `device` in `regulate` mode: the regulator drives it from its next cycle. Refused
    /// (nothing changes) for an unknown device, a read-only bridge or a disabled regulator.
    /// The returned [`Bookkeeping`] holds the audit row (command `regulate`).
    pub fn regulate(
        &self,
        device: &DeviceId,
        origin: &Origin,
    ) -> (Result<Value, CommandError>, Bookkeeping) {
        let result = self.battery(device).map(|_| ()).and_then(|()| {
            if self.read_only {
                Err(CommandError::Rejected(Rejection::ReadOnly))
            } else if !self.regulated.enabled() {
                Err(CommandError::Rejected(Rejection::OutOfRange {
                    field: "mode",
                    reason:
                        "regulate needs the regulator: set [regulator] enabled = true and its meter"
                            .into(),
                }))
            } else {
                let joined = self.regulated.join(device);
                Ok(json!({ "mode": "regulate", "joined": joined }))
            }
        });
        let source = origin.source.as_str();
        match &result {
            Ok(_) => tracing::info!(device = %device, source, "regulate_selected"),
            Err(e) => tracing::info!(device = %device, source, error = %e, "regulate_refused"),
        }
        let records = match &result {
            Err(CommandError::UnknownDevice(_)) => Vec::new(),
            _ => vec![CommandRecord {
                at: chrono::Utc::now(),
                source: source.to_string(),
                device: device.to_string(),
                payload: json!({ "received": origin.received, "command": "regulate" }),
                status: if result.is_ok() { "ok" } else { "error" }.to_string(),
                error: result.as_ref().err().map(|e| e.to_string()),
                latency_ms: Some(0.0),
            }],
        };
        (
            result,
            Bookkeeping::records_only(self.store.clone(), records),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joining_and_leaving_change_the_watched_set_once() {
        let r = Regulated::new(true);
        let d = DeviceId::parse("d1").unwrap();
        let mut rx = r.subscribe();
        assert!(r.join(&d));
        assert!(!r.join(&d), "already a member");
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        assert!(r.contains(&d));
        assert!(r.leave(&d));
        assert!(!r.leave(&d));
        assert!(rx.borrow_and_update().is_empty());
    }
}
