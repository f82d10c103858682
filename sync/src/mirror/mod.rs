//! Keeping the database in step with WorkOS: the JWKS refresh (`jwks.rs`), the Events API drained
//! page by page (`events.rs`), the full reconcile (`reconcile.rs`), and applying decisions inside
//! their transactions (`apply.rs`). This file strings them into the passes `once` and `run` make.

mod apply;
pub mod events;
pub mod jwks;
pub mod reconcile;

use crate::context::Ctx;
use crate::db;
use crate::error::SyncError;
use tokio_postgres::Client;

/// Logs and counts a failed step.
fn failed(ctx: &Ctx, step: &str, e: &SyncError) {
    ctx.metrics.error(e.kind());
    tracing::error!(kind = e.kind(), problem = %e, "{step} failed");
}

/// Whether a full reconcile is due: never made, or older than the interval.
async fn reconcile_due(ctx: &Ctx, db: &Client) -> Result<bool, SyncError> {
    let last = db::read_time(db, "reconciled_at").await?;
    let cursor = db::read_cursor(db).await?;
    let interval = chrono::Duration::from_std(ctx.config.reconcile_interval).unwrap_or(chrono::Duration::MAX);
    Ok(cursor == db::Cursor::None || last.is_none_or(|t| chrono::Utc::now() - t >= interval))
}

/// Reconcile when due, then drain events (reconciling again if the cursor proves unusable or an
/// event was malformed). Returns whether everything applied.
pub async fn sync_pass(ctx: &Ctx, db: &mut Client, force_reconcile: bool) -> bool {
    let mut ok = true;
    let due = match reconcile_due(ctx, db).await {
        Ok(due) => due || force_reconcile,
        Err(e) => {
            failed(ctx, "reading the cursor", &e);
            return false;
        }
    };
    if due {
        // A failing reconcile must not hold back the event stream (revocations, removals): drain
        // anyway (the drain itself asks for a reconcile when there is no cursor).
        if let Err(e) = reconcile::reconcile(ctx, db, ctx.deadline(), None).await {
            failed(ctx, "reconcile", &e);
            ok = false;
        }
    }
    match events::drain(ctx, db, ctx.deadline()).await {
        Ok(d) if d.needs_reconcile || d.malformed > 0 => {
            ok &= d.malformed == 0;
            match reconcile::reconcile(ctx, db, ctx.deadline(), d.resume_from).await {
                Ok(_) => {
                    if let Err(e) = events::drain(ctx, db, ctx.deadline()).await {
                        failed(ctx, "draining events", &e);
                        ok = false;
                    }
                }
                Err(e) => {
                    failed(ctx, "reconcile", &e);
                    ok = false;
                }
            }
        }
        Ok(_) => {}
        Err(e) => {
            failed(ctx, "draining events", &e);
            ok = false;
        }
    }
    ok
}

/// Refreshes the JWKS; returns whether it succeeded.
pub async fn jwks_pass(ctx: &Ctx, db: &Client) -> bool {
    match jwks::refresh(ctx, db, ctx.deadline()).await {
        Ok(_) => true,
        Err(e) => {
            failed(ctx, "JWKS refresh", &e);
            false
        }
    }
}
