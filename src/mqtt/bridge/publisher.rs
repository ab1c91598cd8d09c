//! The publisher task: while connected, sends what the outbox and the discovery pass hold, one
//! turn at a time (a chunk of discovery, then states, retained documents, events, replies). On
//! each new session it subscribes and announces `online` first. It owns the [`DiscoveryPass`]
//! (fed by [`DiscoveryEvent`]s from the other tasks) and its pacing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Shared;
use super::discovery_pass::{DiscoveryEvent, DiscoveryPass, PassContext};
use super::outbox::{Msg, Reply};
use crate::mqtt::client::MqttClient;

/// Shortest time between the starts of two discovery passes: devices identifying themselves one
/// after the other (a large fleet at start-up) are folded into one pass instead of one each.
const DISCOVERY_MIN_GAP: Duration = Duration::from_secs(1);

/// Longest wait for our retained discovery list at the start of a session before discovery
/// goes out without it.
const DISCOVERY_SYNC_WAIT: Duration = Duration::from_secs(3);

/// The publisher's own state: the discovery pass, its inbox and its pacing.
struct Publisher {
    shared: Arc<Shared>,
    client: MqttClient,
    pass: DiscoveryPass,
    events: mpsc::UnboundedReceiver<DiscoveryEvent>,
    session_seen: u64,
    session_start: Instant,
    last_discovery: Option<Instant>,
}

/// What one turn must send.
struct Turn {
    work: Vec<Msg>,
    replies: Vec<Reply>,
    /// When nothing is to send: the time a postponed discovery pass becomes due.
    retry: Option<Instant>,
}

/// Runs the publisher until cancelled; see the module doc.
pub(super) async fn run_publisher(
    shared: Arc<Shared>,
    client: MqttClient,
    events: mpsc::UnboundedReceiver<DiscoveryEvent>,
) {
    let mut p = Publisher {
        shared,
        client,
        pass: DiscoveryPass::default(),
        events,
        session_seen: 0,
        session_start: Instant::now(),
        last_discovery: None,
    };
    p.run().await;
}

impl Publisher {
    async fn run(&mut self) {
        let shared = self.shared.clone();
        let mut conn = shared.connected.subscribe();
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
            if session != self.session_seen {
                self.session_seen = session;
                self.session_start = Instant::now();
                self.on_session().await;
            }
            let turn = self.take_turn();
            if turn.work.is_empty() && turn.replies.is_empty() {
                tokio::select! {
                    _ = shared.cancel.cancelled() => break,
                    _ = shared.notify.notified() => {}
                    _ = conn.changed() => {}
                    ev = self.events.recv() => if let Some(ev) = ev {
                        self.pass.apply(ev, shared.commands.fleet());
                    },
                    _ = tokio::time::sleep_until(turn.retry.unwrap_or_else(Instant::now)), if turn.retry.is_some() => {}
                }
                continue;
            }
            if !self.send(turn).await {
                return;
            }
        }
    }

    /// Subscribes, reads our retained discovery list once, announces `online` and queues
    /// everything again.
    async fn on_session(&mut self) {
        let (shared, client) = (&self.shared, &self.client);
        let t = &shared.topics;
        let taps = shared.taps.iter().map(|tap| tap.topic.clone());
        for topic in t.subscriptions().into_iter().chain(taps) {
            if let Err(e) = client.subscribe(topic, shared.qos).await {
                tracing::warn!(error = %e, "mqtt_subscribe_failed");
            }
        }
        if !self.pass.synced() {
            // Read our retained list of discovery topics; the sync marker, published after the
            // subscription, arrives after any retained replay on this connection.
            let sync = t.bridge_discovery_sync(&shared.settings.client_id);
            let _ = client.subscribe(t.bridge_discovery_list(), 1).await;
            let _ = client.subscribe(sync.clone(), 1).await;
            let _ = client.publish(sync, 1, false, "sync").await;
        }
        let _ = client
            .publish(
                t.bridge_state(),
                shared.qos,
                true,
                super::bridge_state_payload(true),
            )
            .await;
        self.pass.discover_all(shared.commands.fleet().ids());
        shared.outbox().republish_all();
    }

    /// Everything to send now: at most one chunk of discovery (a new pass only once due), then
    /// the outbox, without what is too large for one packet.
    fn take_turn(&mut self) -> Turn {
        let shared = &self.shared;
        let fleet = shared.commands.fleet();
        while let Ok(ev) = self.events.try_recv() {
            self.pass.apply(ev, fleet);
        }
        let (queued, sampled) = shared.outbox().take(&shared.topics);
        for dev in &sampled {
            let has_info = fleet.get(dev).is_some_and(|b| b.info().is_some());
            self.pass.on_sample(dev, has_info);
        }
        let (pending, in_pass) = (self.pass.is_pending(), self.pass.in_pass());
        // A pass waits for our retained list (so it can remove stale configs), but not forever:
        // a broker that withholds it (ACL) still gets discovery.
        let mut next_pass = self.last_discovery.map(|t| t + DISCOVERY_MIN_GAP);
        if !self.pass.synced() {
            next_pass = next_pass.max(Some(self.session_start + DISCOVERY_SYNC_WAIT));
        }
        let due = next_pass.is_none_or(|t| Instant::now() >= t);
        let cx = PassContext {
            topics: &shared.topics,
            settings: &shared.settings,
            fleet,
        };
        let mut work = self.pass.turn(due, &cx);
        work.extend(queued);
        work.retain(|m| !shared.oversized(&m.topic, m.packet_size()));
        let replies: Vec<Reply> = shared.outbox().take_replies().into();
        if pending && due && !in_pass {
            self.last_discovery = Some(Instant::now());
        }
        let retry = (pending && !due && !in_pass).then_some(next_pass).flatten();
        Turn {
            work,
            replies,
            retry,
        }
    }

    /// Publishes a turn; false when cancelled meanwhile.
    async fn send(&self, turn: Turn) -> bool {
        let (shared, client) = (&self.shared, &self.client);
        for m in turn.work {
            let qos = m.qos.unwrap_or(shared.qos);
            let fut = client.publish(m.topic, qos, m.retain, m.payload);
            tokio::select! {
                _ = shared.cancel.cancelled() => return false,
                r = fut => if let Err(e) = r {
                    tracing::warn!(error = %e, "mqtt_publish_failed");
                },
            }
        }
        for r in turn.replies {
            if shared.oversized(&r.to.topic, r.packet_size()) {
                continue;
            }
            let qos = shared.settings.response_qos;
            let fut =
                client.publish_correlated(r.to.topic, qos, false, r.payload, r.to.correlation);
            tokio::select! {
                _ = shared.cancel.cancelled() => return false,
                r = fut => if let Err(e) = r {
                    tracing::warn!(error = %e, "mqtt_reply_failed");
                },
            }
        }
        true
    }
}
