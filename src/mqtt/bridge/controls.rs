//! Remembered control values of each battery (passive power and duration, DOD, LED, BLE): the
//! in-memory book, its restore from the store at start-up and the writer task that persists
//! changes off the dispatcher's path. Touches the store (documents under [`CONTROLS_PREFIX`])
//! and the retained `<dev>/controls` documents (through the outbox).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Shared;
use crate::domain::DeviceId;
use crate::mqtt::commands::DEFAULT_PASSIVE_SECONDS;
use crate::store::Store;

/// Remembered control values of one battery (published retained on `<dev>/controls`, and kept
/// in the store as the document [`controls_key`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub(super) struct Controls {
    /// Passive set-point, W (negative = charge).
    pub passive_power: i32,
    /// Passive countdown, s.
    pub passive_duration: u32,
    /// Depth of discharge, %.
    pub dod: Option<u8>,
    /// Status LED on.
    pub led: Option<bool>,
    /// BLE advertising on.
    pub ble_adv: Option<bool>,
}

impl Default for Controls {
    fn default() -> Self {
        Self {
            passive_power: 0,
            passive_duration: DEFAULT_PASSIVE_SECONDS,
            dod: None,
            led: None,
            ble_adv: None,
        }
    }
}

/// Store key prefix of the remembered controls, one document per battery.
const CONTROLS_PREFIX: &str = "mqtt_controls/";

/// Longest wait for one store read or write of remembered controls.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Store document key of a device's remembered controls.
fn controls_key(dev: &DeviceId) -> String {
    format!("{CONTROLS_PREFIX}{dev}")
}

/// Every device's remembered controls and which changed since they were last saved.
#[derive(Default)]
pub(super) struct ControlsBook {
    controls: BTreeMap<DeviceId, Controls>,
    unsaved: BTreeSet<DeviceId>,
}

impl ControlsBook {
    /// The controls of `dev` (defaults when none were remembered).
    pub fn get(&self, dev: &DeviceId) -> Controls {
        self.controls.get(dev).cloned().unwrap_or_default()
    }

    /// Applies `f` to the controls of `dev`; returns them as JSON and whether they changed
    /// (then they wait to be saved).
    pub fn update(&mut self, dev: &DeviceId, f: impl FnOnce(&mut Controls)) -> (Vec<u8>, bool) {
        let c = self.controls.entry(dev.clone()).or_default();
        let before = c.clone();
        f(c);
        let changed = *c != before;
        let payload = serde_json::to_vec(c).unwrap_or_default();
        if changed {
            self.unsaved.insert(dev.clone());
        }
        (payload, changed)
    }

    /// Sets the controls of `dev` as read from the store (nothing to save).
    pub fn restore(&mut self, dev: &DeviceId, c: Controls) {
        self.controls.insert(dev.clone(), c);
    }

    /// Takes the changed controls to save.
    pub fn take_unsaved(&mut self) -> Vec<(DeviceId, Controls)> {
        let devs = std::mem::take(&mut self.unsaved);
        devs.into_iter()
            .filter_map(|d| self.controls.get(&d).cloned().map(|c| (d, c)))
            .collect()
    }

    /// Puts `dev` back among those to save (its write failed).
    pub fn mark_unsaved(&mut self, dev: DeviceId) {
        self.unsaved.insert(dev);
    }
}

/// Loads every device's remembered controls from the store in one query (bounded by
/// [`STORE_TIMEOUT`]; a failure keeps the defaults and is logged).
pub(super) async fn restore_controls(shared: &Shared, store: &dyn Store) {
    // One query for the whole fleet: a large fleet must not wait on a round trip per battery.
    let docs =
        match tokio::time::timeout(STORE_TIMEOUT, store.documents_under(CONTROLS_PREFIX)).await {
            Ok(Ok(docs)) => docs,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "controls_not_restored");
                return;
            }
            Err(_) => {
                tracing::warn!("controls_not_restored: the store did not answer in time");
                return;
            }
        };
    let saved: HashMap<String, Value> = docs.into_iter().collect();
    for dev in shared.commands.fleet().ids() {
        let Some(doc) = saved.get(&controls_key(&dev)) else {
            continue;
        };
        match serde_json::from_value::<Controls>(doc.clone()) {
            Ok(c) => {
                tracing::info!(device = %dev, passive_power = c.passive_power, passive_duration = c.passive_duration, "controls_restored");
                let payload = serde_json::to_vec(&c).unwrap_or_default();
                shared.controls().restore(&dev, c);
                shared.set_retained(shared.topics.controls(&dev), payload);
            }
            Err(e) => tracing::warn!(device = %dev, error = %e, "controls_document_unreadable"),
        }
    }
}

/// Writes changed controls to the store, off the dispatcher's path. A failed write keeps the
/// device pending (retried after a pause or the next change) and is logged once per outage;
/// the in-memory value applies meanwhile. Pending writes are flushed once on shutdown.
pub(super) async fn run_controls_writer(shared: Arc<Shared>, store: Arc<dyn Store>) {
    const RETRY: Duration = Duration::from_secs(5);
    let mut failing = false;
    loop {
        let stopping = shared.cancel.is_cancelled();
        let batch = shared.controls().take_unsaved();
        let mut retry = false;
        for (dev, c) in batch {
            let doc = serde_json::to_value(&c).unwrap_or(Value::Null);
            let r =
                tokio::time::timeout(STORE_TIMEOUT, store.put_document(&controls_key(&dev), &doc))
                    .await
                    .map_err(|_| "the store did not answer in time".to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
            match r {
                Ok(()) => {
                    if failing {
                        tracing::info!(device = %dev, "controls_saved_again");
                        failing = false;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(device = %dev, error = %e, "controls_not_saved");
                        failing = true;
                    }
                    shared.controls().mark_unsaved(dev);
                    retry = true;
                }
            }
        }
        if stopping {
            break;
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => {}
            _ = shared.persist.notified() => {}
            _ = tokio::time::sleep(RETRY), if retry => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_wait_to_be_saved() {
        let mut book = ControlsBook::default();
        let dev = DeviceId::parse("d1").unwrap();
        let (payload, changed) = book.update(&dev, |_| {});
        assert!(!changed, "defaults are not a change");
        let v: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v["passive_duration"], DEFAULT_PASSIVE_SECONDS);
        assert!(book.take_unsaved().is_empty());

        let (_, changed) = book.update(&dev, |c| c.passive_power = -800);
        assert!(changed);
        let unsaved = book.take_unsaved();
        assert_eq!(unsaved.len(), 1);
        assert_eq!(unsaved[0].1.passive_power, -800);
        assert!(book.take_unsaved().is_empty(), "taken once");

        book.mark_unsaved(dev.clone());
        assert_eq!(book.take_unsaved().len(), 1, "a failed write is retried");
        book.restore(&dev, Controls::default());
        assert_eq!(book.get(&dev), Controls::default());
        assert!(
            book.take_unsaved().is_empty(),
            "restored values are not saved back"
        );
    }
}
