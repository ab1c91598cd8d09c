//! tracing set-up: human-readable lines on a terminal or one JSON object per line, level from
//! `RUST_LOG` when set, else from the configuration. Noisy dependencies are turned down. Touches
//! only the global subscriber (stderr).

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingSettings};

/// Directives appended to every filter so dependencies do not drown the bridge's own events.
const QUIET: &str =
    "rumqttd=off,rumqttc=warn,sqlx::postgres::notice=warn,sqlx::query=warn,hyper=warn,reqwest=warn";

/// Installs the global subscriber; later calls are ignored (tests may call it repeatedly).
pub fn init(settings: &LoggingSettings) {
    let base = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| settings.level.clone());
    let filter = EnvFilter::try_new(format!("{QUIET},{base}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("{QUIET},info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Pretty => builder.with_target(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
