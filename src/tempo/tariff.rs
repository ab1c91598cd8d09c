//! The Tempo tariff: six €/kWh prices (blue/white/red × HP 06–22 / HC 22–06), the date the grid
//! took effect, an optional export price and the battery wear cost per kWh cycled, plus the
//! `tariff_outdated` check (a known price-change date has passed while the defaults are still
//! in use). Pure data and validation; no I/O.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::TempoColour;
use crate::domain::{Alert, AlertKind, Severity};

/// Date the default price grid took effect (CRE regulated Tempo prices of 1 Aug 2026).
pub const DEFAULT_EFFECTIVE: (i32, u32, u32) = (2026, 8, 1);

/// Default wear cost, €/kWh discharged: a ~1,000 € Venus E (5.12 kWh) rated 6,000 cycles
/// delivers ~30 MWh over its life, i.e. ~0.033 €/kWh, rounded to 0.03.
pub const DEFAULT_WEAR_EUR_KWH: f64 = 0.03;

/// Tempo half of the day a price applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// Peak hours, 06:00–22:00 Paris.
    Hp,
    /// Off-peak hours, 22:00–06:00 Paris (belongs to the Tempo day that started at 06:00).
    Hc,
}

impl Period {
    /// `HP` or `HC`, as printed in reasons.
    pub fn label(self) -> &'static str {
        match self {
            Period::Hp => "HP",
            Period::Hc => "HC",
        }
    }
}

/// Settings of `[tempo.tariff]`: prices in €/kWh (TTC), all configurable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tariff {
    /// Blue day, peak hours, €/kWh.
    pub blue_hp: f64,
    /// Blue day, off-peak hours, €/kWh.
    pub blue_hc: f64,
    /// White day, peak hours, €/kWh.
    pub white_hp: f64,
    /// White day, off-peak hours, €/kWh.
    pub white_hc: f64,
    /// Red day, peak hours, €/kWh.
    pub red_hp: f64,
    /// Red day, off-peak hours, €/kWh.
    pub red_hc: f64,
    /// Price paid for energy exported to the grid, €/kWh (0 without a resale contract).
    pub export: f64,
    /// Battery wear cost per kWh discharged, €/kWh; arbitrage earning less is declined.
    pub wear: f64,
    /// Date these prices took effect.
    pub effective: NaiveDate,
}

impl Default for Tariff {
    fn default() -> Self {
        let (y, m, d) = DEFAULT_EFFECTIVE;
        Self {
            blue_hp: 0.1654,
            blue_hc: 0.1356,
            white_hp: 0.1921,
            white_hc: 0.1536,
            red_hp: 0.7295,
            red_hc: 0.1615,
            export: 0.0,
            wear: DEFAULT_WEAR_EUR_KWH,
            effective: NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default(),
        }
    }
}

/// Dates the regulated Tempo grid changes (CRE: 1 Feb and 1 Aug each year); the ones from
/// 2025 on are the changes the reference lists, later ones follow the same rhythm.
pub fn price_change_dates_after(date: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    (date.year()..)
        .flat_map(|y| {
            [
                NaiveDate::from_ymd_opt(y, 2, 1),
                NaiveDate::from_ymd_opt(y, 8, 1),
            ]
        })
        .flatten()
        .filter(move |d| *d > date)
}

impl Tariff {
    /// Price of `colour` in `period`, €/kWh.
    pub fn price(&self, colour: TempoColour, period: Period) -> f64 {
        match (colour, period) {
            (TempoColour::Blue, Period::Hp) => self.blue_hp,
            (TempoColour::Blue, Period::Hc) => self.blue_hc,
            (TempoColour::White, Period::Hp) => self.white_hp,
            (TempoColour::White, Period::Hc) => self.white_hc,
            (TempoColour::Red, Period::Hp) => self.red_hp,
            (TempoColour::Red, Period::Hc) => self.red_hc,
        }
    }

    /// Whether the six prices are the built-in defaults.
    pub fn is_default_grid(&self) -> bool {
        let d = Tariff::default();
        [
            (self.blue_hp, d.blue_hp),
            (self.blue_hc, d.blue_hc),
            (self.white_hp, d.white_hp),
            (self.white_hc, d.white_hc),
            (self.red_hp, d.red_hp),
            (self.red_hc, d.red_hc),
        ]
        .iter()
        .all(|(a, b)| (a - b).abs() < 1e-9)
    }

    /// Problems with the values, each as (key, message); empty when usable. Negative, NaN or
    /// absurd (> 10 €/kWh) prices are refused, so the planner never runs on them.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        for (key, v) in [
            ("blue_hp", self.blue_hp),
            ("blue_hc", self.blue_hc),
            ("white_hp", self.white_hp),
            ("white_hc", self.white_hc),
            ("red_hp", self.red_hp),
            ("red_hc", self.red_hc),
            ("export", self.export),
            ("wear", self.wear),
        ] {
            if !v.is_finite() {
                errs.push((format!("tariff.{key}"), format!("{v} is not a number")));
            } else if v < 0.0 {
                errs.push((
                    format!("tariff.{key}"),
                    format!("{v} €/kWh is negative (prices are ≥ 0)"),
                ));
            } else if v > 10.0 {
                errs.push((
                    format!("tariff.{key}"),
                    format!("{v} €/kWh is not a plausible price (≤ 10)"),
                ));
            }
        }
        errs
    }

    /// The first price-change date after `effective` that `today` has reached, when the
    /// defaults are still in use (a changed grid is the user's own and never outdated).
    pub fn outdated_since(&self, today: NaiveDate) -> Option<NaiveDate> {
        if !self.is_default_grid() {
            return None;
        }
        price_change_dates_after(self.effective)
            .next()
            .filter(|change| today >= *change)
    }

    /// The `tariff_outdated` info alert, when [`Tariff::outdated_since`] says so.
    pub fn outdated_alert(&self, now: DateTime<Utc>) -> Option<Alert> {
        let change = self.outdated_since(super::tempo_date_at(now))?;
        let message = format!(
            "Tempo prices are the built-in grid of {}; regulated prices may have changed on \
             {change}: set [tempo.tariff] to your contract's prices",
            self.effective
        );
        Some(Alert::raised(
            AlertKind::TariffOutdated,
            Severity::Info,
            None,
            message,
            now,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn six_default_prices_of_august_2026() {
        let t = Tariff::default();
        assert_eq!(t.effective, date(2026, 8, 1));
        let p = |c, per| t.price(c, per);
        assert_eq!(p(TempoColour::Blue, Period::Hp), 0.1654);
        assert_eq!(p(TempoColour::Blue, Period::Hc), 0.1356);
        assert_eq!(p(TempoColour::White, Period::Hp), 0.1921);
        assert_eq!(p(TempoColour::White, Period::Hc), 0.1536);
        assert_eq!(p(TempoColour::Red, Period::Hp), 0.7295);
        assert_eq!(p(TempoColour::Red, Period::Hc), 0.1615);
        assert_eq!(t.export, 0.0);
        assert_eq!(t.wear, DEFAULT_WEAR_EUR_KWH);
        assert!(t.validate().is_empty());
    }

    #[test]
    fn bad_prices_are_refused_by_key() {
        let t = Tariff {
            red_hp: -0.7,
            blue_hc: f64::NAN,
            wear: 50.0,
            ..Tariff::default()
        };
        let errs = t.validate();
        let keys: Vec<&str> = errs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["tariff.blue_hc", "tariff.red_hp", "tariff.wear"]);
        assert!(errs[1].1.contains("negative"), "{errs:?}");
        assert!(errs[0].1.contains("not a number"), "{errs:?}");
    }

    #[test]
    fn outdated_once_the_next_change_date_passed_with_defaults() {
        let t = Tariff::default();
        assert_eq!(t.outdated_since(date(2026, 12, 2)), None);
        assert_eq!(t.outdated_since(date(2027, 1, 31)), None);
        assert_eq!(t.outdated_since(date(2027, 2, 1)), Some(date(2027, 2, 1)));
        assert_eq!(t.outdated_since(date(2028, 5, 1)), Some(date(2027, 2, 1)));
        // The user's own prices are never called outdated.
        let own = Tariff {
            red_hp: 0.75,
            ..Tariff::default()
        };
        assert_eq!(own.outdated_since(date(2028, 5, 1)), None);
        let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2027, 3, 1, 12, 0, 0).unwrap();
        let alert = t.outdated_alert(now).expect("alert");
        assert_eq!(alert.kind.as_str(), "tariff_outdated");
        assert_eq!(alert.severity, Severity::Info);
        assert!(alert.message.contains("2027-02-01"), "{}", alert.message);
    }

    #[test]
    fn tariff_section_parses_from_toml_with_defaults_for_missing_keys() {
        let t: Tariff = toml::from_str("red_hp = 0.75\nwear = 0.05\neffective = \"2027-02-01\"\n")
            .expect("parses");
        assert_eq!(t.red_hp, 0.75);
        assert_eq!(t.blue_hp, 0.1654);
        assert_eq!(t.effective, date(2027, 2, 1));
        assert!(toml::from_str::<Tariff>("red_hp = \"cheap\"").is_err());
        assert!(toml::from_str::<Tariff>("purple_hp = 1.0").is_err());
    }
}
