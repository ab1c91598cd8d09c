//! The simulated device's writes (`ES.SetMode`, `DOD.SET`): validation as the firmware does it,
//! then the behavioural faults that make a battery acknowledge a command it does not carry out
//! (`ignore-writes`, `busy`, `ignore-manual-power`) or undo it later (`revert-after`). Pure
//! functions on the model state; no sockets.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::faults::SimFaults;
use super::model::{Encoder, ModelState, SimSlot};
use crate::domain::Mode;

/// What an accepted `ES.SetMode` asks for.
enum Wanted {
    Plain(Mode),
    Passive { power: i32, cd_time: i64 },
    Manual { n: usize, slot: SimSlot },
}

fn chrono_of(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Whether a `busy` fault refuses a write now; an accepted write starts the busy window.
fn busy_refuses(s: &mut ModelState, faults: &SimFaults, now: DateTime<Utc>) -> bool {
    if faults.busy.is_some() && s.busy_until.is_some_and(|u| now < u) {
        return true;
    }
    s.busy_until = faults.busy.map(|b| now + chrono_of(b));
    false
}

/// `ES.SetMode`: Some(set_result), or None for "Method not found" (UPS on old firmware).
pub(super) fn set_mode(
    s: &mut ModelState,
    cfg: Option<&Value>,
    faults: &SimFaults,
    enc: &Encoder,
    now: DateTime<Utc>,
) -> Option<bool> {
    let Some(cfg) = cfg else {
        return Some(false);
    };
    let wanted = match cfg.get("mode").and_then(Value::as_str).unwrap_or("") {
        "Auto" => Wanted::Plain(Mode::Auto),
        "AI" => Wanted::Plain(Mode::Ai),
        "UPS" | "Ups" if !enc.supports_ups() => return None,
        "UPS" | "Ups" => Wanted::Plain(Mode::Ups),
        "Passive" => {
            let p = cfg.get("passive_cfg");
            let power = p.and_then(|p| p.get("power")).and_then(Value::as_i64);
            let cd = p.and_then(|p| p.get("cd_time")).and_then(Value::as_i64);
            match (power, cd) {
                (Some(pw), Some(cd)) if (0..=86_400).contains(&cd) && pw.abs() <= 10_000 => {
                    Wanted::Passive {
                        power: pw as i32,
                        cd_time: cd,
                    }
                }
                _ => return Some(false),
            }
        }
        // the device rejects Manual without a manual_cfg
        "Manual" => match cfg
            .get("manual_cfg")
            .and_then(|m| parse_slot(m, s.slots.len()))
        {
            Some((n, slot)) => Wanted::Manual { n, slot },
            None => return Some(false),
        },
        _ => return Some(false),
    };
    // Venus Mini fw 300 refuses Passive outright (jaapp #140).
    if faults.ignore_manual_power && matches!(wanted, Wanted::Passive { .. }) {
        return Some(false);
    }
    if busy_refuses(s, faults, now) {
        return Some(false);
    }
    if faults.ignore_writes {
        return Some(true);
    }
    s.revert_at = None;
    match wanted {
        Wanted::Plain(m) => {
            s.mode = m;
            s.passive_until = None;
            return Some(true);
        }
        Wanted::Passive { power, cd_time } => {
            s.mode = Mode::Passive;
            s.passive_power = power;
            s.passive_until = Some(now + chrono::Duration::seconds(cd_time));
        }
        Wanted::Manual { n, mut slot } => {
            if faults.ignore_manual_power {
                slot.power = 0; // silently dropped, still acknowledged
            }
            if let Some(x) = s.slots.get_mut(n) {
                *x = Some(slot);
            }
            s.mode = Mode::Manual;
            s.passive_until = None;
        }
    }
    s.revert_at = faults.revert_after.map(|d| now + chrono_of(d));
    Some(true)
}

/// `DOD.SET` with `value`: the set_result.
pub(super) fn set_dod(
    s: &mut ModelState,
    value: Option<i64>,
    faults: &SimFaults,
    now: DateTime<Utc>,
) -> bool {
    let Some(v @ 30..=88) = value else {
        return false;
    };
    if busy_refuses(s, faults, now) {
        return false;
    }
    if !faults.ignore_writes {
        s.dod = v as u8;
    }
    true
}

fn parse_hhmm(v: Option<&Value>) -> Option<u32> {
    let s = v?.as_str()?;
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn parse_slot(m: &Value, slots: usize) -> Option<(usize, SimSlot)> {
    let n = usize::try_from(m.get("time_num")?.as_i64()?).ok()?;
    if n >= slots {
        return None;
    }
    let week = m.get("week_set")?.as_i64()?;
    let power = m.get("power")?.as_i64()?;
    let enable = m.get("enable")?.as_i64()?;
    if !(0..=255).contains(&week) || power.abs() > 10_000 || !(0..=1).contains(&enable) {
        return None;
    }
    Some((
        n,
        SimSlot {
            start_min: parse_hhmm(m.get("start_time"))?,
            end_min: parse_hhmm(m.get("end_time"))?,
            week: (week & 0x7F) as u8,
            power: power as i32,
            enable: enable == 1,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::model::SimProfile;
    use serde_json::json;
    use std::time::Duration;

    fn enc() -> Encoder {
        Encoder {
            profile: SimProfile::VenusE3,
            ver: 150,
            fw148_shape: false,
        }
    }

    fn passive(power: i64) -> Value {
        json!({"mode": "Passive", "passive_cfg": {"power": power, "cd_time": 600}})
    }

    #[test]
    fn faults_change_what_an_acknowledged_write_does() {
        let spec = SimProfile::VenusE3.spec();
        let t0 = Utc::now();
        let mut s = ModelState::new(&spec, 50.0, t0);
        let ignore = SimFaults {
            ignore_writes: true,
            ..Default::default()
        };
        assert_eq!(
            set_mode(&mut s, Some(&passive(-800)), &ignore, &enc(), t0),
            Some(true)
        );
        assert_eq!(s.mode, Mode::Auto, "acknowledged, not applied");
        assert!(set_dod(&mut s, Some(50), &ignore, t0));
        assert_eq!(s.dod, 88);

        let busy = SimFaults {
            busy: Some(Duration::from_secs(10)),
            ..Default::default()
        };
        assert_eq!(
            set_mode(&mut s, Some(&passive(-800)), &busy, &enc(), t0),
            Some(true)
        );
        let t5 = t0 + chrono::Duration::seconds(5);
        assert_eq!(
            set_mode(&mut s, Some(&passive(500)), &busy, &enc(), t5),
            Some(false)
        );
        assert_eq!(s.passive_power, -800);
        let t11 = t0 + chrono::Duration::seconds(11);
        assert_eq!(
            set_mode(&mut s, Some(&passive(500)), &busy, &enc(), t11),
            Some(true)
        );
        assert_eq!(s.passive_power, 500);

        let mini = SimFaults {
            ignore_manual_power: true,
            ..Default::default()
        };
        assert_eq!(
            set_mode(&mut s, Some(&passive(-800)), &mini, &enc(), t11),
            Some(false)
        );
        let manual = json!({"mode": "Manual", "manual_cfg": {"time_num": 0, "start_time": "00:00",
            "end_time": "23:59", "week_set": 127, "power": -900, "enable": 1}});
        assert_eq!(
            set_mode(&mut s, Some(&manual), &mini, &enc(), t11),
            Some(true)
        );
        assert_eq!(s.mode, Mode::Manual);
        assert_eq!(
            s.slots[0].map(|x| x.power),
            Some(0),
            "power silently dropped"
        );
    }

    #[test]
    fn revert_after_falls_back_to_auto() {
        let spec = SimProfile::VenusE3.spec();
        let t0 = Utc::now();
        let mut s = ModelState::new(&spec, 50.0, t0);
        let revert = SimFaults {
            revert_after: Some(Duration::from_secs(120)),
            ..Default::default()
        };
        assert_eq!(
            set_mode(&mut s, Some(&passive(-800)), &revert, &enc(), t0),
            Some(true)
        );
        s.advance(
            &spec,
            t0 + chrono::Duration::seconds(100),
            chrono_tz::Tz::UTC,
        );
        assert_eq!(s.mode, Mode::Passive);
        assert_eq!(s.bat_power, -800.0);
        s.advance(
            &spec,
            t0 + chrono::Duration::seconds(200),
            chrono_tz::Tz::UTC,
        );
        assert_eq!(s.mode, Mode::Auto);
        // Auto itself is never reverted
        let auto = json!({"mode": "Auto", "auto_cfg": {"enable": 1}});
        assert_eq!(
            set_mode(&mut s, Some(&auto), &revert, &enc(), t0),
            Some(true)
        );
        assert_eq!(s.revert_at, None);
    }
}
