//! The bridge's own documents: the health report (retained `bridge/health` and `/readyz`), read
//! from the fleet, the writer, the MQTT handle and the store, and the identity (`bridge/info`,
//! `/api/v1/bridge`). Typed here, turned into JSON only where they are published.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::core::Core;
use super::tasks::Tasks;
use crate::config::Settings;
use crate::control::Fleet;
use crate::domain::{DeviceHealth, DeviceId};
use crate::http::{Readiness, ReadyProbe};
use crate::mqtt::MqttHandle;
use crate::store::{Backend, Store, WriterHandle};

/// The health of one battery's driver.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    /// The driver considers the battery reachable.
    pub reachable: bool,
    /// Last answer.
    pub last_seen: Option<DateTime<Utc>>,
    /// Answered within the staleness bound (three poll intervals).
    pub polled_recently: bool,
    /// Requests sent.
    pub requests: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Failures since the last answer.
    pub consecutive_failures: u32,
    /// Latency of the last answer, milliseconds.
    pub last_latency_ms: Option<f64>,
    /// Requests waiting in the actor.
    pub queue_depth: usize,
}

/// The telemetry store's state.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseReport {
    /// Which backend.
    pub backend: Backend,
    /// The last write succeeded.
    pub up: bool,
    /// Samples waiting to be written.
    pub buffered: usize,
    /// Samples dropped because the buffer was full.
    pub dropped: u64,
    /// Samples written.
    pub written: u64,
    /// The last write error.
    pub last_error: Option<String>,
}

/// The retained `bridge/health` document.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// When it was computed.
    pub at: DateTime<Utc>,
    /// The MQTT session is up.
    pub broker_connected: bool,
    /// MQTT messages dropped because the queue was full.
    pub mqtt_dropped: u64,
    /// The telemetry store.
    pub database: DatabaseReport,
    /// Every battery, by id.
    pub devices: BTreeMap<String, DeviceReport>,
}

impl HealthReport {
    /// `/readyz`: broker connected, database up, every battery polled recently.
    pub fn readiness(&self) -> Readiness {
        let broker = self.broker_connected;
        let database = self.database.up;
        let devices_ok = self.devices.values().all(|d| d.polled_recently);
        Readiness {
            ready: broker && database && devices_ok,
            broker,
            database,
            devices: serde_json::to_value(&self.devices).unwrap_or_default(),
        }
    }
}

/// Reads health from every part, for `bridge/health` and `/readyz`.
#[derive(Clone)]
pub struct HealthSource {
    fleet: Fleet,
    writer: WriterHandle,
    mqtt: MqttHandle,
    store: Arc<dyn Store>,
    stale_after: Duration,
}

impl HealthSource {
    /// A source over the core and the MQTT side; a battery is stale after `stale_after`.
    pub fn new(core: &Core, mqtt: &MqttHandle, stale_after: Duration) -> Self {
        Self {
            fleet: core.fleet.clone(),
            writer: core.writer.clone(),
            mqtt: mqtt.clone(),
            store: core.store.clone(),
            stale_after,
        }
    }

    /// The report now (also sets the queue and buffer gauges).
    pub fn report(&self) -> HealthReport {
        let now = Utc::now();
        let stats = self.writer.stats();
        let devices = self
            .fleet
            .iter()
            .map(|b| {
                let h = b.health();
                metrics::gauge!("marstek_device_queue_depth", "device" => b.id().to_string())
                    .set(h.queue_depth as f64);
                (b.id().to_string(), self.device_report(&h, now))
            })
            .collect();
        metrics::gauge!("marstek_store_buffered_samples").set(stats.buffered as f64);
        metrics::gauge!("marstek_store_dropped_samples").set(stats.dropped as f64);
        HealthReport {
            at: now,
            broker_connected: *self.mqtt.connected().borrow(),
            mqtt_dropped: self.mqtt.dropped(),
            database: DatabaseReport {
                backend: self.store.backend(),
                up: stats.db_up,
                buffered: stats.buffered,
                dropped: stats.dropped,
                written: stats.written,
                last_error: stats.last_error,
            },
            devices,
        }
    }

    fn device_report(&self, h: &DeviceHealth, now: DateTime<Utc>) -> DeviceReport {
        let polled_recently = h.last_seen.is_some_and(|t| {
            (now - t)
                .to_std()
                .map(|age| age <= self.stale_after)
                .unwrap_or(true)
        });
        DeviceReport {
            reachable: h.reachable,
            last_seen: h.last_seen,
            polled_recently,
            requests: h.requests,
            timeouts: h.timeouts,
            errors: h.errors,
            consecutive_failures: h.consecutive_failures,
            last_latency_ms: h.last_latency_ms,
            queue_depth: h.queue_depth,
        }
    }

    /// The probe `/readyz` calls.
    pub fn probe(&self) -> ReadyProbe {
        let health = self.clone();
        Arc::new(move || {
            let readiness = health.report().readiness();
            Box::pin(async move { readiness })
        })
    }

    /// Publishes the report on `bridge/health` every `every` until shutdown.
    pub fn spawn_publisher(&self, every: Duration, tasks: &Tasks) {
        let health = self.clone();
        tasks.spawn_every(every, move || {
            let report = health.report();
            health.mqtt.publish_health(to_json(&report));
            std::future::ready(())
        });
    }
}

/// The bridge's identity, for `bridge/info` and `/api/v1/bridge`.
#[derive(Debug, Clone, Serialize)]
pub struct BridgeInfo {
    /// Package version.
    pub version: &'static str,
    /// This instance's name (leader election, job runs).
    pub instance: String,
    /// The configured batteries.
    pub devices: Vec<DeviceId>,
    /// The store's backend.
    pub backend: Backend,
    /// Writes to batteries are refused.
    pub read_only: bool,
    /// The scheduler's time zone (IANA).
    pub timezone: String,
    /// The effective configuration, secrets as `***`.
    pub config: serde_json::Value,
    /// Tempo is enabled (HTTP only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tempo: Option<bool>,
    /// An API token is configured (HTTP only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_configured: Option<bool>,
}

impl BridgeInfo {
    /// The identity of the bridge running `settings` over `core`.
    pub fn new(settings: &Settings, core: &Core) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION"),
            instance: settings.instance(),
            devices: core.fleet.ids(),
            backend: core.store.backend(),
            read_only: settings.bridge.read_only,
            timezone: settings.scheduler.timezone.clone(),
            config: settings.to_redacted_json(),
            tempo: None,
            token_configured: None,
        }
    }
}

/// A typed document as the JSON the publishers take.
pub fn to_json(doc: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(polled_recently: bool) -> DeviceReport {
        DeviceReport {
            reachable: true,
            last_seen: None,
            polled_recently,
            requests: 1,
            timeouts: 0,
            errors: 0,
            consecutive_failures: 0,
            last_latency_ms: Some(3.5),
            queue_depth: 0,
        }
    }

    fn report(devices: &[(&str, bool)]) -> HealthReport {
        HealthReport {
            at: Utc::now(),
            broker_connected: true,
            mqtt_dropped: 0,
            database: DatabaseReport {
                backend: Backend::Sqlite,
                up: true,
                buffered: 0,
                dropped: 0,
                written: 10,
                last_error: None,
            },
            devices: devices
                .iter()
                .map(|(id, ok)| (id.to_string(), device(*ok)))
                .collect(),
        }
    }

    #[test]
    fn ready_only_when_broker_database_and_every_battery_are() {
        assert!(report(&[]).readiness().ready);
        assert!(report(&[("a", true), ("b", true)]).readiness().ready);
        let stale = report(&[("a", true), ("b", false)]).readiness();
        assert!(!stale.ready && stale.broker && stale.database);
        assert_eq!(stale.devices["b"]["polled_recently"], false);
        let mut down = report(&[("a", true)]);
        down.database.up = false;
        assert!(!down.readiness().ready);
        down.database.up = true;
        down.broker_connected = false;
        assert!(!down.readiness().ready);
    }

    #[test]
    fn the_published_report_keeps_its_field_names() {
        let doc = to_json(&report(&[("a", true)]));
        assert_eq!(doc["database"]["backend"], "sqlite");
        assert_eq!(doc["devices"]["a"]["last_latency_ms"], 3.5);
        let keys: Vec<_> = doc.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "at",
                "broker_connected",
                "database",
                "devices",
                "mqtt_dropped"
            ]
        );
    }
}
