//! One typed reading of a battery per poll (`Sample`) and alert events. Units are in the types
//! and field names; signs are normalised here once so every sink agrees.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Celsius, DeviceId, Mode, Percent, WattHours, Watts};

/// One reading of one battery.
///
/// Sign convention (stated once for every sink): `bat_power` is **positive when discharging**
/// and negative when charging (Home Assistant's convention); `grid_power` is the device's
/// `ongrid_power` as sent: positive when the battery delivers AC, negative when it draws AC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Battery the sample belongs to.
    pub device: DeviceId,
    /// When the sample was taken (UTC).
    pub at: DateTime<Utc>,
    /// State of charge, %.
    pub soc: Option<Percent>,
    /// Battery power, W: + discharging, − charging (derived when the device omits it).
    pub bat_power: Option<Watts>,
    /// AC power at the grid port, W: + delivering, − drawing.
    pub grid_power: Option<Watts>,
    /// Power delivered to the EPS/off-grid socket, W.
    pub offgrid_power: Option<Watts>,
    /// Solar generation, W (sum of channels when the ES total is stuck at 0).
    pub pv_power: Option<Watts>,
    /// Battery temperature, °C.
    pub temperature: Option<Celsius>,
    /// Energy left in the battery, Wh.
    pub remaining_capacity: Option<WattHours>,
    /// Rated capacity, Wh.
    pub rated_capacity: Option<WattHours>,
    /// Lifetime solar energy, Wh.
    pub total_pv_energy: Option<WattHours>,
    /// Lifetime energy delivered to the grid port (discharged), Wh.
    pub total_grid_output_energy: Option<WattHours>,
    /// Lifetime energy drawn from the grid port (charged), Wh.
    pub total_grid_input_energy: Option<WattHours>,
    /// Lifetime load energy, Wh.
    pub total_load_energy: Option<WattHours>,
    /// Operating mode reported by `ES.GetMode`.
    pub mode: Option<Mode>,
    /// Whether a CT/meter is connected.
    pub ct_connected: Option<bool>,
    /// Power measured by the CT, W (+ import, − export).
    pub ct_power: Option<Watts>,
    /// Charging permitted by the BMS.
    pub charge_allowed: Option<bool>,
    /// Discharging permitted by the BMS.
    pub discharge_allowed: Option<bool>,
    /// Wi-Fi signal strength, dBm.
    pub rssi: Option<i32>,
}

impl Sample {
    /// An empty sample for a device at an instant; fields are filled by the decoder.
    pub fn empty(device: DeviceId, at: DateTime<Utc>) -> Self {
        Self {
            device,
            at,
            soc: None,
            bat_power: None,
            grid_power: None,
            offgrid_power: None,
            pv_power: None,
            temperature: None,
            remaining_capacity: None,
            rated_capacity: None,
            total_pv_energy: None,
            total_grid_output_energy: None,
            total_grid_input_energy: None,
            total_load_energy: None,
            mode: None,
            ct_connected: None,
            ct_power: None,
            charge_allowed: None,
            discharge_allowed: None,
            rssi: None,
        }
    }
}

/// Kinds of alert the bridge raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// SOC below the configured threshold.
    LowSoc,
    /// Battery temperature above the configured threshold.
    HighTemperature,
    /// Device stopped answering.
    Unreachable,
    /// A command failed.
    CommandFailed,
    /// The device reports a mode other than the persisted intent.
    ModeDrift,
    /// A scheduled run was missed (beyond the grace time).
    JobMissed,
    /// A scheduled job failed.
    JobFailed,
    /// The database is unreachable.
    DatabaseUnavailable,
    /// Samples were dropped past the buffer bound.
    SamplesDropped,
    /// Tomorrow's Tempo colour was still unknown at the deadline.
    TempoUnknown,
    /// A battery did not reach its precharge target by 06:00.
    PrechargeShort,
    /// The Tempo prices are the built-in grid and a known price-change date has passed.
    TariffOutdated,
}

impl AlertKind {
    /// snake_case name, as in payloads and topics.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::LowSoc => "low_soc",
            AlertKind::HighTemperature => "high_temperature",
            AlertKind::Unreachable => "unreachable",
            AlertKind::CommandFailed => "command_failed",
            AlertKind::ModeDrift => "mode_drift",
            AlertKind::JobMissed => "job_missed",
            AlertKind::JobFailed => "job_failed",
            AlertKind::DatabaseUnavailable => "database_unavailable",
            AlertKind::SamplesDropped => "samples_dropped",
            AlertKind::TempoUnknown => "tempo_unknown",
            AlertKind::PrechargeShort => "precharge_short",
            AlertKind::TariffOutdated => "tariff_outdated",
        }
    }
}

/// Severity of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Info,
    /// Needs attention.
    Warning,
    /// Needs action now.
    Critical,
}

/// Whether the alert starts or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition began.
    Raised,
    /// The condition ended.
    Cleared,
}

/// An alert event, published on `<dev>/alert` or `bridge/alert` and stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// What happened.
    pub kind: AlertKind,
    /// How bad it is.
    pub severity: Severity,
    /// Battery concerned; None for bridge-level alerts.
    pub device: Option<DeviceId>,
    /// Human-readable explanation.
    pub message: String,
    /// Observed value, when there is one.
    pub value: Option<f64>,
    /// Threshold crossed, when there is one.
    pub threshold: Option<f64>,
    /// Raised or cleared.
    pub state: AlertState,
    /// When it happened (UTC).
    pub at: DateTime<Utc>,
}
