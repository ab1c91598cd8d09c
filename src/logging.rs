//! tracing set-up: human-readable lines on a terminal or one JSON object per line, level from
//! `RUST_LOG` when set, else from the configuration. Noisy dependencies are turned down. A JSON
//! line has exactly one key per name: `timestamp`, `level`, `site` (`bridge.site_id`),
//! `message` (the event name), `target`, then the event's fields; a pretty line starts with
//! `site=<id>`; a field whose name is already taken (e.g. an alert's `message` text)
//! is written as `<name>_2`, `<name>_3`, … Touches only the global subscriber (stderr).

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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
        LogFormat::Pretty => builder
            .event_format(SitePrefixed(
                tracing_subscriber::fmt::format().with_target(false),
            ))
            .try_init(),
        LogFormat::Json => builder.event_format(JsonLine).try_init(),
    };
}

/// The default line format with `site=<id>` (see [`crate::sites::process_site`]) before it.
#[derive(Debug, Clone)]
pub struct SitePrefixed<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for SitePrefixed<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "site={} ", crate::sites::process_site())?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Formats an event as one JSON object with unique keys (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = UniqueFields(Map::new());
        fields.insert(
            "timestamp",
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        fields.insert("level", Value::String(meta.level().to_string()));
        fields.insert("site", Value::String(crate::sites::process_site().into()));
        // The event name (`message`) is recorded before the other fields by tracing's macros.
        event.record(&mut fields);
        fields.insert("target", Value::String(meta.target().to_string()));
        writeln!(writer, "{}", Value::Object(fields.0))
    }
}

/// A JSON object that never holds two values under one key.
struct UniqueFields(Map<String, Value>);

impl UniqueFields {
    fn insert(&mut self, name: &str, value: Value) {
        let mut key = name.to_string();
        let mut n = 1;
        while self.0.contains_key(&key) {
            n += 1;
            key = format!("{name}_{n}");
        }
        self.0.insert(key, value);
    }
}

impl Visit for UniqueFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.insert(field.name(), v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field.name(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field.name(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field.name(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field.name(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.insert(field.name(), Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field.name(), Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(emit: impl FnOnce()) -> String {
        let buf = Buffer::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLine)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_pretty_line_names_the_site() {
        let buf = Buffer::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(SitePrefixed(
                tracing_subscriber::fmt::format().with_target(false),
            ))
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || tracing::info!(n = 1, "hello"));
        let line = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let site = format!("site={} ", crate::sites::process_site());
        assert!(line.starts_with(&site), "{line}");
        assert!(line.contains("hello"), "{line}");
    }

    #[test]
    fn an_alert_line_has_one_key_per_name() {
        let text = "SOC 9 % is below 15 %";
        let line = capture(|| {
            tracing::warn!(kind = "low_soc", message = %text, level = 3, "alert");
        });
        assert_eq!(line.lines().count(), 1, "{line}");
        // Raw text: a JSON parser would silently keep one of two equal keys.
        assert_eq!(line.matches("\"message\":").count(), 1, "{line}");
        assert_eq!(line.matches("\"level\":").count(), 1, "{line}");
        let v: Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["message"], "alert");
        assert_eq!(v["message_2"], text);
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["site"], crate::sites::process_site());
        assert_eq!(v["level_2"], 3);
        assert_eq!(v["kind"], "low_soc");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(v["target"], module_path!());
    }

    #[test]
    fn plain_fields_keep_their_types() {
        let line = capture(|| tracing::info!(devices = 2, ok = true, ms = 1.5, "bridge_started"));
        let v: Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["message"], "bridge_started");
        assert_eq!(v["devices"], 2);
        assert_eq!(v["ok"], true);
        assert_eq!(v["ms"], 1.5);
    }
}
