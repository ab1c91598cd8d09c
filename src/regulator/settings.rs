//! The `[regulator]` settings and their `[regulator.meter]` table: where the grid meter
//! publishes (topic, a preset for common publishers, the value's JSON pointer or a plain
//! number, sign convention and unit, the age after which a reading is stale, the plausibility
//! bound), the controller's tuning (target, deadband, smoothing, gains, bounded step, cycle)
//! and the allocation across batteries (join power, rotation margin), and the short Passive
//! countdown that hands control back to the batteries when the bridge dies. Pure data and
//! validation: every problem names its key and what is allowed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Publishers the meter settings know how to read without a pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MeterPreset {
    /// A plain number of watts (`1234`, `-56.5`), e.g. a Node-RED flow or a P1 reader.
    #[default]
    Plain,
    /// Shelly Pro 3EM / 3EM-63 (Gen2+): `<prefix>/status/em:0`, `total_act_power` in W.
    Shelly3em,
    /// Shelly Pro EM / EM Gen3 (Gen2+): `<prefix>/status/em1:0`, `act_power` in W.
    ShellyEm,
    /// A Home Assistant sensor published by `mqtt_statestream`:
    /// `<base>/sensor/<object_id>/state`, a plain number in the sensor's unit.
    HaStatestream,
    /// Tasmota with an SML script (Hichi and other IR readers): `tele/<device>/SENSOR`,
    /// `SML.Power_curr` in W (the name follows the script; set `pointer` when it differs).
    TasmotaSml,
    /// Tasmota Teleinfo (Linky TIC): `tele/<device>/SENSOR`, `ENERGY.Power` in W. The TIC
    /// reports import only: export reads as 0, so the regulator cannot see feed-in.
    TasmotaTeleinfo,
}

impl MeterPreset {
    /// The JSON pointer of the grid power in this publisher's payload (None = plain number).
    pub fn pointer(self) -> Option<&'static str> {
        match self {
            MeterPreset::Plain | MeterPreset::HaStatestream => None,
            MeterPreset::Shelly3em => Some("/total_act_power"),
            MeterPreset::ShellyEm => Some("/act_power"),
            MeterPreset::TasmotaSml => Some("/SML/Power_curr"),
            MeterPreset::TasmotaTeleinfo => Some("/ENERGY/Power"),
        }
    }

    /// An example topic for this publisher (documentation and error messages).
    pub fn example_topic(self) -> &'static str {
        match self {
            MeterPreset::Plain => "home/grid/power",
            MeterPreset::Shelly3em => "shellypro3em-0123456789ab/status/em:0",
            MeterPreset::ShellyEm => "shellyproem50-0123456789ab/status/em1:0",
            MeterPreset::HaStatestream => "homeassistant/sensor/grid_power/state",
            MeterPreset::TasmotaSml | MeterPreset::TasmotaTeleinfo => "tele/meter/SENSOR",
        }
    }
}

/// Which way the meter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MeterSign {
    /// Positive = import from the grid, negative = export (Shelly, most P1 readers).
    #[default]
    ImportPositive,
    /// Positive = export to the grid, negative = import.
    ExportPositive,
}

/// The unit of the meter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum MeterUnit {
    /// Watts.
    #[default]
    W,
    /// Kilowatts.
    #[serde(rename = "kW")]
    Kw,
}

/// How a meter payload becomes a grid power (W, + import): resolved from the settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Extractor {
    /// JSON pointer of the value; None = the payload is a plain number.
    pub pointer: Option<String>,
    /// Sign convention of the value.
    pub sign: MeterSign,
    /// Unit of the value.
    pub unit: MeterUnit,
    /// Largest plausible magnitude, W; larger readings are refused.
    pub max_abs_w: f64,
}

/// `[regulator.meter]`: where the grid power comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeterSettings {
    /// The publisher's shape (default `plain`).
    pub preset: MeterPreset,
    /// MQTT topic of the readings, on the bridge's broker (no wildcards).
    pub topic: Option<String>,
    /// JSON pointer of the value (RFC 6901, e.g. `/total_act_power`); overrides the preset's;
    /// `""` = the payload is a plain number.
    pub pointer: Option<String>,
    /// Sign convention (default `import-positive`).
    pub sign: MeterSign,
    /// Unit of the value, `W` or `kW` (default `W`).
    pub unit: MeterUnit,
    /// Age after which a reading is stale and regulation stops (default 10s).
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// Largest plausible grid power, W (default 50000); larger readings are refused.
    pub max_abs_w: u32,
    /// Regulate on the batteries' own CT readings while the meter is silent (default false:
    /// they are read once per poll, too slowly for a step load).
    pub fallback_ct: bool,
}

impl Default for MeterSettings {
    fn default() -> Self {
        Self {
            preset: MeterPreset::Plain,
            topic: None,
            pointer: None,
            sign: MeterSign::ImportPositive,
            unit: MeterUnit::W,
            stale_after: Duration::from_secs(10),
            max_abs_w: 50_000,
            fallback_ct: false,
        }
    }
}

impl MeterSettings {
    /// The extractor these settings describe.
    pub fn extractor(&self) -> Extractor {
        let pointer = match &self.pointer {
            Some(p) if p.is_empty() => None,
            Some(p) => Some(p.clone()),
            None => self.preset.pointer().map(str::to_string),
        };
        Extractor {
            pointer,
            sign: self.sign,
            unit: self.unit,
            max_abs_w: f64::from(self.max_abs_w),
        }
    }
}

/// `[regulator]`: self-consumption regulation on a grid meter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegulatorSettings {
    /// Run the regulator (subscribe to the meter; batteries in `regulate` mode follow it).
    pub enabled: bool,
    /// Grid power to hold, W (+ import; default 20: a small import, never export).
    pub target_w: i32,
    /// No correction while |grid − target| is within this, W (default 25).
    pub deadband_w: u32,
    /// Weight of the previous smoothed reading, 0 (none) to below 1 (default 0: a correction
    /// takes the whole error it reads; corrections are paced by `min_write_interval`).
    pub smoothing: f64,
    /// Proportional gain, W of set-point per W of error (default 0: the grid answers a set-point
    /// directly, so the integral alone settles it without a kick back).
    pub kp: f64,
    /// Integral gain per correction, W per W of error (default 1: one correction covers the
    /// error measured once the last one took effect).
    pub ki: f64,
    /// Largest change of the fleet's set-point in one cycle, W (default 1500).
    pub max_step_w: u32,
    /// Time between control cycles (default 5s).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A second battery joins when the fleet's set-point is above this, a third above twice
    /// this, …, W (default 800; 0 = every battery always shares).
    pub join_power_w: u32,
    /// SOC headroom (percentage points) by which another battery must lead before it takes
    /// over the first place (default 5).
    pub rotation_margin: u8,
    /// Countdown of each Passive set-point: a bridge that dies hands control back to the
    /// battery after this (default 30s).
    #[serde(with = "humantime_serde")]
    pub countdown: Duration,
    /// Shortest time between two corrections of the set-points (the next one also waits one
    /// `interval` after the last was answered), and between other writes to one battery
    /// (default 10s).
    #[serde(with = "humantime_serde")]
    pub min_write_interval: Duration,
    /// Publish batcontrol's MQTT inverter status topics for each battery under
    /// `<base>/<dev>/batcontrol/status/` (default false; batcontrol's commands on
    /// `<base>/<dev>/batcontrol/command/` are always accepted).
    pub batcontrol_status: bool,
    /// The grid meter.
    pub meter: MeterSettings,
}

impl Default for RegulatorSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            target_w: 20,
            deadband_w: 25,
            smoothing: 0.0,
            kp: 0.0,
            ki: 1.0,
            max_step_w: 1500,
            interval: Duration::from_secs(5),
            join_power_w: 800,
            rotation_margin: 5,
            countdown: Duration::from_secs(30),
            min_write_interval: Duration::from_secs(10),
            batcontrol_status: false,
            meter: MeterSettings::default(),
        }
    }
}

fn secs(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl RegulatorSettings {
    /// The Passive countdown in whole seconds.
    pub fn countdown_secs(&self) -> u32 {
        u32::try_from(self.countdown.as_secs()).unwrap_or(u32::MAX)
    }

    /// Longest time from the last good reading until the batteries are back in Auto when the
    /// meter falls silent: stale age, one cycle, and one write.
    pub fn fallback_bound(&self) -> Duration {
        self.meter.stale_after + self.interval + Duration::from_secs(5)
    }

    /// Every problem, as (key path relative to `[regulator]`, reason and what is allowed).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.check_tuning(&mut out);
        self.check_timing(&mut out);
        for (k, why) in self.meter.validate(self.enabled) {
            out.push((format!("meter.{k}"), why));
        }
        let m = &self.meter;
        if m.stale_after >= Duration::from_secs(1)
            && m.stale_after <= Duration::from_secs(300)
            && m.stale_after < self.interval
        {
            out.push((
                "meter.stale_after".into(),
                format!(
                    "{} is shorter than one control cycle (interval = {})",
                    secs(m.stale_after),
                    secs(self.interval)
                ),
            ));
        }
        out
    }

    /// The controller's and the allocation's ranges.
    fn check_tuning(&self, out: &mut Vec<(String, String)>) {
        let mut bad = |k: &str, why: String| out.push((k.to_string(), why));
        if !(-5000..=5000).contains(&self.target_w) {
            bad(
                "target_w",
                format!("{} W is out of range (-5000 to 5000 W)", self.target_w),
            );
        }
        if self.deadband_w > 1000 {
            bad(
                "deadband_w",
                format!("{} W is out of range (0 to 1000 W)", self.deadband_w),
            );
        }
        if !(self.smoothing.is_finite() && (0.0..1.0).contains(&self.smoothing)) {
            bad(
                "smoothing",
                format!("{} is out of range (0 to below 1)", self.smoothing),
            );
        }
        if !(self.kp.is_finite() && (0.0..=2.0).contains(&self.kp)) {
            bad("kp", format!("{} is out of range (0 to 2)", self.kp));
        }
        if !(self.ki.is_finite() && self.ki > 0.0 && self.ki <= 1.5) {
            bad(
                "ki",
                format!(
                    "{} is out of range (above 0, at most 1.5; 0 would never reach the target)",
                    self.ki
                ),
            );
        }
        if !(10..=10_000).contains(&self.max_step_w) {
            bad(
                "max_step_w",
                format!("{} W is out of range (10 to 10000 W)", self.max_step_w),
            );
        }
        if self.join_power_w > 10_000 {
            bad(
                "join_power_w",
                format!("{} W is out of range (0 to 10000 W)", self.join_power_w),
            );
        }
        if self.rotation_margin > 50 {
            bad(
                "rotation_margin",
                format!("{} is out of range (0 to 50 points)", self.rotation_margin),
            );
        }
    }

    /// The cycle, the write spacing and the countdown that must outlast two renewals.
    fn check_timing(&self, out: &mut Vec<(String, String)>) {
        let mut bad = |k: &str, why: String| out.push((k.to_string(), why));
        if self.interval < Duration::from_secs(1) || self.interval > Duration::from_secs(60) {
            bad(
                "interval",
                format!("{} is out of range (1s to 60s)", secs(self.interval)),
            );
        }
        if self.min_write_interval > Duration::from_secs(60) {
            bad(
                "min_write_interval",
                format!(
                    "{} is out of range (0s to 60s)",
                    secs(self.min_write_interval)
                ),
            );
        }
        let renew = self.interval.max(self.min_write_interval);
        if self.countdown < Duration::from_secs(10) || self.countdown > Duration::from_secs(600) {
            bad(
                "countdown",
                format!(
                    "{} is out of range (10s to 10m; short, so that a dead bridge hands control back)",
                    secs(self.countdown)
                ),
            );
        } else if self.countdown < renew * 2 {
            bad(
                "countdown",
                format!(
                    "{} is shorter than twice the time between writes ({}): the set-point would lapse between renewals",
                    secs(self.countdown),
                    secs(renew)
                ),
            );
        }
    }
}

impl MeterSettings {
    fn validate(&self, enabled: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match &self.topic {
            None if enabled && !self.fallback_ct => out.push((
                "topic".into(),
                format!(
                    "is required when regulator.enabled = true: the topic your meter publishes on, e.g. \"{}\" (or set regulator.meter.fallback_ct = true)",
                    self.preset.example_topic()
                ),
            )),
            None => {}
            Some(t) if t.trim().is_empty() => {
                out.push(("topic".into(), "must not be empty".into()))
            }
            Some(t) if t.contains(['+', '#']) => out.push((
                "topic".into(),
                format!("'{t}' contains a wildcard (+ or #): name the one topic of the meter"),
            )),
            Some(t) if t.contains('\0') => {
                out.push(("topic".into(), "contains a NUL character".into()))
            }
            Some(_) => {}
        }
        if let Some(p) = &self.pointer
            && !p.is_empty()
            && !p.starts_with('/')
        {
            out.push((
                "pointer".into(),
                format!(
                    "'{p}' is not a JSON pointer: it starts with '/', e.g. \"/total_act_power\" (or \"\" for a plain number)"
                ),
            ));
        }
        if self.stale_after < Duration::from_secs(1) || self.stale_after > Duration::from_secs(300)
        {
            out.push((
                "stale_after".into(),
                format!("{} is out of range (1s to 5m)", secs(self.stale_after)),
            ));
        }
        if !(1000..=500_000).contains(&self.max_abs_w) {
            out.push((
                "max_abs_w".into(),
                format!("{} W is out of range (1000 to 500000 W)", self.max_abs_w),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &RegulatorSettings) -> Vec<String> {
        s.validate().into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn the_defaults_are_valid_and_a_disabled_regulator_needs_no_topic() {
        let s = RegulatorSettings::default();
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        assert!(!s.enabled);
        assert_eq!(s.countdown_secs(), 30);
        assert_eq!(s.fallback_bound(), Duration::from_secs(20));
    }

    #[test]
    fn an_enabled_regulator_needs_a_topic_unless_it_falls_back_on_the_ct() {
        let mut s = RegulatorSettings {
            enabled: true,
            ..Default::default()
        };
        s.meter.preset = MeterPreset::Shelly3em;
        let problems = s.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "meter.topic");
        assert!(problems[0].1.contains("status/em:0"), "{}", problems[0].1);
        s.meter.fallback_ct = true;
        assert!(s.validate().is_empty());
        s.meter.topic = Some("shellies/+/em".into());
        assert_eq!(keys(&s), ["meter.topic"]);
        s.meter.topic = Some("shellypro3em-1/status/em:0".into());
        assert!(s.validate().is_empty());
    }

    #[test]
    fn every_bad_key_is_named() {
        let s = RegulatorSettings {
            target_w: 9000,
            deadband_w: 5000,
            smoothing: 1.0,
            kp: f64::NAN,
            ki: 0.0,
            max_step_w: 0,
            interval: Duration::from_millis(100),
            join_power_w: 20_000,
            rotation_margin: 80,
            countdown: Duration::from_secs(3600),
            min_write_interval: Duration::from_secs(120),
            meter: MeterSettings {
                pointer: Some("total_act_power".into()),
                stale_after: Duration::ZERO,
                max_abs_w: 2_000_000,
                ..Default::default()
            },
            enabled: false,
            batcontrol_status: false,
        };
        assert_eq!(
            keys(&s),
            [
                "target_w",
                "deadband_w",
                "smoothing",
                "kp",
                "ki",
                "max_step_w",
                "join_power_w",
                "rotation_margin",
                "interval",
                "min_write_interval",
                "countdown",
                "meter.pointer",
                "meter.stale_after",
                "meter.max_abs_w",
            ]
        );
    }

    #[test]
    fn the_countdown_must_outlast_two_renewals_and_staleness_one_cycle() {
        let s = RegulatorSettings {
            countdown: Duration::from_secs(15),
            min_write_interval: Duration::from_secs(10),
            ..Default::default()
        };
        let p = s.validate();
        assert_eq!(p.len(), 1);
        assert!(p[0].1.contains("twice"), "{}", p[0].1);
        let mut s = RegulatorSettings {
            interval: Duration::from_secs(20),
            countdown: Duration::from_secs(60),
            ..Default::default()
        };
        s.meter.stale_after = Duration::from_secs(5);
        assert_eq!(keys(&s), ["meter.stale_after"]);
    }

    #[test]
    fn the_extractor_takes_the_presets_pointer_unless_one_is_given() {
        let mut m = MeterSettings {
            preset: MeterPreset::Shelly3em,
            ..Default::default()
        };
        assert_eq!(m.extractor().pointer.as_deref(), Some("/total_act_power"));
        m.pointer = Some("/em/total".into());
        assert_eq!(m.extractor().pointer.as_deref(), Some("/em/total"));
        m.pointer = Some(String::new());
        assert_eq!(m.extractor().pointer, None, "\"\" = plain number");
        let ha = MeterSettings {
            preset: MeterPreset::HaStatestream,
            unit: MeterUnit::Kw,
            ..Default::default()
        };
        assert_eq!(ha.extractor().pointer, None);
        assert_eq!(ha.extractor().unit, MeterUnit::Kw);
        assert_eq!(
            MeterPreset::TasmotaTeleinfo.pointer(),
            Some("/ENERGY/Power")
        );
    }

    #[test]
    fn the_toml_spelling_of_presets_signs_and_units() {
        let s: RegulatorSettings = toml::from_str(
            "enabled = true\n[meter]\npreset = \"tasmota-sml\"\ntopic = \"tele/hichi/SENSOR\"\nsign = \"export-positive\"\nunit = \"kW\"\nstale_after = \"20s\"\n",
        )
        .unwrap();
        assert_eq!(s.meter.preset, MeterPreset::TasmotaSml);
        assert_eq!(s.meter.sign, MeterSign::ExportPositive);
        assert_eq!(s.meter.unit, MeterUnit::Kw);
        assert_eq!(s.meter.stale_after, Duration::from_secs(20));
        assert!(toml::from_str::<RegulatorSettings>("[meter]\npreset = \"shelly\"\n").is_err());
    }
}
