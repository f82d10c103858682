//! Findings of the attack round after the hardening of issue 31, each as a test that failed
//! before its fix (docs/security.md, "Adversarial passes").

#[allow(dead_code)] // each test binary uses a different part of it
mod common;

use common::*;
use std::time::{Duration, Instant};

/// A login role with `tenancy.credentials_in_text = refuse`, as recommended for application roles.
const REFUSING_ROLE: &str = "tenancy_client_refusing";

fn refusing() -> postgres::Client {
    setup();
    // Once per binary: two tests altering the role at once failed with "tuple concurrently
    // updated".
    static CREATED: std::sync::Once = std::sync::Once::new();
    CREATED.call_once(|| {
        admin()
            .batch_execute(&format!(
                "DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{REFUSING_ROLE}') THEN
                     CREATE ROLE {REFUSING_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS;
                 END IF;
             END $$;
             ALTER ROLE {REFUSING_ROLE} SET tenancy.credentials_in_text = refuse;
             GRANT SELECT ON documents TO {REFUSING_ROLE};"
            ))
            .unwrap();
    });
    connect_with(REFUSING_ROLE, DATABASE, "").unwrap()
}

#[test]
fn a_bound_credential_is_accepted_and_the_same_value_written_as_a_literal_is_not() {
    let mut client = refusing();
    let token = token("user_alice", "org_acme");
    let mut tx = client.transaction().unwrap();
    let workspace: String = tx
        .query_one(
            "SELECT set_config('tenancy.token', $1, true) IS NOT NULL, tenancy.workspace_id()",
            &[&token],
        )
        .unwrap()
        .get(1);
    assert_eq!(workspace, "ws_acme", "a bound parameter is accepted");
    drop(tx);
    // The same value bound as a parameter, and written as a literal that the assignment uses: the
    // literal was in pg_stat_activity before parsing.
    let mut tx = client.transaction().unwrap();
    let literal = format!("SELECT length($1::text), set_config('tenancy.token', '{token}', true) IS NOT NULL");
    let err = tx.query_one(literal.as_str(), &[&token]).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    let message = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
    assert!(message.contains("not a bound parameter"), "{message}");
}

/// Found by the adversarial pass of session 12: a parallel worker re-applies the leader's
/// credential as a session-level setting, where it was no bound parameter of the worker's
/// statement, so every parallel plan of a refusing role failed with 28000, and PostgreSQL's
/// CONTEXT line ("while setting parameter \"tenancy.token\" to …") carried the whole token to
/// the client.
#[test]
fn a_parallel_plan_runs_under_a_bound_credential_of_a_refusing_role() {
    let mut client = refusing();
    let token = token("user_alice", "org_acme");
    let mut tx = client.transaction().unwrap();
    tx.batch_execute(
        "SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0;
         SET LOCAL min_parallel_table_scan_size = 0; SET LOCAL max_parallel_workers_per_gather = 2;
         SET LOCAL parallel_leader_participation = off; SET LOCAL enable_bitmapscan = off;
         SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off",
    )
    .unwrap();
    tx.query_one("SELECT set_config('tenancy.token', $1, true)", &[&token])
        .unwrap();
    let plan: Vec<String> = first_column(&mut tx, "EXPLAIN (COSTS OFF) SELECT count(*) FROM documents", &[]);
    assert!(plan.iter().any(|line| line.contains("Gather")), "{plan:?}");
    let counted = tx.query_one("SELECT count(*) FROM documents", &[]);
    let err = counted.as_ref().err().map(|e| format!("{e:?}")).unwrap_or_default();
    assert!(
        !err.contains(&token[token.len() - 20..]),
        "the token reached the client: {err}"
    );
    let count: i64 = counted.unwrap().get(0);
    let acme: i64 = tx
        .query_one("SELECT count(*) FROM documents WHERE workspace_id = 'ws_acme'", &[])
        .unwrap()
        .get(0);
    assert!(count > 0 && count == acme, "{count} rows, {acme} of ws_acme");
}

#[test]
fn a_registry_row_someone_keeps_locked_does_not_fail_a_drop() {
    setup();
    let mut admin = admin();
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS droplock CASCADE;
             CREATE SCHEMA droplock AUTHORIZATION {APP_ROLE};"
        ))
        .unwrap();
    let mut owner = app();
    owner
        .batch_execute(
            "SET client_min_messages = error;
             CREATE TABLE droplock.t (workspace_id text NOT NULL, id int);
             SELECT tenancy.protect('droplock.t');",
        )
        .unwrap();
    // The owner keeps its own registry row locked in an open transaction.
    let mut tx = owner.transaction().unwrap();
    tx.query(
        "SELECT 1 FROM tenancy.protections WHERE schema_name = 'droplock' FOR UPDATE",
        &[],
    )
    .unwrap();
    let start = Instant::now();
    let dropped = admin.batch_execute("DROP TABLE droplock.t");
    let waited = start.elapsed();
    drop(tx);
    assert!(dropped.is_ok(), "the DROP failed: {dropped:?}");
    assert!(waited < Duration::from_secs(4), "the DROP waited {waited:?}");
    let stale: i64 = admin
        .query_one(
            "SELECT count(*) FROM tenancy.coverage WHERE finding = 'stale_registry_row' AND object = 'droplock.t'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(stale, 1, "the row left behind is reported");
    admin
        .batch_execute(
            "DELETE FROM tenancy.protections WHERE schema_name = 'droplock';
             DROP SCHEMA droplock CASCADE;",
        )
        .unwrap();
}
