//! The Home Assistant discovery state machine, as a plain struct owned by the publisher task:
//! which HA nodes (the bridge, each battery) must have their configs (re)published, the pass
//! over them in chunks, and — once our retained list of published config topics has been read
//! back from the broker — the removal of configs no longer published and the updated list.
//! Other tasks reach it only through [`DiscoveryEvent`]s on a channel. No I/O: builds messages
//! from `mqtt::discovery`, the fleet and the settings.

use std::collections::BTreeSet;

use super::outbox::Msg;
use crate::control::Fleet;
use crate::domain::DeviceId;
use crate::mqtt::discovery::{self, Entity, PublishedConfigs};
use crate::mqtt::settings::MqttSettings;
use crate::mqtt::topics::Topics;

/// HA nodes whose configs are built per publisher turn: a pass over a large fleet goes out in
/// chunks, interleaved with state publishes, and never holds the whole fleet's configs in memory.
pub(super) const DISCOVERY_CHUNK: usize = 16;

/// A Home Assistant device of this bridge, for discovery.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Node {
    /// The bridge device (its own entities plus the extra ones).
    Bridge,
    /// One battery.
    Battery(DeviceId),
}

/// What other tasks tell the discovery pass.
#[derive(Debug)]
pub(super) enum DiscoveryEvent {
    /// Queue a pass over the bridge and the whole fleet.
    All,
    /// Replace the extra entities of the bridge device and republish it.
    Extra(Vec<Entity>),
    /// Our retained list as the broker had it (ignored once synced).
    KnownList(PublishedConfigs),
    /// The retained replay is over: the list is known; queue a full pass.
    Synced,
}

/// What a pass needs to build configs.
pub(super) struct PassContext<'a> {
    /// Topics of this bridge.
    pub topics: &'a Topics,
    /// MQTT settings (style, QoS, offline delay).
    pub settings: &'a MqttSettings,
    /// Every configured battery.
    pub fleet: &'a Fleet,
}

/// See the module doc.
#[derive(Default)]
pub(super) struct DiscoveryPass {
    /// HA nodes whose discovery configs must be (re)published.
    pending: BTreeSet<Node>,
    /// The pending set is a whole-fleet pass: nodes not in it are removed when it ends.
    full: bool,
    /// A pass has started and is being published in chunks.
    in_pass: bool,
    /// Batteries whose configs went out with their identity (model, firmware…).
    discovered_with_info: BTreeSet<DeviceId>,
    /// Extra entities of the bridge device (jobs, Tempo).
    extra_entities: Vec<Entity>,
    /// Config topics listed in our retained list (before sync: what the broker had).
    known: PublishedConfigs,
    /// Our retained list has been read back (removals are possible).
    synced: bool,
}

impl DiscoveryPass {
    /// Applies an event from another task.
    pub fn apply(&mut self, event: DiscoveryEvent, fleet: &Fleet) {
        match event {
            DiscoveryEvent::All => self.discover_all(fleet.ids()),
            DiscoveryEvent::Extra(entities) => {
                self.extra_entities = entities;
                self.pending.insert(Node::Bridge);
            }
            DiscoveryEvent::KnownList(list) => {
                if !self.synced {
                    self.known = list;
                }
            }
            DiscoveryEvent::Synced => {
                if !self.synced {
                    self.synced = true;
                    self.discover_all(fleet.ids());
                }
            }
        }
    }

    /// Queues a pass over the bridge and every battery of `fleet`.
    pub fn discover_all(&mut self, fleet: Vec<DeviceId>) {
        self.full = true;
        self.pending.insert(Node::Bridge);
        self.pending.extend(fleet.into_iter().map(Node::Battery));
    }

    /// A state of `dev` is being published: once its identity is known (`has_info`), its
    /// configs go out again (once) with it.
    pub fn on_sample(&mut self, dev: &DeviceId, has_info: bool) {
        if has_info && !self.discovered_with_info.contains(dev) {
            self.pending.insert(Node::Battery(dev.clone()));
        }
    }

    /// Queues one battery's configs.
    #[cfg(test)]
    pub fn request(&mut self, node: Node) {
        self.pending.insert(node);
    }

    /// Marks our retained list as read (tests).
    #[cfg(test)]
    pub fn set_synced(&mut self) {
        self.synced = true;
    }

    /// Some node waits for its configs.
    pub fn is_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// A started pass is being published in chunks.
    pub fn in_pass(&self) -> bool {
        self.in_pass
    }

    /// Our retained list has been read back.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The messages of one publisher turn: at most one chunk of discovery; a new pass starts
    /// only if `due` (a started one always continues).
    pub fn turn(&mut self, due: bool, cx: &PassContext<'_>) -> Vec<Msg> {
        if self.pending.is_empty() || !(due || self.in_pass) {
            return Vec::new();
        }
        self.in_pass = true;
        let mut out = Vec::new();
        for _ in 0..DISCOVERY_CHUNK {
            let Some(node) = self.pending.pop_first() else {
                break;
            };
            self.publish_node(&node, cx, &mut out);
        }
        if self.pending.is_empty() {
            self.finish(cx, &mut out);
        }
        out
    }

    /// The configs of one node and, once synced, the removal of those it no longer has.
    fn publish_node(&mut self, node: &Node, cx: &PassContext<'_>, out: &mut Vec<Msg>) {
        let (t, s) = (cx.topics, cx.settings);
        let device = match node {
            Node::Bridge => {
                let mut bridge = discovery::bridge_device(t, s.qos);
                bridge.entities.extend(self.extra_entities.iter().cloned());
                bridge
            }
            Node::Battery(id) => {
                let Some(b) = cx.fleet.get(id) else { return };
                let info = b.info();
                if info.is_some() {
                    self.discovered_with_info.insert(id.clone());
                }
                let offline_after = s.offline_after().as_secs().max(1);
                discovery::battery_device(t, id, info.as_ref(), &b.limits(), offline_after, s.qos)
            }
        };
        let configs = discovery::config_messages(t, s.discovery, std::slice::from_ref(&device));
        let current: BTreeSet<String> = configs.iter().map(|(t, _)| t.clone()).collect();
        out.extend(configs.into_iter().map(|(t, p)| Msg::retained(t, p)));
        if self.synced {
            let before = self
                .known
                .nodes
                .insert(device.node.clone(), current.clone())
                .unwrap_or_default();
            for old in before.difference(&current) {
                tracing::info!(topic = %old, "discovery_removed");
                out.push(Msg::retained(old.clone(), Vec::new()));
            }
        }
    }

    /// The end of a pass: after a full one, the removal of nodes no longer configured; once
    /// synced, the updated list.
    fn finish(&mut self, cx: &PassContext<'_>, out: &mut Vec<Msg>) {
        let t = cx.topics;
        self.in_pass = false;
        let full = std::mem::take(&mut self.full);
        if !self.synced {
            return;
        }
        if full {
            // Nodes we listed before that this pass did not publish: devices taken out of the
            // configuration (or a changed base topic).
            let mut live: BTreeSet<String> = cx
                .fleet
                .ids()
                .iter()
                .map(|d| discovery::device_node(t, d))
                .collect();
            live.insert(discovery::bridge_node(t));
            let gone: Vec<String> = self
                .known
                .nodes
                .keys()
                .filter(|n| !live.contains(*n))
                .cloned()
                .collect();
            for node in gone {
                for old in self.known.nodes.remove(&node).unwrap_or_default() {
                    tracing::info!(topic = %old, "discovery_removed");
                    out.push(Msg::retained(old, Vec::new()));
                }
            }
        }
        out.push(Msg::retained(
            t.bridge_discovery_list(),
            self.known.to_payload(t.prefix()),
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;

    /// `n` batteries behind addresses where nothing answers (their identity stays unknown).
    async fn silent_fleet(n: usize, cancel: &CancellationToken) -> Fleet {
        use crate::marstek::{DeviceSpec, MarstekBattery, PollingSettings, Transport};
        let loopback = std::net::Ipv4Addr::LOCALHOST.into();
        let t = Transport::bind(std::net::SocketAddr::new(loopback, 0), cancel)
            .await
            .unwrap();
        let (samples, _) = tokio::sync::broadcast::channel(16);
        let tracker = TaskTracker::new();
        let polling = PollingSettings {
            status_interval: Duration::from_secs(3600),
            ..Default::default()
        };
        Fleet::new((0..n).map(|i| {
            let spec = DeviceSpec {
                id: DeviceId::parse(&format!("bat{i:02}")).unwrap(),
                addr: std::net::SocketAddr::new(loopback, 9),
                limits: Default::default(),
            };
            let b = MarstekBattery::spawn(
                t.clone(),
                spec,
                polling.clone(),
                samples.clone(),
                cancel.clone(),
                &tracker,
            );
            Arc::new(b) as crate::domain::BatteryRef
        }))
    }

    #[tokio::test]
    async fn discovery_goes_out_in_chunks_and_ends_with_a_compact_list() {
        let cancel = CancellationToken::new();
        let fleet = silent_fleet(40, &cancel).await;
        let topics = Topics::new("marstek", "homeassistant");
        let settings = MqttSettings::default();
        let cx = PassContext {
            topics: &topics,
            settings: &settings,
            fleet: &fleet,
        };
        let mut pass = DiscoveryPass::default();
        pass.discover_all(fleet.ids());
        // As if our (empty) retained list had been read: the pass may also publish the list.
        pass.set_synced();
        let configs = |w: &[Msg]| w.iter().filter(|m| m.topic.ends_with("/config")).count();
        let is_list = |m: &Msg| m.topic == "marstek/bridge/discovery";

        let mut turns = vec![pass.turn(true, &cx)];
        // A started pass continues although a new one would not be due.
        loop {
            let w = pass.turn(false, &cx);
            if w.is_empty() {
                break;
            }
            turns.push(w);
        }
        // 41 nodes (bridge + 40 batteries), 16 a turn.
        assert_eq!(
            turns.len(),
            3,
            "{:?}",
            turns.iter().map(|t| configs(t)).collect::<Vec<_>>()
        );
        let per_battery = configs(&turns[1]) / DISCOVERY_CHUNK;
        assert!(per_battery > 10 && configs(&turns[1]) == per_battery * DISCOVERY_CHUNK);
        assert!(
            turns[..2].iter().flatten().all(|m| !is_list(m)),
            "list only at the end"
        );
        let list = turns[2]
            .iter()
            .find(|m| is_list(m))
            .expect("list at the end");
        let published = PublishedConfigs::parse(&list.payload, "homeassistant");
        assert_eq!(published.nodes.len(), 41);
        let total: usize = turns.iter().map(|t| configs(t)).sum();
        assert_eq!(published.topics().count(), total);
        assert!(list.payload.len() < 2048, "{} bytes", list.payload.len());

        // Nothing pending: no new pass, even when one would be due.
        assert!(pass.turn(true, &cx).is_empty());
        // One battery asks again: only its own configs and the list go out.
        pass.request(Node::Battery(DeviceId::parse("bat07").unwrap()));
        let w = pass.turn(true, &cx);
        assert_eq!(configs(&w), per_battery);
        assert!(
            w.iter()
                .filter(|m| m.topic.ends_with("/config"))
                .all(|m| m.topic.contains("_bat07/"))
        );
        assert!(w.iter().any(is_list));
        cancel.cancel();
    }

    #[test]
    fn a_pass_is_not_started_before_it_is_due_and_removes_devices_no_longer_configured() {
        let topics = Topics::new("marstek", "homeassistant");
        let settings = MqttSettings::default();
        let fleet = Fleet::default();
        let cx = PassContext {
            topics: &topics,
            settings: &settings,
            fleet: &fleet,
        };
        let mut pass = DiscoveryPass::default();
        // The broker had configs of a battery that is no longer configured.
        let gone = "homeassistant/sensor/marstek_old/soc/config".to_string();
        let mut known = PublishedConfigs::default();
        known.nodes.insert(
            discovery::device_node(&topics, &DeviceId::parse("old").unwrap()),
            [gone.clone()].into(),
        );
        pass.apply(DiscoveryEvent::KnownList(known), &fleet);
        pass.apply(DiscoveryEvent::Synced, &fleet);
        assert!(pass.is_pending() && pass.synced());
        assert!(pass.turn(false, &cx).is_empty(), "not due: nothing starts");
        let w = pass.turn(true, &cx);
        assert!(!pass.is_pending() && !pass.in_pass());
        assert!(
            w.iter().any(|m| m.topic == gone && m.payload.is_empty()),
            "the stale config is deleted"
        );
        let list = w.last().expect("the list ends the pass");
        assert_eq!(list.topic, "marstek/bridge/discovery");
        let after = PublishedConfigs::parse(&list.payload, "homeassistant");
        assert!(after.topics().all(|t| *t != gone));
        // A list arriving after the sync changes nothing.
        pass.apply(
            DiscoveryEvent::KnownList(PublishedConfigs::default()),
            &fleet,
        );
        assert!(!pass.is_pending());
    }
}
