//! The mirror task: publishes the control layer's shared device state as retained documents —
//! `<dev>/availability` from `control::Presence` (the one owner of availability) and
//! `<dev>/controls` from `control::RememberedControls` and `<dev>/intent` from
//! `control::IntentBoard` — whenever one changes. Owns the last values it published, so only
//! what changed is queued.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use serde_json::Value;

use super::Shared;
use crate::control::{Availability, Controls, IntentBoard};
use crate::domain::DeviceId;

/// The mirror's own state: the two channels and what it last published from each.
pub(super) struct Mirror {
    shared: Arc<Shared>,
    presence: watch::Receiver<Availability>,
    controls: watch::Receiver<BTreeMap<DeviceId, Controls>>,
    published_presence: Availability,
    published_controls: BTreeMap<DeviceId, Controls>,
    intents: IntentBoard,
    intents_version: watch::Receiver<u64>,
    published_intents: BTreeMap<DeviceId, Value>,
}

impl Mirror {
    /// A mirror that has published nothing yet.
    pub fn new(
        shared: Arc<Shared>,
        presence: watch::Receiver<Availability>,
        controls: watch::Receiver<BTreeMap<DeviceId, Controls>>,
        intents: IntentBoard,
    ) -> Self {
        let intents_version = intents.subscribe();
        Self {
            shared,
            presence,
            controls,
            published_presence: Availability::new(),
            published_controls: BTreeMap::new(),
            intents,
            intents_version,
            published_intents: BTreeMap::new(),
        }
    }

    /// Queues the intent document of every device whose document changed since the last call.
    pub fn sync_intents(&mut self) {
        self.intents_version.borrow_and_update();
        for dev in self.intents.devices() {
            let doc = self.intents.document(&dev);
            if self.published_intents.get(&dev) != Some(&doc) {
                let payload = serde_json::to_vec(&doc).unwrap_or_default();
                self.shared
                    .set_retained(self.shared.topics.intent(&dev), payload);
                self.published_intents.insert(dev, doc);
            }
        }
    }

    /// Queues the availability of every device whose value changed since the last call.
    pub fn sync_presence(&mut self) {
        let now = self.presence.borrow_and_update().clone();
        for (dev, online) in &now {
            if self.published_presence.get(dev) != Some(online) {
                let payload: &[u8] = if *online { b"online" } else { b"offline" };
                let topic = self.shared.topics.availability(dev);
                self.shared.set_retained(topic, payload.to_vec());
            }
        }
        self.published_presence = now;
    }

    /// Queues the controls of every device whose values changed since the last call.
    pub fn sync_controls(&mut self) {
        let now = self.controls.borrow_and_update().clone();
        for (dev, c) in &now {
            if self.published_controls.get(dev) != Some(c) {
                let payload = serde_json::to_vec(c).unwrap_or_default();
                self.shared
                    .set_retained(self.shared.topics.controls(dev), payload);
            }
        }
        self.published_controls = now;
    }

    /// Follows the channels until cancelled (a channel whose sender is gone is no longer
    /// watched).
    pub async fn run(mut self) {
        let cancel = self.shared.cancel.clone();
        let (mut presence_open, mut controls_open, mut intents_open) = (true, true, true);
        while presence_open || controls_open || intents_open {
            tokio::select! {
                () = cancel.cancelled() => return,
                r = self.presence.changed(), if presence_open => match r {
                    Ok(()) => self.sync_presence(),
                    Err(_) => presence_open = false,
                },
                r = self.controls.changed(), if controls_open => match r {
                    Ok(()) => self.sync_controls(),
                    Err(_) => controls_open = false,
                },
                r = self.intents_version.changed(), if intents_open => match r {
                    Ok(()) => self.sync_intents(),
                    Err(_) => intents_open = false,
                },
            }
        }
        cancel.cancelled().await;
    }
}
