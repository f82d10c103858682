//! What to do with one WorkOS object, given what the database holds: pure functions, shared by
//! the event path (one object at a time) and the reconcile (every object at once), and tested
//! table by table in `tests.rs`.
//!
//! The rules: a version older than the one applied changes nothing (WorkOS's `updated_at`; a
//! deletion wins a tie); only `active` enables; the companion re-enables only a member it
//! disabled itself, and never a member of a deleted user; it deletes nothing.

use crate::config::WorkspaceMode;
use crate::workos::model::{Membership, Organization};
use chrono::{DateTime, Utc};

/// The newest version of an object the companion applied (`tenancy.sync_objects`).
#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    pub updated_at: DateTime<Utc>,
    pub state: String,
    pub disabled_by_sync: bool,
}

/// A `tenancy.members` row.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRow {
    pub role: Option<String>,
    pub disabled: bool,
}

/// A `tenancy.workspaces` row.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceRow {
    pub workspace_id: String,
    pub organization_id: Option<String>,
    pub name: Option<String>,
    pub disabled: bool,
}

/// A change to make.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    InsertMember {
        workspace: String,
        user: String,
        role: Option<String>,
    },
    EnableMember {
        workspace: String,
        user: String,
        role: Option<String>,
    },
    UpdateRole {
        workspace: String,
        user: String,
        role: Option<String>,
    },
    DisableMember {
        workspace: String,
        user: String,
    },
    InsertWorkspace {
        workspace: String,
        organization: String,
        name: Option<String>,
    },
    RenameWorkspace {
        workspace: String,
        name: Option<String>,
    },
    DisableWorkspace {
        workspace: String,
    },
}

/// The version to record in `tenancy.sync_objects`.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub object_id: String,
    pub kind: &'static str,
    pub updated_at: DateTime<Utc>,
    pub state: String,
    pub workspace_id: Option<String>,
    pub user_id: Option<String>,
    pub disabled_by_sync: bool,
}

/// What became of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The database changed.
    Changed,
    /// Already as WorkOS says.
    Unchanged,
    /// Older than the version applied: ignored.
    Stale,
    /// No workspace maps to the organization.
    Unmapped,
    /// WorkOS says active, but the member is disabled by someone else or the user was deleted.
    Held,
    /// A workspace of that id exists for another organization: not taken over.
    Conflict,
}

impl Outcome {
    /// The name recorded in `tenancy.sync_log` and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Changed => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Stale => "stale",
            Outcome::Unmapped => "unmapped",
            Outcome::Held => "held",
            Outcome::Conflict => "conflict",
        }
    }
}

/// A decision: what happened, the changes, and the version to record (none when stale or
/// unmapped, so that a later workspace row still receives it).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    pub actions: Vec<Action>,
    pub record: Option<Record>,
}

impl Decision {
    fn nothing(outcome: Outcome) -> Decision {
        Decision {
            outcome,
            actions: Vec::new(),
            record: None,
        }
    }
}

/// Whether `incoming` (at `at`, a deletion or not) is no newer than what was applied.
pub fn is_stale(known: Option<&Known>, at: DateTime<Utc>, deleted: bool) -> bool {
    known.is_some_and(|k| (k.updated_at, k.state == "deleted") >= (at, deleted))
}

/// What else the database says about a membership's member.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Context {
    /// WorkOS deleted the user.
    pub user_deleted: bool,
    /// Another membership record of the same member says the companion disabled it (WorkOS
    /// gives a re-added member a new membership id).
    pub prior_disabled_by_sync: bool,
}

/// A membership (`deleted` for `organization_membership.deleted`) against the database's rows:
/// `workspace` the workspace its organization maps to, `row` the member row.
pub fn membership(
    m: &Membership,
    deleted: bool,
    known: Option<&Known>,
    workspace: Option<&str>,
    row: Option<&MemberRow>,
    context: Context,
) -> Decision {
    if is_stale(known, m.updated_at, deleted) {
        return Decision::nothing(Outcome::Stale);
    }
    let Some(workspace) = workspace else {
        return Decision::nothing(Outcome::Unmapped);
    };
    let (ws, user) = (workspace.to_string(), m.user_id.clone());
    let active = m.status == "active" && !deleted;
    // The flag means "the row is disabled because the companion disabled it": a row seen enabled
    // or missing clears it, so a later disable by an administrator is never taken for ours.
    let row_disabled = row.is_some_and(|r| r.disabled);
    let mut disabled_by_sync = row_disabled
        && (known.is_some_and(|k| k.disabled_by_sync) || (known.is_none() && context.prior_disabled_by_sync));
    // A row the companion created (it applied this membership as active) and someone deleted.
    let deleted_by_someone = row.is_none() && known.is_some_and(|k| k.state == "active");
    let (outcome, actions) = match (active, row) {
        (true, _) if context.user_deleted || deleted_by_someone => (Outcome::Held, vec![]),
        (true, None) => (
            Outcome::Changed,
            vec![Action::InsertMember {
                workspace: ws,
                user,
                role: m.role.clone(),
            }],
        ),
        (true, Some(r)) if !r.disabled && r.role == m.role => (Outcome::Unchanged, vec![]),
        (true, Some(r)) if !r.disabled => (
            Outcome::Changed,
            vec![Action::UpdateRole {
                workspace: ws,
                user,
                role: m.role.clone(),
            }],
        ),
        (true, Some(_)) if disabled_by_sync => {
            disabled_by_sync = false;
            (
                Outcome::Changed,
                vec![Action::EnableMember {
                    workspace: ws,
                    user,
                    role: m.role.clone(),
                }],
            )
        }
        (true, Some(_)) => (Outcome::Held, vec![]),
        (false, Some(r)) if !r.disabled => {
            disabled_by_sync = true;
            (Outcome::Changed, vec![Action::DisableMember { workspace: ws, user }])
        }
        (false, _) => (Outcome::Unchanged, vec![]),
    };
    let record = Record {
        object_id: m.id.clone(),
        kind: "organization_membership",
        updated_at: m.updated_at,
        state: if deleted { "deleted".into() } else { m.status.clone() },
        workspace_id: Some(workspace.to_string()),
        user_id: Some(m.user_id.clone()),
        disabled_by_sync,
    };
    Decision {
        outcome,
        actions,
        record: Some(record),
    }
}

/// An organization (`deleted` for `organization.deleted`): `by_org` the workspace mapped to it,
/// `by_id` the workspace whose id `create` mode would give it.
pub fn organization(
    o: &Organization,
    deleted: bool,
    known: Option<&Known>,
    mode: WorkspaceMode,
    by_org: Option<&WorkspaceRow>,
    by_id: Option<&WorkspaceRow>,
) -> Decision {
    if is_stale(known, o.updated_at, deleted) {
        return Decision::nothing(Outcome::Stale);
    }
    let record = |workspace: &str| Record {
        object_id: o.id.clone(),
        kind: "organization",
        updated_at: o.updated_at,
        state: if deleted { "deleted".into() } else { "active".into() },
        workspace_id: Some(workspace.to_string()),
        user_id: None,
        disabled_by_sync: deleted,
    };
    match (by_org, deleted, mode) {
        (Some(w), true, _) if !w.disabled => Decision {
            outcome: Outcome::Changed,
            actions: vec![Action::DisableWorkspace {
                workspace: w.workspace_id.clone(),
            }],
            record: Some(record(&w.workspace_id)),
        },
        (Some(w), true, _) => Decision {
            outcome: Outcome::Unchanged,
            actions: vec![],
            record: Some(record(&w.workspace_id)),
        },
        (Some(w), false, WorkspaceMode::Create) if w.name != o.name => Decision {
            outcome: Outcome::Changed,
            actions: vec![Action::RenameWorkspace {
                workspace: w.workspace_id.clone(),
                name: o.name.clone(),
            }],
            record: Some(record(&w.workspace_id)),
        },
        (Some(w), false, _) => Decision {
            outcome: Outcome::Unchanged,
            actions: vec![],
            record: Some(record(&w.workspace_id)),
        },
        (None, _, WorkspaceMode::Existing) | (None, true, WorkspaceMode::Create) => {
            Decision::nothing(Outcome::Unmapped)
        }
        (None, false, WorkspaceMode::Create) => {
            let workspace = o.external_id.clone().unwrap_or_else(|| o.id.clone());
            if by_id.is_some() {
                return Decision::nothing(Outcome::Conflict);
            }
            Decision {
                outcome: Outcome::Changed,
                actions: vec![Action::InsertWorkspace {
                    workspace: workspace.clone(),
                    organization: o.id.clone(),
                    name: o.name.clone(),
                }],
                record: Some(record(&workspace)),
            }
        }
    }
}

/// The workspace id `create` mode gives an organization.
pub fn created_workspace_id(o: &Organization) -> String {
    o.external_id.clone().unwrap_or_else(|| o.id.clone())
}

#[cfg(test)]
mod tests;
