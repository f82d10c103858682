//! The Events API, drained page by page. Each page is applied in one transaction that ends by
//! moving the cursor past it, so a crash at any point loses nothing and applies nothing twice;
//! `tenancy.sync_log`'s primary key refuses a second application of one event regardless.

use super::apply;
use crate::context::Ctx;
use crate::db::{self, Cursor};
use crate::decide::Outcome;
use crate::error::SyncError;
use crate::workos::model::{self, Event, Membership, Organization, EVENT_TYPES};
use serde_json::Value;
use std::time::Instant;
use tokio_postgres::{Client, GenericClient};

/// What a drain did.
#[derive(Debug, Default)]
pub struct Drained {
    pub events: u64,
    pub malformed: u64,
    /// The cursor is missing, past the API's retention or refused: a full reconcile must come
    /// first.
    pub needs_reconcile: bool,
    /// When the cursor was unusable: the time events resume from after the reconcile (the
    /// last applied event's, or the retention limit when older), so that revocations WorkOS
    /// still holds are replayed rather than skipped.
    pub resume_from: Option<chrono::DateTime<chrono::Utc>>,
}

/// Applies every pending event.
pub async fn drain(ctx: &Ctx, db: &mut Client, deadline: Instant) -> Result<Drained, SyncError> {
    let mut drained = Drained::default();
    loop {
        let cursor = db::read_cursor(&*db).await?;
        let mut query: Vec<(&str, String)> = EVENT_TYPES.iter().map(|e| ("events", e.to_string())).collect();
        query.push(("limit", "100".into()));
        match &cursor {
            Cursor::None => {
                drained.needs_reconcile = true;
                return Ok(drained);
            }
            Cursor::After { at: Some(at), .. }
                if chrono::Utc::now() - *at
                    > chrono::Duration::from_std(ctx.config.event_retention).unwrap_or(chrono::Duration::MAX) =>
            {
                tracing::warn!("event cursor older than the API's retention; reconciling");
                drained.needs_reconcile = true;
                drained.resume_from = Some(resume_point(ctx, Some(*at)));
                return Ok(drained);
            }
            Cursor::After { id, .. } => query.push(("after", id.clone())),
            Cursor::Since(t) => query.push(("range_start", t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))),
        }
        let page_deadline = deadline.max(Instant::now() + ctx.config.give_up);
        let page = match ctx.workos.get("/events", &query, true, page_deadline).await {
            Ok(page) => page,
            Err(SyncError::ApiRefused { status, body })
                if matches!(cursor, Cursor::After { .. }) && matches!(status, 400 | 404 | 410 | 422) =>
            {
                tracing::warn!(
                    status,
                    answer = body.as_str(),
                    "the Events API refused the cursor; reconciling"
                );
                drained.needs_reconcile = true;
                let at = match &cursor {
                    Cursor::After { at, .. } => *at,
                    _ => None,
                };
                drained.resume_from = Some(resume_point(ctx, at));
                return Ok(drained);
            }
            Err(e) => return Err(e),
        };
        let data = page
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| SyncError::ApiDecode("/events: no \"data\" array".into()))?;
        if data.is_empty() {
            ctx.metrics.poll_succeeded();
            return Ok(drained);
        }
        if !apply_page(ctx, db, &cursor, data, &mut drained).await? {
            continue; // another writer moved the cursor: read it again
        }
        if data.len() < 100 {
            ctx.metrics.poll_succeeded();
            return Ok(drained);
        }
    }
}

/// Where events resume after an unusable cursor: the cursor's own time, but not before the
/// API's retention (events older than that are gone; the reconcile covered their objects).
fn resume_point(ctx: &Ctx, at: Option<chrono::DateTime<chrono::Utc>>) -> chrono::DateTime<chrono::Utc> {
    let oldest =
        chrono::Utc::now() - chrono::Duration::from_std(ctx.config.event_retention).unwrap_or(chrono::Duration::zero());
    at.map_or(oldest, |t| t.max(oldest))
}

/// Applies one page in one transaction; false when the cursor moved meanwhile (nothing applied).
async fn apply_page(
    ctx: &Ctx,
    db: &mut Client,
    cursor: &Cursor,
    data: &[Value],
    drained: &mut Drained,
) -> Result<bool, SyncError> {
    let tx = db.transaction().await?;
    db::lock_writer(&tx).await?;
    if db::read_cursor(&tx).await? != *cursor {
        return Ok(false);
    }
    let mut last: Option<Event> = None;
    let mut outcomes = Vec::with_capacity(data.len());
    for raw in data {
        let event = match Event::parse(raw) {
            Ok(e) => e,
            Err(why) => {
                // Without an id the event cannot be recorded or skipped past safely.
                return Err(SyncError::Refused(format!(
                    "an event without a usable id or type: {why}"
                )));
            }
        };
        let seen = tx
            .query_opt("SELECT 1 FROM tenancy.sync_log WHERE event_id = $1", &[&event.id])
            .await?;
        if seen.is_none() {
            let outcome = apply_event(ctx, &tx, &event).await?;
            tx.execute(
                "INSERT INTO tenancy.sync_log (event_id, event, occurred_at, outcome) VALUES ($1, $2, $3, $4)",
                &[&event.id, &event.event, &event.created_at, &outcome],
            )
            .await?;
            if outcome.starts_with("malformed") {
                drained.malformed += 1;
                tracing::error!(
                    event_id = event.id.as_str(),
                    event = event.event.as_str(),
                    problem = outcome.as_str(),
                    "malformed WorkOS event skipped; a reconcile will follow"
                );
            }
            outcomes.push((outcome, event.created_at));
        }
        last = Some(event);
    }
    if let Some(event) = &last {
        db::write_cursor(
            &tx,
            &Cursor::After {
                id: event.id.clone(),
                at: event.created_at,
            },
        )
        .await?;
    }
    tx.commit().await?;
    for (outcome, created) in outcomes {
        let name = if outcome.starts_with("malformed") {
            "malformed"
        } else {
            outcome.as_str()
        };
        ctx.metrics
            .event(name, created.map(|c| c.timestamp_millis() as f64 / 1000.0));
        drained.events += 1;
    }
    Ok(true)
}

/// Applies one event; returns its outcome for `tenancy.sync_log`.
async fn apply_event(ctx: &Ctx, tx: &impl GenericClient, event: &Event) -> Result<String, SyncError> {
    let mode = ctx.config.workspaces;
    let outcome: Result<Outcome, SyncError> = match event.event.as_str() {
        "organization.created" | "organization.updated" | "organization.deleted" => {
            match Organization::parse(&event.data) {
                Ok(o) => Ok(apply::organization(tx, &o, event.event == "organization.deleted", mode).await?),
                Err(e) => Err(e),
            }
        }
        "organization_membership.created" | "organization_membership.updated" | "organization_membership.deleted" => {
            match Membership::parse(&event.data) {
                Ok(m) => Ok(apply::membership(tx, &m, event.event == "organization_membership.deleted").await?),
                Err(e) => Err(e),
            }
        }
        "user.deleted" => {
            let id = event
                .data
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| s.starts_with("user_"));
            let at = model::timestamp(&event.data, "updated_at").ok().or(event.created_at);
            match (id, at) {
                (Some(id), Some(at)) => Ok(apply::user_deleted(tx, id, at).await?),
                _ => Err(SyncError::Malformed(
                    "user.deleted without a user id or a timestamp".into(),
                )),
            }
        }
        "session.revoked" => match event
            .data
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 512)
        {
            Some(sid) => Ok(apply::session_revoked(tx, sid).await?),
            None => Err(SyncError::Malformed("session.revoked without a session id".into())),
        },
        _ => return Ok("ignored".into()),
    };
    Ok(match outcome {
        Ok(o) => o.name().to_string(),
        Err(why) => format!("malformed: {why}"),
    })
}
