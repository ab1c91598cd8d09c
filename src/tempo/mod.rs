//! EDF Tempo colours (api-couleur-tempo.fr, RTE) and the red-day precharge planner.
//!
//! `day` holds the pure calendar rules (06:00→06:00 Tempo day in Europe/Paris, red only Mon–Fri
//! from Nov 1 to Mar 31), `source` the HTTP colour sources and their fallback chain, `planner`
//! the pure precharge maths, `service` the 11:30 job, the `NightPlanner` and the `tempo/get` and
//! `tempo/refresh` actions, `settings` the `[tempo]` section. This module talks HTTP to the
//! configured Tempo URLs, reads and writes the `Store` (colour cache, decision and plan
//! documents), reads batteries' SOC through the fleet and sends alerts; it never commands a
//! battery (the scheduler's night job applies the plan).

mod day;
mod planner;
mod service;
mod settings;
mod source;

pub use day::*;
pub use planner::*;
pub use service::*;
pub use settings::*;
pub use source::*;

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
