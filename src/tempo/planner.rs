//! Precharge maths, pure: how much grid charge power a battery needs to reach the target SOC by
//! the end of the off-peak window, rounded up to 50 W and clamped to the device's limit.

use serde::{Deserialize, Serialize};

use crate::domain::{Percent, Watts};

/// Power step the planner rounds up to, W.
pub const POWER_STEP_W: u32 = 50;

/// What the planner knows about one battery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatteryNeed {
    /// Current SOC, %, when known.
    pub soc: Option<Percent>,
    /// Usable capacity, Wh, when known (configured, else the rated capacity the device reports).
    pub capacity_wh: Option<f64>,
    /// Largest charge power the device accepts, W (positive).
    pub max_charge_w: u32,
    /// Highest SOC the bridge may charge to, % (device limit).
    pub max_soc: u8,
}

/// The planner's answer for one battery.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum PrechargeOutcome {
    /// Charge at this power (negative = charge), to this target SOC.
    Charge {
        /// Power to apply, W (negative).
        power: Watts,
        /// Target SOC actually used (capped by the device's max SOC), %.
        target_soc: Percent,
        /// Energy still needed, Wh.
        energy_wh: f64,
    },
    /// Already at or above the target.
    Full,
    /// SOC unknown: nothing can be computed.
    MissingSoc,
    /// Capacity unknown: nothing can be computed.
    MissingCapacity,
    /// No off-peak time left tonight.
    NoTimeLeft,
}

/// Power needed to take a battery to `target_soc` within `hours`, with `margin` (0.1 = +10 %).
///
/// energy = (target − SOC) × capacity; power = energy / hours × (1 + margin), rounded up to
/// 50 W, clamped to `max_charge_w`, returned negative (device convention: charge).
pub fn precharge(need: &BatteryNeed, target_soc: u8, hours: f64, margin: f64) -> PrechargeOutcome {
    let target = target_soc.min(need.max_soc).min(100);
    let Some(soc) = need.soc else {
        return PrechargeOutcome::MissingSoc;
    };
    if soc.0 >= target {
        return PrechargeOutcome::Full;
    }
    let capacity = match need.capacity_wh {
        Some(c) if c.is_finite() && c > 0.0 => c,
        _ => return PrechargeOutcome::MissingCapacity,
    };
    if !hours.is_finite() || hours <= 0.0 {
        return PrechargeOutcome::NoTimeLeft;
    }
    let margin = if margin.is_finite() {
        margin.max(0.0)
    } else {
        0.0
    };
    let energy_wh = f64::from(target - soc.0) / 100.0 * capacity;
    let raw = energy_wh / hours * (1.0 + margin);
    let step = f64::from(POWER_STEP_W);
    let rounded = (raw / step).ceil() * step;
    let max = f64::from(need.max_charge_w);
    let power = rounded.min(max).max(0.0);
    if power < 1.0 {
        // A device allowing 0 W of charge cannot be precharged.
        return PrechargeOutcome::NoTimeLeft;
    }
    PrechargeOutcome::Charge {
        power: Watts(-(power as i32)),
        target_soc: Percent(target),
        energy_wh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(soc: Option<u8>, cap: Option<f64>, max: u32) -> BatteryNeed {
        BatteryNeed {
            soc: soc.map(Percent),
            capacity_wh: cap,
            max_charge_w: max,
            max_soc: 100,
        }
    }

    fn power(o: PrechargeOutcome) -> i32 {
        match o {
            PrechargeOutcome::Charge { power, .. } => power.0,
            other => panic!("expected a charge, got {other:?}"),
        }
    }

    #[test]
    fn exact_maths_rounded_up_to_fifty() {
        // (95 − 20) % of 5120 Wh = 3840 Wh over 8 h = 480 W, +10 % = 528 → 550 W.
        let o = precharge(&need(Some(20), Some(5120.0), 2500), 95, 8.0, 0.1);
        assert_eq!(power(o), -550);
        if let PrechargeOutcome::Charge {
            energy_wh,
            target_soc,
            ..
        } = o
        {
            assert!((energy_wh - 3840.0).abs() < 1e-9);
            assert_eq!(target_soc, Percent(95));
        }
        // Exactly on a step stays there: 50 % of 800 Wh = 400 Wh / 8 h = 50 W, no margin.
        assert_eq!(
            power(precharge(&need(Some(45), Some(800.0), 2500), 95, 8.0, 0.0)),
            -50
        );
        // Just above a step goes to the next: 1 % of 5120 / 8 = 6.4 W → 50 W.
        assert_eq!(
            power(precharge(&need(Some(94), Some(5120.0), 2500), 95, 8.0, 0.1)),
            -50
        );
    }

    #[test]
    fn clamped_to_device_limit() {
        // 95 % of 10 kWh in 2 h = 4750 W → clamped to 2500.
        assert_eq!(
            power(precharge(
                &need(Some(0), Some(10_000.0), 2500),
                95,
                2.0,
                0.1
            )),
            -2500
        );
        // A limit that is not a multiple of 50 is kept as is.
        assert_eq!(
            power(precharge(
                &need(Some(0), Some(10_000.0), 1234),
                95,
                2.0,
                0.1
            )),
            -1234
        );
    }

    #[test]
    fn full_missing_and_capped_targets() {
        assert_eq!(
            precharge(&need(Some(95), Some(5120.0), 2500), 95, 8.0, 0.1),
            PrechargeOutcome::Full
        );
        assert_eq!(
            precharge(&need(Some(100), Some(5120.0), 2500), 95, 8.0, 0.1),
            PrechargeOutcome::Full
        );
        assert_eq!(
            precharge(&need(None, Some(5120.0), 2500), 95, 8.0, 0.1),
            PrechargeOutcome::MissingSoc
        );
        assert_eq!(
            precharge(&need(Some(10), None, 2500), 95, 8.0, 0.1),
            PrechargeOutcome::MissingCapacity
        );
        assert_eq!(
            precharge(&need(Some(10), Some(f64::NAN), 2500), 95, 8.0, 0.1),
            PrechargeOutcome::MissingCapacity
        );
        assert_eq!(
            precharge(&need(Some(10), Some(5120.0), 2500), 95, 0.0, 0.1),
            PrechargeOutcome::NoTimeLeft
        );
        assert_eq!(
            precharge(&need(Some(10), Some(5120.0), 0), 95, 8.0, 0.1),
            PrechargeOutcome::NoTimeLeft
        );
        // Device max SOC 90 caps a 95 % target; at 90 % it is full.
        let mut n = need(Some(90), Some(5120.0), 2500);
        n.max_soc = 90;
        assert_eq!(precharge(&n, 95, 8.0, 0.1), PrechargeOutcome::Full);
        n.soc = Some(Percent(50));
        match precharge(&n, 95, 8.0, 0.0) {
            PrechargeOutcome::Charge {
                target_soc, power, ..
            } => {
                assert_eq!(target_soc, Percent(90));
                // 40 % of 5120 = 2048 Wh / 8 h = 256 W → 300 W.
                assert_eq!(power, Watts(-300));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shorter_window_needs_more_power() {
        let n = need(Some(50), Some(5120.0), 2500);
        let eight = power(precharge(&n, 95, 8.0, 0.1));
        let four = power(precharge(&n, 95, 4.0, 0.1));
        assert!(four < eight, "{four} vs {eight}");
    }
}
