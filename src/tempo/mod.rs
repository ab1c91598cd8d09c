//! EDF Tempo colours (api-couleur-tempo.fr, RTE) and the red-day precharge planner.
//!
//! `day` holds the pure calendar rules (06:00→06:00 Tempo day in Europe/Paris, red only Mon–Fri
//! from Nov 1 to Mar 31), `tariff` the six prices, export price and wear cost, `plan` the pure
//! 48 h planner (charge/hold/discharge per HC night and HP day, with reasons), `source` the HTTP
//! colour sources and their fallback chain, `ledger` the € ledger of a
//! battery's Tempo day from the hourly energy history, `book` the stored daily ledgers and their topic, `consumption` the house load and PV per
//! hour learned from the bridge's telemetry (the `tempo_load_profile` document), `live` the planner in the running bridge (plan topic,
//! `plan/get`, tonight's targets), `outlook` the season stats and the J+2…J+9
//! forecast (checked, cached in the store), `planner` the seed's precharge maths (also the
//! fallback schedule's), `service` the 11:30 job, the `NightPlanner` and the `tempo/get` and
//! `tempo/refresh` actions, `settings` the `[tempo]` section. This module talks HTTP to the
//! configured Tempo URLs, reads and writes the `Store` (colour cache, decision and plan
//! documents), reads batteries' SOC through the fleet and sends alerts; it never commands a
//! battery (the scheduler's night job applies the plan).

mod book;
pub mod consumption;
mod day;
mod ledger;
mod live;
mod outlook;
mod plan;
mod planner;
mod service;
mod settings;
mod source;
mod tariff;

pub use book::*;
pub use consumption::{
    ConsumptionModel, DayKind, DayLoad, DayLoads, LEARN_DAYS, LOAD_PROFILE_DOC, LearnedProfile,
    LoadSource, MIN_DAYS, learn as learn_consumption, learn_window,
};
pub use day::*;
pub use ledger::*;
pub use live::*;
pub use outlook::*;
pub use plan::*;
pub use planner::*;
pub use service::*;
pub use settings::*;
pub use source::*;
pub use tariff::*;

/// Errors at the Tempo module's edge.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TempoError {
    /// Settings unusable (names the key).
    #[error("tempo.{0}")]
    Config(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(String),
    /// The decision could not be stored or read.
    #[error("store: {0}")]
    Store(String),
    /// The run was cancelled (shutdown) before a decision.
    #[error("cancelled before a decision")]
    Cancelled,
}
