//! A probe MQTT client for the integration tests, on the test broker at 127.0.0.1:1883:
//! `connect` returns once every subscription is acknowledged, `wait` /
//! `wait_all` await matching messages under a deadline, `command` sends a command and awaits its
//! answer by id; [`json_probe`] hands `(topic, JSON)` pairs to a channel, on the broker of
//! `TEST_MQTT_URL`, and [`publish_command`] sends a JSON command with its id; [`Probe5`] speaks
//! MQTT 5 with Response Topic and Correlation Data. Touches only the topics a test names.

use std::time::Duration;

use rand::Rng;
use rumqttc::v5 as r5;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The test broker's host and port.
pub const BROKER: (&str, u16) = ("127.0.0.1", 1883);
/// How long a probe waits for what a test expects.
pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// Waits for `n` SUBACKs reported on `rx` by a probe's event-loop task.
pub async fn await_subacks(rx: &mut mpsc::UnboundedReceiver<()>, n: usize) {
    for _ in 0..n {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("suback")
            .expect("probe task alive");
    }
}

/// The broker named by `TEST_MQTT_URL` (`mqtt://host:port`), else 127.0.0.1:1883.
pub fn broker_from_env() -> (String, u16) {
    let url = std::env::var("TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let rest = url.trim_start_matches("mqtt://");
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
    (host.to_string(), port.parse().unwrap_or(1883))
}

/// Connects with `o` (keep-alive 10 s, packets up to 1 MiB, no Nagle), subscribes to every
/// filter and returns once all are acknowledged; each message received goes through `each` to
/// the returned receiver, from the returned event-loop task.
async fn connect_with<T: Send + 'static>(
    mut o: MqttOptions,
    filters: &[String],
    each: fn(rumqttc::Publish) -> T,
) -> (AsyncClient, mpsc::UnboundedReceiver<T>, JoinHandle<()>) {
    o.set_keep_alive(Duration::from_secs(10));
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 64);
    let mut net = el.network_options();
    net.set_tcp_nodelay(true);
    el.set_network_options(net);
    let (tx, rx) = mpsc::unbounded_channel();
    let (sub_tx, mut sub_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(each(p));
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = sub_tx.send(());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    for f in filters {
        client.subscribe(f.clone(), QoS::AtLeastOnce).await.unwrap();
    }
    await_subacks(&mut sub_rx, filters.len()).await;
    (client, rx, task)
}

/// A probe on the broker of [`broker_from_env`] as `client_id`, subscribed to `filters`, whose
/// messages arrive as `(topic, payload)`: the payload parsed as JSON, else as a JSON string.
pub async fn json_probe(
    client_id: String,
    filters: &[String],
) -> (
    AsyncClient,
    mpsc::UnboundedReceiver<(String, Value)>,
    JoinHandle<()>,
) {
    let (host, port) = broker_from_env();
    let o = MqttOptions::new(client_id, host, port);
    connect_with(o, filters, |p| {
        let v = serde_json::from_slice(&p.payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&p.payload).into()));
        (p.topic.clone(), v)
    })
    .await
}

/// Publishes the JSON `command` with `"id": id` added on `topic` (QoS 1, not retained).
pub async fn publish_command(client: &AsyncClient, topic: String, id: &str, mut command: Value) {
    command["id"] = Value::from(id);
    client
        .publish(topic, QoS::AtLeastOnce, false, command.to_string())
        .await
        .unwrap();
}

pub struct Probe {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Msg>,
    task: JoinHandle<()>,
}

impl Probe {
    pub async fn connect(filters: &[String]) -> Probe {
        let id = format!("mbprobe-{}", rand::rng().random::<u64>());
        let o = MqttOptions::new(id, BROKER.0, BROKER.1);
        let (client, rx, task) = connect_with(o, filters, |p| Msg {
            topic: p.topic.clone(),
            payload: p.payload.to_vec(),
            retain: p.retain,
        })
        .await;
        Probe { client, rx, task }
    }

    /// Next message matching `pred` (others are skipped), or panics after `within`.
    pub async fn wait(&mut self, what: &str, within: Duration, pred: impl Fn(&Msg) -> bool) -> Msg {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) if pred(&m) => return m,
                Ok(Some(_)) => {}
                Ok(None) => panic!("probe closed while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Waits until every predicate has matched some message, in any order; returns the matches.
    pub async fn wait_all(
        &mut self,
        what: &str,
        within: Duration,
        preds: &[&dyn Fn(&Msg) -> bool],
    ) -> Vec<Msg> {
        let deadline = tokio::time::Instant::now() + within;
        let mut found: Vec<Option<Msg>> = vec![None; preds.len()];
        while found.iter().any(Option::is_none) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => {
                    for (i, p) in preds.iter().enumerate() {
                        if found[i].is_none() && p(&m) {
                            found[i] = Some(m.clone());
                        }
                    }
                }
                Ok(None) => panic!("probe closed while waiting for {what}"),
                Err(_) => panic!(
                    "timed out waiting for {what}: matched {:?}",
                    found.iter().map(Option::is_some).collect::<Vec<_>>()
                ),
            }
        }
        found.into_iter().flatten().collect()
    }

    pub async fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
            .await
            .unwrap();
    }

    /// Publishes the JSON command `payload` (carrying `"id": id`) on `set_topic`
    /// (`<base>/<dev>/set…`) and returns the next answer on `<base>/<dev>/response`, which must
    /// carry that id. The probe must be subscribed to that response topic.
    pub async fn command(&mut self, set_topic: &str, payload: &str, id: &str) -> Value {
        let dev = set_topic
            .rsplit_once("/set")
            .map(|(dev, _)| dev)
            .expect("a <base>/<dev>/set topic");
        let resp = format!("{dev}/response");
        self.publish(set_topic, payload.as_bytes(), false).await;
        let r = self
            .wait(&format!("answer {id}"), WAIT, |m| m.topic == resp)
            .await
            .json();
        assert_eq!(r["id"], id, "the next answer is not the one to {id}: {r}");
        r
    }

    /// Drains everything that arrives until `quiet` passes without a message.
    pub async fn collect_until_quiet(&mut self, quiet: Duration) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            out.push(m);
        }
        out
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A message seen by the MQTT 5 probe, with the Correlation Data property.
#[derive(Debug, Clone)]
pub struct Msg5 {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub correlation: Option<Vec<u8>>,
}

impl Msg5 {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

/// An MQTT 5 client (rumqttc v5) that publishes with Response Topic / Correlation Data.
pub struct Probe5 {
    pub client: r5::AsyncClient,
    rx: mpsc::UnboundedReceiver<Msg5>,
    task: JoinHandle<()>,
}

impl Probe5 {
    pub async fn connect(filters: &[String]) -> Probe5 {
        use r5::mqttbytes::v5::Packet as P5;
        let id = format!("mbprobe5-{}", rand::rng().random::<u64>());
        let mut o = r5::MqttOptions::new(id, BROKER.0, BROKER.1);
        o.set_keep_alive(Duration::from_secs(10));
        let (client, mut el) = r5::AsyncClient::new(o, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let (sub_tx, mut sub_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(r5::Event::Incoming(P5::Publish(p))) => {
                        let _ = tx.send(Msg5 {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            correlation: p
                                .properties
                                .and_then(|p| p.correlation_data)
                                .map(|d| d.to_vec()),
                        });
                    }
                    Ok(r5::Event::Incoming(P5::SubAck(_))) => {
                        let _ = sub_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        for f in filters {
            client
                .subscribe(f.clone(), r5::mqttbytes::QoS::AtLeastOnce)
                .await
                .unwrap();
        }
        await_subacks(&mut sub_rx, filters.len()).await;
        Probe5 { client, rx, task }
    }

    /// Publishes `payload` asking for the answer on `response_topic` with `correlation`.
    pub async fn request(
        &self,
        topic: &str,
        payload: &[u8],
        response_topic: &str,
        correlation: Option<&[u8]>,
    ) {
        let props = r5::mqttbytes::v5::PublishProperties {
            response_topic: Some(response_topic.to_string()),
            correlation_data: correlation.map(bytes::Bytes::copy_from_slice),
            ..Default::default()
        };
        self.client
            .publish_with_properties(
                topic,
                r5::mqttbytes::QoS::AtLeastOnce,
                false,
                payload.to_vec(),
                props,
            )
            .await
            .unwrap();
    }

    /// Sends a request asking for the answer on `response_topic`; returns every message up to
    /// and including the first one there.
    pub async fn ask(
        &mut self,
        topic: &str,
        payload: &[u8],
        response_topic: &str,
        correlation: Option<&[u8]>,
    ) -> Vec<Msg5> {
        self.request(topic, payload, response_topic, correlation)
            .await;
        self.until(response_topic, |m| m.topic == response_topic)
            .await
    }

    /// Every message until one matches `pred` (included last), or panics after [`WAIT`].
    pub async fn until(&mut self, what: &str, pred: impl Fn(&Msg5) -> bool) -> Vec<Msg5> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => {
                    let done = pred(&m);
                    seen.push(m);
                    if done {
                        return seen;
                    }
                }
                Ok(None) => panic!("probe closed while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}; saw {seen:?}"),
            }
        }
    }
}

impl Drop for Probe5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Removes what a test left retained on the broker.
pub async fn clear_retained(filters: &[String]) {
    let mut p = Probe::connect(filters).await;
    let msgs = p.collect_until_quiet(Duration::from_millis(300)).await;
    for m in msgs.iter().filter(|m| m.retain && !m.payload.is_empty()) {
        p.publish(&m.topic, b"", true).await;
    }
    let _ = p.collect_until_quiet(Duration::from_millis(100)).await;
}

/// Publishes one message of any size (QoS 1, waits for the PUBACK) from a client of its own.
pub async fn publish_big(topic: &str, payload: Vec<u8>, retain: bool) {
    let id = format!("mbbig-{}", rand::rng().random::<u64>());
    let mut o = MqttOptions::new(id, BROKER.0, BROKER.1);
    o.set_max_packet_size(64 << 20, 64 << 20);
    let (client, mut el) = AsyncClient::new(o, 4);
    client
        .publish(topic, QoS::AtLeastOnce, retain, payload)
        .await
        .unwrap();
    let acked = tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return,
                Ok(_) => {}
                Err(e) => panic!("big publish failed: {e}"),
            }
        }
    })
    .await;
    assert!(acked.is_ok(), "no PUBACK for the big publish");
    let _ = client.disconnect().await;
}

/// `mbtest-<tag>-<8 random hex digits>`: a base topic (and client id) no other test uses.
pub fn unique(tag: &str) -> String {
    format!("mbtest-{tag}-{:08x}", rand::rng().random::<u32>())
}
