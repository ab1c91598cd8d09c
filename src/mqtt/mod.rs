//! MQTT adapter: topics, Home Assistant discovery, state/availability/alert publishing, command
//! parsing and the bridge request/response API. Talks only to the broker, and to devices only
//! through `control::CommandService`.
//!
//! Wiring (done by `app`): build a [`RequestRouter`] (`RequestRouter::with_builtins` plus
//! `register` for jobs/tempo actions), call [`MqttBridge::start`], then feed the returned
//! [`MqttHandle`] with samples, availability, alerts and the retained bridge documents.

pub mod bridge;
pub mod client;
pub mod commands;
pub mod discovery;
pub mod planner;
pub mod requests;
pub mod response;
pub mod settings;
pub mod topics;

pub use bridge::{MqttBridge, MqttError, MqttHandle, Tap, bridge_state_payload, state_payload};
pub use client::{
    ClientError, ClientEvent, ClientOptions, IncomingPublish, MqttClient, MqttEventLoop, Will,
};
pub use requests::{Handler, RequestRouter, handler, typed_handler};
pub use settings::{DiscoveryStyle, MqttProtocol, MqttSettings, TlsSettings};
pub use topics::Topics;
