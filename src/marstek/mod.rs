//! Marstek Open API driver: JSON-RPC over UDP (protocol types, client, per-device actor, the firmware catalogue,
//! discovery, the detail-readings table and decoder). Talks only to batteries; depends on `domain`, never on other adapters.

pub mod actor;
pub mod catalogue;
pub mod cli;
pub mod client;
pub mod discovery;
mod pacing;
pub mod profile;
pub mod protocol;
pub mod readings;
pub mod settings;

pub use actor::{DeviceSpec, MarstekBattery, NamedDevice, spawn_fleet};
pub use cli::{DiscoverArgs, ProbeArgs, discover, probe};
pub use client::{ClientStats, RequestOptions, Transport};
pub use discovery::{DiscoverOptions, DiscoveredDevice, discover_devices};
pub use settings::{DiscoverySettings, MarstekSettings, PollingSettings};
