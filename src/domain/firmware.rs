//! What the firmware catalogue says about one battery: the entry its model and firmware
//! matched and why, the known quirks with their public sources, whether the firmware is in a
//! known-bad range, and the policy the driver and the verifier follow for it. Pure data; the
//! table itself is the driver's (`marstek::catalogue`), this module only names its answers so
//! that every layer (alerts, HTTP, MQTT) can read them without depending on the driver.

use serde::{Deserialize, Serialize};

/// How much a catalogue entry matters to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteSeverity {
    /// Known differences the driver corrects for; nothing to do.
    Info,
    /// A known-bad firmware range: users reported failures (an alert is raised).
    Warning,
}

impl NoteSeverity {
    /// `info` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            NoteSeverity::Info => "info",
            NoteSeverity::Warning => "warning",
        }
    }
}

/// One known behaviour of a firmware, with where it was reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quirk {
    /// What the firmware does, in one sentence.
    pub summary: String,
    /// Public report(s), as `repository #issue` (e.g. `jaapp #111`).
    pub source: String,
}

/// How the bridge treats a battery on this firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwarePolicy {
    /// `params.id` asked first on `ES.GetMode` (0 per the spec; 1 where 0 is known to time
    /// out); the other one is tried when it stays silent.
    pub get_mode_instance: u8,
    /// `ES.GetMode` may report the mode as an integer 0–4 (decoded either way).
    pub get_mode_integer: bool,
    /// `ES.GetMode` is costly or harmful here: read it sparingly, never in bursts, and verify
    /// writes by the measured power first.
    pub get_mode_sparingly: bool,
    /// `ES.GetStatus` carries no `bat_power`: battery power is inferred from grid and PV.
    pub bat_power_missing: bool,
    /// A Manual slot's `power` is silently dropped: a Manual write cannot be verified by power.
    pub ignores_manual_power: bool,
    /// Passive mode is refused (`set_result: false`).
    pub passive_refused: bool,
    /// UPS mode is served (firmware ≥ 150).
    pub ups: bool,
    /// Shortest safe interval between two status polls, s.
    pub min_poll_interval_s: u32,
    /// The Local API is known to switch itself off on this firmware: a battery that stops
    /// answering gets `local_api_disabled` with a hint, not only `unreachable`.
    pub api_may_switch_off: bool,
    /// A known periodic network-stack restart: its period, s (None when none is known).
    pub network_reset_period_s: Option<u32>,
    /// Longest silence one such restart is known to cause, s: a device silent for no longer
    /// is in a blackout (not offline, no alert, polled on); a longer silence counts as usual.
    /// 0 when no restart is known.
    pub network_reset_max_silence_s: u32,
}

impl FirmwarePolicy {
    /// How long a silence of this firmware may last and still be a known network reset
    /// (None when the firmware has none).
    pub fn reset_blackout(&self) -> Option<std::time::Duration> {
        self.network_reset_period_s
            .filter(|_| self.network_reset_max_silence_s > 0)
            .map(|_| std::time::Duration::from_secs(u64::from(self.network_reset_max_silence_s)))
    }
}

/// The catalogue's answer for one battery: the entry it matched (or the cautious default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareNote {
    /// Stable id of the entry (e.g. `venus-e3-148`, `unknown` for the cautious default).
    pub entry: String,
    /// Model family of the entry, as users name it (e.g. `Venus E 3.0`).
    pub family: String,
    /// Firmware range of the entry, e.g. `146–147`, or `any`.
    pub firmware_range: String,
    /// Why this entry: the model string and firmware seen, and the range they fell in.
    pub matched: String,
    /// Whether the model and firmware are in the catalogue (false: the cautious default).
    pub known: bool,
    /// `warning` for a known-bad range.
    pub severity: NoteSeverity,
    /// One line for people: what this firmware does and what the bridge does about it.
    pub note: String,
    /// Known quirks with their sources.
    pub quirks: Vec<Quirk>,
    /// What the driver and the verifier do on this firmware.
    pub policy: FirmwarePolicy,
}

impl FirmwareNote {
    /// Whether the firmware is in a known-bad range.
    pub fn known_bad(&self) -> bool {
        self.severity == NoteSeverity::Warning
    }
}
