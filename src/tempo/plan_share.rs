//! How the house load is split between the batteries of one house, each planned on its own:
//! by usable capacity (capacity between the SOC floor and ceiling), so two batteries do not
//! both plan to cover the whole house. Pure; part of the planner (`plan`).

use super::PlanBattery;

/// Usable capacity of `b`: its capacity between its lowest and highest allowed SOC, Wh.
pub fn usable_wh(b: &PlanBattery) -> f64 {
    let window = (b.max_soc - b.min_soc).clamp(0.0, 100.0);
    let wh = b.capacity_wh * window / 100.0;
    if wh.is_finite() { wh.max(0.0) } else { 0.0 }
}

/// Each battery's share of the house load, in the order given: its usable capacity over the
/// sum of all; equal shares when none has any usable capacity. Each share is in (0, 1].
pub fn capacity_shares(batteries: &[PlanBattery]) -> Vec<f64> {
    let usable: Vec<f64> = batteries.iter().map(usable_wh).collect();
    let total: f64 = usable.iter().sum();
    let n = batteries.len().max(1) as f64;
    usable
        .iter()
        .map(|u| {
            if total > 0.0 && *u > 0.0 {
                u / total
            } else if total > 0.0 {
                // No usable capacity: it covers nothing, but a share must be positive.
                f64::MIN_POSITIVE
            } else {
                1.0 / n
            }
        })
        .collect()
}

/// Sets every battery's `load_share` by [`capacity_shares`].
pub fn share_by_capacity(batteries: &mut [PlanBattery]) {
    let shares = capacity_shares(batteries);
    for (b, s) in batteries.iter_mut().zip(shares) {
        b.load_share = s;
    }
}

/// The words a reason adds after the load's source: ", 33 % of it for this battery (by
/// capacity)"; nothing for a battery that covers the whole house.
pub(super) fn share_phrase(share: f64) -> String {
    let pct = (share * 100.0).round();
    if pct >= 100.0 {
        String::new()
    } else {
        format!(", {pct} % of it for this battery (by capacity)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn battery(device: &str, capacity_wh: f64) -> PlanBattery {
        PlanBattery {
            device: device.into(),
            soc: 50.0,
            capacity_wh,
            min_soc: 12.0,
            max_soc: 100.0,
            max_charge_w: 2500.0,
            max_discharge_w: 2500.0,
            load_share: 1.0,
        }
    }

    #[test]
    fn two_batteries_share_the_house_by_capacity() {
        let mut fleet = [battery("big", 5120.0), battery("small", 2560.0)];
        share_by_capacity(&mut fleet);
        assert!((fleet[0].load_share - 2.0 / 3.0).abs() < 1e-9, "{fleet:?}");
        assert!((fleet[1].load_share - 1.0 / 3.0).abs() < 1e-9, "{fleet:?}");
        assert_eq!(
            share_phrase(fleet[0].load_share),
            ", 67 % of it for this battery (by capacity)"
        );
        assert_eq!(
            share_phrase(fleet[1].load_share),
            ", 33 % of it for this battery (by capacity)"
        );
    }

    #[test]
    fn usable_capacity_counts_the_soc_window_and_one_battery_takes_all() {
        // Same capacity, but one may only use 12–56 %: half the window, a third of the load.
        let mut narrow = battery("narrow", 5120.0);
        narrow.max_soc = 56.0;
        let shares = capacity_shares(&[battery("wide", 5120.0), narrow]);
        assert!((shares[0] - 2.0 / 3.0).abs() < 1e-9, "{shares:?}");
        assert_eq!(capacity_shares(&[battery("only", 5120.0)]), vec![1.0]);
        assert_eq!(share_phrase(1.0), "");
        // No usable capacity anywhere: equal shares, never zero or NaN.
        let mut a = battery("a", 0.0);
        a.capacity_wh = f64::NAN;
        let shares = capacity_shares(&[a, battery("b", 0.0)]);
        assert_eq!(shares, vec![0.5, 0.5]);
    }
}
