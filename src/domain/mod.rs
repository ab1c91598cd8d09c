//! The bridge's core vocabulary: device ids, units, modes, samples, commands, alerts and the
//! `Battery` capability trait. Pure data and validation; no I/O, and no dependency on any adapter
//! (`marstek`, `mqtt`, `store`, `scheduler`, `tempo` all depend on this module, never the reverse).

pub mod clock;
mod command;
mod effect;
mod firmware;
mod guard;
mod safety;
mod sample;
mod schedule;

pub use clock::{Clock, ManualClock, SystemClock};
pub use command::*;
pub use effect::*;
pub use firmware::*;
pub use guard::*;
pub use safety::*;
pub use sample::*;
pub use schedule::*;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Stable identifier of a battery: its BLE MAC in lowercase hex, or a configured alias.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(pub String);

impl DeviceId {
    /// Builds an id, refusing characters that cannot appear in an MQTT topic level or an HA id.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 64 {
            return Err("must be 1 to 64 characters".into());
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err("may only contain letters, digits, '_' and '-'".into());
        }
        Ok(Self(s.to_string()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Power in watts (W). Sign depends on the field; see each field's documentation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Watts(pub i32);

/// Energy in watt-hours (Wh).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct WattHours(pub f64);

/// Temperature in degrees Celsius (°C).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Celsius(pub f64);

/// A percentage, 0..=100 (%).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Percent(pub u8);

impl Percent {
    /// Parses 0..=100, refusing anything else.
    pub fn parse(v: i64) -> Result<Self, String> {
        if (0..=100).contains(&v) {
            Ok(Self(v as u8))
        } else {
            Err(format!("{v} is not a percentage (0 to 100)"))
        }
    }
}

/// Operating mode of a battery, spelled exactly as the device spells it (`Auto`, `AI`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// Self-consumption: regulates towards 0 W at the CT/meter.
    Auto,
    /// Vendor's tariff/forecast optimisation.
    #[serde(rename = "AI")]
    Ai,
    /// Weekly time-slot schedule.
    Manual,
    /// External set-point held for a countdown.
    Passive,
    /// Keep charge as backup reserve (firmware ≥ 150).
    #[serde(rename = "UPS")]
    Ups,
}

impl Mode {
    /// Every mode, in the order shown to users.
    pub const ALL: [Mode; 5] = [Mode::Auto, Mode::Ai, Mode::Manual, Mode::Passive, Mode::Ups];

    /// The device's spelling (`Auto`, `AI`, `Manual`, `Passive`, `UPS`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "Auto",
            Mode::Ai => "AI",
            Mode::Manual => "Manual",
            Mode::Passive => "Passive",
            Mode::Ups => "UPS",
        }
    }

    /// Case-insensitive parse of a mode name.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| format!("unknown mode '{t}' (allowed: Auto, AI, Manual, Passive, UPS)"))
    }

    /// The integer code some firmware uses (0 Auto, 1 AI, 2 Manual, 3 Passive, 4 UPS).
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Mode::Auto),
            1 => Some(Mode::Ai),
            2 => Some(Mode::Manual),
            3 => Some(Mode::Passive),
            4 => Some(Mode::Ups),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of a battery as reported by `Marstek.GetDevice`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Bridge id of the device (alias or BLE MAC).
    pub id: DeviceId,
    /// Model string as the device sends it, e.g. `VenusE 3.0`.
    pub model: String,
    /// Firmware version (`ver`), e.g. 150 (four-digit values are normalised: 1476 → 147).
    pub firmware: u32,
    /// BLE MAC, 12 lowercase hex digits.
    pub ble_mac: String,
    /// Wi-Fi MAC, when reported.
    pub wifi_mac: Option<String>,
    /// Address and port the device answers on.
    pub address: String,
    /// Which detail readings this model/firmware reports (driver's model table).
    #[serde(default)]
    pub readings: ReadingSet,
    /// What the firmware catalogue says about this model and firmware (None when not looked up,
    /// e.g. an identity read back from the store).
    #[serde(default)]
    pub firmware_note: Option<FirmwareNote>,
}

/// Configured limits of one battery; every command from every source is checked against them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DeviceLimits {
    /// Largest charge power accepted, W (positive number; charge set-points are negative).
    pub max_charge_w: u32,
    /// Largest discharge power accepted, W.
    pub max_discharge_w: u32,
    /// Lowest SOC the bridge will discharge to, %.
    pub min_soc: u8,
    /// Highest SOC the bridge will charge to, %.
    pub max_soc: u8,
}

impl Default for DeviceLimits {
    fn default() -> Self {
        Self {
            max_charge_w: 2500,
            max_discharge_w: 2500,
            min_soc: 11,
            max_soc: 100,
        }
    }
}

/// Why a driver call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum DriverError {
    /// No reply within the timeout, after every retry.
    #[error("no reply from {device} to {method} after {attempts} attempt(s)")]
    Timeout {
        /// Device that stayed silent.
        device: String,
        /// JSON-RPC method.
        method: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The device answered with a JSON-RPC error.
    #[error("device error {code}: {message}")]
    Device {
        /// JSON-RPC error code (e.g. -32601).
        code: i64,
        /// Message sent by the device.
        message: String,
    },
    /// The device answered `set_result: false`.
    #[error("device refused the write ({method})")]
    Rejected {
        /// JSON-RPC method.
        method: String,
    },
    /// The method is known to be unsupported by this device (answered -32601 before).
    #[error("{method} is not supported by this device")]
    Unsupported {
        /// JSON-RPC method.
        method: String,
    },
    /// The device queue is full; try again later.
    #[error("request queue of {device} is full ({capacity} pending)")]
    QueueFull {
        /// Device whose queue is full.
        device: String,
        /// Queue capacity.
        capacity: usize,
    },
    /// The reply could not be decoded.
    #[error("undecodable reply: {0}")]
    Decode(String),
    /// Socket error.
    #[error("I/O error: {0}")]
    Io(String),
    /// The device actor has stopped (shutdown).
    #[error("device actor stopped")]
    Closed,
}

impl DriverError {
    /// Whether trying again later may succeed (silence, I/O, full queue) as opposed to a refusal.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            DriverError::Timeout { .. } | DriverError::Io(_) | DriverError::QueueFull { .. }
        )
    }
}

/// Per-device counters kept by the driver, read by the health job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceHealth {
    /// Requests sent (first attempts).
    pub requests: u64,
    /// Requests that ended without a reply.
    pub timeouts: u64,
    /// Requests answered with an error or an undecodable reply.
    pub errors: u64,
    /// Consecutive failed polls; 0 after a success.
    pub consecutive_failures: u32,
    /// Round-trip time of the last answered request, ms.
    pub last_latency_ms: Option<f64>,
    /// When the device last answered.
    pub last_seen: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether the device is considered reachable.
    pub reachable: bool,
    /// Requests waiting in the queue now.
    pub queue_depth: usize,
}

/// What the bridge can do with one battery, whatever drives it (UDP driver, tests).
#[async_trait::async_trait]
pub trait Battery: Send + Sync {
    /// The bridge id of this battery.
    fn id(&self) -> &DeviceId;
    /// Configured limits (safety envelope input).
    fn limits(&self) -> DeviceLimits;
    /// Identity learnt from the device, once it has answered.
    fn info(&self) -> Option<DeviceInfo>;
    /// Counters and reachability.
    fn health(&self) -> DeviceHealth;
    /// SOC of the latest sample read, %, when there is one (the SOC envelope checks against it).
    fn soc(&self) -> Option<Percent> {
        None
    }
    /// Reads a full status now (ahead of routine polls) and returns it as a sample.
    async fn poll(&self) -> Result<Sample, DriverError>;
    /// Sends a command (already validated) and verifies it by read-back where possible.
    async fn execute(&self, command: &Command) -> Result<CommandReport, DriverError>;
    /// Reachability changes (`true` reachable), when the driver reports them.
    fn availability(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }
}

/// Shared handle to a battery.
pub type BatteryRef = Arc<dyn Battery>;

/// Where alert events go (the app routes them to MQTT and the store).
pub type AlertSender = tokio::sync::mpsc::UnboundedSender<Alert>;
