//! Strict JSON for token headers, claims and key sets: a member name may appear once per object.
//!
//! `serde_json` keeps the last of two equal names, so `{"sub":"a","sub":"b"}` would mean one thing
//! to us and another to a parser that keeps the first. Such objects are refused at every depth.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// A JSON value whose objects, at every depth, carry each member name once.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

/// Builds a `serde_json::Value`, refusing duplicate member names.
struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if object.contains_key(&name) {
                return Err(de::Error::custom(format!("duplicate member \"{}\"", printable(&name))));
            }
            let StrictValue(v) = map.next_value()?;
            object.insert(name, v);
        }
        Ok(Value::Object(object))
    }
}

/// Parses bytes that must hold one JSON object with unique member names at every depth.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    match serde_json::from_str::<StrictValue>(text) {
        Ok(StrictValue(Value::Object(map))) => Ok(map),
        Ok(_) => Err("not a JSON object".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Shortens and escapes text that came from an unverified token before it is shown anywhere.
pub fn printable(text: &str) -> String {
    let mut out: String = text.chars().take(64).flat_map(char::escape_default).collect();
    if text.chars().count() > 64 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, bool)] = &[
            (r#"{"sub":"a"}"#, true),
            (r#"{"sub":"a","sub":"b"}"#, false),
            (r#"{"a":{"x":1,"x":2}}"#, false),
            (r#"{"a":[{"x":1},{"x":2}]}"#, true),
            (r#"["not","an","object"]"#, false),
            (r#"{"a":1} trailing"#, false),
            ("{\"a\":\"\u{0}\"}", false),
        ];
        for (text, ok) in cases {
            assert_eq!(parse_object(text.as_bytes()).is_ok(), *ok, "{text}");
        }
    }

    #[test]
    fn printable_escapes_and_truncates() {
        assert_eq!(printable("a\nb"), "a\\nb");
        assert_eq!(printable(&"x".repeat(100)).chars().count(), 65);
    }
}
