//! marstek-bridge: Marstek Venus batteries (local UDP Open API) to MQTT, with Home Assistant
//! discovery, a persisted schedule, EDF Tempo precharge and PostgreSQL/SQLite storage.
//!
//! Layout: `domain` owns the vocabulary; `marstek`, `mqtt`, `store`, `tempo` are adapters to one
//! external system each; `scheduler` and `alerts` are roles; `app` is the only place that wires
//! them together; `config` and `logging` are set up by `main`.

pub mod alerts;
pub mod app;
pub mod broker;
pub mod config;
pub mod control;
pub mod demo;
pub mod domain;
pub mod http;
pub mod logging;
pub mod marstek;
pub mod mqtt;
pub mod redact;
pub mod regulator;
pub mod remote;
pub mod replay;
pub mod sample_metrics;
pub mod scheduler;
pub mod simulator;
pub mod sites;
pub mod store;
pub mod tempo;
