//! Applying decisions inside the caller's transaction: reading the rows a decision needs (locked
//! against concurrent writers), executing its actions, recording versions. Every statement names
//! `tenancy.` tables and runs under the pinned `search_path` of `db::connect`.

use crate::config::WorkspaceMode;
use crate::decide::{self, Action, Decision, Known, MemberRow, Outcome, Record, WorkspaceRow};
use crate::workos::model::{Membership, Organization};
use chrono::{DateTime, Utc};
use tokio_postgres::{Error, GenericClient, Row};

/// The version of `object_id` the companion applied, locked.
pub async fn known(tx: &impl GenericClient, object_id: &str) -> Result<Option<Known>, Error> {
    let row = tx
        .query_opt(
            "SELECT updated_at, state, disabled_by_sync FROM tenancy.sync_objects WHERE object_id = $1 FOR UPDATE",
            &[&object_id],
        )
        .await?;
    Ok(row.map(|r| Known {
        updated_at: r.get(0),
        state: r.get(1),
        disabled_by_sync: r.get(2),
    }))
}

/// A workspace row from a query selecting `workspace_id, organization_id, name, disabled`.
pub fn workspace_row(r: &Row) -> WorkspaceRow {
    WorkspaceRow {
        workspace_id: r.get(0),
        organization_id: r.get(1),
        name: r.get(2),
        disabled: r.get(3),
    }
}

const WORKSPACE_COLUMNS: &str = "workspace_id, organization_id, name, disabled_at IS NOT NULL";

/// The workspace mapped to `organization`, locked.
async fn workspace_of(tx: &impl GenericClient, organization: &str) -> Result<Option<WorkspaceRow>, Error> {
    let sql = format!("SELECT {WORKSPACE_COLUMNS} FROM tenancy.workspaces WHERE organization_id = $1 FOR UPDATE");
    Ok(tx.query_opt(&sql, &[&organization]).await?.as_ref().map(workspace_row))
}

/// Applies one membership (the event path).
pub async fn membership(tx: &impl GenericClient, m: &Membership, deleted: bool) -> Result<Outcome, Error> {
    let known = known(tx, &m.id).await?;
    let workspace = workspace_of(tx, &m.organization_id).await?;
    let row = match &workspace {
        Some(w) => tx
            .query_opt(
                "SELECT role, disabled_at IS NOT NULL FROM tenancy.members WHERE workspace_id = $1 AND user_id = $2 FOR UPDATE",
                &[&w.workspace_id, &m.user_id],
            )
            .await?
            .map(|r| MemberRow { role: r.get(0), disabled: r.get(1) }),
        None => None,
    };
    let context = decide::Context {
        user_deleted: user_is_deleted(tx, &m.user_id).await?,
        prior_disabled_by_sync: match &workspace {
            Some(w) => prior_disabled_by_sync(tx, &w.workspace_id, &m.user_id).await?,
            None => false,
        },
    };
    let decision = decide::membership(
        m,
        deleted,
        known.as_ref(),
        workspace.as_ref().map(|w| w.workspace_id.as_str()),
        row.as_ref(),
        context,
    );
    execute(tx, &decision).await
}

/// Applies one organization (the event path).
pub async fn organization(
    tx: &impl GenericClient,
    o: &Organization,
    deleted: bool,
    mode: WorkspaceMode,
) -> Result<Outcome, Error> {
    let known = known(tx, &o.id).await?;
    let by_org = workspace_of(tx, &o.id).await?;
    let by_id = if by_org.is_none() && mode == WorkspaceMode::Create {
        let sql = format!("SELECT {WORKSPACE_COLUMNS} FROM tenancy.workspaces WHERE workspace_id = $1 FOR UPDATE");
        tx.query_opt(&sql, &[&decide::created_workspace_id(o)])
            .await?
            .as_ref()
            .map(workspace_row)
    } else {
        None
    };
    let decision = decide::organization(o, deleted, known.as_ref(), mode, by_org.as_ref(), by_id.as_ref());
    execute(tx, &decision).await
}

/// Whether WorkOS deleted `user` (a `user.deleted` the companion applied).
async fn user_is_deleted(tx: &impl GenericClient, user: &str) -> Result<bool, Error> {
    let row = tx
        .query_one(
            "SELECT EXISTS (SELECT FROM tenancy.sync_objects WHERE object_id = $1 AND kind = 'user' AND state = 'deleted')",
            &[&user],
        )
        .await?;
    Ok(row.get(0))
}

/// Whether any membership record of this member says the companion disabled it.
async fn prior_disabled_by_sync(tx: &impl GenericClient, workspace: &str, user: &str) -> Result<bool, Error> {
    let row = tx
        .query_one(
            "SELECT EXISTS (SELECT FROM tenancy.sync_objects
                             WHERE kind = 'organization_membership' AND workspace_id = $1 AND user_id = $2
                               AND disabled_by_sync)",
            &[&workspace, &user],
        )
        .await?;
    Ok(row.get(0))
}

/// `user.deleted`: every membership of the user disabled (and remembered as the companion's).
pub async fn user_deleted(tx: &impl GenericClient, user: &str, at: DateTime<Utc>) -> Result<Outcome, Error> {
    let known = known(tx, user).await?;
    if decide::is_stale(known.as_ref(), at, true) {
        return Ok(Outcome::Stale);
    }
    let disabled = tx
        .execute(
            "UPDATE tenancy.members SET disabled_at = pg_catalog.now() WHERE user_id = $1 AND disabled_at IS NULL",
            &[&user],
        )
        .await?;
    tx.execute(
        "UPDATE tenancy.sync_objects SET state = 'deleted', disabled_by_sync = true, applied_at = pg_catalog.now()
          WHERE kind = 'organization_membership' AND user_id = $1",
        &[&user],
    )
    .await?;
    record(
        tx,
        &Record {
            object_id: user.to_string(),
            kind: "user",
            updated_at: at,
            state: "deleted".into(),
            workspace_id: None,
            user_id: Some(user.to_string()),
            disabled_by_sync: true,
        },
    )
    .await?;
    Ok(if disabled > 0 {
        Outcome::Changed
    } else {
        Outcome::Unchanged
    })
}

/// `session.revoked`: the session id refused from the next statement on.
pub async fn session_revoked(tx: &impl GenericClient, sid: &str) -> Result<Outcome, Error> {
    let inserted = tx
        .execute(
            "INSERT INTO tenancy.revoked_sessions (sid) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&sid],
        )
        .await?;
    Ok(if inserted > 0 {
        Outcome::Changed
    } else {
        Outcome::Unchanged
    })
}

/// Executes a decision's actions and records its version.
pub async fn execute(tx: &impl GenericClient, decision: &Decision) -> Result<Outcome, Error> {
    for action in &decision.actions {
        run(tx, action).await?;
    }
    if let Some(r) = &decision.record {
        record(tx, r).await?;
    }
    Ok(decision.outcome)
}

/// One action.
pub async fn run(tx: &impl GenericClient, action: &Action) -> Result<(), Error> {
    match action {
        Action::InsertMember { workspace, user, role } => {
            tx.execute(
                "INSERT INTO tenancy.members (workspace_id, user_id, role, disabled_at) VALUES ($1, $2, $3, NULL)",
                &[workspace, user, role],
            )
            .await?
        }
        Action::EnableMember { workspace, user, role } | Action::UpdateRole { workspace, user, role } => {
            let enable = matches!(action, Action::EnableMember { .. });
            tx.execute(
                "UPDATE tenancy.members SET role = $3, disabled_at = CASE WHEN $4 THEN NULL ELSE disabled_at END
                  WHERE workspace_id = $1 AND user_id = $2",
                &[workspace, user, role, &enable],
            )
            .await?
        }
        Action::DisableMember { workspace, user } => {
            tx.execute(
                "UPDATE tenancy.members SET disabled_at = pg_catalog.now()
                  WHERE workspace_id = $1 AND user_id = $2 AND disabled_at IS NULL",
                &[workspace, user],
            )
            .await?
        }
        Action::InsertWorkspace { workspace, organization, name } => {
            tx.execute(
                "INSERT INTO tenancy.workspaces (workspace_id, organization_id, name) VALUES ($1, $2, $3)",
                &[workspace, organization, name],
            )
            .await?
        }
        Action::RenameWorkspace { workspace, name } => {
            tx.execute("UPDATE tenancy.workspaces SET name = $2 WHERE workspace_id = $1", &[workspace, name])
                .await?
        }
        Action::DisableWorkspace { workspace } => {
            tx.execute(
                "UPDATE tenancy.workspaces SET disabled_at = pg_catalog.now() WHERE workspace_id = $1 AND disabled_at IS NULL",
                &[workspace],
            )
            .await?
        }
    };
    Ok(())
}

/// Records the version applied.
pub async fn record(tx: &impl GenericClient, r: &Record) -> Result<(), Error> {
    record_many(tx, std::slice::from_ref(r)).await
}

/// Records many versions, one statement per 5,000 (the reconcile; `record` for one).
pub async fn record_many(tx: &impl GenericClient, records: &[Record]) -> Result<(), Error> {
    for chunk in records.chunks(5_000) {
        let ids: Vec<&str> = chunk.iter().map(|r| r.object_id.as_str()).collect();
        let kinds: Vec<&str> = chunk.iter().map(|r| r.kind).collect();
        let times: Vec<DateTime<Utc>> = chunk.iter().map(|r| r.updated_at).collect();
        let states: Vec<&str> = chunk.iter().map(|r| r.state.as_str()).collect();
        let workspaces: Vec<Option<&str>> = chunk.iter().map(|r| r.workspace_id.as_deref()).collect();
        let users: Vec<Option<&str>> = chunk.iter().map(|r| r.user_id.as_deref()).collect();
        let flags: Vec<bool> = chunk.iter().map(|r| r.disabled_by_sync).collect();
        tx.execute(
            "INSERT INTO tenancy.sync_objects (object_id, kind, updated_at, state, workspace_id, user_id, disabled_by_sync)
             SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::boolean[])
             ON CONFLICT (object_id) DO UPDATE
                SET updated_at = excluded.updated_at, state = excluded.state, workspace_id = excluded.workspace_id,
                    user_id = excluded.user_id, disabled_by_sync = excluded.disabled_by_sync, applied_at = pg_catalog.now()",
            &[&ids, &kinds, &times, &states, &workspaces, &users, &flags],
        )
        .await?;
    }
    Ok(())
}
