//! Structured logs through `tracing`: one JSON object per line on standard error, with `ts`
//! (RFC 3339, milliseconds, UTC), `level` (`error`, `warn`, `info`, `debug`, `trace`), `msg`, and
//! the event's fields by name (numbers and booleans as JSON numbers and booleans, anything else as
//! a string). Which lines are written is an `EnvFilter`: `--log`, else `PG_TENANCY_SYNC_LOG`, else
//! `RUST_LOG`, else `info`.
//!
//! No line carries a secret: callers log only names, counts, identifiers and error texts, the API
//! key and webhook secrets live in `config::Secret` (which prints `[redacted]`), and database URLs
//! are never logged. Only the companion's own events are written, whatever the filter: a
//! dependency's debug output could carry a request header or a statement parameter. Panics are
//! logged as lines too (`msg` "panic"), so that stderr stays one JSON object per line.

use crate::error::SyncError;
use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The filter used when none is given.
pub const DEFAULT_FILTER: &str = "info";

/// Installs the JSON subscriber with `filter` (EnvFilter directives: `info`, `warn`,
/// `pg_tenancy_sync::alerts=debug,info`…) and the panic hook. On an invalid filter, installs the
/// default one and returns the error, for the caller to log and exit with.
pub fn init(filter: &str) -> Result<(), SyncError> {
    let (parsed, problem) = match parse_filter(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some(e)),
    };
    let own = filter_fn(|meta| meta.target().starts_with(env!("CARGO_CRATE_NAME")));
    let layer = tracing_subscriber::fmt::layer()
        .event_format(JsonLines)
        .with_writer(std::io::stderr)
        .with_filter(parsed.and(own));
    // A second init (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(layer).try_init();
    std::panic::set_hook(Box::new(|info| {
        let problem = panic_text(info.payload());
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        tracing::error!(problem, location, thread, "panic");
    }));
    problem.map_or(Ok(()), Err)
}

/// EnvFilter directives, checked.
fn parse_filter(filter: &str) -> Result<EnvFilter, SyncError> {
    EnvFilter::builder()
        .parse(filter)
        .map_err(|e| SyncError::Config(format!("the log filter \"{filter}\" is invalid: {e}")))
}

/// The text of a panic's payload.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The line format: `{"ts", "level", "msg", fields…}`.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        writeln!(writer, "{}", line(event))
    }
}

/// One event as a JSON object.
fn line(event: &Event<'_>) -> Value {
    let mut object = Map::new();
    object.insert(
        "ts".into(),
        Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    );
    object.insert(
        "level".into(),
        Value::from(event.metadata().level().as_str().to_lowercase()),
    );
    event.record(&mut Fields(&mut object));
    Value::Object(object)
}

/// Records fields into the object (`message` as `msg`).
struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = match field.name() {
            "message" => "msg",
            name => name,
        };
        self.0.insert(name.into(), value);
    }
}

impl Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The lines written while `f` runs under a subscriber of this format (filter `filter`).
    fn lines(filter: &str, f: impl FnOnce()) -> Vec<Value> {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let writer = move || Capture(sink.clone());
        let own = filter_fn(|meta| meta.target().starts_with(env!("CARGO_CRATE_NAME")));
        let layer = tracing_subscriber::fmt::layer()
            .event_format(JsonLines)
            .with_writer(writer)
            .with_filter(EnvFilter::new(filter).and(own));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_json_object_per_line_with_typed_fields_and_no_secret() {
        let key = crate::config::Secret::new("sk_live_secret");
        let got = lines("info", || {
            tracing::warn!(status = 400_u16, ok = true, seconds = 1.5, sink = "slack", key = %key, "webhook refused");
            tracing::debug!("not written at info");
            tracing::info!(target: "hyper::proto", "another crate's line is never written");
        });
        assert_eq!(got.len(), 1, "{got:?}");
        let line = &got[0];
        assert_eq!(line["level"], "warn");
        assert_eq!(line["msg"], "webhook refused");
        assert_eq!(line["status"], 400);
        assert_eq!(line["ok"], true);
        assert_eq!(line["seconds"], 1.5);
        assert_eq!(line["sink"], "slack");
        assert_eq!(line["key"], "[redacted]");
        let ts = line["ts"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
        assert_eq!(lines("warn", || tracing::info!("quiet")).len(), 0);
        assert_eq!(lines("pg_tenancy_sync=debug", || tracing::debug!("loud")).len(), 1);
    }

    #[test]
    fn an_invalid_filter_is_a_configuration_error() {
        let e = parse_filter("pg_tenancy_sync=loud").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("the log filter \"pg_tenancy_sync=loud\" is invalid"),
            "{e}"
        );
        assert_eq!(e.kind(), "config");
        assert!(parse_filter("warn,pg_tenancy_sync::alerts=debug").is_ok());
    }
}
