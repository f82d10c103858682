//! Structured logs: one JSON object per line on standard error (`ts`, `level`, `msg`, fields).
//! Callers pass only names, counts, identifiers and error texts that carry no secret: the API key
//! and webhook secrets live in `config::Secret`, and database URLs are never logged.

use serde_json::{Map, Value};

/// Writes one log line at `level` with `fields` (pairs of name and JSON value).
pub fn line(level: &str, msg: &str, fields: &[(&str, Value)]) {
    let mut object = Map::new();
    object.insert(
        "ts".into(),
        Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    );
    object.insert("level".into(), Value::from(level));
    object.insert("msg".into(), Value::from(msg));
    for (name, value) in fields {
        object.insert((*name).into(), value.clone());
    }
    eprintln!("{}", Value::Object(object));
}

/// An informational line.
pub fn info(msg: &str, fields: &[(&str, Value)]) {
    line("info", msg, fields);
}

/// A problem the companion recovers from by itself (and reports).
pub fn warn(msg: &str, fields: &[(&str, Value)]) {
    line("warn", msg, fields);
}

/// A problem that needs an operator.
pub fn error(msg: &str, fields: &[(&str, Value)]) {
    line("error", msg, fields);
}
