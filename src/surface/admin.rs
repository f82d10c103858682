//! What the administration functions of `sql/admin.sql` and `sql/api_keys.sql` call in Rust: key
//! vetting, and the refusal of a caller that may not manage a workspace's keys.

use crate::plumbing::errors::bad_parameter;
use crate::verify::{Algorithm, KeySet};
use pgrx::prelude::*;
use pgrx::JsonB;

/// Vets a JWKS under the key policy and returns its key ids; raises 22023 naming the bad key.
#[pg_extern(immutable, parallel_safe)]
fn _vet_jwks(jwks: JsonB, algorithms: Vec<String>) -> Vec<String> {
    let allowed = Algorithm::parse_list(&algorithms).unwrap_or_else(|e| bad_parameter(e));
    let document = jwks.0.to_string();
    match KeySet::parse(document.as_bytes(), &allowed) {
        Ok(keys) => keys.keys().iter().map(|k| k.kid.clone()).collect(),
        Err(e) => bad_parameter(format!("jwks refused: {e}")),
    }
}

/// Refuses the caller of an API-key function (not a manager of the workspace, or a key beyond the
/// manager's rights): records an `admin_refused` denial and raises 42501 with `message` and
/// `hint`. The denial is recorded here, by its origin, not recognised afterwards by its text: any
/// role can raise an error with the same words and SQLSTATE (`RAISE EXCEPTION`), and such an error
/// is not a denial. Only the extension's SECURITY DEFINER functions may call it (EXECUTE is revoked
/// from PUBLIC in sql/api_keys.sql).
#[pg_extern(volatile, parallel_restricted)]
fn _deny_admin(message: &str, hint: Option<&str>) {
    let denial = crate::verify::Denial::new(crate::verify::Reason::AdminRefused, message);
    crate::audit::record(&denial);
    crate::plumbing::errors::raise(
        pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        message,
        None,
        hint,
    )
}
