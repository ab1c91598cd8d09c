//! The Tempo planner, pure and deterministic: for one battery, over the Tempo days it is given
//! (at least the 48 h ahead, more when a forecast reaches further), it chooses for each HC night
//! (22:00–06:00) how far to charge from the grid and for each HP day (06:00–22:00) whether to
//! discharge (and down to which SOC) or hold, by dynamic programming over SOC in 1 % steps with
//! the six prices, the colour knowledge (published, forecast hint, or calendar rules + the
//! season's remaining stock), the round-trip efficiency, the wear cost, SOC limits, DOD and
//! charge/discharge power. Each slot carries its expected € effect and a one-line reason.
//! The house load of a day is the profile of its colour (known, or the likeliest), learned or
//! configured (`consumption`), less its solar, times this battery's share of the house (by
//! usable capacity when several batteries are planned, `share`); the reason says both.
//! No I/O, no clock: the caller passes `now`.
//!
//! Model: charging `e` kWh into the battery draws `e / efficiency` kWh from the grid (all the
//! round-trip loss is counted on the way in); discharging covers house load at the HP price of
//! the day, the excess is exported at the export price; every kWh discharged costs the wear
//! price. Energy left at the end of the horizon is worth what refilling it would cost at the
//! cheapest expected HC price, so a full battery is not cycled for less than that.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc, Weekday};
use serde::{Deserialize, Serialize};

use super::consumption::{DayLoad, DayLoads, LoadSource};
use super::planner::{BatteryNeed, PrechargeOutcome, precharge};
use super::tariff::{Period, Tariff};
use super::{DAY_START_HOUR, OFF_PEAK_START_HOUR, TEMPO_TZ, TempoColour, paris_instant};
use super::{red_possible, tempo_date_at};
use crate::domain::Percent;

/// Season quota of red days (Nov 1 – Mar 31, working days).
pub const RED_QUOTA: u32 = 22;
/// Season quota of white days.
pub const WHITE_QUOTA: u32 = 43;
/// One Tempo day (06:00 → 06:00 next day) as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DayOutlook {
    /// The Tempo date.
    pub date: NaiveDate,
    /// Colour knowledge.
    pub colour: ColourInfo,
    /// Expected house load and solar per Paris hour of day for each colour the day may be
    /// (learned or configured; index 0 = 00:00–01:00).
    pub load: DayLoads,
}

/// The battery the plan is for.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanBattery {
    /// Device id.
    pub device: String,
    /// State of charge now, %.
    pub soc: f64,
    /// Usable capacity, Wh.
    pub capacity_wh: f64,
    /// Lowest SOC allowed (the larger of 100 − DOD and the envelope's min SOC), %.
    pub min_soc: f64,
    /// Highest SOC allowed, %.
    pub max_soc: f64,
    /// Largest grid charge power, W.
    pub max_charge_w: f64,
    /// Largest discharge power, W.
    pub max_discharge_w: f64,
    /// Share of the house load this battery is planned to cover, 0 < share ≤ 1 (1: the only
    /// battery; see [`capacity_shares`]).
    pub load_share: f64,
}

/// Planner parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannerParams {
    /// Prices, export price and wear cost.
    pub tariff: Tariff,
    /// Round-trip efficiency, 0 < η ≤ 1 (grid kWh in per kWh out).
    pub efficiency: f64,
    /// Extra charge power on top of the exact need (0.1 = +10 %).
    pub margin: f64,
    /// Tomorrow still unknown at the deadline: assume red where the calendar allows it.
    pub fail_safe_red: bool,
}

/// What one slot does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum SlotAction {
    /// Charge from the grid to `target_soc` at `power_w` (negative, device convention).
    Charge {
        /// Target SOC, %.
        target_soc: u8,
        /// Charge power, W (negative).
        power_w: i32,
    },
    /// Discharge to cover the house (AUTO) until `floor_soc`, then hold.
    Discharge {
        /// SOC to stop at, %.
        floor_soc: u8,
    },
    /// Neither charge nor discharge (MANUAL 0 W).
    Hold,
}

/// One HP or HC slot of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSlot {
    /// Slot start (UTC; `now` for the slot in progress).
    pub start: DateTime<Utc>,
    /// Slot end (UTC).
    pub end: DateTime<Utc>,
    /// Tempo day it belongs to.
    pub date: NaiveDate,
    /// HP or HC.
    pub period: Period,
    /// The colour when known, else the likeliest.
    pub colour: TempoColour,
    /// Chance of that colour (1 when known).
    pub probability: f64,
    /// What to do.
    #[serde(flatten)]
    pub action: SlotAction,
    /// SOC expected at the end of the slot, %.
    pub soc_end: u8,
    /// Expected € effect against doing nothing in this slot (+ saves, − costs), €.
    pub eur: f64,
    /// One line saying why.
    pub reason: String,
}

/// The plan of one battery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatteryPlan {
    /// Device id.
    pub device: String,
    /// When it was computed.
    pub computed_at: DateTime<Utc>,
    /// The slots, in time order.
    pub slots: Vec<PlanSlot>,
    /// Expected € saved over the horizon (slot sum, wear not included), €.
    pub expected_saving_eur: f64,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The input is unusable (names what).
    #[error("planner input: {0}")]
    Input(String),
}

/// A slot before optimisation.
#[derive(Debug, Clone)]
struct Frame {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    date: NaiveDate,
    period: Period,
    odds: ColourOdds,
    known: Option<(TempoColour, String)>,
    source: Option<String>,
    fail_safe: bool,
    price: f64,
    /// This battery's share of the expected load (less solar), kWh.
    load_kwh: f64,
    load_source: LoadSource,
}

/// The plan for `battery` from `now` over `days` (consecutive Tempo dates, the first the day in
/// force at `now`).
pub fn plan(
    now: DateTime<Utc>,
    days: &[DayOutlook],
    stock: Option<SeasonStock>,
    battery: &PlanBattery,
    params: &PlannerParams,
) -> Result<BatteryPlan, PlanError> {
    check_input(now, days, battery, params)?;
    let frames = frames(now, days, stock, battery.load_share, params);
    let grid = Grid::new(battery);
    let path = optimise(&frames, &grid, battery, params);
    let ctx = Ctx {
        now,
        frames: &frames,
        path: &path,
        grid: &grid,
        battery,
        params,
    };
    let mut slots = Vec::with_capacity(frames.len());
    let mut soc = grid.start;
    for (k, next) in path.iter().enumerate() {
        slots.push(describe(&ctx, k, soc));
        soc = *next;
    }
    let expected_saving_eur = slots.iter().map(|s| s.eur).sum();
    Ok(BatteryPlan {
        device: battery.device.clone(),
        computed_at: now,
        slots,
        expected_saving_eur,
    })
}

fn check_input(
    now: DateTime<Utc>,
    days: &[DayOutlook],
    b: &PlanBattery,
    params: &PlannerParams,
) -> Result<(), PlanError> {
    let bad = |m: String| Err(PlanError::Input(m));
    let Some(first) = days.first() else {
        return bad("no Tempo day given".into());
    };
    if first.date != tempo_date_at(now) {
        return bad(format!(
            "first day {} is not the Tempo day in force ({})",
            first.date,
            tempo_date_at(now)
        ));
    }
    if days
        .windows(2)
        .any(|w| w[0].date.succ_opt() != Some(w[1].date))
    {
        return bad("days are not consecutive".into());
    }
    if let Some((k, m)) = params.tariff.validate().into_iter().next() {
        return bad(format!("{k}: {m}"));
    }
    if !(params.efficiency > 0.0 && params.efficiency <= 1.0) {
        return bad(format!(
            "efficiency {} is outside (0, 1]",
            params.efficiency
        ));
    }
    let finite = [
        b.soc,
        b.capacity_wh,
        b.min_soc,
        b.max_soc,
        b.max_charge_w,
        b.max_discharge_w,
    ]
    .iter()
    .all(|v| v.is_finite());
    if !finite || b.capacity_wh <= 0.0 || b.max_charge_w < 0.0 || b.max_discharge_w < 0.0 {
        return bad(format!("battery {} has unusable limits", b.device));
    }
    if !(b.load_share > 0.0 && b.load_share <= 1.0) {
        return bad(format!(
            "battery {}: load share {} is outside (0, 1]",
            b.device, b.load_share
        ));
    }
    if !(0.0..=100.0).contains(&b.min_soc) || b.max_soc > 100.0 || b.max_soc < b.min_soc {
        return bad(format!(
            "battery {}: SOC limits {}–{} %",
            b.device, b.min_soc, b.max_soc
        ));
    }
    if days.iter().any(|d| {
        d.load.all().iter().any(|l| {
            l.load_w
                .iter()
                .chain(l.pv_w.iter())
                .any(|w| !w.is_finite() || *w < 0.0)
        })
    }) {
        return bad("house load or solar profile has a negative or non-numeric hour".into());
    }
    for d in days {
        if let ColourInfo::Forecast { odds, .. } = &d.colour {
            ColourOdds::new(odds.blue, odds.white, odds.red)
                .map_err(|e| PlanError::Input(format!("forecast for {}: {e}", d.date)))?;
        }
    }
    Ok(())
}

fn day_odds(
    day: &DayOutlook,
    tomorrow: NaiveDate,
    stock: Option<SeasonStock>,
    params: &PlannerParams,
) -> (
    ColourOdds,
    Option<(TempoColour, String)>,
    Option<String>,
    bool,
) {
    match &day.colour {
        ColourInfo::Known { colour, source } => (
            ColourOdds::certain(*colour),
            Some((*colour, source.clone())),
            None,
            false,
        ),
        ColourInfo::Forecast { odds, source } => (
            odds.constrained(day.date, stock),
            None,
            Some(source.clone()),
            false,
        ),
        ColourInfo::Unknown
            if params.fail_safe_red
                && day.date == tomorrow
                && red_possible(day.date)
                && stock.is_none_or(|s| s.red_left != 0) =>
        {
            (ColourOdds::certain(TempoColour::Red), None, None, true)
        }
        ColourInfo::Unknown => (prior_odds(day.date, stock), None, None, false),
    }
}

fn at_hour(date: NaiveDate, hour: u32) -> DateTime<Utc> {
    paris_instant(
        date,
        chrono::NaiveTime::from_hms_opt(hour, 0, 0).unwrap_or_default(),
    )
}

/// Energy the battery may cover over [from, to) (load less solar), kWh, from the hourly
/// profile `day`.
fn load_between(day: &DayLoad, from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    let mut wh = 0.0;
    let mut t = from;
    while t < to {
        let local = t.with_timezone(&TEMPO_TZ);
        let next_hour = t + Duration::minutes(60 - i64::from(local.minute()));
        let until = next_hour.min(to);
        let h = (until - t).num_seconds() as f64 / 3600.0;
        wh += day.net_w(local.hour() as usize) * h;
        t = until;
    }
    wh / 1000.0
}

fn frames(
    now: DateTime<Utc>,
    days: &[DayOutlook],
    stock: Option<SeasonStock>,
    share: f64,
    params: &PlannerParams,
) -> Vec<Frame> {
    let tomorrow = tempo_date_at(now) + Duration::days(1);
    let mut out = Vec::new();
    for day in days {
        let (odds, known, source, fail_safe) = day_odds(day, tomorrow, stock, params);
        // The load of the colour the day is (or most likely is).
        let load = day
            .load
            .get(known.as_ref().map_or(odds.likeliest().0, |k| k.0));
        let next = day.date + Duration::days(1);
        let hp = (
            at_hour(day.date, DAY_START_HOUR),
            at_hour(day.date, OFF_PEAK_START_HOUR),
        );
        let hc = (hp.1, at_hour(next, DAY_START_HOUR));
        for (period, (start, end)) in [(Period::Hp, hp), (Period::Hc, hc)] {
            if end <= now {
                continue;
            }
            let start = start.max(now);
            // The HC hours after midnight use the next calendar day's profile hours, which the
            // hourly profile of this day covers too (one profile per Tempo day).
            out.push(Frame {
                start,
                end,
                date: day.date,
                period,
                odds,
                known: known.clone(),
                source: source.clone(),
                fail_safe,
                price: odds.price(&params.tariff, period),
                load_kwh: share * load_between(load, start, end),
                load_source: load.source,
            });
        }
    }
    out
}

/// Everything the reasons need.
struct Ctx<'a> {
    now: DateTime<Utc>,
    frames: &'a [Frame],
    path: &'a [usize],
    grid: &'a Grid,
    battery: &'a PlanBattery,
    params: &'a PlannerParams,
}

/// The SOC lattice: integer percents from `lo` to `hi`.
struct Grid {
    lo: usize,
    hi: usize,
    start: usize,
    kwh_per_step: f64,
}

impl Grid {
    fn new(b: &PlanBattery) -> Self {
        let lo = b.min_soc.ceil().clamp(0.0, 100.0) as usize;
        let hi = (b.max_soc.floor() as usize).max(lo);
        let start = (b.soc.floor().clamp(0.0, 100.0) as usize).clamp(lo, 100);
        Self {
            lo,
            hi,
            start,
            kwh_per_step: b.capacity_wh / 100_000.0,
        }
    }

    fn steps(&self, kwh: f64) -> usize {
        if kwh <= 0.0 {
            0
        } else {
            (kwh / self.kwh_per_step + 1e-9).floor() as usize
        }
    }
}

/// € gained by a move from `s` to `to` in frame `f` (charge: − cost; discharge: + saving − wear).
fn gain(f: &Frame, s: usize, to: usize, g: &Grid, p: &PlannerParams) -> f64 {
    if to > s {
        -((to - s) as f64) * g.kwh_per_step / p.efficiency * f.price
    } else {
        let out = (s - to) as f64 * g.kwh_per_step;
        let covered = out.min(f.load_kwh);
        covered * f.price + (out - covered) * p.tariff.export - out * p.tariff.wear
    }
}

/// Moves allowed from `s` in frame `f`: HC charges (never above `hi`), HP discharges.
fn moves(f: &Frame, s: usize, g: &Grid, b: &PlanBattery) -> std::ops::RangeInclusive<usize> {
    let hours = (f.end - f.start).num_seconds() as f64 / 3600.0;
    match f.period {
        Period::Hc => {
            let up = g.steps(b.max_charge_w * hours / 1000.0);
            s..=(s + up).min(g.hi).max(s)
        }
        Period::Hp => {
            let down = g.steps(b.max_discharge_w * hours / 1000.0);
            s.saturating_sub(down).max(g.lo).min(s)..=s
        }
    }
}

/// What a kWh left in the battery at the horizon is worth: refilling it at the cheapest
/// expected HC price of the horizon, losses included, €/kWh.
fn refill_price(frames: &[Frame], p: &PlannerParams) -> f64 {
    let cheapest = frames
        .iter()
        .filter(|f| f.period == Period::Hc)
        .map(|f| f.price)
        .fold(f64::INFINITY, f64::min);
    if cheapest.is_finite() {
        cheapest / p.efficiency
    } else {
        0.0
    }
}

/// Optimal SOC after each frame, from the start SOC (backward induction, ties keep the SOC).
fn optimise(frames: &[Frame], g: &Grid, b: &PlanBattery, p: &PlannerParams) -> Vec<usize> {
    let n = frames.len();
    let term = refill_price(frames, p);
    let mut value: Vec<f64> = (0..=100)
        .map(|s: usize| s.saturating_sub(g.lo) as f64 * g.kwh_per_step * term)
        .collect();
    let mut choice = vec![vec![0usize; 101]; n];
    for k in (0..n).rev() {
        let mut next = vec![f64::NEG_INFINITY; 101];
        for s in g.lo..=100 {
            let mut best = (s, gain(&frames[k], s, s, g, p) + value[s]);
            for to in moves(&frames[k], s, g, b) {
                let v = gain(&frames[k], s, to, g, p) + value[to];
                if v > best.1 + 1e-9 {
                    best = (to, v);
                }
            }
            next[s] = best.1;
            choice[k][s] = best.0;
        }
        value = next;
    }
    let mut s = g.start;
    choice
        .iter()
        .map(|c| {
            s = c[s];
            s
        })
        .collect()
}

#[path = "plan_odds.rs"]
mod odds;
pub use odds::*;

#[path = "plan_share.rs"]
mod share;
pub use share::{capacity_shares, share_by_capacity, usable_wh};

#[path = "plan_reason.rs"]
mod reason;
use reason::describe;

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

/// Charge power for `target` within the rest of the HC frame, from the seed's precharge maths.
fn charge_power(f: &Frame, soc: usize, target: usize, b: &PlanBattery, margin: f64) -> i32 {
    let hours = (f.end - f.start).num_seconds() as f64 / 3600.0;
    let need = BatteryNeed {
        soc: Some(Percent(soc.min(100) as u8)),
        capacity_wh: Some(b.capacity_wh),
        max_charge_w: b.max_charge_w.max(0.0) as u32,
        max_soc: target.min(100) as u8,
    };
    match precharge(&need, target.min(100) as u8, hours, margin) {
        PrechargeOutcome::Charge { power, .. } => power.0,
        _ => 0,
    }
}

/// Short weekday name for reasons.
fn weekday_name(d: NaiveDate) -> &'static str {
    match d.weekday() {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}
