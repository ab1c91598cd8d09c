//! The story harness of the verification suites (`marstek_verify`, `firmware_quirks`): one
//! simulated battery `venus1` behind the whole bridge (`app::run_with`: the real driver on
//! loopback UDP, the real mosquitto, a SQLite store and the HTTP API), and an MQTT client on its
//! topics that sends commands and waits for their answers, verdicts, alerts and states. Include
//! with `mod support; mod verify_story;`. Touches only loopback sockets, its temp directory, its own topics
//! and the tasks it spawns.
#![allow(dead_code)]

use std::time::Duration;

use marstek_bridge::config::Settings;
use marstek_bridge::simulator::{SimConfig, SimFaults, SimHandle, SimProfile, Simulator};
use rand::Rng;
use rumqttc::{AsyncClient, QoS};

use crate::support::mqtt_probe::{json_probe, publish_command};
use crate::support::story::{StoryBridge, story_settings};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const WAIT: Duration = Duration::from_secs(30);

/// One simulated battery behind the whole bridge, and an MQTT client on its topics.
pub struct Story {
    pub sim: SimHandle,
    pub base: String,
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Value)>,
    /// Messages received while waiting for another one (an alert may precede its response).
    pub backlog: Vec<(String, Value)>,
    bridge: StoryBridge,
    /// The HTTP API's address.
    pub http: std::net::SocketAddr,
    _probe: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

pub const TOKEN: &str = "verify-token-0123456789";

pub async fn story(
    profile: SimProfile,
    firmware: Option<i64>,
    faults: &str,
    verify: bool,
) -> Story {
    story_with(profile, firmware, faults, verify, |_| {}).await
}

/// [`story`] with settings changed by `tweak` before the bridge starts.
pub async fn story_with(
    profile: SimProfile,
    firmware: Option<i64>,
    faults: &str,
    verify: bool,
    tweak: impl FnOnce(&mut Settings),
) -> Story {
    if std::env::var("STORY_LOG").is_ok() {
        let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
    }
    let sim = Simulator::start(SimConfig {
        profile,
        firmware,
        faults: SimFaults::parse_list(faults).unwrap(),
        initial_soc: 50.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = format!("mbverify{}", rand::rng().random::<u32>());
    let mut s = story_settings(&sim, &["venus1"], &base, dir.path());
    s.http.listen = Some("127.0.0.1:0".into());
    s.http.token = Some(TOKEN.into());
    s.polling.status_interval = Duration::from_secs(3600);
    s.polling.write_timeout = Duration::from_millis(500);
    s.marstek.verify.enabled = verify;
    s.marstek.verify.window = Duration::from_millis(600);
    s.marstek.verify.check_every = Duration::from_millis(200);
    s.marstek.verify.backoff = Duration::from_millis(700);
    tweak(&mut s);
    assert!(s.validate().is_empty(), "{:?}", s.validate());

    let topics = [
        "response",
        "alert",
        "state",
        "intent",
        "maintenance",
        "availability",
    ]
    .map(|t| format!("{base}/venus1/{t}"));
    let (client, rx, probe) = json_probe(format!("{base}-probe"), &topics).await;
    let bridge = StoryBridge::start(s, WAIT).await;
    let http = bridge.http;
    let mut st = Story {
        http,
        sim,
        base,
        client,
        rx,
        backlog: Vec::new(),
        bridge,
        _probe: probe,
        _dir: dir,
    };
    // the bridge is up once the battery's first state arrives
    st.next("state", |_| true).await;
    st
}

impl Story {
    pub async fn next(&mut self, topic: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.next_within(topic, WAIT, pred).await
    }

    /// [`next`](Self::next) waiting up to `wait`.
    pub async fn next_within(
        &mut self,
        topic: &str,
        wait: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let want = format!("{}/venus1/{topic}", self.base);
        if let Some(i) = self.backlog.iter().position(|(t, v)| *t == want && pred(v)) {
            return self.backlog.remove(i).1;
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((t, v))) if t == want && pred(&v) => return v,
                Ok(Some(other)) => self.backlog.push(other),
                _ => panic!("no {topic} message as expected"),
            }
        }
    }

    /// Every message received so far and not yet taken, as (topic level after the device, value).
    pub fn drain(&mut self) -> Vec<(String, Value)> {
        while let Ok(m) = self.rx.try_recv() {
            self.backlog.push(m);
        }
        let prefix = format!("{}/venus1/", self.base);
        std::mem::take(&mut self.backlog)
            .into_iter()
            .map(|(t, v)| (t.strip_prefix(&prefix).unwrap_or(&t).to_string(), v))
            .collect()
    }

    /// Sends a command on `<dev>/set` and returns its first answer.
    pub async fn send(&mut self, id: &str, command: Value) -> Value {
        let topic = format!("{}/venus1/set", self.base);
        publish_command(&self.client, topic, id, command).await;
        self.next("response", |r| r["id"] == json!(id)).await
    }

    /// Sends a command whose answer must say its verification is pending; returns its verdict.
    pub async fn send_verdict(&mut self, id: &str, command: Value) -> Value {
        let first = self.send(id, command).await;
        assert_eq!(
            (&first["status"], &first["verified"], &first["verification"]),
            (&json!("ok"), &json!(false), &json!("pending")),
            "answered at once, its verification pending: {first}"
        );
        self.verdict(id).await
    }

    /// The verdict message that follows an answer with this id.
    pub async fn verdict(&mut self, id: &str) -> Value {
        self.next("response", |r| {
            r["id"] == json!(id) && r["verification"] != json!("pending")
        })
        .await
    }

    /// POSTs a command to the HTTP API; (status, body).
    pub async fn post(&self, query: &str, command: Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!(
                "http://{}/api/v1/batteries/venus1/commands{query}",
                self.http
            ))
            .bearer_auth(TOKEN)
            .json(&command)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// Publishes a plain value on `<base>/venus1/set/<field>`.
    pub async fn set_field(&self, field: &str, value: &str) {
        self.client
            .publish(
                format!("{}/venus1/set/{field}", self.base),
                QoS::AtLeastOnce,
                false,
                value,
            )
            .await
            .unwrap();
    }

    /// PUTs `body` on the HTTP API's `path`; (status, body).
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .put(format!("http://{}{path}", self.http))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// The audit rows, newest first.
    pub async fn audit(&self) -> Vec<Value> {
        let r = reqwest::Client::new()
            .get(format!("http://{}/api/v1/commands?limit=100", self.http))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap().as_array().unwrap().clone()
    }

    pub async fn alert(&mut self, state: &str) -> Value {
        self.next("alert", |a| {
            a["kind"] == json!("command_not_holding") && a["state"] == json!(state)
        })
        .await
    }

    pub async fn finish(mut self) {
        self.bridge.finish(WAIT).await;
    }
}

pub fn passive(power: i32) -> Value {
    json!({"mode": "passive", "power": power, "duration": 600})
}
