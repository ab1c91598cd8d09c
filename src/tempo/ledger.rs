//! The € ledger of one battery over one Tempo day (06:00 → 06:00), pure: the energy the battery
//! drew (charge) and delivered (discharge) at its AC port, split by HP/HC, from the lifetime
//! counters of consecutive samples (or, where a counter is missing, the AC power held over the
//! interval), priced with the day's colour. Saved = what the delivered energy would have cost
//! from the grid − what the charge cost; the house load is the same with and without the
//! battery, so nothing else differs on the bill (no export assumed: AUTO covers the house).

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::tariff::{Period, Tariff};
use super::{DAY_START_HOUR, OFF_PEAK_START_HOUR, TempoColour, paris_instant};
use crate::domain::Sample;

/// Largest plausible AC power of one battery, W; counter steps above it are glitches.
const MAX_PLAUSIBLE_W: f64 = 10_000.0;

/// One battery's Tempo day in kWh and €.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayLedger {
    /// Device id.
    pub device: String,
    /// The Tempo date (06:00 that day → 06:00 the next).
    pub date: NaiveDate,
    /// The day's colour.
    pub colour: TempoColour,
    /// Drawn from the grid in HP, kWh.
    pub charged_hp_kwh: f64,
    /// Drawn from the grid in HC, kWh.
    pub charged_hc_kwh: f64,
    /// Delivered in HP, kWh (the energy shifted into peak hours).
    pub discharged_hp_kwh: f64,
    /// Delivered in HC, kWh.
    pub discharged_hc_kwh: f64,
    /// What the charge cost, €.
    pub charge_cost_eur: f64,
    /// What the delivered energy would have cost from the grid, €.
    pub avoided_eur: f64,
    /// Bill saved with the battery against the same load without it, €.
    pub saved_eur: f64,
    /// Full cycles (delivered ÷ capacity).
    pub cycles: f64,
    /// Charge cost per kWh delivered, €/kWh (None without discharge).
    pub cost_per_cycled_kwh: Option<f64>,
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// The HP/HC boundaries of Tempo day `date`: (06:00, 22:00, 06:00 next day), UTC.
fn bounds(date: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>) {
    let at = |d: NaiveDate, h: u32| {
        paris_instant(
            d,
            chrono::NaiveTime::from_hms_opt(h, 0, 0).unwrap_or_default(),
        )
    };
    (
        at(date, DAY_START_HOUR),
        at(date, OFF_PEAK_START_HOUR),
        at(date + Duration::days(1), DAY_START_HOUR),
    )
}

/// (drawn Wh, delivered Wh) between two samples of the same battery.
fn flows(a: &Sample, b: &Sample) -> (f64, f64) {
    let hours = (b.at - a.at).num_milliseconds() as f64 / 3_600_000.0;
    if hours <= 0.0 {
        return (0.0, 0.0);
    }
    let limit = MAX_PLAUSIBLE_W * hours;
    let delta = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if y >= x && y - x <= limit => Some(y - x),
        (Some(_), Some(_)) => Some(0.0), // reset or spike: not energy
        _ => None,
    };
    let input = delta(
        a.total_grid_input_energy.map(|e| e.0),
        b.total_grid_input_energy.map(|e| e.0),
    );
    let output = delta(
        a.total_grid_output_energy.map(|e| e.0),
        b.total_grid_output_energy.map(|e| e.0),
    );
    let power = a.grid_power.map(|w| f64::from(w.0) * hours);
    (
        input.unwrap_or_else(|| power.map_or(0.0, |p| (-p).max(0.0))),
        output.unwrap_or_else(|| power.map_or(0.0, |p| p.max(0.0))),
    )
}

/// The ledger of `device` for Tempo day `date` of `colour`, from its samples (any order; those
/// outside the day are used only to bound the first and last intervals, split by time).
pub fn day_ledger(
    device: &str,
    date: NaiveDate,
    colour: TempoColour,
    samples: &[Sample],
    tariff: &Tariff,
    capacity_wh: f64,
) -> DayLedger {
    let (start, peak_end, end) = bounds(date);
    let mut sorted: Vec<&Sample> = samples.iter().collect();
    sorted.sort_by_key(|s| s.at);
    // [charged, discharged] × [HP, HC], Wh.
    let mut wh = [[0.0f64; 2]; 2];
    for pair in sorted.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let total = (b.at - a.at).num_milliseconds() as f64;
        if total <= 0.0 || b.at <= start || a.at >= end {
            continue;
        }
        let (drawn, delivered) = flows(a, b);
        for (i, (from, to)) in [(start, peak_end), (peak_end, end)].into_iter().enumerate() {
            let lo = a.at.max(from);
            let hi = b.at.min(to);
            if hi > lo {
                let share = (hi - lo).num_milliseconds() as f64 / total;
                wh[0][i] += drawn * share;
                wh[1][i] += delivered * share;
            }
        }
    }
    let kwh = |x: f64| x / 1000.0;
    let (c_hp, c_hc) = (kwh(wh[0][0]), kwh(wh[0][1]));
    let (d_hp, d_hc) = (kwh(wh[1][0]), kwh(wh[1][1]));
    let hp = tariff.price(colour, Period::Hp);
    let hc = tariff.price(colour, Period::Hc);
    let charge_cost = c_hp * hp + c_hc * hc;
    let avoided = d_hp * hp + d_hc * hc;
    let delivered = d_hp + d_hc;
    DayLedger {
        device: device.to_string(),
        date,
        colour,
        charged_hp_kwh: round(c_hp, 3),
        charged_hc_kwh: round(c_hc, 3),
        discharged_hp_kwh: round(d_hp, 3),
        discharged_hc_kwh: round(d_hc, 3),
        charge_cost_eur: round(charge_cost, 2),
        avoided_eur: round(avoided, 2),
        saved_eur: round(avoided - charge_cost, 2),
        cycles: if capacity_wh > 0.0 {
            round(delivered * 1000.0 / capacity_wh, 3)
        } else {
            0.0
        },
        cost_per_cycled_kwh: (delivered > 1e-9).then(|| round(charge_cost / delivered, 4)),
    }
}
