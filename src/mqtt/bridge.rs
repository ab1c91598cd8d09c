//! The running MQTT bridge: one task drives rumqttc's `EventLoop` (and nothing else), one task
//! publishes from a latest-wins outbox, one dispatches incoming commands and requests, one marks
//! silent devices offline. Talks to the broker and to `control::CommandService`; never to a
//! device directly. Shutdown: cancel the token; the bridge publishes `offline` and disconnects.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::{ClientError, ClientEvent, ClientOptions, IncomingPublish, MqttClient, Will};
use super::commands::{
    self, Action, CommandResponse, DEFAULT_PASSIVE_SECONDS, Parsed, Refusal, intent_for,
};
use super::discovery::{self, Entity};
use super::requests::RequestRouter;
use super::settings::MqttSettings;
use super::topics::{Incoming, Topics};
use crate::control::{Bookkeeping, CommandService};
use crate::domain::{
    Alert, AlertKind, AlertState, Command, CommandSource, DeviceId, ModeConfig, Sample,
};
use crate::store::Store;

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// Settings did not validate (key: reason; …).
    #[error("invalid mqtt settings: {0}")]
    Settings(String),
    /// A password or TLS file could not be read.
    #[error("cannot read {path}: {error}")]
    File {
        /// The file.
        path: String,
        /// The I/O error.
        error: String,
    },
}

impl From<ClientError> for MqttError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::File { path, error } => MqttError::File { path, error },
            other => MqttError::Settings(other.to_string()),
        }
    }
}

/// Remembered control values of one battery (published retained on `<dev>/controls`, and kept
/// in the store as the document [`controls_key`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
struct Controls {
    passive_power: i32,
    passive_duration: u32,
    dod: Option<u8>,
    led: Option<bool>,
    ble_adv: Option<bool>,
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

/// Store document key of a device's remembered controls.
fn controls_key(dev: &DeviceId) -> String {
    format!("{CONTROLS_PREFIX}{dev}")
}

/// Largest MQTT 5 Correlation Data echoed back, bytes; a larger one is ignored with its topic.
const MAX_CORRELATION_DATA: usize = 1024;

/// Longest wait for one store read or write of remembered controls.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

struct Msg {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
    /// QoS override (responses); None = `settings.qos`.
    qos: Option<u8>,
}

/// Where an MQTT 5 requester asked for a copy of the answer (Response Topic property), with
/// the Correlation Data to echo.
#[derive(Debug, Clone)]
struct ReplyTo {
    topic: String,
    correlation: Option<Bytes>,
}

/// An answer copied to a requester's Response Topic.
struct Reply {
    to: ReplyTo,
    payload: Vec<u8>,
}

#[derive(Default)]
struct Outbox {
    latest: BTreeMap<DeviceId, Sample>,
    last_sample: HashMap<DeviceId, Instant>,
    dirty_states: BTreeSet<DeviceId>,
    retained: BTreeMap<String, Vec<u8>>,
    dirty_retained: BTreeSet<String>,
    events: VecDeque<Msg>,
    /// HA nodes whose discovery configs must be (re)published.
    discovery_pending: BTreeSet<Node>,
    /// The pending set is a whole-fleet pass: nodes not in it are removed when it ends.
    discovery_full: bool,
    /// A pass has started and is being published in chunks.
    discovery_in_pass: bool,
    discovered_with_info: BTreeSet<DeviceId>,
    extra_entities: Vec<Entity>,
    online: BTreeMap<DeviceId, bool>,
    active_alerts: BTreeMap<DeviceId, BTreeSet<AlertKind>>,
    controls: BTreeMap<DeviceId, Controls>,
    /// Config topics listed in our retained list (before sync: what the broker had).
    known_discovery: discovery::PublishedConfigs,
    discovery_synced: bool,
    /// Answers copied to MQTT 5 Response Topics (bounded like `events`).
    replies: VecDeque<Reply>,
    /// Devices whose controls changed since they were last written to the store.
    unsaved_controls: BTreeSet<DeviceId>,
}

/// A Home Assistant device of this bridge, for discovery.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Bridge,
    Battery(DeviceId),
}

impl Outbox {
    /// Queues a discovery pass over the bridge and every battery of `fleet`.
    fn discover_all(&mut self, fleet: Vec<DeviceId>) {
        self.discovery_full = true;
        self.discovery_pending.insert(Node::Bridge);
        self.discovery_pending
            .extend(fleet.into_iter().map(Node::Battery));
    }

    /// Marks every state and retained document for republishing (new session, HA birth).
    fn republish_all(&mut self, fleet: Vec<DeviceId>) {
        self.discover_all(fleet);
        let devs: Vec<DeviceId> = self.latest.keys().cloned().collect();
        self.dirty_states.extend(devs);
        let retained: Vec<String> = self.retained.keys().cloned().collect();
        self.dirty_retained.extend(retained);
    }
}

struct Shared {
    topics: Topics,
    settings: MqttSettings,
    qos: u8,
    commands: CommandService,
    out: Mutex<Outbox>,
    notify: Notify,
    /// Wakes the controls writer.
    persist: Notify,
    /// Applied commands to record, in order, after their answers (see [`run_recorder`]).
    records: mpsc::Sender<Bookkeeping>,
    connected: watch::Sender<bool>,
    session: AtomicU64,
    dropped: AtomicU64,
    cancel: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Outbox> {
        // A panic while holding the lock cannot leave the outbox inconsistent: recover it.
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_retained(&self, topic: String, payload: Vec<u8>) {
        let mut o = self.lock();
        if o.retained.get(&topic) != Some(&payload) {
            o.retained.insert(topic.clone(), payload);
            o.dirty_retained.insert(topic);
        }
        drop(o);
        self.notify.notify_one();
    }

    fn push_event(&self, topic: String, payload: Vec<u8>, retain: bool) {
        self.push_event_qos(topic, payload, retain, None);
    }

    fn push_event_qos(&self, topic: String, payload: Vec<u8>, retain: bool, qos: Option<u8>) {
        let mut o = self.lock();
        let msg = Msg {
            topic,
            payload,
            retain,
            qos,
        };
        self.push_bounded(&mut o.events, msg);
        drop(o);
        self.notify.notify_one();
    }

    /// Appends to a bounded queue of non-retained messages, dropping (and counting) the oldest.
    fn push_bounded<T>(&self, queue: &mut VecDeque<T>, item: T) {
        if queue.len() >= self.settings.queue_capacity {
            queue.pop_front();
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(dropped = n, "mqtt_message_dropped");
        }
        queue.push_back(item);
    }

    /// Queues a discovery pass over the whole fleet.
    fn discover_all(&self) {
        let ids = self.commands.fleet().ids();
        self.lock().discover_all(ids);
    }

    /// Queues discovery, every state and every retained document again.
    fn republish_all(&self) {
        let ids = self.commands.fleet().ids();
        self.lock().republish_all(ids);
    }

    /// Counts and logs a message too large for one MQTT packet (rumqttc would drop the
    /// connection on it); true when it must not be sent.
    fn oversized(&self, topic: &str, bytes: usize) -> bool {
        if bytes <= MAX_PACKET {
            return false;
        }
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(
            topic,
            bytes,
            limit = MAX_PACKET,
            dropped = n,
            "mqtt_message_too_large"
        );
        true
    }

    fn set_online(&self, dev: &DeviceId, online: bool) {
        let changed = {
            let mut o = self.lock();
            o.online.insert(dev.clone(), online) != Some(online)
        };
        if changed {
            tracing::info!(device = %dev, online, "device_availability");
        }
        self.set_retained(
            self.topics.availability(dev),
            if online {
                b"online".to_vec()
            } else {
                b"offline".to_vec()
            },
        );
    }

    /// Updates a device's remembered controls, republishes them and, when they changed, queues
    /// them for the store (the writer task never holds up the caller).
    fn publish_controls(&self, dev: &DeviceId, f: impl FnOnce(&mut Controls)) {
        let (payload, changed) = {
            let mut o = self.lock();
            let c = o.controls.entry(dev.clone()).or_default();
            let before = c.clone();
            f(c);
            let changed = *c != before;
            let payload = serde_json::to_vec(c).unwrap_or_default();
            if changed {
                o.unsaved_controls.insert(dev.clone());
            }
            (payload, changed)
        };
        if changed {
            self.persist.notify_one();
        }
        self.set_retained(self.topics.controls(dev), payload);
    }

    /// Publishes an answer on its documented topic and, for an MQTT 5 request that carried a
    /// Response Topic, a copy there with the request's Correlation Data.
    fn answer(&self, topic: String, payload: Vec<u8>, reply: Option<&ReplyTo>) {
        if let Some(to) = reply {
            let reply = Reply {
                to: to.clone(),
                payload: payload.clone(),
            };
            self.push_bounded(&mut self.lock().replies, reply);
        }
        self.push_event_qos(topic, payload, false, Some(self.settings.response_qos));
    }

    fn respond(&self, dev_level: &str, resp: &CommandResponse, reply: Option<&ReplyTo>) {
        let payload = serde_json::to_vec(resp).unwrap_or_default();
        self.answer(self.topics.response(dev_level), payload, reply);
    }
}

/// The JSON published on `<dev>/state`: every `Sample` field (snake_case, units in the docs) plus
/// `last_seen` (RFC 3339, = `at`).
pub fn state_payload(sample: &Sample) -> Vec<u8> {
    let mut v = serde_json::to_value(sample).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.insert(
            "last_seen".into(),
            json!(
                sample
                    .at
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            ),
        );
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Cheap handle to the running bridge; every method returns at once (never waits on the broker).
#[derive(Clone)]
pub struct MqttHandle {
    shared: Arc<Shared>,
}

impl MqttHandle {
    /// Queues the latest state of a device (latest wins) and marks it online.
    pub fn publish_sample(&self, sample: Sample) {
        let dev = sample.device.clone();
        let has_info = self
            .shared
            .commands
            .fleet()
            .get(&dev)
            .is_some_and(|b| b.info().is_some());
        {
            let mut o = self.shared.lock();
            o.last_sample.insert(dev.clone(), Instant::now());
            o.dirty_states.insert(dev.clone());
            o.latest.insert(dev.clone(), sample);
            if has_info && !o.discovered_with_info.contains(&dev) {
                o.discovery_pending.insert(Node::Battery(dev.clone()));
            }
        }
        self.shared.set_online(&dev, true);
    }

    /// Sets a device's retained availability (`online`/`offline`).
    pub fn set_availability(&self, dev: &DeviceId, online: bool) {
        self.shared.set_online(dev, online);
    }

    /// Publishes an alert event on `<dev>/alert` (or `bridge/alert` when it has no device) and
    /// updates the retained `<dev>/alerts` list of active kinds.
    pub fn publish_alert(&self, alert: &Alert) {
        let payload = serde_json::to_vec(alert).unwrap_or_default();
        match &alert.device {
            None => self
                .shared
                .push_event(self.shared.topics.bridge_alert(), payload, false),
            Some(dev) => {
                self.shared
                    .push_event(self.shared.topics.alert(dev), payload, false);
                let active = {
                    let mut o = self.shared.lock();
                    let set = o.active_alerts.entry(dev.clone()).or_default();
                    match alert.state {
                        AlertState::Raised => set.insert(alert.kind),
                        AlertState::Cleared => set.remove(&alert.kind),
                    };
                    set.iter().map(|k| k.as_str()).collect::<Vec<_>>()
                };
                self.shared.set_retained(
                    self.shared.topics.alerts_active(dev),
                    serde_json::to_vec(&json!({ "active": active })).unwrap_or_default(),
                );
            }
        }
    }

    /// Replaces the retained `bridge/info` JSON.
    pub fn publish_info(&self, info: Value) {
        self.retained_json(self.shared.topics.bridge_info(), &info);
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

    fn retained_json(&self, topic: String, v: &Value) {
        self.shared
            .set_retained(topic, serde_json::to_vec(v).unwrap_or_default());
    }

    /// Extra entities of the bridge device (job switches, Tempo sensors…); republishes discovery.
    pub fn set_extra_entities(&self, entities: Vec<Entity>) {
        let mut o = self.shared.lock();
        o.extra_entities = entities;
        o.discovery_pending.insert(Node::Bridge);
        drop(o);
        self.shared.notify.notify_one();
    }

    /// Republishes discovery (e.g. after a device's identity became known).
    pub fn refresh_discovery(&self) {
        self.shared.discover_all();
        self.shared.notify.notify_one();
    }

    /// Broker connection state (true between ConnAck and the next error).
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.shared.connected.subscribe()
    }

    /// Messages dropped so far (outgoing queue full or incoming channel full).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The topics of this bridge.
    pub fn topics(&self) -> &Topics {
        &self.shared.topics
    }
}

/// Entry point of the MQTT adapter.
pub struct MqttBridge;

fn client_options(s: &MqttSettings, topics: &Topics) -> Result<ClientOptions, MqttError> {
    let mut o = ClientOptions::from_settings(s)?;
    o.last_will = Some(Will {
        topic: topics.bridge_state(),
        payload: b"offline".to_vec(),
        qos: s.qos,
        retain: true,
    });
    Ok(o)
}

impl MqttBridge {
    /// Validates `settings`, connects (in the background, with retries) and returns a handle and
    /// the join handle of the bridge (ends after `cancel`, once `offline` is published).
    pub fn start(
        settings: MqttSettings,
        commands: CommandService,
        router: RequestRouter,
        cancel: CancellationToken,
    ) -> Result<(MqttHandle, JoinHandle<()>), MqttError> {
        let problems = settings.validate();
        if !problems.is_empty() {
            return Err(MqttError::Settings(
                problems
                    .iter()
                    .map(|(k, r)| format!("{k}: {r}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            ));
        }
        let topics = Topics::new(&settings.base_topic, &settings.discovery_prefix);
        let opts = client_options(&settings, &topics)?;
        let (client, eventloop) = MqttClient::new(&opts, 256)?;
        let (connected, _) = watch::channel(false);
        let (records, records_rx) = mpsc::channel::<Bookkeeping>(RECORD_QUEUE);
        let shared = Arc::new(Shared {
            records,
            qos: settings.qos,
            topics,
            settings,
            commands,
            out: Mutex::new(Outbox::default()),
            notify: Notify::new(),
            persist: Notify::new(),
            connected,
            session: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            cancel: cancel.clone(),
        });
        let handle = MqttHandle {
            shared: shared.clone(),
        };
        // Initial retained documents: devices offline until their first sample, no alerts.
        for b in shared.commands.fleet().iter() {
            let dev = b.id().clone();
            shared.set_online(&dev, false);
            shared.set_retained(
                shared.topics.alerts_active(&dev),
                br#"{"active":[]}"#.to_vec(),
            );
            shared.publish_controls(&dev, |_| {});
        }
        handle.publish_info(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "devices": shared.commands.fleet().ids(),
            "base_topic": shared.topics.base(),
            "discovery": shared.settings.discovery,
        }));
        shared.discover_all();

        let (in_tx, in_rx) = mpsc::channel::<IncomingPublish>(1024);
        let tracker = TaskTracker::new();
        let store = shared.commands.store().cloned();
        if let Some(store) = &store {
            tracker.spawn(run_controls_writer(shared.clone(), store.clone()));
        }
        tracker.spawn(run_publisher(shared.clone(), client.clone(), store));
        tracker.spawn(run_dispatcher(shared.clone(), in_rx, Arc::new(router)));
        tracker.spawn(run_watchdog(shared.clone()));
        tracker.spawn(run_recorder(records_rx, cancel.clone()));
        tracker.close();
        let join = tokio::spawn(async move {
            run_eventloop(shared, client, eventloop, in_tx).await;
            tracker.wait().await;
        });
        Ok((handle, join))
    }
}

async fn run_eventloop(
    shared: Arc<Shared>,
    client: MqttClient,
    mut eventloop: super::client::MqttEventLoop,
    in_tx: mpsc::Sender<IncomingPublish>,
) {
    let s = &shared.settings;
    let mut backoff = s.reconnect_min;
    // The first failure of an outage (start-up included) is a warning; repeats are debug.
    let mut outage_reported = false;
    loop {
        let ev = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(ClientEvent::Connected) => {
                backoff = s.reconnect_min;
                outage_reported = false;
                shared.session.fetch_add(1, Ordering::SeqCst);
                shared.connected.send_replace(true);
                shared.notify.notify_one();
                tracing::info!(host = %s.host, port = s.port, protocol = %s.protocol, "mqtt_connected");
            }
            Ok(ClientEvent::Publish(p)) => {
                if in_tx.try_send(p).is_err() {
                    let n = shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(dropped = n, "mqtt_incoming_dropped");
                }
            }
            Ok(_) => {}
            Err(e) => {
                if shared.connected.send_replace(false) {
                    tracing::warn!(error = %e, "mqtt_disconnected");
                    outage_reported = true;
                } else if matches!(e, ClientError::Refused(_)) {
                    // Retrying cannot help until the broker's users or ACLs change: say so loudly,
                    // and keep retrying with the longest backoff quietly.
                    if !outage_reported {
                        tracing::error!(error = %e, host = %s.host, port = s.port, protocol = %s.protocol, "mqtt_connection_refused");
                    } else {
                        tracing::debug!(error = %e, "mqtt_connection_refused");
                    }
                    outage_reported = true;
                } else if !outage_reported {
                    tracing::warn!(error = %e, host = %s.host, port = s.port, "mqtt_connect_failed");
                    outage_reported = true;
                } else {
                    tracing::debug!(error = %e, "mqtt_connect_failed");
                }
                tokio::select! {
                    _ = shared.cancel.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(s.reconnect_max);
            }
        }
    }
    // Shutdown: say goodbye while we still drive the connection.
    if *shared.connected.borrow() {
        let c = client.clone();
        let state = shared.topics.bridge_state();
        let qos = shared.qos;
        let goodbye = async move {
            let _ = c.publish(state, qos, true, "offline").await;
            let _ = c.disconnect().await;
            std::future::pending::<()>().await
        };
        tokio::pin!(goodbye);
        let deadline = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = &mut goodbye => {}
                ev = eventloop.poll() => match ev {
                    Ok(ClientEvent::Disconnecting) | Err(_) => break,
                    _ => {}
                },
            }
        }
    }
    shared.connected.send_replace(false);
    tracing::info!("mqtt_stopped");
}

/// Shortest time between the starts of two discovery passes: devices identifying themselves one
/// after the other (a large fleet at start-up) are folded into one pass instead of one each.
const DISCOVERY_MIN_GAP: Duration = Duration::from_secs(1);

/// Longest wait for our retained discovery list at the start of a session before discovery
/// goes out without it.
const DISCOVERY_SYNC_WAIT: Duration = Duration::from_secs(3);

/// HA nodes whose configs are built per publisher turn: a pass over a large fleet goes out in
/// chunks, interleaved with state publishes, and never holds the whole fleet's configs in memory.
const DISCOVERY_CHUNK: usize = 16;

/// Largest MQTT packet the bridge sends or accepts (bytes); rumqttc drops the connection on a
/// larger outgoing one, so such a message is refused before it reaches the client.
pub(crate) const MAX_PACKET: usize = super::client::MAX_PACKET_SIZE as usize;

/// Everything the publisher must send now, taken from the outbox under the lock.
#[cfg(test)]
fn take_work(shared: &Shared) -> Vec<Msg> {
    let mut all = Vec::new();
    loop {
        let work = take_work_with(shared, true);
        if work.is_empty() {
            return all;
        }
        all.extend(work);
    }
}

/// Like [`take_work`] for one publisher turn: at most one chunk of discovery; a new discovery
/// pass starts only if `discovery_due` (a started one always continues).
fn take_work_with(shared: &Shared, discovery_due: bool) -> Vec<Msg> {
    let mut o = shared.lock();
    let mut work = Vec::new();
    if !o.discovery_pending.is_empty() && (discovery_due || o.discovery_in_pass) {
        o.discovery_in_pass = true;
        work.extend(discovery_messages(shared, &mut o));
    }
    let devs: Vec<DeviceId> = std::mem::take(&mut o.dirty_states).into_iter().collect();
    for d in devs {
        if let Some(s) = o.latest.get(&d) {
            work.push(Msg {
                topic: shared.topics.state(&d),
                payload: state_payload(s),
                retain: true,
                qos: None,
            });
        }
    }
    let topics: Vec<String> = std::mem::take(&mut o.dirty_retained).into_iter().collect();
    for t in topics {
        if let Some(p) = o.retained.get(&t) {
            work.push(Msg {
                topic: t,
                payload: p.clone(),
                retain: true,
                qos: None,
            });
        }
    }
    work.extend(o.events.drain(..));
    drop(o);
    // Fixed header (≤ 5) + topic length (2) + packet id (2): what else the packet carries.
    work.retain(|m| !shared.oversized(&m.topic, m.topic.len() + m.payload.len() + 9));
    work
}

/// The next chunk of a discovery pass; when the pass ends (and our retained list has been read),
/// also the removals of configs no longer published and the updated list.
fn discovery_messages(shared: &Shared, o: &mut Outbox) -> Vec<Msg> {
    let s = &shared.settings;
    let t = &shared.topics;
    let qos = s.qos;
    let fleet = shared.commands.fleet();
    let mut out: Vec<Msg> = Vec::new();
    let mut retained = |topic: String, payload: Vec<u8>| {
        out.push(Msg {
            topic,
            payload,
            retain: true,
            qos: None,
        })
    };
    for _ in 0..DISCOVERY_CHUNK {
        let Some(node) = o.discovery_pending.pop_first() else {
            break;
        };
        let device = match &node {
            Node::Bridge => {
                let mut bridge = discovery::bridge_device(t, qos);
                bridge.entities.extend(o.extra_entities.iter().cloned());
                Some(bridge)
            }
            Node::Battery(id) => fleet.get(id).map(|b| {
                let info = b.info();
                if info.is_some() {
                    o.discovered_with_info.insert(id.clone());
                }
                discovery::battery_device(
                    t,
                    id,
                    info.as_ref(),
                    &b.limits(),
                    s.offline_after().as_secs().max(1),
                    qos,
                )
            }),
        };
        let Some(device) = device else { continue };
        let configs = discovery::config_messages(t, s.discovery, std::slice::from_ref(&device));
        let current: BTreeSet<String> = configs.iter().map(|(t, _)| t.clone()).collect();
        for (topic, payload) in configs {
            retained(topic, payload);
        }
        if o.discovery_synced {
            let before = o
                .known_discovery
                .nodes
                .insert(device.node.clone(), current.clone())
                .unwrap_or_default();
            for old in before.difference(&current) {
                tracing::info!(topic = %old, "discovery_removed");
                retained(old.clone(), Vec::new());
            }
        }
    }
    if !o.discovery_pending.is_empty() {
        return out;
    }
    // The pass is complete.
    o.discovery_in_pass = false;
    let full = std::mem::take(&mut o.discovery_full);
    if o.discovery_synced {
        if full {
            // Nodes we listed before that this pass did not publish: devices taken out of the
            // configuration (or a changed base topic).
            let mut live: BTreeSet<String> = fleet
                .ids()
                .iter()
                .map(|d| discovery::device_node(t, d))
                .collect();
            live.insert(discovery::bridge_node(t));
            let gone: Vec<String> = o
                .known_discovery
                .nodes
                .keys()
                .filter(|n| !live.contains(*n))
                .cloned()
                .collect();
            for node in gone {
                for old in o.known_discovery.nodes.remove(&node).unwrap_or_default() {
                    tracing::info!(topic = %old, "discovery_removed");
                    retained(old, Vec::new());
                }
            }
        }
        retained(
            t.bridge_discovery_list(),
            o.known_discovery.to_payload(t.prefix()),
        );
    }
    out
}

async fn on_session(shared: &Shared, client: &MqttClient) {
    let t = &shared.topics;
    for topic in t.subscriptions() {
        if let Err(e) = client.subscribe(topic, shared.qos).await {
            tracing::warn!(error = %e, "mqtt_subscribe_failed");
        }
    }
    let synced = shared.lock().discovery_synced;
    if !synced {
        // Read our retained list of discovery topics; the sync marker, published after the
        // subscription, arrives after any retained replay on this connection.
        let sync = t.bridge_discovery_sync(&shared.settings.client_id);
        let _ = client.subscribe(t.bridge_discovery_list(), 1).await;
        let _ = client.subscribe(sync.clone(), 1).await;
        let _ = client.publish(sync, 1, false, "sync").await;
    }
    let _ = client
        .publish(t.bridge_state(), shared.qos, true, "online")
        .await;
    shared.republish_all();
}

async fn run_publisher(shared: Arc<Shared>, client: MqttClient, store: Option<Arc<dyn Store>>) {
    // Before the first connection: the first retained `<dev>/controls` carries stored values,
    // and no command (which needs the subscriptions made in `on_session`) can race the restore.
    if let Some(store) = store {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = restore_controls(&shared, store.as_ref()) => {}
        }
    }
    let mut conn = shared.connected.subscribe();
    let mut session_seen = 0;
    let mut last_discovery: Option<Instant> = None;
    let mut session_start = Instant::now();
    loop {
        if shared.cancel.is_cancelled() {
            break;
        }
        if !*conn.borrow_and_update() {
            tokio::select! {
                _ = shared.cancel.cancelled() => break,
                r = conn.changed() => if r.is_err() { break },
            }
            continue;
        }
        let session = shared.session.load(Ordering::SeqCst);
        if session != session_seen {
            session_seen = session;
            session_start = Instant::now();
            on_session(&shared, &client).await;
        }
        let (pending, in_pass, synced) = {
            let o = shared.lock();
            (
                !o.discovery_pending.is_empty(),
                o.discovery_in_pass,
                o.discovery_synced,
            )
        };
        // A pass waits for our retained list (so it can remove stale configs), but not forever:
        // a broker that withholds it (ACL) still gets discovery.
        let mut next_pass = last_discovery.map(|t| t + DISCOVERY_MIN_GAP);
        if !synced {
            next_pass = next_pass.max(Some(session_start + DISCOVERY_SYNC_WAIT));
        }
        let discovery_due = next_pass.is_none_or(|t| Instant::now() >= t);
        let work = take_work_with(&shared, discovery_due);
        let replies = std::mem::take(&mut shared.lock().replies);
        if pending && discovery_due && !in_pass {
            last_discovery = Some(Instant::now());
        }
        if work.is_empty() && replies.is_empty() {
            let retry = (pending && !discovery_due && !in_pass)
                .then_some(next_pass)
                .flatten();
            tokio::select! {
                _ = shared.cancel.cancelled() => break,
                _ = shared.notify.notified() => {}
                _ = conn.changed() => {}
                _ = tokio::time::sleep_until(retry.unwrap_or_else(Instant::now)), if retry.is_some() => {}
            }
            continue;
        }
        for m in work {
            let qos = m.qos.unwrap_or(shared.qos);
            let fut = client.publish(m.topic, qos, m.retain, m.payload);
            tokio::select! {
                _ = shared.cancel.cancelled() => return,
                r = fut => if let Err(e) = r {
                    tracing::warn!(error = %e, "mqtt_publish_failed");
                },
            }
        }
        for r in replies {
            // Header, topic and property overhead bounded by 32 bytes.
            let correlation = r.to.correlation.as_ref().map_or(0, |c| c.len());
            let size = r.to.topic.len() + r.payload.len() + correlation + 32;
            if shared.oversized(&r.to.topic, size) {
                continue;
            }
            let qos = shared.settings.response_qos;
            let fut =
                client.publish_correlated(r.to.topic, qos, false, r.payload, r.to.correlation);
            tokio::select! {
                _ = shared.cancel.cancelled() => return,
                r = fut => if let Err(e) = r {
                    tracing::warn!(error = %e, "mqtt_reply_failed");
                },
            }
        }
    }
}

/// Loads every device's remembered controls from the store in one query (bounded by
/// [`STORE_TIMEOUT`]; a failure keeps the defaults and is logged).
async fn restore_controls(shared: &Shared, store: &dyn Store) {
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
                shared.lock().controls.insert(dev.clone(), c);
                shared.set_retained(shared.topics.controls(&dev), payload);
            }
            Err(e) => tracing::warn!(device = %dev, error = %e, "controls_document_unreadable"),
        }
    }
}

/// Writes changed controls to the store, off the dispatcher's path. A failed write keeps the
/// device pending (retried after a pause or the next change) and is logged once per outage;
/// the in-memory value applies meanwhile. Pending writes are flushed once on shutdown.
async fn run_controls_writer(shared: Arc<Shared>, store: Arc<dyn Store>) {
    const RETRY: Duration = Duration::from_secs(5);
    let mut failing = false;
    loop {
        let stopping = shared.cancel.is_cancelled();
        let batch: Vec<(DeviceId, Controls)> = {
            let mut o = shared.lock();
            let devs = std::mem::take(&mut o.unsaved_controls);
            devs.into_iter()
                .filter_map(|d| o.controls.get(&d).cloned().map(|c| (d, c)))
                .collect()
        };
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
                    shared.lock().unsaved_controls.insert(dev);
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

async fn run_watchdog(shared: Arc<Shared>) {
    let limit = shared.settings.offline_after();
    let mut tick = tokio::time::interval((limit / 5).max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let silent: Vec<DeviceId> = {
            let o = shared.lock();
            o.last_sample
                .iter()
                .filter(|(d, at)| {
                    now.duration_since(**at) > limit && o.online.get(*d) == Some(&true)
                })
                .map(|(d, _)| d.clone())
                .collect()
        };
        for d in silent {
            tracing::warn!(device = %d, "device_silent");
            shared.set_online(&d, false);
        }
    }
}

/// The copy-to address of an MQTT 5 request, when it gave a valid one (a bad one is logged
/// and ignored: the documented response topic still gets the answer).
fn reply_to(shared: &Shared, p: &IncomingPublish) -> Option<ReplyTo> {
    let topic = p.response_topic.as_ref()?;
    if let Err(why) = shared.topics.check_response_topic(topic) {
        tracing::warn!(topic = %p.topic, response_topic = %topic.escape_debug(), reason = %why, "response_topic_ignored");
        return None;
    }
    if let Some(data) = &p.correlation_data
        && data.len() > MAX_CORRELATION_DATA
    {
        tracing::warn!(topic = %p.topic, bytes = data.len(), max = MAX_CORRELATION_DATA, "response_topic_ignored: correlation data too long");
        return None;
    }
    Some(ReplyTo {
        topic: topic.clone(),
        correlation: p.correlation_data.clone(),
    })
}

async fn run_dispatcher(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<IncomingPublish>,
    router: Arc<RequestRouter>,
) {
    let limit = Arc::new(Semaphore::new(32));
    let tasks = TaskTracker::new();
    loop {
        let p = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            p = rx.recv() => match p { Some(p) => p, None => break },
        };
        let kind = shared.topics.classify(&p.topic);
        match kind {
            Incoming::HaStatus => {
                if p.payload.as_ref() == b"online" {
                    let s = shared.clone();
                    tasks.spawn(async move {
                        let max = s.settings.birth_delay_max.as_millis() as u64;
                        let delay = rand::rng().random_range(0..=max);
                        tokio::select! {
                            _ = s.cancel.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
                        }
                        tracing::info!("ha_birth_republish");
                        s.republish_all();
                        s.notify.notify_one();
                    });
                }
            }
            Incoming::DiscoveryList => {
                let mut o = shared.lock();
                if !o.discovery_synced {
                    o.known_discovery =
                        discovery::PublishedConfigs::parse(&p.payload, shared.topics.prefix());
                }
            }
            Incoming::DiscoverySync => {
                let mut o = shared.lock();
                if !o.discovery_synced {
                    o.discovery_synced = true;
                    drop(o);
                    shared.discover_all();
                    shared.notify.notify_one();
                }
            }
            Incoming::Set(_) | Incoming::SetField(..) | Incoming::Request(_) => {
                if p.retain {
                    if !p.payload.is_empty() {
                        tracing::warn!(topic = %p.topic, "retained_command_cleared");
                        shared.push_event(p.topic.clone(), Vec::new(), true);
                    }
                    continue;
                }
                if p.payload.is_empty() {
                    // An empty payload is a retained-message deletion (ours or someone's).
                    continue;
                }
                let reply = reply_to(&shared, &p);
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    break;
                };
                let s = shared.clone();
                let r = router.clone();
                tasks.spawn(async move {
                    let reply = reply.as_ref();
                    match kind {
                        Incoming::Request(action) => {
                            let max = s.settings.max_payload;
                            let text = commands::decode_text(&p.payload, max);
                            let resp = r.handle(&action, text).await;
                            s.answer(
                                s.topics.bridge_response(&action),
                                serde_json::to_vec(&resp).unwrap_or_default(),
                                reply,
                            );
                        }
                        Incoming::Set(dev) => {
                            let parsed = commands::parse_set(&p.payload, s.settings.max_payload);
                            handle_command(&s, &dev, parsed, &p.payload, reply).await;
                        }
                        Incoming::SetField(dev, field) => {
                            let parsed =
                                commands::parse_field(&field, &p.payload, s.settings.max_payload);
                            handle_command(&s, &dev, parsed, &p.payload, reply).await;
                        }
                        _ => {}
                    }
                    drop(permit);
                });
            }
            Incoming::Other => {}
        }
    }
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
}

async fn handle_command(
    s: &Shared,
    dev_level: &str,
    parsed: Result<Parsed, Refusal>,
    raw: &[u8],
    reply: Option<&ReplyTo>,
) {
    let parsed = match parsed {
        Ok(p) => p,
        Err(r) => {
            tracing::info!(device = dev_level, error = %r.error, "command_refused");
            s.respond(dev_level, &CommandResponse::error(r.id, r.error), reply);
            return;
        }
    };
    let id = parsed.id.clone();
    let Some(dev) = DeviceId::parse(dev_level)
        .ok()
        .filter(|d| s.commands.fleet().get(d).is_some())
    else {
        s.respond(
            dev_level,
            &CommandResponse::error(id, format!("unknown device '{dev_level}'")),
            reply,
        );
        return;
    };
    let commands = match parsed.action {
        Action::Submit(c) => c,
        Action::RememberPassivePower(p) => {
            s.publish_controls(&dev, |c| c.passive_power = p);
            s.respond(
                dev_level,
                &CommandResponse::ok(id, json!({ "passive_power": p }), false),
                reply,
            );
            return;
        }
        Action::RememberPassiveDuration(d) => {
            s.publish_controls(&dev, |c| c.passive_duration = d);
            s.respond(
                dev_level,
                &CommandResponse::ok(id, json!({ "passive_duration": d }), false),
                reply,
            );
            return;
        }
        Action::ApplyPassive => {
            let c = s.lock().controls.get(&dev).cloned().unwrap_or_default();
            vec![Command::SetMode(ModeConfig::Passive {
                power: crate::domain::Watts(c.passive_power),
                cd_time: c.passive_duration,
            })]
        }
    };
    let audit: Value = serde_json::from_slice(raw)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into_owned()));
    let mut reports = Vec::new();
    let mut first_error: Option<String> = None;
    let mut all_verified = true;
    let many = commands.len() > 1;
    let mut bookkeeping = Vec::with_capacity(commands.len());
    for (i, cmd) in commands.iter().enumerate() {
        let intent = intent_for(&dev, cmd, Utc::now());
        let (result, book) = s
            .commands
            .apply(
                dev.as_str(),
                cmd,
                CommandSource::Mqtt,
                audit.clone(),
                intent,
            )
            .await;
        bookkeeping.push(book);
        match result {
            Ok(r) => {
                all_verified &= r.verified;
                remember(s, &dev, cmd);
                reports
                    .push(json!({ "status": "ok", "applied": r.applied, "verified": r.verified }));
            }
            Err(e) => {
                all_verified = false;
                let msg = if many {
                    format!("slots[{i}]: {e}")
                } else {
                    e.to_string()
                };
                first_error.get_or_insert(msg.clone());
                reports.push(json!({ "status": "error", "error": msg }));
            }
        }
    }
    let resp = match (first_error, many) {
        (None, false) => {
            let applied = reports
                .pop()
                .and_then(|mut r| r.get_mut("applied").map(Value::take))
                .unwrap_or(Value::Null);
            CommandResponse::ok(id, applied, all_verified)
        }
        (None, true) => CommandResponse::ok(id, Value::Array(reports), all_verified),
        (Some(e), _) => {
            let mut r = CommandResponse::error(id, e);
            if many {
                r.applied = Some(Value::Array(reports));
            }
            r
        }
    };
    s.respond(dev_level, &resp, reply);
    // The answer does not wait on the database; the records follow it, in order.
    for book in bookkeeping {
        if s.records.send(book).await.is_err() {
            tracing::warn!(device = %dev, "command_not_recorded_shutting_down");
        }
    }
}

/// Applied commands waiting to be recorded; a full queue holds the next command back.
const RECORD_QUEUE: usize = 1024;

/// Persists applied commands (desired state and audit row) one after the other, in the order
/// they were applied, after their answers went out; at shutdown, what is queued is still written
/// (for at most [`RECORD_DRAIN`]).
/// One writer keeps a burst of commands from taking every database connection at once.
async fn run_recorder(mut rx: mpsc::Receiver<Bookkeeping>, cancel: CancellationToken) {
    loop {
        let book = tokio::select! {
            biased;
            b = rx.recv() => match b {
                Some(b) => b,
                None => return,
            },
            _ = cancel.cancelled() => break,
        };
        book.persist().await;
    }
    // Shutdown: what is queued is still written, within a bound (the database may be down).
    let deadline = Instant::now() + RECORD_DRAIN;
    while let Ok(book) = rx.try_recv() {
        if tokio::time::timeout_at(deadline, book.persist())
            .await
            .is_err()
        {
            let lost = 1 + std::iter::from_fn(|| rx.try_recv().ok()).count();
            tracing::warn!(lost, "commands_not_recorded_at_shutdown");
            return;
        }
    }
}

/// How long shutdown waits for queued command records.
const RECORD_DRAIN: Duration = Duration::from_secs(3);

fn remember(s: &Shared, dev: &DeviceId, cmd: &Command) {
    match cmd {
        Command::SetMode(ModeConfig::Passive { power, cd_time }) => {
            let (p, d) = (power.0, *cd_time);
            s.publish_controls(dev, |c| {
                c.passive_power = p;
                c.passive_duration = d;
            })
        }
        Command::SetDod { value } => {
            let v = value.0;
            s.publish_controls(dev, |c| c.dod = Some(v))
        }
        Command::SetLed { on } => {
            let v = *on;
            s.publish_controls(dev, |c| c.led = Some(v))
        }
        Command::SetBleAdv { on } => {
            let v = *on;
            s.publish_controls(dev, |c| c.ble_adv = Some(v))
        }
        Command::SetMode(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Fleet;
    use crate::domain::{Percent, Severity};

    fn offline_bridge(queue: usize) -> (MqttHandle, CancellationToken) {
        offline_bridge_with(queue, Fleet::default())
    }

    fn offline_bridge_with(queue: usize, fleet: Fleet) -> (MqttHandle, CancellationToken) {
        // Port 1 on loopback refuses connections: the bridge never connects, so the outbox
        // keeps everything and we can inspect it.
        let s = MqttSettings {
            port: 1,
            queue_capacity: queue,
            reconnect_min: Duration::from_secs(5),
            reconnect_max: Duration::from_secs(5),
            ..Default::default()
        };
        let cancel = CancellationToken::new();
        let service = CommandService::new(fleet, None, None, false);
        let (h, _join) =
            MqttBridge::start(s, service, RequestRouter::new(), cancel.clone()).unwrap();
        (h, cancel)
    }

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
        let (h, stop) = offline_bridge_with(100, fleet);
        // As if our (empty) retained list had been read: the pass may also publish the list.
        h.shared.lock().discovery_synced = true;
        let configs = |w: &[Msg]| w.iter().filter(|m| m.topic.ends_with("/config")).count();
        let is_list = |m: &Msg| m.topic == "marstek/bridge/discovery";

        let mut turns = vec![take_work_with(&h.shared, true)];
        // A started pass continues although a new one would not be due.
        loop {
            let w = take_work_with(&h.shared, false);
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
        let published = discovery::PublishedConfigs::parse(&list.payload, "homeassistant");
        assert_eq!(published.nodes.len(), 41);
        let total: usize = turns.iter().map(|t| configs(t)).sum();
        assert_eq!(published.topics().count(), total);
        assert!(list.payload.len() < 2048, "{} bytes", list.payload.len());

        // Nothing pending: no new pass, even when one would be due.
        assert!(take_work_with(&h.shared, true).is_empty());
        // One battery asks again: only its own configs and the list go out.
        h.shared
            .lock()
            .discovery_pending
            .insert(Node::Battery(DeviceId::parse("bat07").unwrap()));
        let w = take_work_with(&h.shared, true);
        assert_eq!(configs(&w), per_battery);
        assert!(
            w.iter()
                .filter(|m| m.topic.ends_with("/config"))
                .all(|m| m.topic.contains("_bat07/"))
        );
        assert!(w.iter().any(is_list));
        stop.cancel();
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_message_over_the_packet_limit_is_refused_and_counted() {
        let (h, cancel) = offline_bridge(10);
        h.shared
            .push_event("marstek/bridge/alert".into(), vec![b'x'; MAX_PACKET], false);
        h.shared
            .push_event("marstek/bridge/alert".into(), b"small".to_vec(), false);
        let work = take_work(&h.shared);
        let alerts: Vec<&Msg> = work
            .iter()
            .filter(|m| m.topic == "marstek/bridge/alert")
            .collect();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].payload, b"small");
        assert_eq!(h.dropped(), 1);
        cancel.cancel();
    }

    #[tokio::test]
    async fn state_is_latest_wins_and_events_are_bounded() {
        let (h, cancel) = offline_bridge(3);
        let dev = DeviceId::parse("d1").unwrap();
        for soc in 0..100u8 {
            let mut s = Sample::empty(dev.clone(), Utc::now());
            s.soc = Some(Percent(soc));
            h.publish_sample(s);
        }
        for i in 0..5 {
            h.publish_alert(&Alert {
                kind: AlertKind::JobFailed,
                severity: Severity::Warning,
                device: None,
                message: format!("a{i}"),
                value: None,
                threshold: None,
                state: AlertState::Raised,
                at: Utc::now(),
            });
        }
        assert_eq!(h.dropped(), 2);
        let work = take_work(&h.shared);
        let states: Vec<&Msg> = work
            .iter()
            .filter(|m| m.topic == "marstek/d1/state")
            .collect();
        assert_eq!(states.len(), 1, "one state per device, the latest");
        let v: Value = serde_json::from_slice(&states[0].payload).unwrap();
        assert_eq!(v["soc"], 99);
        assert!(v["last_seen"].as_str().unwrap().ends_with('Z'));
        let alerts: Vec<&Msg> = work
            .iter()
            .filter(|m| m.topic == "marstek/bridge/alert")
            .collect();
        assert_eq!(alerts.len(), 3, "bounded queue keeps the newest");
        assert!(
            work.iter()
                .any(|m| m.topic == "marstek/d1/availability" && m.payload == b"online")
        );
        assert!(take_work(&h.shared).is_empty(), "nothing twice");
        assert!(!*h.connected().borrow());
        cancel.cancel();
    }

    #[test]
    fn invalid_settings_refuse_to_start() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let s = MqttSettings {
                base_topic: "a/#".into(),
                ..Default::default()
            };
            let service = CommandService::new(Fleet::default(), None, None, false);
            let r = MqttBridge::start(s, service, RequestRouter::new(), CancellationToken::new());
            assert!(matches!(r, Err(MqttError::Settings(e)) if e.contains("base_topic")));
        });
    }
}
