//! Parsing and validation of command payloads from `<dev>/set` (JSON) and `<dev>/set/<field>`
//! (plain values for Home Assistant entities) into domain `Command`s; the `<dev>/response`
//! payload is formatted in `mqtt::response`. Pure: no I/O. Limits that depend on the device (power) are checked later by the
//! safety envelope in `control::CommandService`; everything else is checked here.

use serde::Deserialize;
use serde_json::Value;

use crate::domain::{
    Command, DOD_RANGE, HhMm, MAX_PASSIVE_SECONDS, MAX_SLOT, ManualSlot, Mode, ModeConfig, Percent,
    Watts, WeekMask,
};

pub use crate::control::DEFAULT_PASSIVE_SECONDS;
use crate::mqtt::planner::{self, PlannerMode};
pub use crate::mqtt::response::CommandResponse;

/// A refused payload: the id to echo (if one could be read) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The `id` of the payload, when it was readable.
    pub id: Option<Value>,
    /// Human-readable reason, naming the field and what is allowed.
    pub error: String,
}

impl Refusal {
    fn new(id: Option<Value>, error: impl Into<String>) -> Self {
        Self {
            id,
            error: error.into(),
        }
    }
}

/// What a valid message asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Submit these commands in order (several Manual slots give several commands).
    Submit(Vec<Command>),
    /// Remember a Passive power set-point for this device (W, negative = charge); nothing sent.
    RememberPassivePower(i32),
    /// Remember a Passive duration for this device (s); nothing sent.
    RememberPassiveDuration(u32),
    /// Apply Passive with the remembered power and duration.
    ApplyPassive,
    /// Put the battery in `regulate` mode (the regulator drives it on the grid meter).
    Regulate,
    /// An external planner's mode (evcc, batcontrol), resolved against the battery's limits.
    Planner(PlannerMode),
    /// Set (true) or release the battery's maintenance hold; nothing is sent to the battery.
    Maintenance(bool),
}

/// The bridge's own mode name (not a device mode): the regulator drives the battery.
pub const REGULATE: &str = "regulate";

fn is_regulate(s: &str) -> bool {
    s.trim().eq_ignore_ascii_case(REGULATE)
}

/// A parsed message: optional correlation id plus the action.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// `id` echoed in the response (any JSON value), if given.
    pub id: Option<Value>,
    /// The payload as received, for the audit row: the JSON, or the plain value (as JSON when
    /// it is a JSON number or boolean, else as text).
    pub received: Value,
    /// What to do.
    pub action: Action,
}

/// The slot written when the user selects plain Manual: slot 9, disabled, so the device's own
/// slots stay as they are (the device refuses Manual without a `manual_cfg`).
pub fn placeholder_slot() -> ManualSlot {
    ManualSlot {
        slot: MAX_SLOT,
        start: HhMm { hour: 0, minute: 0 },
        end: HhMm {
            hour: 23,
            minute: 59,
        },
        days: WeekMask::ALL,
        power: Watts(0),
        enable: false,
    }
}

/// Decodes the raw bytes: size cap, UTF-8, trimmed.
pub fn decode_text(payload: &[u8], max: usize) -> Result<&str, String> {
    if payload.len() > max {
        return Err(format!(
            "payload too large: {} bytes (at most {max})",
            payload.len()
        ));
    }
    let s = std::str::from_utf8(payload).map_err(|_| "payload is not valid UTF-8".to_string())?;
    Ok(s.trim())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPayload {
    /// Read separately (so it is echoed even when the rest is invalid).
    #[serde(default, rename = "id")]
    _id: Option<serde::de::IgnoredAny>,
    mode: Option<String>,
    power: Option<i64>,
    duration: Option<i64>,
    slots: Option<Vec<SlotPayload>>,
    dod: Option<i64>,
    led: Option<bool>,
    ble_adv: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Days {
    Mask(i64),
    Names(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotPayload {
    slot: i64,
    start: String,
    end: String,
    #[serde(default)]
    days: Option<Days>,
    power: i64,
    #[serde(default)]
    enable: Option<bool>,
}

fn power(field: &str, v: i64) -> Result<Watts, String> {
    i32::try_from(v)
        .ok()
        .filter(|p| p.unsigned_abs() <= 100_000)
        .map(Watts)
        .ok_or_else(|| format!("{field}: {v} W is not a plausible power (W, negative = charge, positive = discharge)"))
}

/// Checks a Passive duration, s (1..=86400).
pub fn duration(v: i64) -> Result<u32, String> {
    if (1..=MAX_PASSIVE_SECONDS as i64).contains(&v) {
        Ok(v as u32)
    } else {
        Err(format!(
            "duration: {v} s is out of range (1 to {MAX_PASSIVE_SECONDS} s)"
        ))
    }
}

fn dod(v: i64) -> Result<Percent, String> {
    if (*DOD_RANGE.start() as i64..=*DOD_RANGE.end() as i64).contains(&v) {
        Ok(Percent(v as u8))
    } else {
        Err(format!(
            "dod: {v} % is out of range ({} to {} %)",
            DOD_RANGE.start(),
            DOD_RANGE.end()
        ))
    }
}

fn slot(i: usize, s: SlotPayload) -> Result<ManualSlot, String> {
    let at = |e: String| format!("slots[{i}].{e}");
    if !(0..=MAX_SLOT as i64).contains(&s.slot) {
        return Err(at(format!(
            "slot: {} does not exist (0 to {MAX_SLOT})",
            s.slot
        )));
    }
    let start = HhMm::parse(&s.start).map_err(|e| at(format!("start: {e}")))?;
    let end = HhMm::parse(&s.end).map_err(|e| at(format!("end: {e}")))?;
    let days = match s.days {
        None => WeekMask::ALL,
        Some(Days::Mask(m)) => WeekMask::from_bits(m).map_err(|e| at(format!("days: {e}")))?,
        Some(Days::Names(n)) => WeekMask::from_names(&n).map_err(|e| at(format!("days: {e}")))?,
    };
    Ok(ManualSlot {
        slot: s.slot as u8,
        start,
        end,
        days,
        power: power("power", s.power).map_err(at)?,
        enable: s.enable.unwrap_or(true),
    })
}

/// The first control character (U+0000–U+001F, U+007F–U+009F) in a JSON value's strings or
/// keys, if any.
pub fn control_char(v: &Value) -> Option<char> {
    let in_text = |s: &str| s.chars().find(|c| c.is_control());
    match v {
        Value::String(s) => in_text(s),
        Value::Array(a) => a.iter().find_map(control_char),
        Value::Object(m) => m
            .iter()
            .find_map(|(k, v)| in_text(k).or_else(|| control_char(v))),
        _ => None,
    }
}

/// Parses a JSON payload from `<dev>/set`.
pub fn parse_set(payload: &[u8], max: usize) -> Result<Parsed, Refusal> {
    let text = decode_text(payload, max).map_err(|e| Refusal::new(None, e))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Refusal::new(None, format!("payload is not JSON: {e}")))?;
    let Value::Object(map) = &value else {
        return Err(Refusal::new(
            None,
            "payload must be a JSON object, e.g. {\"mode\":\"auto\"}",
        ));
    };
    let id = map.get("id").cloned();
    if let Some(c) = id.as_ref().and_then(control_char) {
        // PostgreSQL's jsonb cannot store U+0000: what could not be audited is not run.
        return Err(Refusal::new(
            id.clone(),
            format!(
                "id: contains the control character U+{:04X}; use printable text (ids are recorded in the audit)",
                c as u32
            ),
        ));
    }
    let received = value.clone();
    if map
        .get("mode")
        .and_then(Value::as_str)
        .is_some_and(is_regulate)
    {
        if let Some(k) = map.keys().find(|k| !matches!(k.as_str(), "id" | "mode")) {
            return Err(Refusal::new(
                id,
                format!("{k}: mode regulate takes no other field (the regulator sets the power)"),
            ));
        }
        return Ok(Parsed {
            id,
            received,
            action: Action::Regulate,
        });
    }
    let commands = serde_json::from_value(value)
        .map_err(|e| format!("invalid command: {e}"))
        .and_then(set_commands)
        .map_err(|e| Refusal::new(id.clone(), e))?;
    Ok(Parsed {
        id,
        received,
        action: Action::Submit(commands),
    })
}

/// The commands of a well-formed `/set` object: exactly one of mode, dod, led, ble_adv.
fn set_commands(p: SetPayload) -> Result<Vec<Command>, String> {
    let chosen = [
        p.mode.is_some(),
        p.dod.is_some(),
        p.led.is_some(),
        p.ble_adv.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if chosen != 1 {
        return Err("give exactly one of mode, dod, led, ble_adv".to_string());
    }
    if p.mode.is_none() && (p.power.is_some() || p.duration.is_some() || p.slots.is_some()) {
        return Err("power, duration and slots only go with mode".to_string());
    }
    if let Some(m) = &p.mode {
        let mode = Mode::parse(m).map_err(|e| format!("mode: {e}"))?;
        mode_commands(mode, p)
    } else if let Some(d) = p.dod {
        Ok(vec![Command::SetDod { value: dod(d)? }])
    } else if let Some(on) = p.led {
        Ok(vec![Command::SetLed { on }])
    } else if let Some(on) = p.ble_adv {
        Ok(vec![Command::SetBleAdv { on }])
    } else {
        Err("nothing to do".into())
    }
}

/// The commands of `{"mode": …}`, with the power, duration or slots that mode takes.
fn mode_commands(mode: Mode, p: SetPayload) -> Result<Vec<Command>, String> {
    if mode != Mode::Passive && (p.power.is_some() || p.duration.is_some()) {
        return Err(format!(
            "power and duration only go with mode passive, not {mode}"
        ));
    }
    if mode != Mode::Manual && p.slots.is_some() {
        return Err(format!("slots only go with mode manual, not {mode}"));
    }
    Ok(match mode {
        Mode::Auto => vec![Command::SetMode(ModeConfig::Auto)],
        Mode::Ai => vec![Command::SetMode(ModeConfig::Ai)],
        Mode::Ups => vec![Command::SetMode(ModeConfig::Ups)],
        Mode::Passive => {
            let pw = p
                .power
                .ok_or("mode passive needs power (W, negative = charge)")?;
            let power = power("power", pw)?;
            let cd_time = match p.duration {
                Some(d) => duration(d)?,
                None => DEFAULT_PASSIVE_SECONDS,
            };
            vec![Command::SetMode(ModeConfig::Passive { power, cd_time })]
        }
        Mode::Manual => match p.slots {
            None => vec![Command::SetMode(ModeConfig::Manual {
                slot: placeholder_slot(),
            })],
            Some(slots) => manual_slots(slots)?,
        },
    })
}

/// One Manual command per slot: 1 to 10 slots, each slot number at most once.
fn manual_slots(slots: Vec<SlotPayload>) -> Result<Vec<Command>, String> {
    if slots.is_empty() || slots.len() > MAX_SLOT as usize + 1 {
        return Err(format!("slots: give 1 to {} slots", MAX_SLOT as usize + 1));
    }
    let mut seen = [false; MAX_SLOT as usize + 1];
    let mut out = Vec::new();
    for (i, s) in slots.into_iter().enumerate() {
        let s = slot(i, s)?;
        if std::mem::replace(&mut seen[s.slot as usize], true) {
            return Err(format!("slots[{i}].slot: slot {} is given twice", s.slot));
        }
        out.push(Command::SetMode(ModeConfig::Manual { slot: s }));
    }
    Ok(out)
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(format!(
            "'{s}' is not a switch value (ON/OFF, true/false, 1/0)"
        )),
    }
}

fn parse_int(field: &str, s: &str) -> Result<i64, String> {
    // HA numbers may send "1500.0".
    if let Ok(v) = s.parse::<i64>() {
        return Ok(v);
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e12 => Ok(f as i64),
        _ => Err(format!("{field}: '{s}' is not a whole number")),
    }
}

/// Fields accepted on `<dev>/set/<field>` (batcontrol's commands arrive as `batcontrol_mode`
/// and `batcontrol_charge_rate`, from `<dev>/batcontrol/command/…`).
pub const FIELDS: [&str; 11] = [
    "mode",
    "battery_mode",
    "batcontrol_mode",
    "batcontrol_charge_rate",
    "passive_power",
    "passive_duration",
    "apply_passive",
    "dod",
    "led",
    "ble_adv",
    "maintenance",
];

/// Parses a plain value from `<dev>/set/<field>`.
///
/// `mode` = `Passive` applies Passive with the remembered power/duration (like `apply_passive`);
/// `Manual` writes the disabled placeholder slot 9 (keeps the device's own slots).
pub fn parse_field(field: &str, payload: &[u8], max: usize) -> Result<Parsed, Refusal> {
    let text = decode_text(payload, max).map_err(|e| Refusal::new(None, e))?;
    let fail = |e: String| Refusal::new(None, e);
    let action = match field {
        "mode" if is_regulate(text) => Action::Regulate,
        "mode" => match Mode::parse(text).map_err(|e| fail(format!("mode: {e}")))? {
            Mode::Auto => Action::Submit(vec![Command::SetMode(ModeConfig::Auto)]),
            Mode::Ai => Action::Submit(vec![Command::SetMode(ModeConfig::Ai)]),
            Mode::Ups => Action::Submit(vec![Command::SetMode(ModeConfig::Ups)]),
            Mode::Manual => Action::Submit(vec![Command::SetMode(ModeConfig::Manual {
                slot: placeholder_slot(),
            })]),
            Mode::Passive => Action::ApplyPassive,
        },
        "passive_power" => {
            let v = parse_int("passive_power", text).map_err(&fail)?;
            Action::RememberPassivePower(power("passive_power", v).map_err(&fail)?.0)
        }
        "passive_duration" => {
            let v = parse_int("passive_duration", text).map_err(&fail)?;
            Action::RememberPassiveDuration(duration(v).map_err(&fail)?)
        }
        "apply_passive" => Action::ApplyPassive,
        "battery_mode" => Action::Planner(planner::parse_battery_mode(text).map_err(&fail)?),
        "batcontrol_mode" => Action::Planner(planner::parse_batcontrol_mode(text).map_err(&fail)?),
        "batcontrol_charge_rate" => {
            let w = planner::parse_charge_rate(text).map_err(&fail)?;
            // Remembered as the (negative) Passive power `force_charge` then uses.
            Action::RememberPassivePower(-(w.min(100_000) as i32))
        }
        "dod" => {
            let v = parse_int("dod", text).map_err(&fail)?;
            Action::Submit(vec![Command::SetDod {
                value: dod(v).map_err(&fail)?,
            }])
        }
        "led" => Action::Submit(vec![Command::SetLed {
            on: parse_bool(text).map_err(|e| fail(format!("led: {e}")))?,
        }]),
        "ble_adv" => Action::Submit(vec![Command::SetBleAdv {
            on: parse_bool(text).map_err(|e| fail(format!("ble_adv: {e}")))?,
        }]),
        "maintenance" => {
            Action::Maintenance(parse_bool(text).map_err(|e| fail(format!("maintenance: {e}")))?)
        }
        other => {
            return Err(fail(format!(
                "unknown field '{other}' (allowed: {})",
                FIELDS.join(", ")
            )));
        }
    };
    // The plain value as sent: `800` and `true` are JSON, `Passive` and `ON` are text.
    let received = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into()));
    Ok(Parsed {
        id: None,
        received,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{CommandError, Outcome};
    use crate::domain::CommandStatus;

    fn set(s: &str) -> Result<Parsed, Refusal> {
        parse_set(s.as_bytes(), 4096)
    }

    #[test]
    fn valid_set_payloads() {
        assert_eq!(
            set(r#"{"mode":"auto"}"#).unwrap().action,
            Action::Submit(vec![Command::SetMode(ModeConfig::Auto)])
        );
        let p = set(r#"{"mode":"passive","power":-1500,"duration":7200,"id":"a"}"#).unwrap();
        assert_eq!(p.id, Some(Value::from("a")));
        assert_eq!(
            p.action,
            Action::Submit(vec![Command::SetMode(ModeConfig::Passive {
                power: Watts(-1500),
                cd_time: 7200
            })])
        );
        let p = set(r#"{"mode":"manual","slots":[{"slot":0,"start":"22:00","end":"06:00","days":["mon","fri"],"power":-1200,"enable":true},{"slot":1,"start":"08:00","end":"09:00","days":127,"power":300}]}"#).unwrap();
        let Action::Submit(cmds) = p.action else {
            panic!()
        };
        assert_eq!(cmds.len(), 2);
        let Command::SetMode(ModeConfig::Manual { slot }) = &cmds[0] else {
            panic!()
        };
        assert_eq!(slot.days, WeekMask(1 | 16));
        assert_eq!(
            set(r#"{"mode":"manual"}"#).unwrap().action,
            Action::Submit(vec![Command::SetMode(ModeConfig::Manual {
                slot: placeholder_slot()
            })])
        );
        assert!(set(r#"{"dod":80}"#).is_ok());
        assert!(set(r#"{"led":true}"#).is_ok());
        assert!(set(r#"{"ble_adv":false}"#).is_ok());
    }

    #[test]
    fn bad_set_payloads_are_refused_with_reason() {
        let cases = [
            "",
            "not json",
            "[1,2]",
            "42",
            r#"{"mode":"turbo"}"#,
            r#"{"mode":"auto","power":5}"#,
            r#"{"mode":"passive"}"#,
            r#"{"mode":"passive","power":"-800"}"#,
            r#"{"mode":"passive","power":-800,"duration":0}"#,
            r#"{"mode":"passive","power":-800,"duration":86401}"#,
            r#"{"mode":"passive","power":99999999999}"#,
            r#"{"mode":"auto","colour":"red"}"#,
            r#"{"dod":29}"#,
            r#"{"dod":89}"#,
            r#"{"dod":80,"led":true}"#,
            r#"{}"#,
            r#"{"led":"yes"}"#,
            r#"{"mode":"manual","slots":[]}"#,
            r#"{"mode":"manual","slots":[{"slot":10,"start":"22:00","end":"06:00","power":0}]}"#,
            r#"{"mode":"manual","slots":[{"slot":1,"start":"24:00","end":"06:00","power":0}]}"#,
            r#"{"mode":"manual","slots":[{"slot":1,"start":"22:00","end":"6h","power":0}]}"#,
            r#"{"mode":"manual","slots":[{"slot":1,"start":"22:00","end":"06:00","days":0,"power":0}]}"#,
            r#"{"mode":"manual","slots":[{"slot":1,"start":"22:00","end":"06:00","days":128,"power":0}]}"#,
            r#"{"mode":"manual","slots":[{"slot":1,"start":"22:00","end":"06:00","days":["funday"],"power":0}]}"#,
            r#"{"mode":"manual","slots":[{"slot":1,"start":"22:00","end":"06:00","power":0,"x":1}]}"#,
            r#"{"mode":"manual","slots":[{"slot":1,"start":"22:00","end":"06:00","power":0},{"slot":1,"start":"22:00","end":"06:00","power":0}]}"#,
            r#"{"mode":"auto","slots":[]}"#,
        ];
        for c in cases {
            let r = set(c);
            assert!(r.is_err(), "accepted: {c}");
            assert!(!r.unwrap_err().error.is_empty());
        }
        let big = format!("{{\"mode\":\"auto\",\"id\":\"{}\"}}", "x".repeat(5000));
        assert!(set(&big).unwrap_err().error.contains("too large"));
        assert!(
            parse_set(&[0xff, 0xfe], 4096)
                .unwrap_err()
                .error
                .contains("UTF-8")
        );
        assert_eq!(
            set(r#"{"id":7,"dod":5}"#).unwrap_err().id,
            Some(Value::from(7))
        );
        for id in [
            r#""nul\u0000audit""#,
            r#""tab\tid""#,
            r#"{"a":["x\u001b"]}"#,
            r#"{"k\u0000":1}"#,
        ] {
            let r = set(&format!(r#"{{"mode":"auto","id":{id}}}"#)).unwrap_err();
            assert!(
                r.error.starts_with("id: contains the control character"),
                "{id}: {}",
                r.error
            );
        }
        assert!(set(r#"{"mode":"auto","id":"café ☀ 1"}"#).is_ok());
    }

    #[test]
    fn plain_fields() {
        let f = |k: &str, v: &str| parse_field(k, v.as_bytes(), 4096);
        assert_eq!(
            f("mode", "manual").unwrap().action,
            Action::Submit(vec![Command::SetMode(ModeConfig::Manual {
                slot: placeholder_slot()
            })])
        );
        assert_eq!(f("mode", "Passive").unwrap().action, Action::ApplyPassive);
        assert_eq!(
            f("passive_power", "-1500.0").unwrap().action,
            Action::RememberPassivePower(-1500)
        );
        assert_eq!(
            f("passive_duration", "600").unwrap().action,
            Action::RememberPassiveDuration(600)
        );
        assert_eq!(
            f("led", "OFF").unwrap().action,
            Action::Submit(vec![Command::SetLed { on: false }])
        );
        for (k, v) in [
            ("mode", "fast"),
            ("passive_power", "abc"),
            ("passive_duration", "0"),
            ("dod", "95"),
            ("led", "maybe"),
            ("colour", "red"),
        ] {
            assert!(f(k, v).is_err(), "{k}={v} accepted");
        }
    }

    fn report(
        applied: Value,
        verified: bool,
    ) -> Result<crate::domain::CommandReport, CommandError> {
        Ok(crate::domain::CommandReport {
            applied,
            verified,
            observed_mode: None,
            latency_ms: 1.0,
            note: None,
        })
    }

    #[test]
    fn one_command_answers_with_its_report_and_several_with_one_each() {
        let one = Outcome {
            results: vec![report(serde_json::json!({ "led": 1 }), true)],
            pending: None,
        };
        let r = CommandResponse::from_outcome(Some(Value::from(7)), one);
        assert_eq!((r.status, r.verified), (CommandStatus::Ok, true));
        assert_eq!(r.applied, Some(serde_json::json!({ "led": 1 })));

        let failed = Err(CommandError::UnknownDevice("x".into()));
        let two = Outcome {
            results: vec![report(Value::Null, true), failed],
            pending: None,
        };
        let r = CommandResponse::from_outcome(None, two);
        assert_eq!(r.status, CommandStatus::Error);
        assert_eq!(r.error.as_deref(), Some("slots[1]: unknown device 'x'"));
        let applied = r.applied.unwrap();
        assert_eq!(applied[0]["status"], "ok");
        assert_eq!(applied[1]["error"], "slots[1]: unknown device 'x'");
        assert!(!r.verified);
    }
}
