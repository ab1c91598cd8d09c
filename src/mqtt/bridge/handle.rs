//! [`MqttHandle`]: what the rest of the application holds of the running bridge. Every method
//! queues into the bridge's state and returns at once; none waits on the broker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::Shared;
use super::discovery_pass::DiscoveryEvent;
use crate::control::{MaintenanceState, RoleState};
use crate::domain::{Alert, AlertState, DeviceId, DeviceInfo, Sample};
use crate::mqtt::discovery::Entity;
use crate::mqtt::topics::Topics;

/// The parts of `bridge/info`: the document the app gives, the batteries' catalogue matches
/// and the bridge's role in its site.
#[derive(Debug, Default)]
pub(super) struct InfoDoc {
    base: Value,
    firmware: BTreeMap<String, Value>,
    role: Option<RoleState>,
}

impl InfoDoc {
    /// The document with `firmware` (when any battery was identified) and `role` / `leader`
    /// (once known) merged in.
    fn document(&self) -> Value {
        let mut doc = self.base.clone();
        if let Value::Object(m) = &mut doc {
            if !self.firmware.is_empty() {
                let fw = self.firmware.clone().into_iter().collect();
                m.insert("firmware".into(), Value::Object(fw));
            }
            if let Some(role) = &self.role {
                m.insert("role".into(), json!(role.name()));
                m.insert("leader".into(), json!(role.leader));
            }
        }
        doc
    }
}

/// Cheap handle to the running bridge; every method returns at once (never waits on the broker).
#[derive(Clone)]
pub struct MqttHandle {
    shared: Arc<Shared>,
}

impl MqttHandle {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    #[cfg(test)]
    pub(super) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The retained documents of a fresh start: no active alerts, and `bridge/info`.
    pub(super) fn publish_initial_documents(&self) {
        let shared = &self.shared;
        for b in shared.commands.fleet().iter() {
            shared.set_retained(
                shared.topics.alerts_active(b.id()),
                br#"{"active":[]}"#.to_vec(),
            );
        }
        self.publish_info(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "devices": shared.commands.fleet().ids(),
            "base_topic": shared.topics.base(),
            "discovery": shared.settings.discovery,
        }));
    }

    /// Queues the latest state of a device (latest wins).
    pub fn publish_sample(&self, sample: Sample) {
        self.shared.outbox().set_state(sample);
        self.shared.notify.notify_one();
    }

    /// Publishes an alert event on `<dev>/alert` (or `bridge/alert` when it has no device) and
    /// updates the retained `<dev>/alerts` list of active kinds.
    pub fn publish_alert(&self, alert: &Alert) {
        let payload = serde_json::to_vec(alert).unwrap_or_default();
        let shared = &self.shared;
        match &alert.device {
            None => shared.push_event(shared.topics.bridge_alert(), payload, false),
            Some(dev) => {
                shared.push_event(shared.topics.alert(dev), payload, false);
                let active = {
                    let mut all = super::lock(&shared.alerts);
                    let set = all.entry(dev.clone()).or_default();
                    match alert.state {
                        AlertState::Raised => set.insert(alert.kind),
                        AlertState::Cleared => set.remove(&alert.kind),
                    };
                    set.iter().map(|k| k.as_str()).collect::<Vec<_>>()
                };
                shared.set_retained(
                    shared.topics.alerts_active(dev),
                    serde_json::to_vec(&json!({ "active": active })).unwrap_or_default(),
                );
            }
        }
    }

    /// Replaces the retained `bridge/info` JSON (the batteries' catalogue matches, once
    /// known, are kept in it as `firmware`).
    pub fn publish_info(&self, info: Value) {
        let doc = {
            let mut d = super::lock(&self.shared.info);
            d.base = info;
            d.document()
        };
        self.retained_json(self.shared.topics.bridge_info(), &doc);
    }

    /// Records the bridge's role in its site (`role`: leader or standby, `leader`: the
    /// instance holding the site's lease) in `bridge/info`; republishes only when it changed.
    pub fn publish_role(&self, role: &RoleState) {
        let doc = {
            let mut d = super::lock(&self.shared.info);
            if d.role.as_ref() == Some(role) {
                return;
            }
            d.role = Some(role.clone());
            d.document()
        };
        self.retained_json(self.shared.topics.bridge_info(), &doc);
    }

    /// Records which firmware catalogue entry a battery matched and why (model, firmware,
    /// range) in `bridge/info`'s `firmware` object; republishes only when it changed.
    pub fn publish_identity(&self, info: &DeviceInfo) {
        let Some(note) = &info.firmware_note else {
            return;
        };
        let entry = json!({
            "model": info.model,
            "firmware": info.firmware,
            "entry": note.entry,
            "family": note.family,
            "firmware_range": note.firmware_range,
            "matched": note.matched,
            "known": note.known,
            "severity": note.severity,
            "note": note.note,
        });
        let doc = {
            let mut d = super::lock(&self.shared.info);
            if d.firmware.get(info.id.as_str()) == Some(&entry) {
                return;
            }
            d.firmware.insert(info.id.to_string(), entry);
            d.document()
        };
        self.retained_json(self.shared.topics.bridge_info(), &doc);
    }

    /// Replaces the retained `bridge/health` JSON.
    pub fn publish_health(&self, health: Value) {
        self.retained_json(self.shared.topics.bridge_health(), &health);
    }

    /// Replaces the retained `bridge/schedule` JSON.
    pub fn publish_schedule(&self, schedule: Value) {
        self.retained_json(self.shared.topics.bridge_schedule(), &schedule);
    }

    /// Replaces the retained `bridge/tempo` JSON.
    pub fn publish_tempo(&self, tempo: Value) {
        self.retained_json(self.shared.topics.bridge_tempo(), &tempo);
    }

    /// Publishes the retained plan (`<base>/bridge/plan`).
    pub fn publish_plan(&self, plan: Value) {
        self.retained_json(self.shared.topics.bridge_plan(), &plan);
    }

    /// Publishes the retained € ledger (`<base>/bridge/ledger`).
    pub fn publish_ledger(&self, ledger: Value) {
        self.retained_json(self.shared.topics.bridge_ledger(), &ledger);
    }

    /// Publishes the retained maintenance holds (`<base>/bridge/maintenance`, JSON) and, for
    /// each of `devices`, whether it is held (`<base>/<dev>/maintenance`, `ON`/`OFF`).
    pub fn publish_maintenance(&self, state: &MaintenanceState, devices: &[DeviceId]) {
        let t = &self.shared.topics;
        if let Ok(v) = serde_json::to_value(state) {
            self.retained_json(t.bridge_maintenance(), &v);
        }
        for d in devices {
            let on = if state.held(d).is_some() { "ON" } else { "OFF" };
            self.shared
                .set_retained(t.maintenance(d), on.as_bytes().to_vec());
        }
    }

    /// Publishes the retained dry-run switch (`<base>/bridge/dry_run`).
    pub fn publish_dry_run(&self, state: Value) {
        self.retained_json(self.shared.topics.bridge_dry_run(), &state);
    }

    /// Publishes what batcontrol's MQTT inverter reads of a battery (retained, under
    /// `<base>/<dev>/batcontrol/status/`): `soc` (%), `capacity` (Wh), `min_soc`, `max_soc`
    /// (%), `max_charge_rate` (W); a value the sample lacks is left as it was.
    pub fn publish_batcontrol_status(&self, sample: &Sample, limits: &crate::domain::DeviceLimits) {
        let t = &self.shared.topics;
        let dev = &sample.device;
        let put = |leaf: &str, v: String| {
            self.shared
                .set_retained(t.batcontrol_status(dev, leaf), v.into_bytes());
        };
        if let Some(soc) = sample.soc {
            put("soc", soc.0.to_string());
        }
        if let Some(c) = sample.rated_capacity {
            put("capacity", format!("{}", c.0));
        }
        put("min_soc", limits.min_soc.to_string());
        put("max_soc", limits.max_soc.to_string());
        put("max_charge_rate", limits.max_charge_w.to_string());
    }

    /// Publishes the retained regulator status (`<base>/bridge/regulator`).
    pub fn publish_regulator(&self, status: Value) {
        self.retained_json(self.shared.topics.bridge_regulator(), &status);
    }

    fn retained_json(&self, topic: String, v: &Value) {
        self.shared
            .set_retained(topic, serde_json::to_vec(v).unwrap_or_default());
    }

    /// Extra entities of the bridge device (job switches, Tempo sensors…); republishes discovery.
    pub fn set_extra_entities(&self, entities: Vec<Entity>) {
        self.shared.discovery(DiscoveryEvent::Extra(entities));
    }

    /// Republishes discovery (e.g. after a device's identity became known).
    pub fn refresh_discovery(&self) {
        self.shared.discovery(DiscoveryEvent::All);
    }

    /// Broker connection state (true between ConnAck and the next error).
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.shared.connected.subscribe()
    }

    /// Messages dropped so far (outgoing queue full or incoming channel full).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Refused commands not recorded in the audit so far (over its rate limit).
    pub fn refusals_not_recorded(&self) -> u64 {
        super::lock(&self.shared.refusals).dropped_total
    }

    /// The topics of this bridge.
    pub fn topics(&self) -> &Topics {
        &self.shared.topics
    }
}
