//! The session's identity: derived from `tenancy.token`, verified, double-checked against
//! `tenancy.workspaces` and `tenancy.members`, cached per backend, and read by the SQL functions.
//!
//! Reads run once per statement (the check `surface/folding.rs` makes before a plan that holds the
//! identity runs, or the initPlan under `SET LOCAL`) and are built for it: the hot path compares
//! two counters (the token's generation, bumped by the GUC assign hook on every change including
//! rollbacks, and the cache epoch, bumped by the relcache callback of `invalidation.rs`) and
//! returns the identity found last time, in a few nanoseconds. A miss
//! looks the token up by its SHA-256 digest (the `SET LOCAL` per transaction pattern) and only an
//! unknown token pays for signature verification and the membership query.

mod api_keys;
mod issuers;
mod model;

pub use model::Identity;

use crate::plumbing::errors::error;
use crate::plumbing::{fresh, pinned_context};
use crate::state::credentials::{self, Credential};
use crate::state::{counters, readiness, settings as gucs};
use crate::verify::{self, Claims, Denial, Reason, TimeRules};
use pgrx::prelude::*;
use pgrx::{pg_sys, PgSqlErrorCode};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// SHA-256 of a token: the cache key.
type Digest = [u8; 32];

/// Most identities a backend keeps; beyond that the cache starts over.
const CACHE_CAPACITY: usize = 1024;

thread_local! {
    /// The identity of the current token generation, for the hot path.
    static LAST: RefCell<Option<(u64, u64, Rc<Identity>)>> = const { RefCell::new(None) };
    /// The credential resolved last, with its epoch and identity.
    static LAST_RESOLVED: RefCell<Option<(u64, String, Rc<Identity>)>> = const { RefCell::new(None) };
    /// Verified identities by token digest, each tagged with the epoch it was verified in.
    static CACHE: RefCell<HashMap<Digest, (u64, Rc<Identity>)>> = RefCell::new(HashMap::new());
    /// When this backend last recorded each API key's use (Unix seconds).
    static KEY_USES: RefCell<HashMap<String, i64>> = RefCell::new(HashMap::new());
    /// The membership query, planned once per backend (its plan is revalidated by PostgreSQL).
    static MEMBERSHIP_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(std::ptr::null_mut()) };
}

/// Lets the credential settings verify fully at the SET (their check hooks are in the state
/// layer, below this one).
pub fn init() {
    credentials::set_verifier(|credential| resolve(credential).map(|_| ()));
}

/// Seconds since the Unix epoch, from the system clock PostgreSQL reads too (read directly: this
/// runs on every statement that executes a folded plan, and a call through the FFI guard costs
/// more than the clock).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The identity found last time, when neither the credential nor the identity tables changed
/// since (the hot path: two counter comparisons and a reference count).
fn last_identity(generation: u64, epoch: u64) -> Option<Rc<Identity>> {
    LAST.with_borrow(|last| match last {
        Some((g, e, identity)) if *g == generation && *e == epoch => Some(Rc::clone(identity)),
        _ => None,
    })
}

/// The current identity, or why there is none. Verifies and queries only on a cache miss.
pub fn current() -> Result<Rc<Identity>, Denial> {
    let generation = counters::generation();
    let epoch = counters::epoch();
    let identity = match last_identity(generation, epoch) {
        Some(identity) => identity,
        None => {
            let identity = resolve(credentials::current()?)?;
            if fresh::latest() {
                LAST.with_borrow_mut(|last| *last = Some((generation, epoch, Rc::clone(&identity))));
            }
            identity
        }
    };
    if gucs::SESSION_TOKENS.get() == gucs::SessionTokens::Refuse && credentials::is_session_scoped() {
        return Err(Denial::new(
            Reason::SessionToken,
            "tenancy.session_tokens = refuse for this role",
        ));
    }
    // A Citus coordinator hands its workers a credential by `SET LOCAL` only, so a credential
    // set for the whole session of a Citus connection was planted there by a client (a string
    // Citus forwarded whole, a pushed-down function): it would outlive the transaction and serve
    // the next client of the coordinator's cached connection (adversarial pass of session 14).
    if credentials::set_by_citus_coordinator() && credentials::is_session_scoped() {
        return Err(Denial::new(
            Reason::SessionToken,
            "a Citus connection accepts only the coordinator's SET LOCAL",
        ));
    }
    let now = unix_now();
    if let Some(key) = &identity.api_key_id {
        if now >= identity.expires_at {
            return Err(Denial::new(Reason::ApiKeyExpired, format!("key {key} expired")));
        }
        note_key_use(key);
        return Ok(identity);
    }
    let leeway = i64::from(gucs::CLOCK_SKEW.get());
    if now >= identity.expires_at.saturating_add(leeway) {
        return Err(Denial::new(
            Reason::Expired,
            format!("expired at {}, now {now} (leeway {leeway} s)", identity.expires_at),
        ));
    }
    Ok(identity)
}

/// Seconds between two `last_used_at` updates of one key by one backend.
const KEY_USE_INTERVAL: i64 = 60;

/// Records that an API key was used, at most once a minute per key and backend, in
/// `tenancy.api_key_usage` (a table without invalidation trigger, so this write drops no cached
/// identity anywhere). Skipped where writing is impossible (read-only transaction, standby, a
/// parallel plan: the next statement that can write records it).
fn note_key_use(key: &str) {
    let now = unix_now();
    let due = KEY_USES.with_borrow(|uses| uses.get(key).is_none_or(|t| now - t >= KEY_USE_INTERVAL));
    let cannot_write = unsafe {
        pg_sys::XactReadOnly || pg_sys::RecoveryInProgress() || crate::plumbing::unguarded::is_in_parallel_mode()
    };
    if !due || !readiness::lookups_can_run() || cannot_write {
        return;
    }
    KEY_USES.with_borrow_mut(|uses| uses.insert(key.to_string(), now));
    // Never waits: a transaction holding the key's row (another session using the same key and
    // still open, or on Citus another shard connection of the same distributed transaction,
    // which Citus then cancelled as a distributed deadlock: adversarial pass of session 14) holds
    // the advisory lock too, and this use goes unrecorded (that one's write records the key in
    // use). The lock's first key is pg_tenancy's own ('tena').
    pinned_context::as_lookup_role(|| {
        Spi::run_with_args(
            "INSERT INTO tenancy.api_key_usage AS u (key_id, last_used_at)
             SELECT CAST($1 AS pg_catalog.uuid), pg_catalog.now()
              WHERE pg_catalog.pg_try_advisory_xact_lock(1952804449, pg_catalog.hashtext($1))
             ON CONFLICT (key_id) DO UPDATE SET last_used_at = excluded.last_used_at",
            &[key.into()],
        )
    })
    .unwrap_or_else(|e| crate::plumbing::errors::internal(format!("recording the api key's use failed: {e}")));
}

/// A field of the already-verified identity, without verifying or raising (for SHOW).
pub fn peek(field: impl Fn(&Identity) -> Option<String>) -> Option<String> {
    let generation = counters::generation();
    let epoch = counters::epoch();
    if let Some(identity) = last_identity(generation, epoch) {
        return field(&identity);
    }
    let digest = digest_of(credentials::current().ok()?.text());
    CACHE.with_borrow(|cache| match cache.get(&digest) {
        Some((e, identity)) if *e == epoch => field(identity),
        _ => None,
    })
}

/// The cache key of a token.
fn digest_of(token: &str) -> Digest {
    verify::sha256(token.as_bytes())
}

/// Verifies a credential (token or API key) and checks membership, through the digest-keyed cache.
pub fn resolve(credential: Credential<'_>) -> Result<Rc<Identity>, Denial> {
    let epoch = counters::epoch();
    // The credential resolved last: a `SET LOCAL` resolves it in the check hook, and the
    // transaction's first identity read asks again (one comparison instead of a second SHA-256).
    let memo = LAST_RESOLVED.with_borrow(|last| match last {
        Some((e, text, identity)) if *e == epoch && text == credential.text() => Some(Rc::clone(identity)),
        _ => None,
    });
    if let Some(identity) = memo {
        return Ok(identity);
    }
    let digest = digest_of(credential.text());
    let cached = CACHE.with_borrow(|cache| match cache.get(&digest) {
        Some((e, identity)) if *e == epoch => Some(Rc::clone(identity)),
        _ => None,
    });
    if let Some(identity) = cached {
        crate::audit::count(crate::audit::Counter::CacheHits);
        remember_resolved(epoch, credential.text(), &identity);
        return Ok(identity);
    }
    if !readiness::lookups_can_run() {
        return Err(Denial::new(
            Reason::NoToken,
            "identity cannot be verified outside a transaction",
        ));
    }
    crate::audit::count(crate::audit::Counter::Verifications);
    let identity = Rc::new(match credential {
        Credential::Token(token) => verify_token(token, epoch)?,
        Credential::ApiKey(key) => api_keys::resolve(key, unix_now())?,
    });
    if fresh::latest() {
        CACHE.with_borrow_mut(|cache| {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(digest, (epoch, Rc::clone(&identity)));
        });
        remember_resolved(epoch, credential.text(), &identity);
    }
    Ok(identity)
}

/// Remembers the credential resolved last (its text, kept in backend memory as the setting
/// itself is) for `resolve`'s first comparison.
fn remember_resolved(epoch: u64, text: &str, identity: &Rc<Identity>) {
    LAST_RESOLVED.with_borrow_mut(|last| match last {
        Some((e, kept, kept_identity)) => {
            *e = epoch;
            kept.clear();
            kept.push_str(text);
            *kept_identity = Rc::clone(identity);
        }
        None => *last = Some((epoch, text.to_string(), Rc::clone(identity))),
    });
}

/// Verifies a token against the trusted issuers and checks membership.
fn verify_token(token: &str, epoch: u64) -> Result<Identity, Denial> {
    let time = TimeRules {
        now: unix_now(),
        leeway: i64::from(gucs::CLOCK_SKEW.get()),
    };
    let (claims, allows_no_organization) = issuers::with_trusted_issuers(epoch, |issuers| {
        let claims = verify::verify(token, issuers, time)?;
        let allows = issuers.get(&claims.iss).is_some_and(|i| i.allows_no_organization);
        Ok::<_, Denial>((claims, allows))
    })?;
    let seen = verify::SeenClaims {
        iss: Some(claims.iss.clone()),
        sub: Some(claims.sub.clone()),
        org_id: claims.org_id.clone(),
        sid: claims.sid.clone(),
        kid: None,
        exp: Some(claims.exp),
        exp_unrecordable: false,
    };
    if claims.org_id.is_none() && !allows_no_organization {
        // Nothing in the database vouches for such a user: no workspace, no membership row.
        return Err(Denial::new(
            Reason::NoWorkspace,
            "the token carries no org_id and its issuer does not allow users outside an organization (tenancy.issuers.allow_no_organization)",
        )
        .with_seen(&seen));
    }
    check_membership(claims).map_err(|d| d.with_seen(&seen))
}

/// The membership query: one row whatever matches, so each refusal has its own reason.
const MEMBERSHIP_QUERY: &std::ffi::CStr = c"\
SELECT EXISTS (SELECT 1 FROM tenancy.revoked_sessions r WHERE r.sid OPERATOR(pg_catalog.=) $3),
       w.workspace_id, w.disabled_at IS NOT NULL, m.user_id IS NOT NULL, m.role, m.disabled_at IS NOT NULL
  FROM (SELECT 1) AS one
  LEFT JOIN tenancy.workspaces w ON w.organization_id OPERATOR(pg_catalog.=) $1
  LEFT JOIN tenancy.members m ON m.workspace_id OPERATOR(pg_catalog.=) w.workspace_id
                             AND m.user_id OPERATOR(pg_catalog.=) $2";

/// The database's side of the double check.
fn check_membership(claims: Claims) -> Result<Identity, Denial> {
    let args = [
        claims.org_id.as_deref(),
        Some(claims.sub.as_str()),
        claims.sid.as_deref(),
    ];
    let mut rows = pinned_context::as_lookup_role(|| fresh::query(&MEMBERSHIP_PLAN, MEMBERSHIP_QUERY, &args));
    let row = rows.pop().unwrap_or_default();
    let column = |i: usize| row.get(i).cloned().flatten();
    let row = (
        fresh::flag(&column(0)),
        column(1),
        fresh::flag(&column(2)),
        fresh::flag(&column(3)),
        column(4),
        fresh::flag(&column(5)),
    );
    let (revoked, workspace_id, workspace_disabled, is_member, member_role, member_disabled) = row;
    if revoked {
        return Err(Denial::new(
            Reason::SessionRevoked,
            "the token's sid is in tenancy.revoked_sessions",
        ));
    }
    if claims.org_id.is_some() {
        if workspace_id.is_none() {
            return Err(Denial::new(
                Reason::WorkspaceUnknown,
                "no row of tenancy.workspaces has the token's org_id",
            ));
        }
        if workspace_disabled {
            return Err(Denial::new(
                Reason::WorkspaceDisabled,
                "tenancy.workspaces.disabled_at is set",
            ));
        }
        if !is_member {
            return Err(Denial::new(
                Reason::NotMember,
                "no row of tenancy.members for the token's sub",
            ));
        }
        if member_disabled {
            return Err(Denial::new(
                Reason::MemberDisabled,
                "tenancy.members.disabled_at is set",
            ));
        }
    }
    Ok(Identity {
        workspace_id,
        organization_id: claims.org_id,
        user_id: claims.sub,
        role: member_role.or(claims.role),
        permissions: claims.permissions,
        session_id: claims.sid,
        issuer: claims.iss,
        expires_at: claims.exp,
        claims: serde_json::Value::Object(claims.all),
        api_key_id: None,
    })
}

/// The client-facing message of a denial.
pub fn describe(denial: &Denial) -> String {
    denial.reason.message().to_string()
}

/// Records the denial in the audit trail (server log, shared-memory ring; never the token).
pub fn note_denial(denial: &Denial) {
    crate::audit::record(denial);
}

/// Raises a denial as an error with SQLSTATE 28000.
pub fn deny(denial: Denial) -> ! {
    note_denial(&denial);
    error(PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION)
        .message(describe(&denial))
        .detail(denial.detail.clone())
        .hint_if_any(denial.reason.hint())
        .raise()
}

/// The current identity, raising SQLSTATE 28000 when there is none.
pub fn require() -> Rc<Identity> {
    current().unwrap_or_else(|d| deny(d))
}

/// The workspace of `identity`, raising when it has none.
pub fn workspace_of(identity: &Identity) -> String {
    identity.workspace_id.clone().unwrap_or_else(|| {
        deny(Denial::new(
            Reason::NoWorkspace,
            "the token was issued outside an organization",
        ))
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use crate::test_support::sqlstate_of;
    use pgrx::prelude::*;

    #[pg_test]
    fn the_real_workos_token_is_refused_as_expired_today() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/workos");
        let jwks = std::fs::read_to_string(format!("{dir}/real-jwks.json")).unwrap();
        let token = std::fs::read_to_string(format!("{dir}/real-access-token.jwt")).unwrap();
        Spi::run(&format!(
            "SELECT tenancy.add_issuer('https://api.workos.com/user_management/client_01JXWR78G1RS943SJZG9G9KFDW', {}::jsonb)",
            pgrx::spi::quote_literal(&jwks)
        ))
        .unwrap();
        let set = format!("SET tenancy.token = {}", pgrx::spi::quote_literal(token.trim()));
        assert_eq!(sqlstate_of(&set).as_deref(), Some("28000"));
    }
}
