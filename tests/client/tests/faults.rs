//! Faults: a backend killed with SIGKILL makes the postmaster restart every process and
//! reinitialize shared memory. Afterwards the audit rows already persisted are intact, the audit
//! worker is back and persisting again, committed data is there, and no identity survives.
//!
//! This file restarts the whole cluster; cargo runs test binaries one after another, so no
//! other test is affected.

#[allow(dead_code)] // each test binary uses a different part of it
mod common;

use common::*;
use std::time::Duration;

/// How long a recovery step may take.
const WAIT: Duration = Duration::from_secs(30);

/// Produces one no-token denial tagged with `application_name = tag`.
fn deny(tag: &str) {
    let mut app = connect_with(APP_ROLE, DATABASE, &format!("-c application_name={tag}")).unwrap();
    assert!(app.query_one("SELECT tenancy.workspace_id()", &[]).is_err());
}

/// Rows of `tenancy.audit_log` in the audit database tagged `tag`, if the server answers.
fn persisted(tag: &str) -> Option<i64> {
    let mut audit = connect_with("postgres", "postgres", "").ok()?;
    audit
        .query_one(
            "SELECT count(*) FROM tenancy.audit_log WHERE application_name = $1",
            &[&tag],
        )
        .ok()
        .map(|r| r.get(0))
}

#[test]
fn a_killed_backend_loses_no_persisted_audit_rows_and_no_identity_survives() {
    setup();
    let mut audit = connect_with("postgres", "postgres", "").unwrap();
    audit
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_tenancy")
        .unwrap();
    let before = unique("fault_before");
    deny(&before);
    eventually("the first denial to be persisted", WAIT, || {
        persisted(&before).filter(|n| *n >= 1)
    });

    let mut victim = app();
    let mut tx = victim.transaction().unwrap();
    set_local_token(&mut tx, "user_alice", "org_acme");
    tx.execute("INSERT INTO documents (title) VALUES ('uncommitted at crash')", &[])
        .unwrap();
    let pid: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -9 {pid}");
    drop(tx);
    drop(victim);

    eventually("the cluster to accept connections again", WAIT, || {
        connect_with("postgres", "postgres", "").ok().filter(|c| !c.is_closed())
    });
    assert_eq!(
        eventually("the audit log to be readable", WAIT, || persisted(&before)),
        1,
        "persisted audit rows survive the crash"
    );
    let after = unique("fault_after");
    deny(&after);
    eventually("the restarted worker to persist a new denial", WAIT, || {
        persisted(&after).filter(|n| *n >= 1)
    });

    let mut fresh = app();
    let err = fresh.query("SELECT title FROM documents", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "a new backend starts without identity: {err}");
    let mut tx = fresh.transaction().unwrap();
    set_local_token(&mut tx, "user_alice", "org_acme");
    let titles: Vec<String> = first_column(&mut tx, "SELECT title FROM documents ORDER BY title", &[]);
    assert_eq!(
        titles,
        ["acme budget", "acme plan"],
        "committed rows intact, the uncommitted one gone"
    );
}
