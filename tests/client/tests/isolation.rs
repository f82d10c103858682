//! Isolation as an application sees it: a NOSUPERUSER role over a real socket.

#[allow(dead_code)] // each test binary uses a different part of it
mod common;

use common::*;
use pgvector::Vector;

#[test]
fn anonymous_access_fails_loudly() {
    let mut app = app();
    let err = app.query("SELECT title FROM documents", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
}

#[test]
fn each_user_sees_only_their_workspace() {
    let mut app = app();
    struct Case {
        sub: &'static str,
        org: &'static str,
        titles: Vec<&'static str>,
    }
    for Case {
        sub,
        org,
        titles: expected,
    } in [
        Case {
            sub: "user_alice",
            org: "org_acme",
            titles: vec!["acme budget", "acme plan"],
        },
        Case {
            sub: "user_bob",
            org: "org_globex",
            titles: vec!["globex secret"],
        },
    ] {
        let mut tx = app.transaction().unwrap();
        set_local_token(&mut tx, sub, org);
        let titles: Vec<String> = first_column(&mut tx, "SELECT title FROM documents ORDER BY title", &[]);
        assert_eq!(titles, expected, "{sub}");
        let near: Vec<String> = first_column(
            &mut tx,
            "SELECT title FROM documents ORDER BY embedding <-> $1 LIMIT 10",
            &[&Vector::from(vec![1.0, 0.0, 0.0])],
        );
        assert_eq!(
            near.len(),
            expected.len(),
            "{sub}: vector search stays in the workspace"
        );
        tx.commit().unwrap();
    }
}

#[test]
fn writes_cannot_target_another_workspace() {
    let mut app = app();
    let err = refusal_as(
        &mut app,
        "user_alice",
        "org_acme",
        "INSERT INTO documents (workspace_id, title) VALUES ('ws_globex', 'planted')",
    );
    assert_eq!(sqlstate(&err), "42501", "{err}");
    let mut tx = app.transaction().unwrap();
    set_local_token(&mut tx, "user_alice", "org_acme");
    let moved = tx
        .execute(
            "UPDATE documents SET title = 'stolen' WHERE workspace_id = 'ws_globex'",
            &[],
        )
        .unwrap();
    assert_eq!(moved, 0, "another workspace's rows are invisible to UPDATE");
    let id: i64 = tx
        .query_one("INSERT INTO documents (title) VALUES ('defaulted') RETURNING id", &[])
        .unwrap()
        .get(0);
    let ws: String = tx
        .query_one("SELECT workspace_id FROM documents WHERE id = $1", &[&id])
        .unwrap()
        .get(0);
    assert_eq!(ws, "ws_acme", "the workspace column defaults to the caller's workspace");
    tx.rollback().unwrap();
}

#[test]
fn set_local_ends_with_its_transaction() {
    let mut app = app();
    let mut tx = app.transaction().unwrap();
    set_local_token(&mut tx, "user_alice", "org_acme");
    assert_eq!(tx.query("SELECT 1 FROM documents", &[]).unwrap().len(), 2);
    tx.commit().unwrap();
    let err = app.query("SELECT 1 FROM documents", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "no identity after COMMIT: {err}");
}

#[test]
fn spoofing_is_refused_by_every_route() {
    let mut app = app();
    app.execute(
        "SELECT set_config('tenancy.token', $1, false)",
        &[&token("user_alice", "org_acme")],
    )
    .unwrap();
    for attempt in [
        "SET tenancy.workspace_id = 'ws_globex'",
        "SELECT set_config('tenancy.workspace_id', 'ws_globex', false)",
        "SELECT set_config('tenancy.user_id', 'user_bob', true)",
        "UPDATE pg_settings SET setting = 'ws_globex' WHERE name = 'tenancy.workspace_id'",
        "ALTER ROLE CURRENT_USER SET tenancy.workspace_id = 'ws_globex'",
    ] {
        let err = app.batch_execute(attempt).unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{attempt}: {err}");
    }
    let ws: String = app.query_one("SELECT tenancy.workspace_id()", &[]).unwrap().get(0);
    assert_eq!(ws, "ws_acme");
    let seen: i64 = app
        .query_one("SELECT count(*) FROM documents WHERE workspace_id <> 'ws_acme'", &[])
        .unwrap()
        .get(0);
    assert_eq!(seen, 0);
    let startup = connect_with(APP_ROLE, DATABASE, "-c tenancy.workspace_id=ws_globex");
    assert!(
        startup.is_err(),
        "a startup option for a derived setting must refuse the connection"
    );
}

#[test]
fn forged_and_foreign_tokens_fail_at_set() {
    let mut app = app();
    let alice = token("user_alice", "org_acme");
    let bob = token("user_bob", "org_globex");
    let forged = format!(
        "{}.{}",
        &alice[..alice.rfind('.').unwrap()],
        &bob[bob.rfind('.').unwrap() + 1..]
    );
    let cross = token("user_alice", "org_globex");
    for (name, t) in [("forged", forged), ("member of another org", cross)] {
        let err = app
            .execute("SELECT set_config('tenancy.token', $1, false)", &[&t])
            .unwrap_err();
        assert_eq!(sqlstate(&err), "28000", "{name}: {err}");
        assert!(
            !err.to_string().contains(&t[..20]),
            "{name}: the token must not be echoed"
        );
    }
}

#[test]
fn disabling_a_member_stops_an_open_session() {
    let mut app = app();
    app.execute(
        "SELECT set_config('tenancy.token', $1, false)",
        &[&token("user_carol", "org_initech")],
    )
    .unwrap();
    assert_eq!(app.query("SELECT 1 FROM documents", &[]).unwrap().len(), 1);
    admin()
        .execute(
            "UPDATE tenancy.members SET disabled_at = now() WHERE user_id = 'user_carol'",
            &[],
        )
        .unwrap();
    let err = app.query("SELECT 1 FROM documents", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    admin()
        .execute(
            "UPDATE tenancy.members SET disabled_at = NULL WHERE user_id = 'user_carol'",
            &[],
        )
        .unwrap();
}
