//! Marstek Open API driver: JSON-RPC over UDP (protocol types, client, per-device actor,
//! discovery). Talks only to batteries; depends on `domain`, never on other adapters.

pub mod client;
pub mod profile;
pub mod protocol;
