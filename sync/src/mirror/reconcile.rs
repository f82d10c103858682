//! The full reconcile: every organization and every membership (active, inactive and pending)
//! listed from WorkOS, compared with the database, and the differences applied in one
//! transaction. A listing that fails or holds a malformed object changes nothing.
//!
//! Deletions WorkOS no longer lists are found by absence: a membership or organization the
//! companion applied before and that the complete listing lacks is treated as deleted.

use super::apply;
use crate::context::Ctx;
use crate::db::{self, Cursor};
use crate::decide::{self, Context, Known, MemberRow, Outcome, Record, WorkspaceRow};
use crate::error::SyncError;
use crate::workos::model::{Membership, Organization};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::time::Instant;
use tokio_postgres::Client;

/// What a reconcile found and did.
#[derive(Debug, Default)]
pub struct Reconciled {
    pub organizations: usize,
    pub memberships: usize,
    /// Rows changed.
    pub differences: u64,
    pub held: u64,
    pub unmapped: u64,
    pub seconds: f64,
}

/// Lists everything from WorkOS, then applies the differences. `resume_from`: the event cursor
/// was unusable (past retention, refused) and events resume from that time.
pub async fn reconcile(
    ctx: &Ctx,
    db: &mut Client,
    deadline: Instant,
    resume_from: Option<DateTime<Utc>>,
) -> Result<Reconciled, SyncError> {
    let started = Instant::now();
    let started_at = Utc::now();
    let organizations = ctx
        .workos
        .list_all("/organizations", &[], deadline)
        .await?
        .iter()
        .map(Organization::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SyncError::Refused(format!("a malformed organization in the listing, nothing applied: {e}")))?;
    let mapped: HashSet<String> = db
        .query(
            "SELECT organization_id FROM tenancy.workspaces WHERE organization_id IS NOT NULL",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut memberships = Vec::new();
    let mut listed_orgs = HashSet::new();
    for o in &organizations {
        if ctx.config.workspaces == crate::config::WorkspaceMode::Existing && !mapped.contains(&o.id) {
            continue;
        }
        let query = [
            ("organization_id", o.id.clone()),
            ("statuses", "active".to_string()),
            ("statuses", "inactive".to_string()),
            ("statuses", "pending".to_string()),
        ];
        for raw in ctx
            .workos
            .list_all("/user_management/organization_memberships", &query, deadline)
            .await?
        {
            memberships.push(Membership::parse(&raw).map_err(|e| {
                SyncError::Refused(format!("a malformed membership in the listing, nothing applied: {e}"))
            })?);
        }
        listed_orgs.insert(o.id.clone());
    }
    let mut report = apply_all(
        ctx,
        db,
        &organizations,
        &memberships,
        &listed_orgs,
        started_at,
        resume_from,
    )
    .await?;
    report.seconds = started.elapsed().as_secs_f64();
    ctx.metrics.reconciled(report.differences);
    tracing::info!(
        organizations = report.organizations,
        memberships = report.memberships,
        differences = report.differences,
        held = report.held,
        unmapped = report.unmapped,
        seconds = report.seconds,
        "reconcile complete"
    );
    Ok(report)
}

/// An applied version with its kind, workspace and user (`tenancy.sync_objects`).
type KnownObject = (Known, &'static str, Option<String>, Option<String>);

/// The database's side, read in the writing transaction.
struct Snapshot {
    workspaces: Vec<WorkspaceRow>,
    members: HashMap<(String, String), MemberRow>,
    known: HashMap<String, KnownObject>,
    deleted_users: HashSet<String>,
    disabled_by_sync: HashSet<(String, String)>,
}

/// Reads the rows the decisions need, locking the identity rows against concurrent writers.
async fn snapshot(tx: &tokio_postgres::Transaction<'_>) -> Result<Snapshot, SyncError> {
    let workspaces = tx
        .query(
            "SELECT workspace_id, organization_id, name, disabled_at IS NOT NULL FROM tenancy.workspaces FOR UPDATE",
            &[],
        )
        .await?
        .iter()
        .map(apply::workspace_row)
        .collect();
    let members = tx
        .query(
            "SELECT workspace_id, user_id, role, disabled_at IS NOT NULL FROM tenancy.members FOR UPDATE",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            (
                (r.get(0), r.get(1)),
                MemberRow {
                    role: r.get(2),
                    disabled: r.get(3),
                },
            )
        })
        .collect();
    let mut known = HashMap::new();
    let (mut deleted_users, mut disabled_by_sync) = (HashSet::new(), HashSet::new());
    for r in tx
        .query("SELECT object_id, kind, updated_at, state, disabled_by_sync, workspace_id, user_id FROM tenancy.sync_objects", &[])
        .await?
    {
        let kind: &str = r.get(1);
        let kind: &'static str = match kind {
            "organization" => "organization",
            "organization_membership" => "organization_membership",
            _ => "user",
        };
        let k = Known { updated_at: r.get(2), state: r.get(3), disabled_by_sync: r.get(4) };
        let (workspace, user): (Option<String>, Option<String>) = (r.get(5), r.get(6));
        if kind == "user" && k.state == "deleted" {
            deleted_users.insert(r.get::<_, String>(0));
        }
        if kind == "organization_membership" && k.disabled_by_sync {
            if let (Some(w), Some(u)) = (&workspace, &user) {
                disabled_by_sync.insert((w.clone(), u.clone()));
            }
        }
        known.insert(r.get(0), (k, kind, workspace, user));
    }
    Ok(Snapshot {
        workspaces,
        members,
        known,
        deleted_users,
        disabled_by_sync,
    })
}

/// Decides and applies everything in one transaction; sets the cursor when there was none.
async fn apply_all(
    ctx: &Ctx,
    db: &mut Client,
    organizations: &[Organization],
    memberships: &[Membership],
    listed_orgs: &HashSet<String>,
    started_at: DateTime<Utc>,
    resume_from: Option<DateTime<Utc>>,
) -> Result<Reconciled, SyncError> {
    let tx = db.transaction().await?;
    db::lock_writer(&tx).await?;
    let mut s = snapshot(&tx).await?;
    let mut report = Reconciled {
        organizations: organizations.len(),
        memberships: memberships.len(),
        ..Default::default()
    };
    let mut records: Vec<Record> = Vec::new();
    let tally = |outcome: Outcome, report: &mut Reconciled| match outcome {
        Outcome::Changed => report.differences += 1,
        Outcome::Held => report.held += 1,
        Outcome::Unmapped | Outcome::Conflict => report.unmapped += 1,
        _ => {}
    };
    // Organizations first: in `create` mode their workspaces receive the memberships.
    let listed: HashSet<&str> = organizations.iter().map(|o| o.id.as_str()).collect();
    let mut gone: Vec<Organization> = Vec::new();
    for (id, (k, kind, _, _)) in &s.known {
        if *kind == "organization" && k.state != "deleted" && !listed.contains(id.as_str()) {
            gone.push(Organization {
                id: id.clone(),
                name: None,
                external_id: None,
                updated_at: started_at.max(k.updated_at),
            });
        }
    }
    for (o, deleted) in organizations
        .iter()
        .map(|o| (o, false))
        .chain(gone.iter().map(|o| (o, true)))
    {
        let by_org = s
            .workspaces
            .iter()
            .find(|w| w.organization_id.as_deref() == Some(o.id.as_str()));
        let by_id = s
            .workspaces
            .iter()
            .find(|w| w.workspace_id == decide::created_workspace_id(o));
        let known = s.known.get(&o.id).map(|(k, ..)| k);
        let d = decide::organization(o, deleted, known, ctx.config.workspaces, by_org, by_id);
        for a in &d.actions {
            apply::run(&tx, a).await?;
            if let decide::Action::InsertWorkspace {
                workspace,
                organization,
                name,
            } = a
            {
                s.workspaces.push(WorkspaceRow {
                    workspace_id: workspace.clone(),
                    organization_id: Some(organization.clone()),
                    name: name.clone(),
                    disabled: false,
                });
            }
        }
        tally(d.outcome, &mut report);
        records.extend(d.record);
    }
    let workspace_of: HashMap<&str, &str> = s
        .workspaces
        .iter()
        .filter_map(|w| w.organization_id.as_deref().map(|o| (o, w.workspace_id.as_str())))
        .collect();
    // Memberships the complete listing of their organization no longer has: deleted.
    let listed_ids: HashSet<&str> = memberships.iter().map(|m| m.id.as_str()).collect();
    let mut absent = Vec::new();
    for (id, (k, kind, workspace, user)) in &s.known {
        let org = workspace
            .as_deref()
            .and_then(|w| s.workspaces.iter().find(|x| x.workspace_id == w))
            .and_then(|x| x.organization_id.clone());
        if *kind == "organization_membership" && k.state != "deleted" && !listed_ids.contains(id.as_str()) {
            if let (Some(org), Some(user)) = (org, user) {
                if listed_orgs.contains(&org) {
                    absent.push(Membership {
                        id: id.clone(),
                        user_id: user.clone(),
                        organization_id: org,
                        status: k.state.clone(),
                        role: None,
                        updated_at: started_at.max(k.updated_at),
                    });
                }
            }
        }
    }
    for (m, deleted) in memberships
        .iter()
        .map(|m| (m, false))
        .chain(absent.iter().map(|m| (m, true)))
    {
        let workspace = workspace_of.get(m.organization_id.as_str()).copied();
        let key = workspace.map(|w| (w.to_string(), m.user_id.clone()));
        let row = key.as_ref().and_then(|k| s.members.get(k));
        let context = Context {
            user_deleted: s.deleted_users.contains(&m.user_id),
            prior_disabled_by_sync: key.as_ref().is_some_and(|k| s.disabled_by_sync.contains(k)),
        };
        let known = s.known.get(&m.id).map(|(k, ..)| k);
        let d = decide::membership(m, deleted, known, workspace, row, context);
        for a in &d.actions {
            apply::run(&tx, a).await?;
        }
        tally(d.outcome, &mut report);
        records.extend(d.record);
    }
    apply::record_many(&tx, &records).await?;
    // Without a cursor, events from shortly before the listing began on: those the listing
    // already showed are stale when replayed, and none in between is missed. After an unusable
    // cursor, from its own time (revocations are not in any listing, so none is skipped).
    let listing_margin = started_at - chrono::Duration::minutes(5);
    if let Some(from) = resume_from {
        db::write_cursor(&tx, &Cursor::Since(from.min(listing_margin))).await?;
    } else if db::read_cursor(&tx).await? == Cursor::None {
        db::write_cursor(&tx, &Cursor::Since(listing_margin)).await?;
    }
    db::write_time(&tx, "reconciled_at", Utc::now()).await?;
    tx.commit().await?;
    Ok(report)
}
