//! A faithful simulated Marstek battery fleet on UDP, with switchable firmware faults, for tests,
//! demos and benchmarks. Depends only on `domain` and the protocol types of `marstek`; the
//! `site` (a house and its grid meter around the batteries) also publishes on MQTT.

pub mod cli;
pub mod faults;
pub mod model;
pub mod server;
pub mod site;
mod writes;

pub use cli::{SimulateArgs, simulate};
pub use faults::{NetReset, SimFaults};
pub use model::{SimClock, SimProfile, SimSlot};
pub use server::{Addressing, SimConfig, SimHandle, SimSnapshot, SimStats, Simulator};
