//! One typed reading of a battery per poll (`Sample`, with its detail [`Readings`]), which
//! detail readings a model reports ([`ReadingSet`]), and alert events. Units are in the types
//! and field names; signs are normalised here once so every sink agrees. Pure data.

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
    /// Operating mode reported by `ES.GetMode` (inferred from `bat_power` where reading it would
    /// undo the bridge's Manual/Passive write, see `domain::infer_mode`).
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
    /// Detail readings (meter phases, solar strings, battery detail, diagnostics), flattened
    /// into the same JSON object (boxed: a sample travels through channels by value).
    #[serde(flatten)]
    pub readings: Box<Readings>,
}

/// Voltage in volts (V).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Volts(pub f64);

/// Current in amperes (A).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Amperes(pub f64);

/// One solar input (MPPT string) of a poll.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PvString {
    /// Power, W.
    pub power: Option<Watts>,
    /// Voltage, V.
    pub voltage: Option<Volts>,
    /// Current, A (often 0 on Venus A although power flows).
    pub current: Option<Amperes>,
    /// Working (true) or standby (false).
    pub working: Option<bool>,
}

/// The detail readings of one poll, beyond the core fields of [`Sample`]. Every field is
/// optional: what a model or firmware does not report stays `None` (JSON `null`). Field names are
/// the keys of the `<dev>/state` JSON (docs/mqtt.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Readings {
    /// CT phase A power, W (+ import, − export).
    pub ct_a_power: Option<Watts>,
    /// CT phase B power, W (+ import, − export).
    pub ct_b_power: Option<Watts>,
    /// CT phase C power, W (+ import, − export).
    pub ct_c_power: Option<Watts>,
    /// The meter's lifetime imported energy, Wh (only where the firmware fills it).
    pub ct_input_energy: Option<WattHours>,
    /// The meter's lifetime exported energy, Wh (only where the firmware fills it).
    pub ct_output_energy: Option<WattHours>,
    /// Solar string 1 power, W.
    pub pv1_power: Option<Watts>,
    /// Solar string 1 voltage, V.
    pub pv1_voltage: Option<Volts>,
    /// Solar string 1 current, A.
    pub pv1_current: Option<Amperes>,
    /// Solar string 1 working (true) or standby.
    pub pv1_working: Option<bool>,
    /// Solar string 2 power, W.
    pub pv2_power: Option<Watts>,
    /// Solar string 2 voltage, V.
    pub pv2_voltage: Option<Volts>,
    /// Solar string 2 current, A.
    pub pv2_current: Option<Amperes>,
    /// Solar string 2 working (true) or standby.
    pub pv2_working: Option<bool>,
    /// Solar string 3 power, W.
    pub pv3_power: Option<Watts>,
    /// Solar string 3 voltage, V.
    pub pv3_voltage: Option<Volts>,
    /// Solar string 3 current, A.
    pub pv3_current: Option<Amperes>,
    /// Solar string 3 working (true) or standby.
    pub pv3_working: Option<bool>,
    /// Solar string 4 power, W.
    pub pv4_power: Option<Watts>,
    /// Solar string 4 voltage, V.
    pub pv4_voltage: Option<Volts>,
    /// Solar string 4 current, A.
    pub pv4_current: Option<Amperes>,
    /// Solar string 4 working (true) or standby.
    pub pv4_working: Option<bool>,
    /// Battery pack voltage, V.
    pub bat_voltage: Option<Volts>,
    /// Battery pack current, A (+ discharging, − charging, like `bat_power`).
    pub bat_current: Option<Amperes>,
    /// Hottest cell, °C.
    pub cell_temp_max: Option<Celsius>,
    /// Coldest cell, °C.
    pub cell_temp_min: Option<Celsius>,
    /// BMS/inverter board temperature, °C.
    pub board_temp: Option<Celsius>,
    /// BMS error code (0 = none).
    pub error_code: Option<i64>,
    /// BMS alarm code (0 = none).
    pub alarm_code: Option<i64>,
    /// Model string, e.g. `VenusE 3.0`.
    pub model: Option<String>,
    /// Firmware version (normalised, e.g. 147 for `ver` 1476).
    pub firmware: Option<u32>,
    /// Wi-Fi network name.
    pub wifi_ssid: Option<String>,
    /// IP address the device reports on its Wi-Fi/LAN link.
    pub wifi_ip: Option<String>,
    /// Bluetooth link: true = a phone is connected.
    pub ble_connected: Option<bool>,
    /// Poll rounds that failed since the bridge started.
    pub poll_failures: Option<u64>,
    /// The last poll or read error, as text (None = none since start).
    pub last_error: Option<String>,
    /// Readings dropped as implausible or backwards since the bridge started.
    pub readings_dropped: Option<u64>,
}

impl Readings {
    /// The solar strings 1..=4 as a uniform view.
    pub fn pv_strings(&self) -> [PvString; 4] {
        [
            PvString {
                power: self.pv1_power,
                voltage: self.pv1_voltage,
                current: self.pv1_current,
                working: self.pv1_working,
            },
            PvString {
                power: self.pv2_power,
                voltage: self.pv2_voltage,
                current: self.pv2_current,
                working: self.pv2_working,
            },
            PvString {
                power: self.pv3_power,
                voltage: self.pv3_voltage,
                current: self.pv3_current,
                working: self.pv3_working,
            },
            PvString {
                power: self.pv4_power,
                voltage: self.pv4_voltage,
                current: self.pv4_current,
                working: self.pv4_working,
            },
        ]
    }

    /// Sets solar string `n` (1..=4; other numbers are ignored).
    pub fn set_pv_string(&mut self, n: usize, s: PvString) {
        let (p, v, c, w) = match n {
            1 => (
                &mut self.pv1_power,
                &mut self.pv1_voltage,
                &mut self.pv1_current,
                &mut self.pv1_working,
            ),
            2 => (
                &mut self.pv2_power,
                &mut self.pv2_voltage,
                &mut self.pv2_current,
                &mut self.pv2_working,
            ),
            3 => (
                &mut self.pv3_power,
                &mut self.pv3_voltage,
                &mut self.pv3_current,
                &mut self.pv3_working,
            ),
            4 => (
                &mut self.pv4_power,
                &mut self.pv4_voltage,
                &mut self.pv4_current,
                &mut self.pv4_working,
            ),
            _ => return,
        };
        (*p, *v, *c, *w) = (s.power, s.voltage, s.current, s.working);
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Readings::default()
    }

    /// The stored form: a JSON object without the unset keys; None when nothing is set.
    pub fn to_stored_json(&self) -> Option<serde_json::Value> {
        let mut v = serde_json::to_value(self).ok()?;
        if let serde_json::Value::Object(m) = &mut v {
            m.retain(|_, x| !x.is_null());
            if m.is_empty() {
                return None;
            }
        }
        Some(v)
    }

    /// Reads the stored form back (unknown keys ignored, missing ones unset).
    pub fn from_stored_json(v: serde_json::Value) -> Result<Self, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }
}

/// Which detail readings a model/firmware reports, so discovery announces only entities that
/// will get values. Filled by the driver from its model table; all false = core entities only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReadingSet {
    /// Solar strings (0 = no PV inputs, 4 on Venus A/D).
    pub pv_strings: u8,
    /// CT per-phase powers (`EM.GetStatus` served).
    pub ct_phases: bool,
    /// The meter's energy counters carry real values.
    pub meter_energy: bool,
    /// Battery voltage and current.
    pub battery_electrical: bool,
    /// Cell and board temperatures.
    pub battery_temperatures: bool,
    /// BMS error and alarm codes.
    pub battery_codes: bool,
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
            readings: Box::default(),
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
    /// A running set-point reached `min_soc` / `max_soc` and the bridge stopped it.
    SocLimit,
    /// A mode write was acknowledged but not carried out (or undone), after every re-send.
    CommandNotHolding,
    /// The regulator's grid meter went silent (or unreadable): its batteries are back in Auto.
    RegulatorMeterStale,
    /// The regulator stopped (the meter's sign looks inverted): its batteries are in Auto.
    RegulatorStopped,
    /// The battery's firmware is in a range the firmware catalogue knows to be bad.
    FirmwareKnownBad,
    /// A battery on firmware known to switch its Local API off stopped answering.
    LocalApiDisabled,
    /// Another bridge (another instance) claims this bridge's `site_id` with other batteries.
    SiteIdConflict,
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
            AlertKind::SocLimit => "soc_limit",
            AlertKind::CommandNotHolding => "command_not_holding",
            AlertKind::RegulatorMeterStale => "regulator_meter_stale",
            AlertKind::RegulatorStopped => "regulator_stopped",
            AlertKind::FirmwareKnownBad => "firmware_known_bad",
            AlertKind::LocalApiDisabled => "local_api_disabled",
            AlertKind::SiteIdConflict => "site_id_conflict",
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

impl Alert {
    /// A raised alert of `kind` at `at`, with no observed value or threshold; `device` None for
    /// a bridge-level alert.
    pub fn raised(
        kind: AlertKind,
        severity: Severity,
        device: Option<DeviceId>,
        message: impl Into<String>,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            kind,
            severity,
            device,
            message: message.into(),
            value: None,
            threshold: None,
            state: AlertState::Raised,
            at,
        }
    }

    /// The same alert with the observed value and the threshold it crossed.
    pub fn with_values(mut self, value: Option<f64>, threshold: Option<f64>) -> Self {
        self.value = value;
        self.threshold = threshold;
        self
    }

    /// The same alert in `state` (a cleared alert carries the kind and device it clears).
    pub fn in_state(mut self, state: AlertState) -> Self {
        self.state = state;
        self
    }
}
