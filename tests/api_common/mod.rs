//! The rig of the API tests: a bridge running in-process (`app::run_with`) with its HTTP server
//! on a loopback port, three simulated batteries (`bat-a`, `bat-b`, `bat-c`) over UDP, the real
//! mosquitto and a SQLite file or a PostgreSQL database; helpers for requests, the one error
//! shape and the event stream (`events` opens it, `next_event` reads it).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use marstek_bridge::config::{DeviceConfig, Settings};
use marstek_bridge::simulator::{SimConfig, SimHandle, Simulator};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;

pub const TOKEN: &str = "test-token-0123456789";
pub const IDS: [&str; 3] = ["bat-a", "bat-b", "bat-c"];

/// A running bridge with its simulated batteries.
pub struct Rig {
    /// The HTTP server's address.
    pub http: SocketAddr,
    /// The simulated batteries.
    pub sim: SimHandle,
    /// A client for requests.
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    bridge: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// A temporary folder (the SQLite file when no database URL was given).
    pub dir: tempfile::TempDir,
}

impl Rig {
    /// Starts the bridge on SQLite (`None`) or the database at `db_url`, Tempo off.
    pub async fn start(db_url: Option<String>) -> Rig {
        Self::start_with(db_url, |_| {}).await
    }

    /// Like `start`, with `configure` changing the settings before they are checked.
    /// Settings tweak for stories about commands: no AUTO/MANUAL job, so the reconciler derives
    /// no start-up intent of its own from the time of day (after 22:00 it would put every
    /// battery in Manual) and only the test's commands reach the batteries.
    pub fn no_mode_jobs(s: &mut Settings) {
        for job in ["job_switch_to_auto", "job_switch_to_manual_night"] {
            s.scheduler.jobs.entry(job.into()).or_default().enabled = false;
        }
    }

    pub async fn start_with(db_url: Option<String>, configure: impl FnOnce(&mut Settings)) -> Rig {
        if std::env::var("RIG_LOG").is_ok() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(std::env::var("RIG_LOG").unwrap_or_else(|_| "info".into()))
                .try_init();
        }
        let sim = Simulator::start(SimConfig {
            devices: 3,
            initial_soc: 55.0,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::default();
        let base = format!("mbapi{}_{}", std::process::id(), rand_suffix());
        settings.mqtt.base_topic = base.clone();
        settings.mqtt.discovery_prefix = format!("{base}ha");
        settings.mqtt.client_id = base.clone();
        settings.database.url =
            db_url.unwrap_or_else(|| format!("sqlite://{}/b.db", dir.path().display()));
        settings.marstek.bind_device_port = false;
        settings.tempo.enabled = false;
        settings.polling.status_interval = Duration::from_secs(1);
        // The 2 s quiet time after each reply is for real firmware; with it a status round of
        // the simulator took ~6 s and the first reply ~12 s (the 60 s test). Loopback needs none.
        settings.polling.quiet_gap = Duration::from_millis(20);
        // A status round in progress when the bridge stops runs on to its reply timeouts (the
        // device actor does not stop mid-round), which held the shutdown past its 10 s limit;
        // loopback answers in milliseconds, so keep those waits short.
        settings.polling.request_timeout = Duration::from_millis(500);
        settings.polling.resend_after = Duration::from_millis(200);
        settings.polling.write_timeout = Duration::from_secs(1);
        settings.database.batch_interval = Duration::from_millis(200);
        settings.bridge.instance_id = Some(base.clone());
        settings.http.listen = Some("127.0.0.1:0".into());
        settings.http.token = Some(TOKEN.into());
        settings.http.max_body_bytes = 4096;
        for (addr, id) in sim.addrs().iter().zip(IDS) {
            settings.devices.push(DeviceConfig {
                host: addr.ip().to_string(),
                port: addr.port(),
                id: Some(id.into()),
                ..DeviceConfig::default()
            });
        }
        configure(&mut settings);
        assert!(settings.validate().is_empty(), "{:?}", settings.validate());
        let (addr_tx, addr_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let bridge = tokio::spawn(marstek_bridge::app::run_with(
            settings,
            async move {
                let _ = stop_rx.await;
            },
            move |running| {
                let _ = addr_tx.send(running.http.expect("http enabled"));
            },
        ));
        let http = tokio::time::timeout(Duration::from_secs(30), addr_rx)
            .await
            .expect("bridge started")
            .expect("address sent");
        Rig {
            http,
            sim,
            client: reqwest::Client::new(),
            stop: Some(stop_tx),
            bridge,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Opens the live event stream (`GET /api/v1/events`), status not checked.
    pub async fn events(&self) -> reqwest::Response {
        self.client
            .get(self.url("/api/v1/events"))
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let code = r.status();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let code = r.status();
        (code, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(TOKEN), body)
            .await
    }

    /// Posts `body` to `/api/v1/batteries/<dev>/commands` and asserts the battery took it (200,
    /// `status: ok`); returns the answer.
    pub async fn command_ok(&self, dev: &str, body: &str) -> Value {
        let (code, result) = self
            .post(&format!("/api/v1/batteries/{dev}/commands"), body)
            .await;
        assert_eq!(code, 200, "{result}");
        assert_eq!(result["status"], "ok", "{result}");
        result
    }

    /// Waits until every battery has a sample with a SOC (the bridge's first polls).
    pub async fn wait_for_samples(&self) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (code, list) = self.get("/api/v1/batteries").await;
            assert_eq!(code, 200, "{list}");
            if list
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["soc"].is_u64() && b["mode"].is_string())
            {
                return list;
            }
            assert!(tokio::time::Instant::now() < deadline, "no samples: {list}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(20), &mut self.bridge)
            .await
            .expect("bridge stops")
            .unwrap()
            .unwrap();
        self.sim.shutdown().await;
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

/// Asserts the one error shape and returns its code.
pub fn error_code(code: StatusCode, body: &Value, want: StatusCode) -> String {
    assert_eq!(code, want, "{body}");
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    e["code"].as_str().expect("error.code").to_string()
}

/// Reads the event stream until an event of `kind` arrives; returns its data.
pub async fn next_event(resp: &mut reqwest::Response, kind: &str) -> Value {
    let mut buf = String::new();
    let wanted = format!("event: {kind}\n");
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(20), resp.chunk())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("stream open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if let Some(rest) = block.strip_prefix(&wanted) {
                let data = rest.trim().strip_prefix("data: ").expect("data line");
                return serde_json::from_str(data).unwrap();
            }
        }
    }
}
