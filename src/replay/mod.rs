//! `marstek-bridge replay`: a season of real Tempo colours (a `date,colour` CSV) replayed minute
//! by minute against the simulator's physical battery model and simulated house, with an
//! accelerated clock, once per strategy — no battery, the seed's fixed schedule (AUTO 06:00,
//! MANUAL 0 W 22:00, precharge to the target before red) and the planner, whose house load is
//! learned from the replay's own telemetry as the bridge learns it — and the € each costs. Reads the colours file; touches no network, store or battery.

mod colours;
mod learn;
mod season;

use std::path::PathBuf;

use chrono::NaiveDate;
use serde::Serialize;

pub use colours::{ColourHistory, ColoursError};
pub use season::{ReplayConfig, replay};

use crate::tempo::TempoSettings;

/// Arguments of `marstek-bridge replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Colours file: `date,colour` lines (ISO date, blue/white/red), a header line allowed.
    #[arg(long)]
    pub colours: PathBuf,
    /// First Tempo day replayed (YYYY-MM-DD).
    #[arg(long)]
    pub from: NaiveDate,
    /// Last Tempo day replayed (YYYY-MM-DD, included).
    #[arg(long)]
    pub to: NaiveDate,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One strategy's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyResult {
    /// `no_battery`, `fixed_schedule` or `planner`.
    pub name: &'static str,
    /// Electricity bill over the span, €.
    pub cost_eur: f64,
    /// Bill saved against `no_battery`, €.
    pub saved_eur: f64,
    /// Energy the battery delivered to the house in HP hours, kWh.
    pub kwh_shifted: f64,
}

/// The replay's answer (the `--json` shape).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    /// One entry per strategy, in the order no_battery, fixed_schedule, planner.
    pub strategies: Vec<StrategyResult>,
    /// Tempo days replayed.
    pub days: u32,
    /// Replayed days the planner planned on a house load learned from the replay's own
    /// telemetry (the day's kind and colour had enough days); the others on the configured one.
    pub learned_days: u32,
}

impl ReplayReport {
    /// The result of strategy `name`.
    pub fn strategy(&self, name: &str) -> Option<&StrategyResult> {
        self.strategies.iter().find(|s| s.name == name)
    }

    /// The human table.
    pub fn table(&self, history: &ColourHistory, args: &ReplayArgs) -> String {
        let (b, w, r) = history.counts(args.from, args.to);
        let mut out = format!(
            "replay {} → {}: {} days ({r} red, {w} white, {b} blue), one Venus E (5120 Wh)\n",
            args.from, args.to, self.days
        );
        out.push_str(&format!(
            "{:<16} {:>10} {:>10} {:>12}\n",
            "strategy", "cost €", "saved €", "kWh shifted"
        ));
        for s in &self.strategies {
            out.push_str(&format!(
                "{:<16} {:>10.2} {:>10.2} {:>12.1}\n",
                s.name, s.cost_eur, s.saved_eur, s.kwh_shifted
            ));
        }
        out.push_str(&format!(
            "planner house load: learned from the replayed telemetry on {} of {} days \
             (tempo.load_profile_w until a kind and colour has {} days)\n",
            self.learned_days,
            self.days,
            crate::tempo::MIN_DAYS
        ));
        out
    }
}

/// Runs the command: reads the file, replays, renders (table or JSON).
pub fn run(args: &ReplayArgs, tempo: &TempoSettings) -> Result<String, ColoursError> {
    let history = ColourHistory::read(&args.colours)?;
    history.check_span(args.from, args.to)?;
    let config = ReplayConfig::venus_e(tempo);
    let report = replay(&history, args.from, args.to, &config);
    Ok(if args.json {
        let mut s = serde_json::to_string(&report).unwrap_or_default();
        s.push('\n');
        s
    } else {
        report.table(&history, args)
    })
}
