//! Token verification in pure Rust: token in, claims or a typed denial out, `now` passed in.
//!
//! Nothing here knows PostgreSQL, so every rule is unit-tested with plain Rust tests, the Project
//! Wycheproof vectors and the real WorkOS token. The order of the steps is fixed: size and shape,
//! header rules, issuer (read from the unverified payload only to choose the keys), algorithm
//! allow-list, key by `kid`, signature, and only then the claim rules.

pub mod api_key_format;
pub mod base64url;
mod claims;
mod denial;
pub mod json;
pub mod jwks;
pub mod jws;
pub mod masking;
mod roca;
#[cfg(test)]
pub(crate) mod tests;

pub use claims::{unix_seconds, Claims, TimeRules, TIMESTAMP_SECONDS};
pub use denial::{Denial, Reason, SeenClaims};
pub use jwks::{Algorithm, KeySet};

/// An issuer the administrator trusts, with its keys and rules.
#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    pub issuer: String,
    pub audience: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub keys: KeySet,
    /// Whether tokens without `org_id` may identify a user (no workspace, no membership check).
    /// The identity layer enforces it; verification itself ignores it.
    pub allows_no_organization: bool,
}

/// SHA-256 of `bytes` (API-key digests and checksums, the identity cache's key).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// Where `verify` finds a trusted issuer by its exact `iss` string.
pub trait Trust {
    fn issuer(&self, iss: &str) -> Option<&TrustedIssuer>;
}

impl Trust for [TrustedIssuer] {
    fn issuer(&self, iss: &str) -> Option<&TrustedIssuer> {
        self.iter().find(|t| t.issuer == iss)
    }
}

impl Trust for std::collections::HashMap<String, TrustedIssuer> {
    fn issuer(&self, iss: &str) -> Option<&TrustedIssuer> {
        self.get(iss)
    }
}

/// Verifies a compact JWS access token and returns its claims, or why it is refused.
pub fn verify(token: &str, trust: &(impl Trust + ?Sized), time: TimeRules) -> Result<Claims, Denial> {
    let parsed = jws::parse(token)?;
    let payload =
        json::parse_object(&parsed.payload).map_err(|e| Denial::new(Reason::Malformed, format!("payload: {e}")))?;
    let seen = claims::seen(&payload, parsed.kid.as_deref());
    let iss = match payload.get("iss") {
        Some(serde_json::Value::String(iss)) => iss.as_str(),
        _ => return Err(Denial::new(Reason::InvalidClaim, "claim \"iss\" is required").with_seen(&seen)),
    };
    let issuer = trust.issuer(iss).ok_or_else(|| {
        Denial::new(Reason::IssuerNotTrusted, format!("iss \"{}\"", json::printable(iss))).with_seen(&seen)
    })?;
    jws::verify_signature(&parsed, &issuer.keys, &issuer.algorithms).map_err(|d| d.with_seen(&seen))?;
    claims::check(payload, issuer.audience.as_deref(), time).map_err(|d| d.with_seen(&seen))
}
