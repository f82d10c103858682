//! The decision tables: memberships (each rule of the header of `mod.rs` as a row), the
//! companion's own disable remembered until it lifts it, and organizations in both modes.

use super::*;

fn at(s: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + i64::from(s), 0).unwrap()
}

fn m(status: &str, t: u32) -> Membership {
    Membership {
        id: "om_1".into(),
        user_id: "user_1".into(),
        organization_id: "org_1".into(),
        status: status.into(),
        role: Some("member".into()),
        updated_at: at(t),
    }
}

fn known(state: &str, t: u32, by_sync: bool) -> Known {
    Known {
        updated_at: at(t),
        state: state.into(),
        disabled_by_sync: by_sync,
    }
}

fn row(disabled: bool) -> MemberRow {
    MemberRow {
        role: Some("member".into()),
        disabled,
    }
}

#[test]
#[allow(clippy::type_complexity)]
fn memberships_table() {
    use Outcome::*;
    let cases: Vec<(
        &str,
        Membership,
        bool,
        Option<Known>,
        Option<&str>,
        Option<MemberRow>,
        bool,
        Outcome,
        &str,
    )> = vec![
        (
            "new active member",
            m("active", 1),
            false,
            None,
            Some("ws"),
            None,
            false,
            Changed,
            "InsertMember",
        ),
        (
            "deactivated",
            m("inactive", 2),
            false,
            Some(known("active", 1, false)),
            Some("ws"),
            Some(row(false)),
            false,
            Changed,
            "DisableMember",
        ),
        (
            "pending is not active",
            m("pending", 2),
            false,
            None,
            Some("ws"),
            Some(row(false)),
            false,
            Changed,
            "DisableMember",
        ),
        (
            "deleted membership",
            m("active", 2),
            true,
            Some(known("active", 1, false)),
            Some("ws"),
            Some(row(false)),
            false,
            Changed,
            "DisableMember",
        ),
        (
            "reactivated after our disable",
            m("active", 3),
            false,
            Some(known("inactive", 2, true)),
            Some("ws"),
            Some(row(true)),
            false,
            Changed,
            "EnableMember",
        ),
        (
            "an administrator's disable holds",
            m("active", 3),
            false,
            Some(known("active", 2, false)),
            Some("ws"),
            Some(row(true)),
            false,
            Held,
            "",
        ),
        (
            "no record, disabled row holds",
            m("active", 3),
            false,
            None,
            Some("ws"),
            Some(row(true)),
            false,
            Held,
            "",
        ),
        (
            "deleted user never re-enabled",
            m("active", 3),
            false,
            Some(known("inactive", 2, true)),
            Some("ws"),
            Some(row(true)),
            true,
            Held,
            "",
        ),
        (
            "older version is stale",
            m("active", 1),
            false,
            Some(known("inactive", 2, true)),
            Some("ws"),
            Some(row(true)),
            false,
            Stale,
            "",
        ),
        (
            "same version is stale",
            m("active", 2),
            false,
            Some(known("active", 2, false)),
            Some("ws"),
            Some(row(false)),
            false,
            Stale,
            "",
        ),
        (
            "deletion wins a tie",
            m("active", 2),
            true,
            Some(known("active", 2, false)),
            Some("ws"),
            Some(row(false)),
            false,
            Changed,
            "DisableMember",
        ),
        (
            "undeleting is stale",
            m("active", 2),
            false,
            Some(known("deleted", 2, true)),
            Some("ws"),
            Some(row(true)),
            false,
            Stale,
            "",
        ),
        (
            "no workspace",
            m("active", 1),
            false,
            None,
            None,
            None,
            false,
            Unmapped,
            "",
        ),
        (
            "inactive, no row",
            m("inactive", 1),
            false,
            None,
            Some("ws"),
            None,
            false,
            Unchanged,
            "",
        ),
    ];
    for (name, mem, deleted, k, ws, r, user_deleted, outcome, action) in cases {
        let context = Context {
            user_deleted,
            prior_disabled_by_sync: false,
        };
        let d = membership(&mem, deleted, k.as_ref(), ws, r.as_ref(), context);
        assert_eq!(d.outcome, outcome, "{name}");
        let got = d.actions.first().map(|a| format!("{a:?}")).unwrap_or_default();
        assert!(got.starts_with(action), "{name}: {got}");
        assert_eq!(
            d.record.is_some(),
            !matches!(outcome, Stale | Unmapped),
            "{name}: record"
        );
    }
}

#[test]
fn our_disable_is_remembered_until_we_lift_it() {
    let d = membership(
        &m("inactive", 2),
        false,
        Some(&known("active", 1, false)),
        Some("ws"),
        Some(&row(false)),
        Context::default(),
    );
    assert!(d.record.as_ref().unwrap().disabled_by_sync);
    let again = membership(
        &m("pending", 3),
        false,
        Some(&known("inactive", 2, true)),
        Some("ws"),
        Some(&row(true)),
        Context::default(),
    );
    assert!(
        again.record.as_ref().unwrap().disabled_by_sync,
        "still ours while it stays disabled"
    );
    let lifted = membership(
        &m("active", 4),
        false,
        Some(&known("pending", 3, true)),
        Some("ws"),
        Some(&row(true)),
        Context::default(),
    );
    assert!(!lifted.record.as_ref().unwrap().disabled_by_sync);
    let theirs = membership(
        &m("inactive", 2),
        false,
        Some(&known("active", 1, false)),
        Some("ws"),
        Some(&row(true)),
        Context::default(),
    );
    assert!(
        !theirs.record.as_ref().unwrap().disabled_by_sync,
        "a disable we did not make stays theirs"
    );
    let seen_enabled = membership(
        &m("active", 3),
        false,
        Some(&known("inactive", 2, true)),
        Some("ws"),
        Some(&row(false)),
        Context::default(),
    );
    assert!(
        !seen_enabled.record.as_ref().unwrap().disabled_by_sync,
        "seen enabled: the flag clears"
    );
    let row_deleted = membership(
        &m("active", 4),
        false,
        Some(&known("active", 3, false)),
        Some("ws"),
        None,
        Context::default(),
    );
    assert_eq!(
        row_deleted.outcome,
        Outcome::Held,
        "a row someone deleted is not inserted again"
    );
    let pending_then_active = membership(
        &m("active", 4),
        false,
        Some(&known("pending", 3, false)),
        Some("ws"),
        None,
        Context::default(),
    );
    assert_eq!(
        pending_then_active.outcome,
        Outcome::Changed,
        "pending never made a row: active inserts it"
    );
    let readded = Membership {
        id: "om_2".into(),
        ..m("active", 5)
    };
    let prior = Context {
        user_deleted: false,
        prior_disabled_by_sync: true,
    };
    let d = membership(&readded, false, None, Some("ws"), Some(&row(true)), prior);
    assert_eq!(
        d.outcome,
        Outcome::Changed,
        "a member we disabled, re-added under a new membership id"
    );
}

#[test]
fn organizations_table() {
    let org = Organization {
        id: "org_1".into(),
        name: Some("Acme".into()),
        external_id: Some("acme".into()),
        updated_at: at(1),
    };
    let ws = |disabled| WorkspaceRow {
        workspace_id: "acme".into(),
        organization_id: Some("org_1".into()),
        name: Some("Old".into()),
        disabled,
    };
    let other = WorkspaceRow {
        workspace_id: "acme".into(),
        organization_id: Some("org_9".into()),
        name: None,
        disabled: false,
    };
    use WorkspaceMode::*;
    let d = organization(&org, false, None, Create, None, None);
    assert!(matches!(&d.actions[..], [Action::InsertWorkspace { workspace, .. }] if workspace == "acme"));
    assert_eq!(
        organization(&org, false, None, Create, None, Some(&other)).outcome,
        Outcome::Conflict
    );
    assert_eq!(
        organization(&org, false, None, Existing, None, None).outcome,
        Outcome::Unmapped
    );
    assert_eq!(
        organization(&org, false, None, Existing, Some(&ws(false)), None).outcome,
        Outcome::Unchanged,
        "existing mode renames nothing"
    );
    assert!(matches!(
        organization(&org, false, None, Create, Some(&ws(false)), None).actions[..],
        [Action::RenameWorkspace { .. }]
    ));
    assert!(matches!(
        organization(&org, true, None, Existing, Some(&ws(false)), None).actions[..],
        [Action::DisableWorkspace { .. }]
    ));
    assert_eq!(
        organization(&org, true, None, Existing, Some(&ws(true)), None).outcome,
        Outcome::Unchanged
    );
    assert_eq!(
        organization(&org, false, Some(&known("deleted", 1, true)), Create, None, None).outcome,
        Outcome::Stale
    );
}
