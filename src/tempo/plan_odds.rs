//! Colour knowledge as the planner reads it: the odds of each colour for a day (checked,
//! constrained by the calendar and the season's remaining stock), what is known of a day's
//! colour (published, forecast, nothing) and the prior odds of a day nobody has said anything
//! about. Pure; part of the planner (`plan`).

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use super::super::tariff::{Period, Tariff};
use super::super::{TempoColour, red_possible};
/// Prior chance of white on a day that may be white, without stock information.
const PRIOR_WHITE: f64 = 0.15;
/// Prior chance of red on a day that may be red, without stock information.
const PRIOR_RED: f64 = 0.2;

/// Chances of each colour for one day, each in 0..=1, summing to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ColourOdds {
    /// Chance of blue.
    pub blue: f64,
    /// Chance of white.
    pub white: f64,
    /// Chance of red.
    pub red: f64,
}

impl ColourOdds {
    /// A certain colour.
    pub fn certain(colour: TempoColour) -> Self {
        let mut o = Self {
            blue: 0.0,
            white: 0.0,
            red: 0.0,
        };
        *o.get_mut(colour) = 1.0;
        o
    }

    /// Checked odds: each in 0..=1, sum within 1 ± 0.05 (renormalised to exactly 1).
    pub fn new(blue: f64, white: f64, red: f64) -> Result<Self, String> {
        for (name, p) in [("blue", blue), ("white", white), ("red", red)] {
            if !p.is_finite() || !(0.0..=1.0).contains(&p) {
                return Err(format!("probability of {name} {p} is outside 0–1"));
            }
        }
        let sum = blue + white + red;
        if (sum - 1.0).abs() > 0.05 {
            return Err(format!("probabilities sum to {sum:.3}, not 1"));
        }
        Ok(Self {
            blue: blue / sum,
            white: white / sum,
            red: red / sum,
        })
    }

    /// Chance of `colour`.
    pub fn p(&self, colour: TempoColour) -> f64 {
        match colour {
            TempoColour::Blue => self.blue,
            TempoColour::White => self.white,
            TempoColour::Red => self.red,
        }
    }

    fn get_mut(&mut self, colour: TempoColour) -> &mut f64 {
        match colour {
            TempoColour::Blue => &mut self.blue,
            TempoColour::White => &mut self.white,
            TempoColour::Red => &mut self.red,
        }
    }

    /// The likeliest colour and its chance (ties: the dearer colour).
    pub fn likeliest(&self) -> (TempoColour, f64) {
        [TempoColour::Red, TempoColour::White, TempoColour::Blue]
            .into_iter()
            .map(|c| (c, self.p(c)))
            .fold((TempoColour::Blue, -1.0), |best, x| {
                if x.1 > best.1 + 1e-12 { x } else { best }
            })
    }

    /// Expected price in `period`, €/kWh.
    pub fn price(&self, tariff: &Tariff, period: Period) -> f64 {
        [TempoColour::Blue, TempoColour::White, TempoColour::Red]
            .into_iter()
            .map(|c| self.p(c) * tariff.price(c, period))
            .sum()
    }

    /// These odds with the colours the calendar (and an exhausted stock) forbids on `date`
    /// removed, the rest renormalised; blue takes everything when nothing else is left.
    pub fn constrained(mut self, date: NaiveDate, stock: Option<SeasonStock>) -> Self {
        if !red_possible(date) || stock.is_some_and(|s| s.red_left == 0) {
            self.red = 0.0;
        }
        if !TempoColour::White.possible_on(date) || stock.is_some_and(|s| s.white_left == 0) {
            self.white = 0.0;
        }
        let sum = self.blue + self.white + self.red;
        if sum <= 1e-12 {
            return Self::certain(TempoColour::Blue);
        }
        Self {
            blue: self.blue / sum,
            white: self.white / sum,
            red: self.red / sum,
        }
    }
}

/// Days of each colour still to come this season (from `/api/stats` or counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeasonStock {
    /// Red days left.
    pub red_left: u32,
    /// White days left.
    pub white_left: u32,
}

/// What the planner knows of one Tempo day's colour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ColourInfo {
    /// Published (RTE, api-couleur-tempo): a fact.
    Known {
        /// The colour.
        colour: TempoColour,
        /// Who said so.
        source: String,
    },
    /// A forecast with probabilities: a hint, never a fact.
    Forecast {
        /// The odds.
        odds: ColourOdds,
        /// Who forecast it.
        source: String,
    },
    /// Nothing known: calendar rules and the remaining stock give a prior.
    Unknown,
}

/// The prior odds of a day nobody has said anything about: red from the season's stock over
/// the red-possible days left (a flat prior without stock), white by season, blue the rest;
/// colours the calendar or an exhausted stock forbid get 0.
pub fn prior_odds(date: NaiveDate, stock: Option<SeasonStock>) -> ColourOdds {
    let red = match stock {
        _ if !red_possible(date) => 0.0,
        Some(s) => {
            let left = red_possible_days_left(date).max(1);
            (f64::from(s.red_left) / f64::from(left)).min(0.9)
        }
        None => PRIOR_RED,
    };
    let white = match date.month() {
        _ if !TempoColour::White.possible_on(date) => 0.0,
        _ if stock.is_some_and(|s| s.white_left == 0) => 0.0,
        11 | 12 | 1..=3 => PRIOR_WHITE,
        4 | 5 | 10 => PRIOR_WHITE / 2.0,
        _ => 0.02,
    };
    ColourOdds {
        blue: (1.0 - red - white).max(0.0),
        white,
        red,
    }
    .constrained(date, stock)
}

/// Days from `date` (included) to Mar 31 of its season on which red is possible.
fn red_possible_days_left(date: NaiveDate) -> u32 {
    let end_year = if date.month() >= 11 {
        date.year() + 1
    } else {
        date.year()
    };
    let Some(end) = NaiveDate::from_ymd_opt(end_year, 3, 31) else {
        return 0;
    };
    date.iter_days()
        .take_while(|d| *d <= end)
        .filter(|d| red_possible(*d))
        .count() as u32
}
