//! The settings every whole-bridge story (`app::run_with` on simulated batteries) starts from:
//! the broker of `TEST_MQTT_URL` under a base topic and discovery prefix of the story's own, a
//! SQLite file in its temp directory, the simulator's batteries under the ids it names, Tempo
//! and the AUTO/MANUAL jobs off (so nothing depends on the time of day), and fast polling
//! timeouts. Pure: builds a value and touches nothing.

use std::path::Path;
use std::time::Duration;

use marstek_bridge::config::{DeviceConfig, Settings};
use marstek_bridge::simulator::SimHandle;

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
