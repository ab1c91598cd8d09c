//! The port for external planners: evcc's battery vocabulary on `<dev>/set/battery_mode` (and
//! `fleet/set/battery_mode`) and batcontrol's MQTT inverter commands on
//! `<dev>/batcontrol/command/mode` and `…/charge_rate`, parsed into one [`PlannerMode`]. The
//! bridge turns it into ordinary commands (Passive set-points, Auto or `regulate`) through the
//! command service, with the same validation and answers. Pure: no I/O.

use serde::Deserialize;

/// What a planner asks of a battery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlannerMode {
    /// Its own self-consumption: `regulate` when the regulator runs, else Auto.
    Normal,
    /// Neither charge nor discharge (Passive 0 W).
    Hold,
    /// Charge from the grid at this power, W (None = the remembered charge power, else the
    /// battery's largest).
    Charge(Option<u32>),
    /// Discharge at this power, W (None = the battery's largest).
    Discharge(Option<u32>),
}

/// Time a planner's set-point holds without a new message, s: until the planner says otherwise
/// (the reconciler renews the countdown meanwhile), at most a day.
pub const PLANNER_SECONDS: u32 = crate::domain::MAX_PASSIVE_SECONDS;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    mode: String,
    power: Option<f64>,
    soc: Option<f64>,
}

fn watts(field: &str, v: f64) -> Result<u32, String> {
    if v.is_finite() && v > 0.0 && v <= 100_000.0 {
        Ok(v.round() as u32)
    } else {
        Err(format!("{field}: {v} is not a power (W, above 0)"))
    }
}

/// Parses evcc's battery mode: `normal`, `hold`, `charge`, `holdcharge`, `discharge`, evcc's
/// numbers `1` (normal), `2` (hold), `3` (charge), or JSON `{"mode":"charge","power":1500}`.
pub fn parse_battery_mode(text: &str) -> Result<PlannerMode, String> {
    let (mode, power) = if text.starts_with('{') {
        let j: Json =
            serde_json::from_str(text).map_err(|e| format!("battery_mode: invalid JSON: {e}"))?;
        if j.soc.is_some() {
            return Err(
                "soc: a target SOC is not supported on battery_mode; give power (W)".into(),
            );
        }
        (j.mode, j.power.map(|p| watts("power", p)).transpose()?)
    } else {
        (text.to_string(), None)
    };
    let m = mode.trim().to_ascii_lowercase();
    let parsed = match m.as_str() {
        "normal" | "1" => PlannerMode::Normal,
        // A Venus has no PV input of its own: holding already keeps whatever it holds.
        "hold" | "holdcharge" | "2" => PlannerMode::Hold,
        "charge" | "3" => PlannerMode::Charge(power),
        "discharge" => PlannerMode::Discharge(power),
        _ => {
            return Err(format!(
                "battery_mode: '{mode}' is not a battery mode (normal, hold, charge, holdcharge, discharge, 1, 2, 3)"
            ));
        }
    };
    if power.is_some() && !matches!(parsed, PlannerMode::Charge(_) | PlannerMode::Discharge(_)) {
        return Err(format!("power only goes with charge or discharge, not {m}"));
    }
    Ok(parsed)
}

/// Parses batcontrol's `command/mode`: `force_charge`, `allow_discharge`, `avoid_discharge`.
pub fn parse_batcontrol_mode(text: &str) -> Result<PlannerMode, String> {
    match text.trim() {
        "force_charge" => Ok(PlannerMode::Charge(None)),
        "allow_discharge" => Ok(PlannerMode::Normal),
        "avoid_discharge" => Ok(PlannerMode::Hold),
        other => Err(format!(
            "batcontrol mode: '{other}' is not one of force_charge, allow_discharge, avoid_discharge"
        )),
    }
}

/// Parses batcontrol's `command/charge_rate`, W (a float above 0).
pub fn parse_charge_rate(text: &str) -> Result<u32, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("charge_rate: '{}' is not a number of W", text.trim()))?;
    watts("charge_rate", v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::commands::{Action, parse_field, parse_set};
    use serde_json::Value;

    #[test]
    fn regulate_is_a_mode_of_the_bridge_taking_no_other_field() {
        let p = parse_set(br#"{"mode":"Regulate","id":7}"#, 4096).unwrap();
        assert_eq!((p.action, p.id), (Action::Regulate, Some(Value::from(7))));
        let r = parse_set(br#"{"mode":"regulate","power":500,"id":"x"}"#, 4096).unwrap_err();
        assert!(r.error.starts_with("power:"), "{}", r.error);
        assert_eq!(r.id, Some(Value::from("x")));
        let f = parse_field("mode", b" regulate ", 64).unwrap();
        assert_eq!(f.action, Action::Regulate);
        assert!(parse_field("passive_power", b"regulate", 64).is_err());
    }

    #[test]
    fn evcc_words_numbers_and_json() {
        assert_eq!(parse_battery_mode("normal"), Ok(PlannerMode::Normal));
        assert_eq!(parse_battery_mode("2"), Ok(PlannerMode::Hold));
        assert_eq!(parse_battery_mode("holdcharge"), Ok(PlannerMode::Hold));
        assert_eq!(parse_battery_mode("3"), Ok(PlannerMode::Charge(None)));
        assert_eq!(
            parse_battery_mode(r#"{"mode":"charge","power":1500}"#),
            Ok(PlannerMode::Charge(Some(1500)))
        );
        assert_eq!(
            parse_battery_mode("Discharge"),
            Ok(PlannerMode::Discharge(None))
        );
        for bad in [
            "0",
            "unknown",
            r#"{"mode":"hold","power":100}"#,
            r#"{"mode":"charge","power":-5}"#,
            r#"{"mode":"charge","soc":80}"#,
            r#"{"mode":"charge","power":"NaN"}"#,
        ] {
            assert!(parse_battery_mode(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn batcontrol_modes_and_rates() {
        assert_eq!(
            parse_batcontrol_mode("force_charge"),
            Ok(PlannerMode::Charge(None))
        );
        assert_eq!(
            parse_batcontrol_mode("avoid_discharge"),
            Ok(PlannerMode::Hold)
        );
        assert_eq!(parse_charge_rate("1500.0"), Ok(1500));
        assert!(parse_charge_rate("NaN").is_err());
        assert!(parse_charge_rate("0").is_err());
        assert!(parse_batcontrol_mode("charge").is_err());
    }
}
