//! Many sites in one view, with real processes on loopback: a central mosquitto and two site
//! mosquittos started by the test, each site broker bridged to the central one by the shipped
//! `mosquitto/site-bridge.conf` (site id and central address substituted, the plain variant),
//! and two edge bridges in-process (`app::run_with`), each with its own simulated batteries and
//! SQLite file. Every battery of both sites is visible centrally under `sites/<id>/marstek/…`;
//! a command published centrally to site B changes site B's battery (site A's stays as it was),
//! its answer comes back centrally, and site B's audit row says it came from the centre.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use marstek_bridge::config::{DeviceConfig, Settings};
use marstek_bridge::domain::Mode;
use marstek_bridge::simulator::{SimConfig, SimHandle, Simulator};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use support::PrivateBroker;
use tokio::sync::{mpsc, oneshot};

const RECIPE: &str = include_str!("../mosquitto/site-bridge.conf");
const SITES: [&str; 2] = ["site-a", "site-b"];
const BATTERIES: usize = 3;

/// A site broker: the shipped recipe with this site and the central broker's port.
fn site_broker(dir: &std::path::Path, site: &str, central: u16) -> PrivateBroker {
    assert!(RECIPE.contains("SITE_ID") && RECIPE.contains("central.example.org:8883"));
    let recipe = RECIPE
        .replace("SITE_ID", site)
        .replace("central.example.org:8883", &format!("127.0.0.1:{central}"));
    PrivateBroker::start(dir, &format!("allow_anonymous true\n{recipe}"))
}

/// An edge bridge running in-process until `stop` is sent.
struct Edge {
    sim: SimHandle,
    db: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Edge {
    async fn start(dir: &std::path::Path, site: &str, broker: u16) -> Edge {
        let sim = Simulator::start(SimConfig {
            devices: BATTERIES,
            initial_soc: 55.0,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let mut s = Settings::default();
        s.bridge.site_id = Some(site.into());
        s.bridge.instance_id = Some(format!("edge-{site}"));
        s.mqtt.host = "127.0.0.1".into();
        s.mqtt.port = broker;
        s.mqtt.client_id = format!("marstek-bridge-{site}");
        let db = dir.join(format!("{site}.db"));
        s.database.url = format!("sqlite://{}", db.display());
        s.database.batch_interval = Duration::from_millis(200);
        s.marstek.bind_device_port = false;
        s.tempo.enabled = false;
        s.polling.status_interval = Duration::from_secs(1);
        s.polling.quiet_gap = Duration::from_millis(20);
        s.polling.request_timeout = Duration::from_millis(500);
        s.polling.resend_after = Duration::from_millis(200);
        s.polling.write_timeout = Duration::from_secs(1);
        for (n, addr) in sim.addrs().iter().enumerate() {
            s.devices.push(DeviceConfig {
                host: addr.ip().to_string(),
                port: addr.port(),
                id: Some(format!("bat{n}")),
                ..DeviceConfig::default()
            });
        }
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(marstek_bridge::app::run_with(
            s,
            async move {
                let _ = stop_rx.await;
            },
            |_| {},
        ));
        Edge {
            sim,
            db: format!("sqlite://{}", db.display()),
            stop: Some(stop_tx),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("edge bridge stops")
            .unwrap()
            .unwrap();
        self.sim.shutdown().await;
    }
}

/// A client of the central broker that hands over every message under `sites/#`.
struct Central {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
}

impl Central {
    async fn connect(port: u16) -> Central {
        let mut o = MqttOptions::new("central-observer", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(10));
        let (client, mut el) = AsyncClient::new(o, 256);
        let (tx, rx) = mpsc::unbounded_channel();
        let (sub_tx, sub_rx) = oneshot::channel();
        let mut sub_tx = Some(sub_tx);
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send((p.topic.clone(), p.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(s) = sub_tx.take() {
                            let _ = s.send(());
                        }
                    }
                    Ok(_) => {}
                    // Reconnection back-off of the observer, not synchronisation.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        client.subscribe("sites/#", QoS::AtLeastOnce).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), sub_rx)
            .await
            .expect("suback")
            .unwrap();
        Central { client, rx }
    }

    /// Next message for which `pick` returns something, within `within`; None on time-out.
    async fn next<T>(
        &mut self,
        within: Duration,
        mut pick: impl FnMut(&str, &[u8]) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (topic, payload) = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .ok()??;
            if let Some(t) = pick(&topic, &payload) {
                return Some(t);
            }
        }
    }
}

/// Audit rows of the command of `id` in the SQLite file at `url`: (source, site_id, status).
async fn audit_rows(url: &str, id: &str) -> Vec<(String, Option<String>, String)> {
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let rows = sqlx::query_as(
        "SELECT source, site_id, status FROM commands \
         WHERE json_extract(payload, '$.received.id') = ?1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sites_are_seen_and_commanded_centrally() {
    let dir = tempfile::tempdir().unwrap();
    let central_broker = PrivateBroker::start(dir.path(), "allow_anonymous true");
    let mut central = Central::connect(central_broker.port).await;
    let brokers: Vec<PrivateBroker> = SITES
        .iter()
        .map(|s| site_broker(dir.path(), s, central_broker.port))
        .collect();
    let mut edges = Vec::new();
    for (site, broker) in SITES.iter().zip(&brokers) {
        edges.push(Edge::start(dir.path(), site, broker.port).await);
    }

    // Every battery of both sites, centrally, with a SOC, and each link's notification "1".
    let mut want: HashSet<String> = SITES
        .iter()
        .flat_map(|s| (0..BATTERIES).map(move |n| format!("sites/{s}/marstek/bat{n}/state")))
        .collect();
    let links: Vec<String> = SITES
        .iter()
        .map(|s| format!("sites/{s}/connection"))
        .collect();
    want.extend(links.iter().cloned());
    let mut soc: HashMap<String, u64> = HashMap::new();
    while !want.is_empty() {
        let seen = central
            .next(Duration::from_secs(30), |topic, payload| {
                if links.iter().any(|l| l == topic) {
                    return (payload == b"1").then(|| (topic.to_string(), 1));
                }
                let v: Value = serde_json::from_slice(payload).ok()?;
                let soc = v["soc"].as_u64()?;
                want.contains(topic).then(|| (topic.to_string(), soc))
            })
            .await;
        let Some((topic, s)) = seen else {
            panic!("not seen centrally: {want:?}");
        };
        want.remove(&topic);
        soc.insert(topic, s);
    }
    assert_eq!(soc.len(), SITES.len() * (BATTERIES + 1));

    // A command from the centre to site B's bat1: the answer comes back centrally. The site
    // broker's subscription on the central broker may not be in place the moment the
    // battery states arrive, so an unanswered command is sent again under a new id.
    let mut answered = None;
    for attempt in 0..10 {
        let id = format!("central-{attempt}");
        let cmd = serde_json::json!({"mode": "passive", "power": -800, "duration": 600, "id": id});
        central
            .client
            .publish(
                "sites/site-b/marstek/bat1/set",
                QoS::AtLeastOnce,
                false,
                cmd.to_string(),
            )
            .await
            .unwrap();
        let reply = central
            .next(Duration::from_secs(3), |topic, payload| {
                let v: Value = serde_json::from_slice(payload).ok()?;
                (topic == "sites/site-b/marstek/bat1/response" && v["id"] == id.as_str())
                    .then_some(v)
            })
            .await;
        if let Some(v) = reply {
            answered = Some((id, v));
            break;
        }
    }
    let (id, reply) = answered.expect("no answer from site B centrally");
    assert_eq!(reply["status"], "ok", "{reply}");

    // Site B's battery changed; site A's did not.
    let b = edges[1].sim.state(1).unwrap();
    assert_eq!(b.mode, Mode::Passive, "{b:?}");
    assert_eq!(b.passive_power, -800);
    let a = edges[0].sim.state(1).unwrap();
    assert_ne!(a.mode, Mode::Passive, "{a:?}");

    // Site B's audit says the command came from the centre (the row follows the answer).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = audit_rows(&edges[1].db, &id).await;
        if !rows.is_empty() || tokio::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        rows,
        vec![(
            "central".to_string(),
            Some("site-b".to_string()),
            "ok".to_string()
        )]
    );
    assert!(audit_rows(&edges[0].db, &id).await.is_empty());

    for e in edges {
        e.stop().await;
    }
    drop(brokers);
    drop(central_broker);
}
