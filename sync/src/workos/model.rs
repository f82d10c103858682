//! The WorkOS objects the companion reads, checked field by field: an object missing an id or a
//! timestamp is malformed and reported, never guessed at.

use crate::error::SyncError;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// An organization (`org_…`).
#[derive(Debug, Clone, PartialEq)]
pub struct Organization {
    pub id: String,
    pub name: Option<String>,
    pub external_id: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A membership (`om_…`) of a user in an organization.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub id: String,
    pub user_id: String,
    pub organization_id: String,
    /// `active`, `inactive` or `pending`.
    pub status: String,
    pub role: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// An event of the Events API.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub event: String,
    pub data: Value,
    pub created_at: Option<DateTime<Utc>>,
}

/// The event types the companion consumes (the explicit `events` filter of every request).
pub const EVENT_TYPES: &[&str] = &[
    "organization.created",
    "organization.updated",
    "organization.deleted",
    "organization_membership.created",
    "organization_membership.updated",
    "organization_membership.deleted",
    "user.deleted",
    "session.revoked",
];

/// A required, non-empty string field.
fn text(object: &Value, field: &str) -> Result<String, SyncError> {
    match object.get(field).and_then(Value::as_str) {
        Some(v) if !v.is_empty() && v.len() <= 512 => Ok(v.to_string()),
        Some(_) => Err(SyncError::Malformed(format!("\"{field}\" is empty or too long"))),
        None => Err(SyncError::Malformed(format!("\"{field}\" is missing"))),
    }
}

/// An optional string field (null or absent is None).
fn optional_text(object: &Value, field: &str) -> Option<String> {
    object
        .get(field)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// An ISO 8601 timestamp (WorkOS writes RFC 3339 with milliseconds; older payloads a space).
pub fn timestamp(object: &Value, field: &str) -> Result<DateTime<Utc>, SyncError> {
    let raw = text(object, field)?;
    parse_time(&raw).ok_or_else(|| SyncError::Malformed(format!("\"{field}\" is not a timestamp: \"{raw}\"")))
}

/// Parses RFC 3339, or `YYYY-MM-DD HH:MM:SS[.fff]` taken as UTC.
pub fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

impl Organization {
    /// An organization object.
    pub fn parse(object: &Value) -> Result<Organization, SyncError> {
        let id = text(object, "id")?;
        if !id.starts_with("org_") {
            return Err(SyncError::Malformed(format!(
                "organization id \"{id}\" does not start with org_"
            )));
        }
        Ok(Organization {
            id,
            name: optional_text(object, "name"),
            external_id: optional_text(object, "external_id"),
            updated_at: timestamp(object, "updated_at")?,
        })
    }
}

impl Membership {
    /// An organization membership object.
    pub fn parse(object: &Value) -> Result<Membership, SyncError> {
        let status = text(object, "status")?;
        if !matches!(status.as_str(), "active" | "inactive" | "pending") {
            return Err(SyncError::Malformed(format!(
                "membership status \"{status}\" is not active, inactive or pending"
            )));
        }
        let role = match object.get("role") {
            Some(Value::Object(r)) => r
                .get("slug")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        Ok(Membership {
            id: text(object, "id")?,
            user_id: text(object, "user_id")?,
            organization_id: text(object, "organization_id")?,
            status,
            role,
            updated_at: timestamp(object, "updated_at")?,
        })
    }
}

impl Event {
    /// An event object (its `data` is parsed when applied).
    pub fn parse(object: &Value) -> Result<Event, SyncError> {
        Ok(Event {
            id: text(object, "id")?,
            event: text(object, "event")?,
            data: object.get("data").cloned().unwrap_or(Value::Null),
            created_at: optional_text(object, "created_at").and_then(|t| parse_time(&t)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn memberships_as_documented_and_malformed() {
        let m = Membership::parse(
            &json!({"object": "organization_membership", "id": "om_1", "user_id": "user_1",
            "organization_id": "org_1", "role": {"slug": "admin"}, "status": "active",
            "created_at": "2024-01-01T00:00:00.000Z", "updated_at": "2024-01-02T00:00:00.000Z"}),
        )
        .unwrap();
        assert_eq!((m.role.as_deref(), m.status.as_str()), (Some("admin"), "active"));
        for (broken, why) in [
            (
                json!({"id": "om_1", "organization_id": "org_1", "status": "active", "updated_at": "2024-01-02T00:00:00Z"}),
                "user_id",
            ),
            (
                json!({"id": "om_1", "user_id": "u", "organization_id": "org_1", "status": "gone", "updated_at": "2024-01-02T00:00:00Z"}),
                "status",
            ),
            (
                json!({"id": "om_1", "user_id": "u", "organization_id": "org_1", "status": "active", "updated_at": "yesterday"}),
                "timestamp",
            ),
        ] {
            let err = Membership::parse(&broken).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn both_timestamp_forms() {
        assert_eq!(
            parse_time("2023-04-28 20:05:31.093"),
            parse_time("2023-04-28T20:05:31.093Z")
        );
        assert!(parse_time("2023-04-28").is_none());
    }
}
