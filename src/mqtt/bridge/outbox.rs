//! The publisher's queue, as a plain struct: the latest state of each device (latest wins),
//! the retained documents (republished only when changed or on a new session), and two bounded
//! queues of non-retained messages (events and MQTT 5 replies) that drop their oldest entry when
//! full. No I/O and no lock of its own: the bridge keeps it behind one `Mutex`, taken briefly by
//! the producers and by the publisher task that drains it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::state_payload;
use crate::domain::{DeviceId, Sample};
use crate::mqtt::topics::Topics;

/// One message to publish.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Msg {
    /// Topic.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Retain flag.
    pub retain: bool,
    /// QoS override (responses); None = `settings.qos`.
    pub qos: Option<u8>,
}

impl Msg {
    /// A retained message at the bridge's QoS.
    pub fn retained(topic: String, payload: Vec<u8>) -> Self {
        Self {
            topic,
            payload,
            retain: true,
            qos: None,
        }
    }

    /// Bytes of the PUBLISH packet beyond the payload and topic bound: fixed header (≤ 5),
    /// topic length (2) and packet id (2).
    pub fn packet_size(&self) -> usize {
        self.topic.len() + self.payload.len() + 9
    }
}

/// Where an MQTT 5 requester asked for a copy of the answer (Response Topic property), with
/// the Correlation Data to echo.
#[derive(Debug, Clone)]
pub(super) struct ReplyTo {
    /// The requester's Response Topic.
    pub topic: String,
    /// Correlation Data to echo, if any.
    pub correlation: Option<Bytes>,
}

/// An answer copied to a requester's Response Topic.
pub(super) struct Reply {
    /// Where to send it.
    pub to: ReplyTo,
    /// The answer.
    pub payload: Vec<u8>,
}

impl Reply {
    /// Size of the PUBLISH packet, bytes: header, topic and properties bounded by 32 bytes.
    pub fn packet_size(&self) -> usize {
        let correlation = self.to.correlation.as_ref().map_or(0, |c| c.len());
        self.to.topic.len() + self.payload.len() + correlation + 32
    }
}

/// What the publisher must (re)send; see the module doc.
pub(super) struct Outbox {
    /// Bound of `events` and `replies`.
    capacity: usize,
    latest: BTreeMap<DeviceId, Sample>,
    dirty_states: BTreeSet<DeviceId>,
    retained: BTreeMap<String, Vec<u8>>,
    dirty_retained: BTreeSet<String>,
    events: VecDeque<Msg>,
    replies: VecDeque<Reply>,
}

/// Appends to a bounded queue, dropping the oldest entry when full; true when one was dropped.
fn push_bounded<T>(queue: &mut VecDeque<T>, capacity: usize, item: T) -> bool {
    let dropped = queue.len() >= capacity;
    if dropped {
        queue.pop_front();
    }
    queue.push_back(item);
    dropped
}

impl Outbox {
    /// An empty outbox whose non-retained queues hold at most `capacity` messages each.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            latest: BTreeMap::new(),
            dirty_states: BTreeSet::new(),
            retained: BTreeMap::new(),
            dirty_retained: BTreeSet::new(),
            events: VecDeque::new(),
            replies: VecDeque::new(),
        }
    }

    /// Replaces a device's state to publish (latest wins).
    pub fn set_state(&mut self, sample: Sample) {
        self.dirty_states.insert(sample.device.clone());
        self.latest.insert(sample.device.clone(), sample);
    }

    /// Sets a retained document; it is published again only when the payload changed.
    pub fn set_retained(&mut self, topic: String, payload: Vec<u8>) {
        if self.retained.get(&topic) != Some(&payload) {
            self.retained.insert(topic.clone(), payload);
            self.dirty_retained.insert(topic);
        }
    }

    /// Queues a non-retained (or retained-deletion) message; true when the oldest was dropped.
    pub fn push_event(&mut self, msg: Msg) -> bool {
        push_bounded(&mut self.events, self.capacity, msg)
    }

    /// Queues an MQTT 5 reply; true when the oldest was dropped.
    pub fn push_reply(&mut self, reply: Reply) -> bool {
        push_bounded(&mut self.replies, self.capacity, reply)
    }

    /// Marks every state and retained document for republishing (new session, HA birth).
    pub fn republish_all(&mut self) {
        self.dirty_states.extend(self.latest.keys().cloned());
        self.dirty_retained.extend(self.retained.keys().cloned());
    }

    /// Takes what must be sent now, in order: states, retained documents, events; and the ids
    /// of the devices whose state is in it.
    pub fn take(&mut self, topics: &Topics) -> (Vec<Msg>, Vec<DeviceId>) {
        let mut work = Vec::new();
        let mut sampled = Vec::new();
        for d in std::mem::take(&mut self.dirty_states) {
            if let Some(s) = self.latest.get(&d) {
                work.push(Msg::retained(topics.state(&d), state_payload(s)));
                sampled.push(d);
            }
        }
        for t in std::mem::take(&mut self.dirty_retained) {
            if let Some(p) = self.retained.get(&t) {
                let payload = p.clone();
                work.push(Msg::retained(t, payload));
            }
        }
        work.extend(self.events.drain(..));
        (work, sampled)
    }

    /// Takes the queued MQTT 5 replies.
    pub fn take_replies(&mut self) -> VecDeque<Reply> {
        std::mem::take(&mut self.replies)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::Percent;

    fn topics() -> Topics {
        Topics::new("marstek", "homeassistant")
    }

    fn event(i: usize) -> Msg {
        Msg {
            topic: "marstek/bridge/alert".into(),
            payload: format!("a{i}").into_bytes(),
            retain: false,
            qos: None,
        }
    }

    #[test]
    fn state_is_latest_wins_and_sent_once() {
        let mut o = Outbox::new(8);
        let dev = DeviceId::parse("d1").unwrap();
        for soc in 0..100u8 {
            let mut s = Sample::empty(dev.clone(), Utc::now());
            s.soc = Some(Percent(soc));
            o.set_state(s);
        }
        let (work, sampled) = o.take(&topics());
        assert_eq!(sampled, vec![dev.clone()]);
        assert_eq!(work.len(), 1);
        assert_eq!(work[0].topic, "marstek/d1/state");
        assert!(work[0].retain);
        let v: serde_json::Value = serde_json::from_slice(&work[0].payload).unwrap();
        assert_eq!(v["soc"], 99);
        assert!(o.take(&topics()).0.is_empty(), "nothing twice");
        o.republish_all();
        assert_eq!(o.take(&topics()).1, vec![dev], "republished on demand");
    }

    #[test]
    fn events_are_bounded_and_keep_the_newest() {
        let mut o = Outbox::new(3);
        let dropped = (0..5).filter(|i| o.push_event(event(*i))).count();
        assert_eq!(dropped, 2);
        let (work, _) = o.take(&topics());
        let payloads: Vec<&[u8]> = work.iter().map(|m| m.payload.as_slice()).collect();
        assert_eq!(payloads, [b"a2", b"a3", b"a4"]);
    }

    #[test]
    fn retained_documents_go_out_again_only_when_changed() {
        let mut o = Outbox::new(3);
        o.set_retained("marstek/bridge/info".into(), b"1".to_vec());
        assert_eq!(o.take(&topics()).0.len(), 1);
        o.set_retained("marstek/bridge/info".into(), b"1".to_vec());
        assert!(o.take(&topics()).0.is_empty(), "unchanged: not sent again");
        o.set_retained("marstek/bridge/info".into(), b"2".to_vec());
        let (work, _) = o.take(&topics());
        assert_eq!(
            work,
            vec![Msg::retained("marstek/bridge/info".into(), b"2".to_vec())]
        );
    }

    #[test]
    fn replies_are_bounded_like_events() {
        let mut o = Outbox::new(2);
        let reply = |n: u8| Reply {
            to: ReplyTo {
                topic: "r".into(),
                correlation: None,
            },
            payload: vec![n],
        };
        assert!(!o.push_reply(reply(1)));
        assert!(!o.push_reply(reply(2)));
        assert!(o.push_reply(reply(3)));
        let got: Vec<Vec<u8>> = o.take_replies().into_iter().map(|r| r.payload).collect();
        assert_eq!(got, vec![vec![2], vec![3]]);
        assert!(o.take_replies().is_empty());
    }
}
