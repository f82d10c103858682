//! API keys: long-lived, workspace-scoped credentials that pg_tenancy issues and verifies itself.
//!
//! Format: `tnk_` + 43 base64url characters (32 bytes from the operating system's CSPRNG) + a
//! 6-character checksum (the first 4 bytes of a SHA-256 over the random part), 53 characters in
//! all. The checksum catches a mistyped or truncated key before any table is read.
//!
//! Storage: only SHA-256 of the whole key. With 256 bits of entropy nothing can be recovered or
//! brute-forced from the digest, so a keyed hash (HMAC with a server-side secret) would add a
//! secret to store, back up and rotate and protect nothing more; a dump of the table is safe.
//! Lookup goes through a unique index on the digest: timing can only tell an attacker about
//! digests of keys they already hold. The row found is then compared in constant time.

use crate::fresh;
use crate::identity::Identity;
use crate::verify::{Denial, Reason};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pgrx::pg_sys;
use pgrx::prelude::*;
use ring::rand::{SecureRandom, SystemRandom};
use std::cell::Cell;

/// What every key starts with.
pub const PREFIX: &str = "tnk_";
/// Characters of the random part (32 bytes in base64url).
const BODY_LEN: usize = 43;
/// Characters of the checksum (4 bytes in base64url).
const CHECKSUM_LEN: usize = 6;
/// Characters of a whole key.
pub const KEY_LEN: usize = PREFIX.len() + BODY_LEN + CHECKSUM_LEN;
/// Characters of the key shown in `tenancy.api_keys` (prefix and the first 8 random ones).
const DISPLAY_LEN: usize = PREFIX.len() + 8;

/// SHA-256 of `bytes`.
fn sha256(bytes: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// The checksum of a key's random part.
fn checksum(body: &str) -> String {
    let mut input = b"pg_tenancy api key\0".to_vec();
    input.extend_from_slice(body.as_bytes());
    URL_SAFE_NO_PAD.encode(&sha256(&input)[..4])
}

/// A new key: the secret (shown once), its digest (stored) and its display prefix.
pub fn generate() -> Result<(String, [u8; 32], String), ring::error::Unspecified> {
    let mut random = [0u8; 32];
    SystemRandom::new().fill(&mut random)?;
    let body = URL_SAFE_NO_PAD.encode(random);
    let key = format!("{PREFIX}{body}{}", checksum(&body));
    let digest = sha256(key.as_bytes());
    Ok((key.clone(), digest, key[..DISPLAY_LEN].to_string()))
}

/// Checks a key's shape and checksum without reading any table.
pub fn check_shape(key: &str) -> Result<(), Denial> {
    let malformed = |detail: String| Err(Denial::new(Reason::ApiKeyMalformed, detail));
    if key.len() != KEY_LEN {
        return malformed(format!("{} characters instead of {KEY_LEN}", key.len()));
    }
    if !key.starts_with(PREFIX) {
        return malformed(format!("it does not start with {PREFIX}"));
    }
    let rest = &key[PREFIX.len()..];
    if !rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return malformed("characters outside base64url".into());
    }
    let (body, sum) = rest.split_at(BODY_LEN);
    if !constant_time_eq(checksum(body).as_bytes(), sum.as_bytes()) {
        return malformed("the checksum does not match (mistyped or truncated)".into());
    }
    Ok(())
}

/// Equality that takes the same time wherever the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The row of a key, with what the double check needs ($1: the digest in hex). Every name is
/// qualified; times come back as `numeric` seconds (`EXTRACT` is `pg_catalog.extract`), whose
/// text no session setting changes (a float8's does, with `extra_float_digits`).
const LOOKUP: &std::ffi::CStr = c"\
SELECT CAST(k.id AS pg_catalog.text), k.workspace_id, k.user_id, k.role,
       CAST(pg_catalog.array_to_json(k.permissions) AS pg_catalog.text),
       EXTRACT(epoch FROM k.expires_at), k.revoked_at IS NOT NULL,
       k.digest OPERATOR(pg_catalog.=) pg_catalog.decode($1, 'hex'),
       pg_catalog.encode(CASE WHEN k.digest OPERATOR(pg_catalog.=) pg_catalog.decode($1, 'hex')
                              THEN k.digest ELSE k.previous_digest END, 'hex'),
       EXTRACT(epoch FROM k.previous_valid_until),
       w.organization_id, w.disabled_at IS NOT NULL,
       m.user_id IS NOT NULL, m.disabled_at IS NOT NULL, m.role,
       k.creator_user_id IS NOT NULL, c.user_id IS NOT NULL AND c.disabled_at IS NULL
  FROM tenancy._api_key_store k
  JOIN tenancy.workspaces w ON w.workspace_id OPERATOR(pg_catalog.=) k.workspace_id
  LEFT JOIN tenancy.members m ON m.workspace_id OPERATOR(pg_catalog.=) k.workspace_id
                             AND m.user_id OPERATOR(pg_catalog.=) k.user_id
  LEFT JOIN tenancy.members c ON c.workspace_id OPERATOR(pg_catalog.=) k.workspace_id
                             AND c.user_id OPERATOR(pg_catalog.=) k.creator_user_id
 WHERE k.digest OPERATOR(pg_catalog.=) pg_catalog.decode($1, 'hex')
    OR k.previous_digest OPERATOR(pg_catalog.=) pg_catalog.decode($1, 'hex')";

thread_local! {
    /// The lookup, planned once per backend.
    static LOOKUP_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(std::ptr::null_mut()) };
}

/// One row of `LOOKUP`.
struct KeyRow {
    id: String,
    workspace_id: String,
    user_id: Option<String>,
    role: Option<String>,
    permissions: Vec<String>,
    expires_at: Option<f64>,
    revoked: bool,
    current: bool,
    /// The matched digest (current or previous) in hex, as stored.
    stored_digest_hex: String,
    previous_valid_until: Option<f64>,
    organization_id: Option<String>,
    workspace_disabled: bool,
    is_member: bool,
    member_disabled: bool,
    member_role: Option<String>,
    /// The key was made by an identity (from a member's rights).
    has_creator: bool,
    /// That member is still an enabled member of the workspace.
    creator_enabled: bool,
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the row of the key with this digest, as `tenancy_lookup` (`src/raised.rs`), under the
/// latest snapshot.
fn lookup(digest_hex: &str) -> Option<KeyRow> {
    let mut rows = crate::raised::as_lookup_role(|| fresh::query(&LOOKUP_PLAN, LOOKUP, &[Some(digest_hex)]));
    let row = rows.pop()?;
    let column = |i: usize| row.get(i).cloned().flatten();
    let number = |i: usize| column(i).and_then(|v| v.parse::<f64>().ok());
    Some(KeyRow {
        id: column(0).unwrap_or_default(),
        workspace_id: column(1).unwrap_or_default(),
        user_id: column(2),
        role: column(3),
        permissions: column(4)
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default(),
        expires_at: number(5),
        revoked: fresh::flag(&column(6)),
        current: fresh::flag(&column(7)),
        stored_digest_hex: column(8).unwrap_or_default(),
        previous_valid_until: number(9),
        organization_id: column(10),
        workspace_disabled: fresh::flag(&column(11)),
        is_member: fresh::flag(&column(12)),
        member_disabled: fresh::flag(&column(13)),
        member_role: column(14),
        has_creator: fresh::flag(&column(15)),
        creator_enabled: fresh::flag(&column(16)),
    })
}

/// Verifies an API key and applies the workspace and membership double check.
pub fn resolve(key: &str, now: i64) -> Result<Identity, Denial> {
    check_shape(key)?;
    let digest_hex = hex(&sha256(key.as_bytes()));
    let row = lookup(&digest_hex).ok_or_else(|| Denial::new(Reason::ApiKeyUnknown, "no key has this digest"))?;
    if !constant_time_eq(row.stored_digest_hex.as_bytes(), digest_hex.as_bytes()) {
        return Err(Denial::new(Reason::ApiKeyUnknown, "no key has this digest"));
    }
    if row.revoked {
        return Err(Denial::new(Reason::ApiKeyRevoked, format!("key {} is revoked", row.id)));
    }
    let mut expires_at = row.expires_at.map_or(i64::MAX, |e| e as i64);
    if !row.current {
        let grace_end = row.previous_valid_until.map_or(i64::MIN, |e| e as i64);
        expires_at = expires_at.min(grace_end);
    }
    if now >= expires_at {
        let detail = if row.current {
            "past its expires_at"
        } else {
            "a rotated key past its grace period"
        };
        return Err(Denial::new(Reason::ApiKeyExpired, format!("key {}: {detail}", row.id)));
    }
    if row.workspace_disabled {
        return Err(Denial::new(
            Reason::WorkspaceDisabled,
            "the key's workspace is disabled",
        ));
    }
    if row.user_id.is_some() && !row.is_member {
        return Err(Denial::new(
            Reason::NotMember,
            "the key's user is not a member of its workspace",
        ));
    }
    if row.member_disabled {
        return Err(Denial::new(Reason::MemberDisabled, "the key's user is disabled"));
    }
    if row.has_creator && !row.creator_enabled {
        return Err(Denial::new(
            Reason::MemberDisabled,
            "the member who made the key is disabled or no longer a member",
        ));
    }
    let user_id = row.user_id.clone().unwrap_or_else(|| format!("api_key:{}", row.id));
    Ok(Identity {
        workspace_id: Some(row.workspace_id.clone()),
        organization_id: row.organization_id.clone(),
        user_id,
        role: row.role.clone().or(row.member_role.clone()),
        permissions: row.permissions.clone(),
        session_id: None,
        issuer: "pg_tenancy api key".into(),
        expires_at,
        claims: serde_json::json!({"api_key_id": row.id, "workspace_id": row.workspace_id, "user_id": row.user_id}),
        api_key_id: Some(row.id),
    })
}

/// Mints a key for `tenancy.create_api_key` / `rotate_api_key`: the secret, its digest, its
/// display prefix. Callable only by those SECURITY DEFINER functions (EXECUTE revoked).
#[pg_extern(volatile, parallel_unsafe)]
fn _mint_api_key() -> TableIterator<'static, (name!(secret, String), name!(digest, Vec<u8>), name!(display, String))> {
    let (secret, digest, display) =
        generate().unwrap_or_else(|_| error!("the operating system's random number generator failed"));
    TableIterator::once((secret, digest.to_vec(), display))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_pass_and_every_corruption_fails_before_lookup() {
        let (key, digest, display) = generate().unwrap();
        assert_eq!(key.len(), KEY_LEN);
        assert!(key.starts_with(&display));
        assert_eq!(digest, sha256(key.as_bytes()));
        assert!(check_shape(&key).is_ok());
        let flipped = {
            let mut bytes = key.clone().into_bytes();
            bytes[10] = if bytes[10] == b'A' { b'B' } else { b'A' };
            String::from_utf8(bytes).unwrap()
        };
        for (name, bad) in [
            ("wrong prefix", key.replacen("tnk_", "tnx_", 1)),
            ("one character mistyped", flipped),
            ("truncated", key[..KEY_LEN - 1].to_string()),
            ("one character more", format!("{key}A")),
            ("1 MiB", "tnk_".to_string() + &"A".repeat(1 << 20)),
            ("space inside", format!("{} {}", &key[..20], &key[21..])),
            ("empty", String::new()),
        ] {
            let denial = check_shape(&bad).expect_err(name);
            assert_eq!(denial.reason, Reason::ApiKeyMalformed, "{name}");
        }
    }

    #[test]
    fn two_keys_never_repeat() {
        assert_ne!(generate().unwrap().0, generate().unwrap().0);
    }
}
