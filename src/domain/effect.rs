//! The measurable effect of a mode command: the battery power a Passive set-point (or a Manual
//! slot that covers every minute of every day) should make the battery show, within its limits
//! and SOC, whether a measured power matches it, and the mode inferred from a measured power on
//! firmware where reading `ES.GetMode` would undo the command (fw 148, jaapp #111). Used by the
//! driver (to infer the mode without asking) and by the verifier (to check a write by its
//! effect). Pure functions; no I/O.

use super::{DeviceLimits, HhMm, Mode, ModeConfig, WeekMask};

/// How far a measured power may be from the expected one and still count as its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerTolerance {
    /// Absolute tolerance, W…
    pub watts: u32,
    /// …or this share of the expected power, %, whichever is larger.
    pub pct: u8,
}

impl PowerTolerance {
    /// 150 W or 25 %, the verifier's defaults.
    pub const DEFAULT: PowerTolerance = PowerTolerance {
        watts: 150,
        pct: 25,
    };

    /// Whether `measured` W is `expected` W: the same direction, roughly the same size.
    pub fn matches(&self, expected: i32, measured: i32) -> bool {
        let pct = (f64::from(expected.unsigned_abs()) * f64::from(self.pct) / 100.0) as u32;
        let tol = self.watts.max(pct);
        let direction = expected == 0 || expected.signum() == measured.signum();
        direction && expected.abs_diff(measured) <= tol
    }
}

/// Whether a Manual slot is due at every minute of every day (whatever the battery's clock and
/// time zone say): enabled, all week, 00:00 to 23:59.
fn always_due(start: HhMm, end: HhMm, days: WeekMask, enable: bool) -> bool {
    enable && days == WeekMask::ALL && start.minutes() == 0 && end.minutes() == 23 * 60 + 59
}

/// The battery power, W (+ discharge, − charge), that `config` should make a battery with these
/// limits and this SOC (%) show: a Passive set-point, or the power of a Manual slot due at every
/// minute, clamped to the limits. None when nothing measurable is due (other modes, a slot that
/// is not always due, a zero-power slot) or when the battery is at the SOC bound it would push
/// against (it may then rightly not move).
pub fn expected_power(config: &ModeConfig, limits: &DeviceLimits, soc: Option<u8>) -> Option<i32> {
    let asked = match config {
        ModeConfig::Passive { power, .. } => power.0,
        ModeConfig::Manual { slot }
            if slot.power.0 != 0 && always_due(slot.start, slot.end, slot.days, slot.enable) =>
        {
            slot.power.0
        }
        _ => return None,
    };
    let p = asked.clamp(-(limits.max_charge_w as i32), limits.max_discharge_w as i32);
    let blocked = match soc {
        Some(s) => p < 0 && s >= 99 || p > 0 && s <= limits.min_soc.max(1),
        None => false,
    };
    (!blocked).then_some(p)
}

/// The mode a battery is in after `written` was accepted, inferred from the power it shows:
/// the written mode when the power is its effect, Auto when it is not (firmware that undoes a
/// command falls back to Auto), None when no effect is measurable (or no power was read).
pub fn infer_mode(
    written: &ModeConfig,
    limits: &DeviceLimits,
    soc: Option<u8>,
    bat_power_w: Option<i32>,
    tolerance: &PowerTolerance,
) -> Option<Mode> {
    let expected = expected_power(written, limits, soc)?;
    let measured = bat_power_w?;
    Some(if tolerance.matches(expected, measured) {
        written.mode()
    } else {
        Mode::Auto
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ManualSlot, Watts};

    fn slot(start: &str, end: &str, days: u8, power: i32) -> ModeConfig {
        ModeConfig::Manual {
            slot: ManualSlot {
                slot: 0,
                start: HhMm::parse(start).unwrap(),
                end: HhMm::parse(end).unwrap(),
                days: WeekMask(days),
                power: Watts(power),
                enable: true,
            },
        }
    }

    fn passive(power: i32) -> ModeConfig {
        ModeConfig::Passive {
            power: Watts(power),
            cd_time: 600,
        }
    }

    #[test]
    fn only_an_always_due_slot_has_a_measurable_power() {
        let l = DeviceLimits::default();
        assert_eq!(
            expected_power(&slot("00:00", "23:59", 127, -900), &l, Some(50)),
            Some(-900)
        );
        assert_eq!(
            expected_power(&slot("22:00", "06:00", 127, -900), &l, Some(50)),
            None
        );
        assert_eq!(
            expected_power(&slot("00:00", "23:59", 31, -900), &l, Some(50)),
            None
        );
        assert_eq!(
            expected_power(&slot("00:00", "23:59", 127, 0), &l, Some(50)),
            None
        );
        assert_eq!(expected_power(&passive(-3000), &l, None), Some(-2500));
    }

    #[test]
    fn the_mode_is_inferred_from_the_power_only_when_it_can_be() {
        let (l, t) = (DeviceLimits::default(), PowerTolerance::DEFAULT);
        let p = passive(-1500);
        assert_eq!(
            infer_mode(&p, &l, Some(50), Some(-1450), &t),
            Some(Mode::Passive)
        );
        assert_eq!(
            infer_mode(&p, &l, Some(50), Some(380), &t),
            Some(Mode::Auto)
        );
        assert_eq!(infer_mode(&p, &l, Some(50), Some(0), &t), Some(Mode::Auto));
        assert_eq!(infer_mode(&p, &l, Some(100), Some(0), &t), None, "full");
        assert_eq!(infer_mode(&p, &l, Some(50), None, &t), None, "no power");
        assert_eq!(
            infer_mode(&ModeConfig::Auto, &l, Some(50), Some(0), &t),
            None
        );
    }

    #[test]
    fn tolerance_is_the_larger_of_watts_and_share_and_keeps_the_direction() {
        let t = PowerTolerance::DEFAULT;
        assert!(t.matches(-1500, -1200));
        assert!(!t.matches(-1500, -1100));
        assert!(t.matches(-400, -260));
        assert!(!t.matches(-100, 40), "wrong direction");
        assert!(t.matches(0, -100));
    }
}
