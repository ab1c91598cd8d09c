//! The scheduler uses the shared clock of `domain::clock` (re-exported here).

pub use crate::domain::clock::{Clock, ManualClock, SystemClock};
