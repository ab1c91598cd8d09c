//! Typed settings, layered defaults < TOML file < environment (`MARSTEK_BRIDGE__SECTION__KEY`,
//! plus `…_FILE` variants whose value is read from a file, for secrets), and validated as a whole
//! before anything starts. Every problem names its key, the file and line when it comes from
//! the file, and what is allowed. Reads the config file and the environment; nothing else.
//!
//! This file holds the types; loading is in `load`, the checks in `validate`, and what is
//! computed from the settings (instance name, cross-section values) in `derive`.

mod derive;
mod load;
mod validate;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::DeviceLimits;
use crate::redact::redact;
pub use crate::redact::{is_secret_key, redact_url};
pub use derive::Derived;
pub use load::{load, load_from};

/// Prefix of environment overrides: `MARSTEK_BRIDGE__MQTT__HOST=broker`.
pub const ENV_PREFIX: &str = "MARSTEK_BRIDGE__";
/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "config/marstek-bridge.toml";

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Bridge-wide behaviour.
    pub bridge: BridgeSettings,
    /// MQTT broker and topics.
    pub mqtt: crate::mqtt::MqttSettings,
    /// Database URL and telemetry buffering.
    pub database: crate::store::DatabaseSettings,
    /// Central PostgreSQL/TimescaleDB for store-and-forward and `fleet status` (off by default).
    pub central: crate::sites::central::CentralSettings,
    /// Batteries to talk to.
    pub devices: Vec<DeviceConfig>,
    /// Polling, pacing and retries.
    pub polling: crate::marstek::PollingSettings,
    /// UDP socket and discovery of the Marstek driver.
    pub marstek: crate::marstek::MarstekSettings,
    /// Scheduled jobs.
    pub scheduler: crate::scheduler::SchedulerSettings,
    /// EDF Tempo and precharge.
    pub tempo: crate::tempo::TempoSettings,
    /// Alert thresholds.
    pub alerts: crate::alerts::AlertSettings,
    /// Logging.
    pub logging: LoggingSettings,
    /// Optional HTTP health and metrics endpoints.
    pub http: crate::http::HttpSettings,
    /// Self-consumption regulation on a grid meter.
    pub regulator: crate::regulator::RegulatorSettings,
}

/// Bridge-wide behaviour.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeSettings {
    /// Refuse every write to a battery (commands and jobs are answered with an error).
    pub read_only: bool,
    /// Name of this instance (leader election, job runs); default: the host name and a digest of
    /// the configuration, stable across restarts (see [`Settings::instance`]).
    pub instance_id: Option<String>,
    /// Site this bridge serves (letters, digits, `_`, `-`): in every stored row, the `site`
    /// label of every metric and every log line; default the slug of the host name.
    pub site_id: Option<String>,
    /// Longest time an orderly shutdown may take before the process exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for BridgeSettings {
    fn default() -> Self {
        Self {
            read_only: false,
            instance_id: None,
            site_id: None,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// One battery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceConfig {
    /// IP address or host name of the battery.
    pub host: String,
    /// UDP port of its Open API (set in the Marstek app), default 30000.
    pub port: u16,
    /// Alias used in topics instead of the BLE MAC (letters, digits, `_`, `-`).
    pub id: Option<String>,
    /// Firmware profile to assume before the device identifies itself (`auto` = detect).
    pub profile: Option<String>,
    /// Largest charge power the bridge will ask for, W.
    pub max_charge_w: u32,
    /// Largest discharge power the bridge will ask for, W.
    pub max_discharge_w: u32,
    /// Lowest SOC the bridge will discharge to, %.
    pub min_soc: u8,
    /// Highest SOC the bridge will charge to, %.
    pub max_soc: u8,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        let limits = DeviceLimits::default();
        Self {
            host: String::new(),
            port: 30000,
            id: None,
            profile: None,
            max_charge_w: limits.max_charge_w,
            max_discharge_w: limits.max_discharge_w,
            min_soc: limits.min_soc,
            max_soc: limits.max_soc,
        }
    }
}

impl DeviceConfig {
    /// The safety limits of this device.
    pub fn limits(&self) -> DeviceLimits {
        DeviceLimits {
            max_charge_w: self.max_charge_w,
            max_discharge_w: self.max_discharge_w,
            min_soc: self.min_soc,
            max_soc: self.max_soc,
        }
    }
}

/// Known firmware profile names for `devices[].profile`.
pub const PROFILES: [&str; 6] = [
    "auto",
    "venus-e-3",
    "venus-e-2",
    "venus-a",
    "venus-d",
    "venus-e-mini",
];

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines for a terminal.
    #[default]
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingSettings {
    /// Filter in `tracing` syntax (`info`, `marstek_bridge=debug,info`); `RUST_LOG` wins.
    pub level: String,
    /// `pretty` or `json`.
    pub format: LogFormat,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Pretty,
        }
    }
}

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted key path, e.g. `devices.1.port` or `scheduler.timezone`.
    pub key: String,
    /// What is wrong and what is allowed.
    pub reason: String,
    /// `file:line` when the key comes from the file.
    pub location: Option<String>,
}

/// The configuration could not be used; lists every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The problems, in key order.
    pub issues: Vec<Issue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.issues.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for i in &self.issues {
            match &i.location {
                Some(loc) => write!(f, "\n  - {loc}: `{}`: {}", i.key, i.reason)?,
                None => write!(f, "\n  - `{}`: {}", i.key, i.reason)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Settings {
    /// The effective configuration as TOML with every secret replaced by `***`.
    pub fn to_redacted_toml(&self) -> String {
        let mut value =
            toml::Value::try_from(self).unwrap_or_else(|_| toml::Value::Table(Default::default()));
        redact(&mut value);
        toml::to_string_pretty(&value).unwrap_or_default()
    }

    /// The effective configuration as JSON with every secret replaced by `***`.
    pub fn to_redacted_json(&self) -> serde_json::Value {
        let mut value =
            toml::Value::try_from(self).unwrap_or_else(|_| toml::Value::Table(Default::default()));
        redact(&mut value);
        serde_json::to_value(value).unwrap_or_default()
    }
}
