//! Commands a battery accepts, whatever their source (MQTT, HTTP, scheduler, reconciler, CLI), and the
//! report each one produces. Parsing of user payloads lives in `mqtt::commands`; this file only
//! holds the typed shapes and their invariants.

use std::fmt;

use chrono::{DateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

use super::{DeviceId, Mode, Percent, Watts};

/// A wall-clock time of day with minute precision, written `HH:MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HhMm {
    /// Hour, 0..=23.
    pub hour: u8,
    /// Minute, 0..=59.
    pub minute: u8,
}

impl HhMm {
    /// Builds a time, refusing out-of-range values.
    pub fn new(hour: u8, minute: u8) -> Result<Self, String> {
        if hour > 23 || minute > 59 {
            return Err(format!(
                "{hour:02}:{minute:02} is not a time of day (00:00 to 23:59)"
            ));
        }
        Ok(Self { hour, minute })
    }

    /// Parses `HH:MM` (also `H:MM`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let err = || format!("'{s}' is not a time HH:MM (00:00 to 23:59)");
        let (h, m) = s.trim().split_once(':').ok_or_else(err)?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return Err(err());
        }
        let h: u8 = h.parse().map_err(|_| err())?;
        let m: u8 = m.parse().map_err(|_| err())?;
        Self::new(h, m).map_err(|_| err())
    }

    /// Minutes since midnight.
    pub fn minutes(self) -> u32 {
        self.hour as u32 * 60 + self.minute as u32
    }

    /// As a chrono time.
    pub fn to_naive(self) -> NaiveTime {
        NaiveTime::from_hms_opt(self.hour as u32, self.minute as u32, 0).expect("validated")
    }
}

impl fmt::Display for HhMm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

impl Serialize for HhMm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HhMm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HhMm::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Days of the week as the device encodes them: bit 0 Monday … bit 6 Sunday (127 = every day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WeekMask(pub u8);

impl WeekMask {
    /// Every day of the week.
    pub const ALL: WeekMask = WeekMask(127);
    const NAMES: [&'static str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

    /// Accepts 1..=127; 0 (no day) and bit 7 are refused.
    pub fn from_bits(bits: i64) -> Result<Self, String> {
        if (1..=127).contains(&bits) {
            Ok(Self(bits as u8))
        } else {
            Err(format!(
                "weekday mask {bits} is out of range (1 to 127; bit 0 = Monday)"
            ))
        }
    }

    /// Builds a mask from day names (`mon`…`sun`, case-insensitive, also full names).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self, String> {
        let mut bits = 0u8;
        for n in names {
            let n = n.as_ref().trim().to_ascii_lowercase();
            let idx = Self::NAMES
                .iter()
                .position(|d| n.len() >= 3 && n.starts_with(d))
                .ok_or_else(|| {
                    format!("unknown weekday '{n}' (mon, tue, wed, thu, fri, sat, sun)")
                })?;
            bits |= 1 << idx;
        }
        Self::from_bits(bits as i64)
    }

    /// Whether the mask contains the day, 0 = Monday … 6 = Sunday.
    pub fn contains(self, day_from_monday: u32) -> bool {
        day_from_monday < 7 && self.0 & (1 << day_from_monday) != 0
    }
}

/// One Manual-mode schedule slot (`manual_cfg`), written one per `ES.SetMode` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualSlot {
    /// Slot number (`time_num`), 0..=9 (0..=5 on Venus E mini).
    pub slot: u8,
    /// Start time of day.
    pub start: HhMm,
    /// End time of day (may be earlier than start: the slot spans midnight).
    pub end: HhMm,
    /// Days the slot applies to.
    pub days: WeekMask,
    /// Power, W: negative = charge, positive = discharge (device convention).
    pub power: Watts,
    /// Whether the slot is active.
    pub enable: bool,
}

/// A mode change with its parameters (`ES.SetMode` config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum ModeConfig {
    /// Self-consumption.
    Auto,
    /// Vendor AI mode.
    Ai,
    /// Backup reserve (firmware ≥ 150).
    Ups,
    /// Manual mode, writing one slot.
    Manual {
        /// The slot written with this call.
        slot: ManualSlot,
    },
    /// Passive set-point.
    Passive {
        /// Power, W: negative = charge, positive = discharge.
        power: Watts,
        /// Countdown after which the device leaves Passive, s.
        cd_time: u32,
    },
}

impl ModeConfig {
    /// The mode this config selects.
    pub fn mode(&self) -> Mode {
        match self {
            ModeConfig::Auto => Mode::Auto,
            ModeConfig::Ai => Mode::Ai,
            ModeConfig::Ups => Mode::Ups,
            ModeConfig::Manual { .. } => Mode::Manual,
            ModeConfig::Passive { .. } => Mode::Passive,
        }
    }
}

/// Anything the bridge can ask a battery to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Command {
    /// Change the operating mode.
    SetMode(ModeConfig),
    /// Set the depth of discharge, % (30..=88).
    SetDod {
        /// Depth of discharge, %.
        value: Percent,
    },
    /// Switch the panel LED.
    SetLed {
        /// On or off.
        on: bool,
    },
    /// Switch Bluetooth advertising.
    SetBleAdv {
        /// On or off.
        on: bool,
    },
}

impl Command {
    /// Short name used in logs, metrics and the `commands` table.
    pub fn name(&self) -> &'static str {
        match self {
            Command::SetMode(_) => "set_mode",
            Command::SetDod { .. } => "set_dod",
            Command::SetLed { .. } => "set_led",
            Command::SetBleAdv { .. } => "set_ble_adv",
        }
    }
}

/// Who issued a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandSource {
    /// An MQTT `/set` topic (Home Assistant, Node-RED, mosquitto_pub).
    Mqtt,
    /// The HTTP API (`POST /api/v1/batteries/{id}/commands`, the status page).
    Http,
    /// A scheduled job.
    Scheduler,
    /// The desired-state reconciler.
    Reconciler,
    /// The power regulator.
    Regulator,
    /// The command line.
    Cli,
    /// The bridge's own SOC envelope, stopping a set-point that reached `min_soc` / `max_soc`.
    Safety,
    /// An MQTT `/set` from the central broker of many sites, delivered by the site broker's
    /// bridge under `central/<base>/…` (see `mosquitto/site-bridge.conf`).
    Central,
}

impl CommandSource {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandSource::Mqtt => "mqtt",
            CommandSource::Http => "http",
            CommandSource::Scheduler => "scheduler",
            CommandSource::Reconciler => "reconciler",
            CommandSource::Regulator => "regulator",
            CommandSource::Cli => "cli",
            CommandSource::Safety => "safety",
            CommandSource::Central => "central",
        }
    }

    /// A person (or their own automation) chose the values: they become the remembered
    /// controls. The bridge's own loops (jobs, reconciler, regulator) do not overwrite them.
    pub fn is_user(self) -> bool {
        matches!(
            self,
            CommandSource::Mqtt | CommandSource::Http | CommandSource::Cli | CommandSource::Central
        )
    }

    /// Whether a mode write from this source gets the effect verifier's follow-up. Not the
    /// regulator's: its own loop checks every write by the meter and the reported mode each
    /// cycle, and the verifier's polls would hold the battery's queue in its way.
    pub fn wants_effect_verification(self) -> bool {
        self != CommandSource::Regulator
    }
}

/// How a command ended: the `status` of the `<dev>/response` payload and of the command audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandStatus {
    /// Done (the battery confirmed it, or the bridge applied it).
    Ok,
    /// Refused or failed; the record says why.
    Error,
}

impl CommandStatus {
    /// Lowercase name, as stored and published.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Ok => "ok",
            CommandStatus::Error => "error",
        }
    }

    /// `Ok` for a success, `Error` for a failure.
    pub fn of<T, E>(result: &Result<T, E>) -> Self {
        if result.is_ok() {
            CommandStatus::Ok
        } else {
            CommandStatus::Error
        }
    }
}

/// What the driver did with an accepted command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandReport {
    /// The parameters sent to the device, as JSON.
    pub applied: serde_json::Value,
    /// True when a read-back (`ES.GetMode`) confirmed the change; false when it could not be
    /// confirmed (no getter for that setting, or the device still reported something else).
    pub verified: bool,
    /// Mode the device reported on read-back, if read.
    pub observed_mode: Option<Mode>,
    /// Round-trip time of the write, ms.
    pub latency_ms: f64,
    /// Why the report is not verified although the write was accepted, when the firmware
    /// catalogue says its effect cannot be seen (e.g. Manual power ignored by the firmware).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A persisted intention for one battery, re-applied by the reconciler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Battery concerned.
    pub device: DeviceId,
    /// Mode and parameters to keep.
    pub config: ModeConfig,
    /// Who set it (job id, `mqtt`, …).
    pub set_by: String,
    /// When it was set.
    pub set_at: DateTime<Utc>,
    /// When it stops applying (None = until replaced).
    pub valid_until: Option<DateTime<Utc>>,
}
