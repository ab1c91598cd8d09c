//! The intents (desired states) of every battery kept in memory for readers that must not hit
//! the database on each call (the REST API, the status page). The command service writes an
//! intent here as soon as a command that keeps one succeeds; the reconciler writes the ones it
//! derives and absorbs the store's whenever it reloads them. Next to each intent it keeps the
//! battery's [`Holding`] record (written by the reconciler) and builds the `<dev>/intent`
//! document from both; every change bumps a version that [`IntentBoard::subscribe`] watches.
//! Holds no I/O: a reader seeds it from the store once with [`IntentBoard::absorb`] when
//! nothing was read in yet.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::{Value, json};
use tokio::sync::watch;

use super::holding::Holding;
use crate::domain::{DesiredState, DeviceId, ModeConfig};

#[derive(Default)]
struct Board {
    /// Whether the store's intents were read in once (seeded or replaced).
    loaded: bool,
    by_device: BTreeMap<DeviceId, DesiredState>,
    holding: BTreeMap<DeviceId, Holding>,
}

/// The in-memory intents, shared (cheap to clone).
#[derive(Clone)]
pub struct IntentBoard(Arc<RwLock<Board>>, Arc<watch::Sender<u64>>);

impl Default for IntentBoard {
    fn default() -> Self {
        Self(Arc::default(), Arc::new(watch::channel(0).0))
    }
}

impl IntentBoard {
    /// Keeps `intent` as its battery's intent.
    pub fn set(&self, intent: &DesiredState) {
        self.write()
            .by_device
            .insert(intent.device.clone(), intent.clone());
        self.changed();
    }

    /// Runs `f` on `device`'s holding record (a default one first); watchers are told when it
    /// changed.
    pub fn update_holding<T>(&self, device: &DeviceId, f: impl FnOnce(&mut Holding) -> T) -> T {
        let (out, changed) = {
            let mut b = self.write();
            let h = b.holding.entry(device.clone()).or_default();
            let before = h.clone();
            let out = f(h);
            (out, *h != before)
        };
        if changed {
            self.changed();
        }
        out
    }

    /// The version, bumped on every change (intent or holding record).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.1.subscribe()
    }

    /// The batteries with an intent or a holding record.
    pub fn devices(&self) -> Vec<DeviceId> {
        let b = self.0.read().unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<DeviceId> = b
            .by_device
            .keys()
            .chain(b.holding.keys())
            .cloned()
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The `<dev>/intent` document: the intended mode and power (W, + discharge) with who set
    /// it and until when, the observed mode and power, whether the battery holds it and since
    /// when, the reverts counted and the last re-apply with its result.
    pub fn document(&self, device: &DeviceId) -> Value {
        let b = self.0.read().unwrap_or_else(|p| p.into_inner());
        let h = b.holding.get(device).cloned().unwrap_or_default();
        let intended = b.by_device.get(device).map(|d| {
            let power = match &d.config {
                ModeConfig::Passive { power, .. } => Some(power.0),
                _ => None,
            };
            json!({
                "mode": d.config.mode(), "power": power, "set_by": d.set_by,
                "set_at": d.set_at, "valid_until": d.valid_until,
            })
        });
        json!({
            "intended": intended,
            "observed": { "mode": h.observed_mode, "power": h.observed_power_w },
            "holding": h.holding_since.is_some(),
            "holding_since": h.holding_since,
            "reverts": h.reverts,
            "last_reapply": h.last_reapply.map(|at| json!({ "at": at, "result": h.last_result })),
        })
    }

    fn changed(&self) {
        self.1.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Takes in what the store holds now (`stored`, read at start-up or reloaded): per battery
    /// the newer of the stored intent and the one kept here wins, so an intent set while the
    /// read was under way (its row perhaps not yet written) is not lost.
    pub fn absorb(&self, stored: Vec<DesiredState>) {
        let mut b = self.write();
        for d in stored {
            match b.by_device.get(&d.device) {
                Some(kept) if kept.set_at > d.set_at => {}
                _ => {
                    b.by_device.insert(d.device.clone(), d);
                }
            }
        }
        b.loaded = true;
        drop(b);
        self.changed();
    }

    /// Whether the store's intents were read in.
    pub fn is_loaded(&self) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).loaded
    }

    /// The intent kept for `device`.
    pub fn get(&self, device: &DeviceId) -> Option<DesiredState> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_device
            .get(device)
            .cloned()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Board> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ModeConfig;
    use chrono::{Duration, TimeZone, Utc};

    fn intent(id: &str, by: &str, minute: i64) -> DesiredState {
        DesiredState {
            device: DeviceId::parse(id).unwrap(),
            config: ModeConfig::Auto,
            set_by: by.into(),
            set_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(minute),
            valid_until: None,
        }
    }

    #[test]
    fn the_newer_intent_wins_when_the_store_is_read_in() {
        let board = IntentBoard::default();
        assert!(!board.is_loaded());
        let old = intent("a", "old", 0);
        board.set(&intent("a", "http", 2));
        board.absorb(vec![old, intent("b", "mqtt", 1)]);
        assert!(board.is_loaded());
        let a = DeviceId::parse("a").unwrap();
        let b = DeviceId::parse("b").unwrap();
        assert_eq!(
            board.get(&a).unwrap().set_by,
            "http",
            "set after the read: newer"
        );
        assert_eq!(board.get(&b).unwrap().set_by, "mqtt");
        board.absorb(vec![intent("b", "reconciler", 3)]);
        assert_eq!(
            board.get(&b).unwrap().set_by,
            "reconciler",
            "a newer stored one wins"
        );
        assert_eq!(board.get(&a).unwrap().set_by, "http");
    }

    #[test]
    fn the_document_joins_the_intent_and_its_holding_record_and_changes_are_told() {
        let board = IntentBoard::default();
        let mut rx = board.subscribe();
        let a = DeviceId::parse("a").unwrap();
        assert_eq!(board.document(&a)["intended"], Value::Null);
        board.set(&intent("a", "mqtt", 0));
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 1, 0, 0).unwrap();
        board.update_holding(&a, |h| h.held(t));
        assert!(rx.has_changed().unwrap(), "a holding change is told");
        rx.borrow_and_update();
        board.update_holding(&a, |h| h.held(t + Duration::minutes(1)));
        assert!(!rx.has_changed().unwrap(), "nothing changed, nothing told");
        board.update_holding(&a, |h| h.left());
        let doc = board.document(&a);
        assert_eq!(doc["intended"]["mode"], json!("Auto"), "{doc}");
        assert_eq!(doc["intended"]["set_by"], json!("mqtt"));
        assert_eq!(
            (&doc["holding"], &doc["reverts"]),
            (&json!(false), &json!(1))
        );
        assert_eq!(board.devices(), vec![a]);
    }
}
