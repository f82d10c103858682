//! The identity functions SQL calls: `tenancy.workspace_id()`, `user_id()`, `role()`,
//! `permissions()`, `has_permission()`, `session_id()`, `claims()`, `identity()`. All are STABLE and
//! PARALLEL RESTRICTED, and cost a counter comparison after the first call (see `identity/mod.rs`).
//! The three that policies use have a planner support function that folds their value into the
//! plan as a constant (see `folding.rs`).

use crate::identity::{require, workspace_of};
use pgrx::prelude::*;
use pgrx::JsonB;

/// The caller's workspace. Raises when there is no verified identity or it has no workspace.
#[pg_extern(stable, parallel_restricted, support = _identity_support)]
fn workspace_id() -> String {
    workspace_of(&require())
}

/// The caller's user id (WorkOS `user_…`).
#[pg_extern(stable, parallel_restricted, support = _identity_support)]
fn user_id() -> String {
    require().user_id.clone()
}

/// The caller's role: the membership row's role when set, else the token's `role` claim.
#[pg_extern(stable, parallel_restricted)]
fn role() -> Option<String> {
    require().role.clone()
}

/// The token's `permissions` claim.
#[pg_extern(stable, parallel_restricted)]
fn permissions() -> Vec<String> {
    require().permissions.clone()
}

/// Whether the token grants `permission`.
#[pg_extern(stable, parallel_restricted, support = _identity_support)]
fn has_permission(permission: &str) -> bool {
    require().permissions.iter().any(|p| p == permission)
}

/// The WorkOS session id (`sid`).
#[pg_extern(stable, parallel_restricted)]
fn session_id() -> Option<String> {
    require().session_id.clone()
}

/// Every claim of the verified token.
#[pg_extern(stable, parallel_restricted)]
fn claims() -> JsonB {
    JsonB(require().claims.clone())
}

/// The whole identity as one row.
#[pg_extern(stable, parallel_restricted)]
#[allow(clippy::type_complexity)]
fn identity() -> TableIterator<
    'static,
    (
        name!(workspace_id, Option<String>),
        name!(organization_id, Option<String>),
        name!(user_id, String),
        name!(role, Option<String>),
        name!(permissions, Vec<String>),
        name!(session_id, Option<String>),
        name!(issuer, String),
        name!(expires_at, Option<pgrx::datum::TimestampWithTimeZone>),
    ),
> {
    let i = require();
    // NULL when there is no expiry (an API key made without one): i64::MAX seconds once
    // overflowed into 1969-12-31.
    // Inside the timestamp range the conversion to PostgreSQL's microseconds cannot overflow.
    let expires = crate::verify::TIMESTAMP_SECONDS
        .contains(&i.expires_at)
        .then(|| (i.expires_at - 946_684_800) * 1_000_000)
        .and_then(|micros| pgrx::datum::TimestampWithTimeZone::try_from(micros).ok());
    TableIterator::once((
        i.workspace_id.clone(),
        i.organization_id.clone(),
        i.user_id.clone(),
        i.role.clone(),
        i.permissions.clone(),
        i.session_id.clone(),
        i.issuer.clone(),
        expires,
    ))
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use crate::test_support::sqlstate_of;
    use pgrx::prelude::*;

    #[pg_test]
    fn every_identity_function_refuses_without_a_token() {
        for function in [
            "tenancy.workspace_id()",
            "tenancy.user_id()",
            "tenancy.role()",
            "tenancy.permissions()",
            "tenancy.has_permission('x')",
            "tenancy.session_id()",
            "tenancy.claims()",
            "tenancy.identity()",
        ] {
            assert_eq!(
                sqlstate_of(&format!("SELECT {function}")).as_deref(),
                Some("28000"),
                "{function}"
            );
        }
    }
}
