//! Self-consumption regulation on a grid meter, across several batteries: a new command source
//! on the one command path (`control::CommandService`, the per-device actor, Passive mode with
//! a short countdown, the SOC envelope). `settings` holds the `[regulator]` configuration,
//! `control` the pure controller (PI with anti-windup, deadband, smoothing, bounded step, the
//! inverted-sign watch), `allocate` the pure sharing of the fleet's set-point, `meter` the
//! reading of the grid meter's payloads (extraction, refusals, staleness, CT fallback) and
//! `engine` one regulation cycle (when to write, fallback to Auto, the stop on an inverted
//! meter, the status). These parts touch nothing outside themselves. `run` is the running
//! task: meter payloads, samples and the batteries in `regulate` mode in, writes through the
//! command service (source `regulator`) out, and the hand-back to Auto at shutdown.

pub mod allocate;
pub mod control;
pub mod engine;
pub mod meter;
pub mod run;
pub mod settings;

pub use allocate::{Allocation, Allocator, Candidate, Standing, fleet_range};
pub use control::{Bound, Controller, Cycle, SignWatch, Tuning};
pub use engine::{BatteryStatus, Engine, Member, Phase, Plan, Status};
pub use meter::{BadReading, Meter, Reading, Source};
pub use settings::{
    Extractor, MeterPreset, MeterSettings, MeterSign, MeterUnit, RegulatorSettings,
};
