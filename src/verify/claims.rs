//! The claim rules, applied to a payload whose signature has been verified.

use super::denial::{Denial, Reason, SeenClaims};
use super::json;
use serde_json::{Map, Value};

/// Verified claims of a WorkOS access token (or any OIDC access token of the same shape).
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub org_id: Option<String>,
    pub role: Option<String>,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub sid: Option<String>,
    pub exp: i64,
    /// The whole claim set, for `tenancy.claims()`.
    pub all: Map<String, Value>,
}

/// What an issuer's tokens must carry beyond a valid signature.
#[derive(Debug, Clone, Copy)]
pub struct TimeRules {
    /// Seconds since the Unix epoch.
    pub now: i64,
    /// Tolerated clock difference in seconds (`tenancy.clock_skew`).
    pub leeway: i64,
}

/// Unix seconds PostgreSQL can hold as a `timestamptz`: from 4714-11-24 BC (Julian day 0) to just
/// before 294277-01-01 (`to_timestamp()` refuses anything outside with "timestamp out of range").
/// A time outside this range is refused as a claim and never recorded as one: a single unsigned
/// token with `"exp": 1e300` once failed every batch of the audit writer.
pub const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -210_866_803_200..=9_224_318_015_999;

/// `value` as whole Unix seconds when it is a finite number inside `TIMESTAMP_SECONDS`.
pub fn unix_seconds(value: f64) -> Option<i64> {
    if !value.is_finite() {
        return None;
    }
    let floor = value.floor();
    // Compared as floats first: `as i64` saturates, which would turn 1e300 into i64::MAX.
    if floor < *TIMESTAMP_SECONDS.start() as f64 || floor > *TIMESTAMP_SECONDS.end() as f64 {
        return None;
    }
    Some(floor as i64)
}

/// Reads the claims that the audit trail records, without judging them. The payload is not
/// verified yet: every value is bounded here, where it enters (text made printable and cut by the
/// ring, `exp` kept only inside `TIMESTAMP_SECONDS`, anything else is marked unrecordable).
pub fn seen(payload: &Map<String, Value>, kid: Option<&str>) -> SeenClaims {
    let text = |name: &str| payload.get(name).and_then(Value::as_str).map(json::printable);
    let exp = payload.get("exp");
    let recorded_exp = exp.and_then(Value::as_f64).and_then(unix_seconds);
    SeenClaims {
        iss: text("iss"),
        sub: text("sub"),
        org_id: text("org_id"),
        sid: text("sid"),
        kid: kid.map(json::printable),
        exp: recorded_exp,
        exp_unrecordable: exp.is_some() && recorded_exp.is_none(),
    }
}

/// Applies the time, audience and type rules and extracts the claims.
pub fn check(payload: Map<String, Value>, audience: Option<&str>, time: TimeRules) -> Result<Claims, Denial> {
    let exp =
        numeric_date(&payload, "exp")?.ok_or_else(|| Denial::new(Reason::InvalidClaim, "claim \"exp\" is required"))?;
    if time.now >= exp.saturating_add(time.leeway) {
        return Err(Denial::new(
            Reason::Expired,
            format!("expired at {exp}, now {} (leeway {} s)", time.now, time.leeway),
        ));
    }
    if let Some(nbf) = numeric_date(&payload, "nbf")? {
        if nbf > time.now.saturating_add(time.leeway) {
            return Err(Denial::new(
                Reason::NotYetValid,
                format!("valid from {nbf}, now {}", time.now),
            ));
        }
    }
    if let Some(iat) = numeric_date(&payload, "iat")? {
        if iat > time.now.saturating_add(time.leeway) {
            return Err(Denial::new(
                Reason::IssuedInFuture,
                format!("issued at {iat}, now {}", time.now),
            ));
        }
    }
    if let Some(expected) = audience {
        let matches = match payload.get("aud") {
            Some(Value::String(a)) => a == expected,
            Some(Value::Array(list)) => list.iter().any(|a| a == expected),
            _ => false,
        };
        if !matches {
            return Err(Denial::new(
                Reason::AudienceMismatch,
                "the issuer requires an audience the token lacks",
            ));
        }
    }
    let iss = required_string(&payload, "iss")?;
    let sub = required_string(&payload, "sub")?;
    if sub.is_empty() {
        return Err(Denial::new(Reason::InvalidClaim, "claim \"sub\" is empty"));
    }
    Ok(Claims {
        iss,
        sub,
        org_id: optional_string(&payload, "org_id")?.filter(|o| !o.is_empty()),
        role: optional_string(&payload, "role")?,
        roles: string_list(&payload, "roles")?,
        permissions: string_list(&payload, "permissions")?,
        sid: optional_string(&payload, "sid")?,
        exp,
        all: payload,
    })
}

/// A NumericDate claim (RFC 7519 §2): a JSON number, never a string.
fn numeric_date(payload: &Map<String, Value>, name: &str) -> Result<Option<i64>, Denial> {
    match payload.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) => unix_seconds(f)
                .map(Some)
                .ok_or_else(|| Denial::new(Reason::InvalidClaim, format!("claim \"{name}\" is out of range"))),
            None => Err(Denial::new(
                Reason::InvalidClaim,
                format!("claim \"{name}\" is out of range"),
            )),
        },
        Some(_) => Err(Denial::new(
            Reason::InvalidClaim,
            format!("claim \"{name}\" must be a number"),
        )),
    }
}

/// The refusal of a claim holding U+0000: PostgreSQL's text cannot hold it, so the membership
/// query and the functions reporting the claim would each see a different value (a signed
/// `"sub": "user_a\u0000x"` was checked as one user and reported as another).
fn nul_in(name: &str) -> Denial {
    Denial::new(
        Reason::InvalidClaim,
        format!("claim \"{name}\" contains a NUL character"),
    )
}

/// A string claim that must be present.
fn required_string(payload: &Map<String, Value>, name: &str) -> Result<String, Denial> {
    optional_string(payload, name)?
        .ok_or_else(|| Denial::new(Reason::InvalidClaim, format!("claim \"{name}\" is required")))
}

/// A string claim, `None` when absent.
fn optional_string(payload: &Map<String, Value>, name: &str) -> Result<Option<String>, Denial> {
    match payload.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.contains('\0') => Err(nul_in(name)),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Denial::new(
            Reason::InvalidClaim,
            format!("claim \"{name}\" must be a string"),
        )),
    }
}

/// An array-of-strings claim, empty when absent.
fn string_list(payload: &Map<String, Value>, name: &str) -> Result<Vec<String>, Denial> {
    match payload.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.iter().any(|v| v.as_str().is_some_and(|s| s.contains('\0'))) => {
            Err(nul_in(name))
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Denial::new(Reason::InvalidClaim, format!("claim \"{name}\" must hold strings"))),
        Some(_) => Err(Denial::new(
            Reason::InvalidClaim,
            format!("claim \"{name}\" must be an array"),
        )),
    }
}
