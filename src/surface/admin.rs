//! Key vetting for the administration functions of `sql/admin.sql`.

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
