//! The replay loop: one simulated battery (`simulator::model::ModelState`, the simulator's own
//! physics: SOC integration, DOD floor, power limits, the simulated house load) stepped minute
//! by minute over the span, a strategy deciding at 06:00, 11:30 (tomorrow's colour published)
//! and 22:00 (the planner on the house load `learn` keeps learning from the replayed
//! telemetry), and the grid energy priced by the Tempo colour and HP/HC of each minute. The
//! model has no conversion losses; the loop takes the round-trip loss off the SOC while
//! charging, as the planner assumes.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Timelike, Utc};

use super::learn::Learner;
use super::{ColourHistory, ReplayReport, StrategyResult};
use crate::domain::{Mode, Percent};
use crate::simulator::model::{ModelSpec, ModelState, SimProfile};
use crate::tempo::{
    BatteryNeed, ColourInfo, DayOutlook, PlanBattery, PlannerParams, PrechargeOutcome, SeasonStock,
    SlotAction, TEMPO_TZ, Tariff, TempoColour, TempoSettings, paris_instant, plan, precharge,
    tempo_date_at,
};
use crate::tempo::{Period, RED_QUOTA, WHITE_QUOTA};

/// What the replay simulates.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// Battery model (capacity, power limits).
    pub spec: ModelSpec,
    /// DOD set on the battery, %.
    pub dod: u8,
    /// Prices, export price, wear.
    pub tariff: Tariff,
    /// Round-trip efficiency.
    pub efficiency: f64,
    /// The fixed schedule's precharge target, %.
    pub target_soc: u8,
    /// The fixed schedule's precharge margin.
    pub margin: f64,
    /// The planner's configured house load per Paris hour until it has learned, W.
    pub load_profile: [f64; 24],
}

impl ReplayConfig {
    /// One Venus E 3.0 (5.12 kWh, 2.5 kW) at DOD 88, with the `[tempo]` prices and precharge
    /// parameters.
    pub fn venus_e(tempo: &TempoSettings) -> Self {
        Self {
            spec: SimProfile::VenusE3.spec(),
            dod: 88,
            tariff: tempo.tariff.clone(),
            efficiency: tempo.efficiency,
            target_soc: tempo.target_soc,
            margin: tempo.margin,
            load_profile: tempo.load_profile(),
        }
    }
}

/// What the battery is told to do until the next decision.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Control {
    /// MANUAL with no slot covering now: 0 W.
    Idle,
    /// AUTO (cover the house) while the SOC is above `floor`, %.
    Auto { floor: f64 },
    /// Grid charge at `power` W (negative) until `target` %.
    Charge { power: i32, target: f64 },
}

/// The decision points of a day.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Event {
    DayStart,
    Published,
    Night,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Strategy {
    NoBattery,
    Fixed,
    Planner,
}

impl Strategy {
    fn name(self) -> &'static str {
        match self {
            Strategy::NoBattery => "no_battery",
            Strategy::Fixed => "fixed_schedule",
            Strategy::Planner => "planner",
        }
    }
}

/// Replays `from..=to` for the three strategies.
pub fn replay(
    history: &ColourHistory,
    from: NaiveDate,
    to: NaiveDate,
    config: &ReplayConfig,
) -> ReplayReport {
    let results: Vec<(Strategy, Outcome)> =
        [Strategy::NoBattery, Strategy::Fixed, Strategy::Planner]
            .into_iter()
            .map(|s| (s, run(s, history, from, to, config)))
            .collect();
    let base = results[0].1.cost;
    let round = |x: f64| (x * 100.0).round() / 100.0;
    ReplayReport {
        strategies: results
            .iter()
            .map(|(s, o)| StrategyResult {
                name: s.name(),
                cost_eur: round(o.cost),
                saved_eur: round(base - o.cost),
                kwh_shifted: (o.shifted * 10.0).round() / 10.0,
            })
            .collect(),
        days: u32::try_from((to - from).num_days() + 1).unwrap_or(0),
        learned_days: results
            .iter()
            .find(|(s, _)| *s == Strategy::Planner)
            .map_or(0, |(_, o)| o.learned_days),
    }
}

/// What one strategy did over the span.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    /// Bill, €.
    cost: f64,
    /// Energy delivered to the house in HP, kWh.
    shifted: f64,
    /// Days planned on a learned house load.
    learned_days: u32,
}

fn at(date: NaiveDate, h: u32, m: u32) -> DateTime<Utc> {
    paris_instant(date, NaiveTime::from_hms_opt(h, m, 0).unwrap_or_default())
}

/// One strategy over the span.
fn run(
    strategy: Strategy,
    history: &ColourHistory,
    from: NaiveDate,
    to: NaiveDate,
    config: &ReplayConfig,
) -> Outcome {
    let spec = config.spec;
    let start = at(from, 6, 0);
    let end = at(to + Duration::days(1), 6, 0);
    let mut state = ModelState::new(&spec, 100.0 - f64::from(config.dod), start);
    state.dod = config.dod;
    let mut control = Control::Idle;
    let mut learner = Learner::new(spec.pv);
    let mut t = start;
    let (mut cost, mut shifted) = (0.0, 0.0);
    while t < end {
        let local = t.with_timezone(&TEMPO_TZ);
        let event = match (local.hour(), local.minute()) {
            (6, 0) => Some(Event::DayStart),
            (11, 30) => Some(Event::Published),
            (22, 0) => Some(Event::Night),
            _ => None,
        };
        if let Some(c) =
            event.and_then(|ev| decide(strategy, ev, t, &state, history, config, &mut learner))
        {
            control = c;
        }
        apply(control, &mut state, t);
        let soc_before = state.soc;
        let next = t + Duration::minutes(1);
        state.advance(&spec, next, TEMPO_TZ);
        if state.bat_power < 0.0 && state.soc > soc_before {
            state.soc = soc_before + (state.soc - soc_before) * config.efficiency;
        }
        if strategy == Strategy::Planner {
            learner.record(t, &state);
        }
        let date = tempo_date_at(t);
        let period = if (6..22).contains(&local.hour()) {
            Period::Hp
        } else {
            Period::Hc
        };
        let colour = history.colour(date).unwrap_or(TempoColour::Blue);
        let grid_kwh = (state.load - state.ongrid()) / 60_000.0;
        cost += if grid_kwh >= 0.0 {
            grid_kwh * config.tariff.price(colour, period)
        } else {
            grid_kwh * config.tariff.export
        };
        if period == Period::Hp && state.bat_power > 0.0 {
            shifted += state.bat_power.min(state.load) / 60_000.0;
        }
        t = next;
    }
    Outcome {
        cost,
        shifted,
        learned_days: learner.learned_days,
    }
}

/// Puts the model in the mode `control` asks for at `t`.
fn apply(control: Control, s: &mut ModelState, t: DateTime<Utc>) {
    let idle = |s: &mut ModelState| {
        s.mode = Mode::Manual;
        s.slots.iter_mut().for_each(|x| *x = None);
    };
    match control {
        Control::Idle => idle(s),
        Control::Auto { floor } if s.soc > floor + 1e-9 => s.mode = Mode::Auto,
        Control::Charge { power, target } if s.soc < target - 1e-9 => {
            s.mode = Mode::Passive;
            s.passive_power = power;
            s.passive_until = Some(t + Duration::minutes(2));
        }
        Control::Auto { .. } | Control::Charge { .. } => idle(s),
    }
}

fn decide(
    strategy: Strategy,
    ev: Event,
    t: DateTime<Utc>,
    s: &ModelState,
    history: &ColourHistory,
    config: &ReplayConfig,
    learner: &mut Learner,
) -> Option<Control> {
    match strategy {
        Strategy::NoBattery => Some(Control::Idle),
        Strategy::Fixed => fixed(ev, t, s, history, config),
        Strategy::Planner => Some(planned(ev, t, s, history, config, learner)),
    }
}

/// The seed's schedule: AUTO at 06:00, MANUAL 0 W at 22:00 or, before a red day, the precharge
/// slot at the power the seed's maths gives for the target by 06:00 (None: no change).
fn fixed(
    ev: Event,
    t: DateTime<Utc>,
    s: &ModelState,
    history: &ColourHistory,
    config: &ReplayConfig,
) -> Option<Control> {
    Some(match ev {
        Event::DayStart => Control::Auto { floor: s.min_soc() },
        Event::Published => return None,
        Event::Night => {
            let tomorrow = tempo_date_at(t) + Duration::days(1);
            if history.colour(tomorrow) != Some(TempoColour::Red) {
                return Some(Control::Idle);
            }
            let need = BatteryNeed {
                soc: Some(Percent(s.soc.floor().clamp(0.0, 100.0) as u8)),
                capacity_wh: Some(config.spec.capacity_wh),
                max_charge_w: config.spec.max_charge_w as u32,
                max_soc: 100,
            };
            match precharge(&need, config.target_soc, 8.0, config.margin) {
                PrechargeOutcome::Charge {
                    power, target_soc, ..
                } => Control::Charge {
                    power: power.0,
                    target: f64::from(target_soc.0),
                },
                _ => Control::Idle,
            }
        }
    })
}

/// The planner with what the bridge would know at `t`: today's colour, tomorrow's once
/// published (11:30 in the replay; RTE publishes at 10:30), the season's stock counted from the
/// days before, calendar rules for the rest, and the house load learned from the telemetry of
/// the days before (relearned at 06:00).
fn planned(
    ev: Event,
    t: DateTime<Utc>,
    s: &ModelState,
    history: &ColourHistory,
    config: &ReplayConfig,
    learner: &mut Learner,
) -> Control {
    let today = tempo_date_at(t);
    if ev == Event::DayStart {
        learner.relearn(t, history);
        if let Some(c) = history.colour(today) {
            let loads = learner.day_loads(today, &config.load_profile);
            learner.count_day(c, &loads);
        }
    }
    let tomorrow_known = ev != Event::DayStart;
    let info = |d: NaiveDate, known: bool| match history.colour(d) {
        Some(colour) if known => ColourInfo::Known {
            colour,
            source: "history".into(),
        },
        _ => ColourInfo::Unknown,
    };
    let days: Vec<DayOutlook> = [
        (today, true),
        (today + Duration::days(1), tomorrow_known),
        (today + Duration::days(2), false),
    ]
    .into_iter()
    .map(|(date, known)| DayOutlook {
        date,
        colour: info(date, known),
        load: learner.day_loads(date, &config.load_profile),
    })
    .collect();
    let (red_used, white_used) =
        history.used_before(today + Duration::days(if tomorrow_known { 2 } else { 1 }));
    let stock = SeasonStock {
        red_left: RED_QUOTA.saturating_sub(red_used),
        white_left: WHITE_QUOTA.saturating_sub(white_used),
    };
    let battery = PlanBattery {
        device: "replay".into(),
        soc: s.soc,
        capacity_wh: config.spec.capacity_wh,
        min_soc: s.min_soc(),
        max_soc: 100.0,
        max_charge_w: config.spec.max_charge_w,
        max_discharge_w: config.spec.max_discharge_w,
        load_share: 1.0,
    };
    let params = PlannerParams {
        tariff: config.tariff.clone(),
        efficiency: config.efficiency,
        margin: config.margin,
        fail_safe_red: false,
    };
    let Ok(p) = plan(t, &days, Some(stock), &battery, &params) else {
        return Control::Idle;
    };
    match p.slots.first().map(|x| x.action) {
        Some(SlotAction::Charge {
            target_soc,
            power_w,
        }) => Control::Charge {
            power: power_w,
            target: f64::from(target_soc),
        },
        Some(SlotAction::Discharge { floor_soc }) => Control::Auto {
            floor: f64::from(floor_soc).max(s.min_soc()),
        },
        Some(SlotAction::Hold) | None => Control::Idle,
    }
}
