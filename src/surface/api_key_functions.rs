//! The SQL side of API keys that needs Rust: minting a secret for `tenancy.create_api_key` and
//! `rotate_api_key` (sql/api_keys.sql).

use crate::verify::api_key_format::generate;
use pgrx::prelude::*;

/// Mints a key for `tenancy.create_api_key` / `rotate_api_key`: the secret, its digest, its
/// display prefix. Callable only by those SECURITY DEFINER functions (EXECUTE revoked).
#[pg_extern(volatile, parallel_unsafe)]
fn _mint_api_key() -> TableIterator<'static, (name!(secret, String), name!(digest, Vec<u8>), name!(display, String))> {
    let (secret, digest, display) = generate()
        .unwrap_or_else(|_| crate::plumbing::errors::internal("the operating system's random number generator failed"));
    TableIterator::once((secret, digest.to_vec(), display))
}
