//! The settings every whole-bridge story (`app::run_with` on simulated batteries) starts from:
//! the broker of `TEST_MQTT_URL` under a base topic and discovery prefix of the story's own, a
//! SQLite file in its temp directory, the simulator's batteries under the ids it names, Tempo
//! and the AUTO/MANUAL jobs off (so nothing depends on the time of day), and fast polling
//! timeouts; [`StoryBridge`] runs the bridge on them as a task until the story finishes.
//! Touches only the tasks it spawns (and, through the bridge, what its settings name).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use marstek_bridge::config::{DeviceConfig, Settings};
use marstek_bridge::simulator::SimHandle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::mqtt_probe::broker_from_env;

/// Settings for `base` with the store in `dir` and the simulator's batteries, in order, as `ids`.
pub fn story_settings(sim: &SimHandle, ids: &[&str], base: &str, dir: &Path) -> Settings {
    let (host, port) = broker_from_env();
    let mut s = Settings::default();
    s.mqtt.host = host;
    s.mqtt.port = port;
    s.mqtt.base_topic = base.to_string();
    s.mqtt.discovery_prefix = format!("{base}ha");
    s.mqtt.client_id = base.to_string();
    s.database.url = format!("sqlite://{}/b.db", dir.display());
    s.marstek.bind_device_port = false;
    s.tempo.enabled = false;
    s.polling.quiet_gap = Duration::ZERO;
    s.polling.request_timeout = Duration::from_millis(300);
    s.polling.resend_after = Duration::ZERO;
    // No AUTO/MANUAL job: after 22:00 the reconciler would derive a Manual intent of its own at
    // start-up and write it, and the stories must not depend on the time of day.
    for job in ["job_switch_to_auto", "job_switch_to_manual_night"] {
        s.scheduler.jobs.entry(job.into()).or_default().enabled = false;
    }
    s.devices = sim
        .addrs()
        .iter()
        .zip(ids)
        .map(|(a, id)| DeviceConfig {
            host: a.ip().to_string(),
            port: a.port(),
            id: Some(id.to_string()),
            ..DeviceConfig::default()
        })
        .collect();
    s
}

/// The whole bridge (`app::run_with`) running as a task; dropping it stops the bridge too.
pub struct StoryBridge {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    /// The HTTP API's address.
    pub http: SocketAddr,
}

impl StoryBridge {
    /// Starts the bridge on `s` (its HTTP API on) and waits up to `wait` for the API's address.
    pub async fn start(s: Settings, wait: Duration) -> StoryBridge {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (addr_tx, addr_rx) = oneshot::channel();
        let task = tokio::spawn(marstek_bridge::app::run_with(
            s,
            async move {
                let _ = stop_rx.await;
            },
            move |running| {
                let _ = addr_tx.send(running.http.expect("http enabled"));
            },
        ));
        let http = tokio::time::timeout(wait, addr_rx).await.unwrap().unwrap();
        StoryBridge {
            stop: Some(stop_tx),
            task: Some(task),
            http,
        }
    }

    /// Stops the bridge and asserts that it ends without an error within `wait`.
    pub async fn finish(&mut self, wait: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("the bridge is finished once");
        let r = tokio::time::timeout(wait, task)
            .await
            .expect("bridge stops");
        r.unwrap().unwrap();
    }
}
