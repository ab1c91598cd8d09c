//! The intents (desired states) of every battery kept in memory for readers that must not hit
//! the database on each call (the REST API, the status page). The command service writes an
//! intent here as soon as a command that keeps one succeeds; the reconciler writes the ones it
//! derives and absorbs the store's whenever it reloads them. Holds no I/O: a reader seeds it from
//! the store once with [`IntentBoard::absorb`] when nothing was read in yet.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::domain::{DesiredState, DeviceId};

#[derive(Default)]
struct Board {
    /// Whether the store's intents were read in once (seeded or replaced).
    loaded: bool,
    by_device: BTreeMap<DeviceId, DesiredState>,
}

/// The in-memory intents, shared (cheap to clone).
#[derive(Clone, Default)]
pub struct IntentBoard(Arc<RwLock<Board>>);

impl IntentBoard {
    /// Keeps `intent` as its battery's intent.
    pub fn set(&self, intent: &DesiredState) {
        self.write()
            .by_device
            .insert(intent.device.clone(), intent.clone());
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
}
