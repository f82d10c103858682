//! The API-key path of the identity: the key's row, read as `tenancy_lookup` under the latest
//! snapshot, and the workspace and membership double check. Lookup goes through a unique index on
//! the digest: timing can only tell an attacker about digests of keys they already hold. The row
//! found is then compared in constant time. The key format is `verify::api_key_format`.

use super::model::Identity;
use crate::plumbing::{fresh, pinned_context};
use crate::verify::api_key_format::{check_shape, constant_time_eq, hex};
use crate::verify::{sha256, Denial, Reason};
use pgrx::pg_sys;
use std::cell::Cell;

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
       k.creator_user_id IS NOT NULL, c.user_id IS NOT NULL AND c.disabled_at IS NULL,
       EXISTS (SELECT FROM tenancy.revoked_sessions r WHERE r.sid OPERATOR(pg_catalog.=) k.creator_session_id)
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
    /// The WorkOS session of the token the key was made with has been revoked.
    creator_session_revoked: bool,
}

/// Reads the row of the key with this digest, as `tenancy_lookup` (`src/plumbing/pinned_context.rs`), under the
/// latest snapshot.
fn lookup(digest_hex: &str) -> Option<KeyRow> {
    let mut rows = pinned_context::as_lookup_role(|| fresh::query(&LOOKUP_PLAN, LOOKUP, &[Some(digest_hex)]));
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
        creator_session_revoked: fresh::flag(&column(17)),
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
    if row.creator_session_revoked {
        // Revoking a stolen session ends what was made with it, keys included.
        return Err(Denial::new(
            Reason::ApiKeyRevoked,
            format!(
                "key {}: the session it was made (or last rotated) with has been revoked",
                row.id
            ),
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
        claims: serde_json::json!({"api_key_id": row.id, "workspace_id": row.workspace_id, "user_id": row.user_id,
                                   "previous_secret": !row.current}),
        api_key_id: Some(row.id),
    })
}
