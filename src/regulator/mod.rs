//! Self-consumption regulation on a grid meter, across several batteries: a new command source
//! on the one command path (`control::CommandService`, the per-device actor, Passive mode with
//! a short countdown, the SOC envelope). `settings` holds the `[regulator]` configuration,
//! `control` the pure controller (PI with anti-windup, deadband, smoothing, bounded step, the
//! inverted-sign watch) and `allocate` the pure sharing of the fleet's set-point. These parts
//! touch nothing outside themselves; the running loop is wired by the app.

pub mod allocate;
pub mod control;
pub mod settings;

pub use allocate::{Allocation, Allocator, Candidate, Standing, fleet_range};
pub use control::{Bound, Controller, Cycle, SignWatch, Tuning};
pub use settings::{
    Extractor, MeterPreset, MeterSettings, MeterSign, MeterUnit, RegulatorSettings,
};
