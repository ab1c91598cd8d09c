//! The € ledger of one battery over one Tempo day (06:00 → 06:00), pure: the energy the battery
//! drew from (charge) and delivered to (discharge) the grid at its AC port, split by HP/HC, from
//! the store's hourly energy history (`Store::energy_history`, the continuous aggregate on
//! TimescaleDB), priced with the day's colour. Tempo's 06:00 and 22:00 boundaries are whole UTC
//! hours, so every hourly bucket falls wholly in HP or HC. Saved = what the delivered energy
//! would have cost from the grid − what the charge cost; the house load is the same with and
//! without the battery, so nothing else differs on the bill (no export assumed: AUTO covers the
//! house).

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::tariff::{Period, Tariff};
use super::{DAY_START_HOUR, OFF_PEAK_START_HOUR, TempoColour, paris_instant};
use crate::store::EnergyBucket;

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

/// The span of Tempo day `date`: [06:00, 06:00 next day) Paris time, as UTC instants.
pub fn tempo_day_span(date: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let (start, _, end) = bounds(date);
    (start, end)
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

/// The ledger of `device` for Tempo day `date` of `colour`, from its hourly energy buckets
/// (any order; buckets starting outside the day are ignored). `capacity_wh` in Wh.
pub fn day_ledger(
    device: &str,
    date: NaiveDate,
    colour: TempoColour,
    hours: &[EnergyBucket],
    tariff: &Tariff,
    capacity_wh: f64,
) -> DayLedger {
    let (start, peak_end, end) = bounds(date);
    // [charged, discharged] × [HP, HC], Wh.
    let mut wh = [[0.0f64; 2]; 2];
    for h in hours {
        let period = if (start..peak_end).contains(&h.start) {
            0
        } else if (peak_end..end).contains(&h.start) {
            1
        } else {
            continue;
        };
        wh[0][period] += h.grid_in.0;
        wh[1][period] += h.grid_out.0;
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
