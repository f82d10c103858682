//! The issuer's keys: fetched from `<api base>/sso/jwks/<client id>` (no authentication) and
//! handed to `tenancy.sync_set_jwks`, which applies them only when they differ and only when they
//! pass the extension's key policy. Anything else leaves the current keys in place.

use crate::context::Ctx;
use crate::error::{describe, SyncError};
use serde_json::Value;
use std::time::Instant;
use tokio_postgres::Client;

/// Fetches and applies the JWKS; returns whether the keys changed.
pub async fn refresh(ctx: &Ctx, db: &Client, deadline: Instant) -> Result<bool, SyncError> {
    let path = format!("/sso/jwks/{}", ctx.config.client_id);
    let jwks = ctx.workos.get(&path, &[], false, deadline).await?;
    let keys = jwks.get("keys").and_then(Value::as_array);
    match keys {
        None => {
            return Err(SyncError::Refused(
                "the JWKS has no \"keys\" array; current keys kept".into(),
            ))
        }
        Some(k) if k.is_empty() => return Err(SyncError::Refused("the JWKS is empty; current keys kept".into())),
        Some(_) => {}
    }
    let changed = db
        .query_one("SELECT tenancy.sync_set_jwks($1, $2)", &[&ctx.config.issuer, &jwks])
        .await
        .map_err(|e| SyncError::Refused(format!("JWKS not applied, current keys kept: {}", describe(&e))))?
        .get::<_, bool>(0);
    let ids: Vec<&str> = keys
        .into_iter()
        .flatten()
        .filter_map(|k| k.get("kid").and_then(Value::as_str))
        .collect();
    if changed {
        tracing::info!(
            issuer = ctx.config.issuer.as_str(),
            kids = ids.join(","),
            "JWKS applied"
        );
    }
    ctx.metrics.jwks_refreshed(changed);
    Ok(changed)
}
