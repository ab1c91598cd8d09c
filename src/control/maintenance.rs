//! The maintenance hold, for firmware updates and app sessions: while a battery is held (on
//! its own, or every battery by the bridge-wide hold) the command service sends it no write
//! from any source (`CommandError::Maintenance`), the reconciler neither re-applies nor renews
//! its intent and the regulator leaves it out, so a user can update it from the Marstek app
//! without the bridge fighting the update. Polling goes on (the page and MQTT keep showing what
//! the battery does). Releasing the hold lets the reconciler put the battery back to its intent.
//! The hold is stored as the `bridge_maintenance` document before it changes, so it survives a
//! restart; [`CommandService::set_maintenance`] is the one way adapters change it. Touches the
//! `Store` (one document) and, through the service, the background verifications it stops.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::ToSchema;

use super::CommandService;
use crate::domain::DeviceId;
use crate::store::{Store, StoreError};

/// Store document holding the maintenance holds.
pub const MAINTENANCE_DOC: &str = "bridge_maintenance";

/// One hold: who set it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Hold {
    /// When the hold was set (UTC).
    pub since: DateTime<Utc>,
    /// Who set it (`mqtt`, `http`, `central`).
    pub by: String,
}

/// Every hold in force, as stored, published (`<base>/bridge/maintenance`) and answered by the
/// API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MaintenanceState {
    /// The bridge-wide hold (every battery), when set.
    pub bridge: Option<Hold>,
    /// Holds of single batteries, by device id.
    pub devices: BTreeMap<String, Hold>,
}

/// Why a battery is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldScope {
    /// The bridge-wide hold.
    Bridge,
    /// This battery's own hold.
    Device,
}

impl HoldScope {
    /// `bridge` or `device`, as in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bridge => "bridge-wide",
            Self::Device => "this battery's",
        }
    }
}

impl MaintenanceState {
    /// Whether (and why) `device` is held now; its own hold is named first.
    pub fn held(&self, device: &DeviceId) -> Option<HoldScope> {
        if self.devices.contains_key(device.as_str()) {
            Some(HoldScope::Device)
        } else {
            self.bridge.as_ref().map(|_| HoldScope::Bridge)
        }
    }
}

/// The shared hold (cheap to clone; every clone sees every change).
#[derive(Clone)]
pub struct Maintenance {
    tx: Arc<watch::Sender<MaintenanceState>>,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Maintenance").field(&self.state()).finish()
    }
}

impl Default for Maintenance {
    fn default() -> Self {
        Self::with(MaintenanceState::default())
    }
}

impl Maintenance {
    fn with(state: MaintenanceState) -> Self {
        Self {
            tx: Arc::new(watch::channel(state).0),
        }
    }

    /// The holds stored in `store` (none when there is no document); an unreadable document is
    /// logged and nothing is held.
    pub async fn load(store: &dyn Store) -> Self {
        let state = match store.document(MAINTENANCE_DOC).await {
            Ok(Some(doc)) => serde_json::from_value(doc).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "maintenance_document_unreadable");
                MaintenanceState::default()
            }),
            Ok(None) => MaintenanceState::default(),
            Err(e) => {
                tracing::warn!(error = %e, "maintenance_document_unavailable");
                MaintenanceState::default()
            }
        };
        if state != MaintenanceState::default() {
            tracing::info!(
                bridge = state.bridge.is_some(),
                devices = ?state.devices.keys().collect::<Vec<_>>(),
                "maintenance_hold_loaded"
            );
        }
        Self::with(state)
    }

    /// Every hold now.
    pub fn state(&self) -> MaintenanceState {
        self.tx.borrow().clone()
    }

    /// Whether (and why) `device` is held now.
    pub fn held(&self, device: &DeviceId) -> Option<HoldScope> {
        self.tx.borrow().held(device)
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> watch::Receiver<MaintenanceState> {
        self.tx.subscribe()
    }

    /// Sets (`on`) or releases the hold of `device`, or the bridge-wide one when `device` is
    /// `None`, for `by`: stores the document first, then switches; a store failure changes
    /// nothing. Setting a hold already set keeps its first `since`. Returns the new state.
    pub async fn set(
        &self,
        store: &dyn Store,
        device: Option<&DeviceId>,
        on: bool,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<MaintenanceState, StoreError> {
        let mut state = self.state();
        let hold = Hold {
            since: now,
            by: by.to_string(),
        };
        match (device, on) {
            (Some(d), true) => {
                state.devices.entry(d.to_string()).or_insert(hold);
            }
            (Some(d), false) => {
                state.devices.remove(d.as_str());
            }
            (None, true) => {
                state.bridge.get_or_insert(hold);
            }
            (None, false) => state.bridge = None,
        }
        let doc = serde_json::to_value(&state).unwrap_or_default();
        store.put_document(MAINTENANCE_DOC, &doc).await?;
        self.tx.send_replace(state.clone());
        let scope = device.map_or("bridge", |d| d.as_str());
        tracing::info!(scope, on, by, "maintenance_hold_changed");
        Ok(state)
    }
}

/// Why a maintenance hold could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// No battery with that id.
    #[error("unknown device '{0}'")]
    UnknownDevice(String),
    /// The service runs without a store (tools): a hold that would not survive is refused.
    #[error("no store: the hold could not be kept")]
    NoStore,
    /// The store refused the document; nothing changed.
    #[error("the hold could not be stored ({0})")]
    Store(#[from] StoreError),
}

impl CommandService {
    /// Sets or releases a maintenance hold (`device`, or bridge-wide for `None`) for `by`, and
    /// stops the background verification of every battery it holds (no re-send may reach a
    /// battery under a hold). Refused for an unknown device or when the store cannot keep it.
    pub async fn set_maintenance(
        &self,
        device: Option<&DeviceId>,
        on: bool,
        by: &str,
    ) -> Result<MaintenanceState, MaintenanceError> {
        if let Some(d) = device
            && self.fleet.get(d).is_none()
        {
            return Err(MaintenanceError::UnknownDevice(d.to_string()));
        }
        let store = self.store.as_ref().ok_or(MaintenanceError::NoStore)?;
        let state = self
            .maintenance
            .set(store.as_ref(), device, on, by, Utc::now())
            .await?;
        if on {
            for id in self.fleet.ids() {
                if state.held(&id).is_some() {
                    self.supersede(&id);
                }
            }
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DeviceId {
        DeviceId::parse(s).unwrap()
    }

    #[test]
    fn a_battery_is_held_by_its_own_hold_or_the_bridge_wide_one() {
        let t = Utc::now();
        let hold = Hold {
            since: t,
            by: "mqtt".into(),
        };
        let mut s = MaintenanceState::default();
        assert_eq!(s.held(&id("a")), None);
        s.devices.insert("a".into(), hold.clone());
        assert_eq!(s.held(&id("a")), Some(HoldScope::Device));
        assert_eq!(s.held(&id("b")), None);
        s.bridge = Some(hold);
        assert_eq!(s.held(&id("b")), Some(HoldScope::Bridge));
        assert_eq!(s.held(&id("a")), Some(HoldScope::Device));
    }

    #[test]
    fn the_stored_document_round_trips() {
        let mut s = MaintenanceState::default();
        s.devices.insert(
            "a".into(),
            Hold {
                since: "2026-12-03T10:00:00Z".parse().unwrap(),
                by: "http".into(),
            },
        );
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["devices"]["a"]["by"], "http");
        assert_eq!(v["bridge"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<MaintenanceState>(v).unwrap(), s);
    }

    #[tokio::test]
    async fn a_hold_is_stored_and_back_after_a_restart_and_a_release_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::store::DatabaseSettings {
            url: format!("sqlite://{}", dir.path().join("m.db").display()),
            ..Default::default()
        };
        let store = crate::store::open(&settings).await.unwrap();
        let m = Maintenance::load(store.as_ref()).await;
        let t = Utc::now();
        m.set(store.as_ref(), Some(&id("a")), true, "mqtt", t)
            .await
            .unwrap();
        m.set(store.as_ref(), None, true, "http", t).await.unwrap();
        // A second hold of the same battery keeps the first `since`.
        let later = t + chrono::Duration::minutes(5);
        let s = m
            .set(store.as_ref(), Some(&id("a")), true, "http", later)
            .await
            .unwrap();
        assert_eq!(s.devices["a"].by, "mqtt");
        drop(store);

        let store = crate::store::open(&settings).await.unwrap();
        let m = Maintenance::load(store.as_ref()).await;
        assert_eq!(m.held(&id("a")), Some(HoldScope::Device));
        assert_eq!(m.held(&id("b")), Some(HoldScope::Bridge));
        let s = m.set(store.as_ref(), None, false, "http", t).await.unwrap();
        assert_eq!((s.bridge.is_none(), s.devices.len()), (true, 1));
        assert_eq!(m.held(&id("b")), None);
    }
}
