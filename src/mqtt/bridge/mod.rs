//! The running MQTT bridge, split by concern. [`MqttBridge::start`] spawns these tasks, each
//! owning its own state:
//! - `connection` — drives rumqttc's `EventLoop` and nothing else (reconnect, backoff, the
//!   `offline` goodbye at shutdown);
//! - `publisher` — publishes from the latest-wins `outbox::Outbox` and owns the Home Assistant
//!   `discovery_pass::DiscoveryPass`;
//! - `dispatch` — classifies incoming publishes and runs command/request handlers (one task
//!   each, at most 32 at once, plus a delayed republish after an HA birth);
//! - `mirror` — publishes availability (`control::Presence`), remembered controls
//!   (`control::RememberedControls`) and intents (`control::IntentBoard`) as retained
//!   documents when they change;
//! - `fleet` — a command on `<base>/fleet/set…` applied to every battery, one answer;
//! - `recorder` — persists applied commands (audit row, desired state) after their answers;
//! - `refusals` — audit rows of refused commands, bounded in rate and size.
//!
//! Talks to the broker and to the control layer (`CommandService`, `Presence`); never to a
//! device or the store directly (command records go through `control::Bookkeeping`). Shutdown:
//! cancel the token; the bridge publishes `offline`, disconnects, and its join handle ends once
//! every task has.

mod connection;
mod discovery_pass;
mod dispatch;
mod fleet;
mod handle;
mod mirror;
mod outbox;
mod publisher;
mod recorder;
mod refusals;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use handle::MqttHandle;

use self::discovery_pass::DiscoveryEvent;
use self::mirror::Mirror;
use self::outbox::{Msg, Outbox, Reply, ReplyTo};
use super::client::{ClientError, ClientOptions, IncomingPublish, MqttClient, Will};
use super::commands::CommandResponse;
use super::requests::RequestRouter;
use super::settings::MqttSettings;
use super::topics::Topics;
use crate::control::{Bookkeeping, CommandService, Presence};
use crate::domain::{AlertKind, DeviceId, Sample};

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

/// A topic outside the bridge's own whose raw payloads go to a channel (the grid meter for the
/// regulator): subscribed on the bridge's connection, no second client.
#[derive(Debug, Clone)]
pub struct Tap {
    /// The exact topic (no wildcards).
    pub topic: String,
    /// Where its payloads go; a full channel drops the payload (counted as dropped).
    pub tx: mpsc::Sender<Vec<u8>>,
}

/// Largest MQTT 5 Correlation Data echoed back, bytes; a larger one is ignored with its topic.
const MAX_CORRELATION_DATA: usize = 1024;

/// Largest MQTT packet the bridge sends or accepts (bytes); rumqttc drops the connection on a
/// larger outgoing one, so such a message is refused before it reaches the client.
pub(crate) const MAX_PACKET: usize = super::client::MAX_PACKET_SIZE as usize;

/// What the bridge's tasks and its handle share: settings, the command service, and one lock
/// per piece of state (never held across an await).
struct Shared {
    topics: Topics,
    settings: MqttSettings,
    qos: u8,
    commands: CommandService,
    /// What the publisher must send.
    outbox: Mutex<Outbox>,
    /// Wakes the publisher.
    notify: Notify,
    /// Events for the discovery pass (owned by the publisher).
    discovery: mpsc::UnboundedSender<DiscoveryEvent>,
    /// Active alert kinds per device (the retained `<dev>/alerts`).
    alerts: Mutex<BTreeMap<DeviceId, BTreeSet<AlertKind>>>,
    /// Applied commands to record, in order, after their answers (see the recorder).
    records: mpsc::Sender<Bookkeeping>,
    /// Rate limit of the audit rows of refused commands.
    refusals: Mutex<refusals::RefusalLimiter>,
    /// The last `bridge/info` document and the catalogue match of each identified battery
    /// (merged into it as `firmware`).
    info: Mutex<handle::InfoDoc>,
    connected: watch::Sender<bool>,
    session: AtomicU64,
    dropped: AtomicU64,
    cancel: CancellationToken,
    /// Topics whose payloads go to a channel as they are.
    taps: Vec<Tap>,
}

/// Locks a mutex; a panic while holding it cannot leave these plain structs inconsistent, so a
/// poisoned lock is recovered.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        lock(&self.outbox)
    }

    fn set_retained(&self, topic: String, payload: Vec<u8>) {
        self.outbox().set_retained(topic, payload);
        self.notify.notify_one();
    }

    fn push_event(&self, topic: String, payload: Vec<u8>, retain: bool) {
        self.push_event_qos(topic, payload, retain, None);
    }

    fn push_event_qos(&self, topic: String, payload: Vec<u8>, retain: bool, qos: Option<u8>) {
        let msg = Msg {
            topic,
            payload,
            retain,
            qos,
        };
        let dropped = self.outbox().push_event(msg);
        self.count_drop(dropped);
        self.notify.notify_one();
    }

    /// Counts and logs a message dropped from a full queue.
    fn count_drop(&self, dropped: bool) {
        if dropped {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(dropped = n, "mqtt_message_dropped");
        }
    }

    /// Tells the discovery pass something and wakes the publisher.
    fn discovery(&self, event: DiscoveryEvent) {
        // The publisher holds the receiver as long as anyone holds `Shared`.
        let _ = self.discovery.send(event);
        self.notify.notify_one();
    }

    /// Queues discovery, every state and every retained document again.
    fn republish_all(&self) {
        self.outbox().republish_all();
        self.discovery(DiscoveryEvent::All);
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

    /// Publishes an answer on its documented topic and, for an MQTT 5 request that carried a
    /// Response Topic, a copy there with the request's Correlation Data.
    fn answer(&self, topic: String, payload: Vec<u8>, reply: Option<&ReplyTo>) {
        if let Some(to) = reply {
            let reply = Reply {
                to: to.clone(),
                payload: payload.clone(),
            };
            let dropped = self.outbox().push_reply(reply);
            self.count_drop(dropped);
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

/// The retained `<base>/bridge/state` payload: `{"state":"online"}` or `{"state":"offline"}`.
/// JSON like the batteries' `<base>/<dev>/state`, so one `<base>/+/state` subscription always
/// parses (Home Assistant reads it with `value_template: {{ value_json.state }}`).
pub fn bridge_state_payload(online: bool) -> Vec<u8> {
    let state = if online { "online" } else { "offline" };
    serde_json::to_vec(&json!({ "state": state })).unwrap_or_default()
}

/// Entry point of the MQTT adapter.
pub struct MqttBridge;

fn client_options(s: &MqttSettings, topics: &Topics) -> Result<ClientOptions, MqttError> {
    let mut o = ClientOptions::from_settings(s)?;
    o.last_will = Some(Will {
        topic: topics.bridge_state(),
        payload: bridge_state_payload(false),
        qos: s.qos,
        retain: true,
    });
    Ok(o)
}

impl MqttBridge {
    /// Validates `settings`, connects (in the background, with retries) and returns a handle and
    /// the join handle of the bridge (ends after `cancel`, once `offline` is published).
    /// Commands go to `commands`; availability comes from `presence`.
    pub fn start(
        settings: MqttSettings,
        commands: CommandService,
        presence: &Presence,
        router: RequestRouter,
        cancel: CancellationToken,
    ) -> Result<(MqttHandle, JoinHandle<()>), MqttError> {
        Self::start_with_taps(settings, commands, presence, router, Vec::new(), cancel)
    }

    /// [`start`](Self::start), also subscribing to the `taps` and forwarding their payloads.
    pub fn start_with_taps(
        settings: MqttSettings,
        commands: CommandService,
        presence: &Presence,
        router: RequestRouter,
        taps: Vec<Tap>,
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
        let (records, records_rx) = mpsc::channel::<Bookkeeping>(recorder::RECORD_QUEUE);
        let (discovery, discovery_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            records,
            refusals: Mutex::default(),
            info: Mutex::default(),
            qos: settings.qos,
            topics,
            outbox: Mutex::new(Outbox::new(settings.queue_capacity)),
            settings,
            commands,
            notify: Notify::new(),
            discovery,
            alerts: Mutex::default(),
            connected,
            session: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            cancel: cancel.clone(),
            taps,
        });
        let handle = MqttHandle::new(shared.clone());
        handle.publish_initial_documents();
        let controls = shared.commands.controls().subscribe();
        let intents = shared.commands.intents().clone();
        let mut mirror = Mirror::new(shared.clone(), presence.subscribe(), controls, intents);
        mirror.sync_presence();
        mirror.sync_controls();
        mirror.sync_intents();
        shared.discovery(DiscoveryEvent::All);

        let (in_tx, in_rx) = mpsc::channel::<IncomingPublish>(1024);
        let tracker = TaskTracker::new();
        tracker.spawn(mirror.run());
        tracker.spawn(publisher::run_publisher(
            shared.clone(),
            client.clone(),
            discovery_rx,
        ));
        tracker.spawn(dispatch::run_dispatcher(
            shared.clone(),
            in_rx,
            Arc::new(router),
        ));
        tracker.spawn(recorder::run_recorder(records_rx, cancel.clone()));
        tracker.close();
        let join = tokio::spawn(async move {
            connection::run_eventloop(shared, client, eventloop, in_tx).await;
            tracker.wait().await;
        });
        Ok((handle, join))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;

    use super::*;
    use crate::control::Fleet;
    use crate::domain::{Alert, Percent, Severity};

    fn offline_bridge(queue: usize) -> (MqttHandle, CancellationToken) {
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
        let service = CommandService::new(Fleet::default(), None, None, false);
        let presence = Presence::fixed([]);
        let (h, _join) =
            MqttBridge::start(s, service, &presence, RequestRouter::new(), cancel.clone()).unwrap();
        (h, cancel)
    }

    /// What the publisher would send from the outbox now (as in its turn).
    fn take_work(shared: &Shared) -> Vec<Msg> {
        let (mut work, _) = shared.outbox().take(&shared.topics);
        work.retain(|m| !shared.oversized(&m.topic, m.packet_size()));
        work
    }

    #[tokio::test]
    async fn a_message_over_the_packet_limit_is_refused_and_counted() {
        let (h, cancel) = offline_bridge(10);
        let shared = h.shared();
        shared.push_event("marstek/bridge/alert".into(), vec![b'x'; MAX_PACKET], false);
        shared.push_event("marstek/bridge/alert".into(), b"small".to_vec(), false);
        let work = take_work(shared);
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
            h.publish_alert(&Alert::raised(
                AlertKind::JobFailed,
                Severity::Warning,
                None,
                format!("a{i}"),
                Utc::now(),
            ));
        }
        assert_eq!(h.dropped(), 2);
        let work = take_work(h.shared());
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
        assert!(take_work(h.shared()).is_empty(), "nothing twice");
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
            let presence = Presence::fixed([]);
            let r = MqttBridge::start(
                s,
                service,
                &presence,
                RequestRouter::new(),
                CancellationToken::new(),
            );
            assert!(matches!(r, Err(MqttError::Settings(e)) if e.contains("base_topic")));
        });
    }
}
