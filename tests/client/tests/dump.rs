//! pg_dump and pg_restore into a fresh database: protected tables, their policies, the
//! extension's configuration rows (issuers, workspaces, members, API keys) and isolation survive.

#[allow(dead_code)] // each test binary uses a different part of it
mod common;

use common::*;
use std::process::Command;

const SOURCE: &str = "tenancy_dump_source";
const TARGET: &str = "tenancy_dump_target";

/// Runs a PostgreSQL client program against the test cluster and checks it succeeded.
fn run(program: &str, args: &[&str]) {
    let bindir = std::env::var("PG_TENANCY_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let port = std::env::var("PG_TENANCY_TEST_PORT").unwrap();
    let out = Command::new(format!("{bindir}/{program}"))
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The titles `sub` of `org` reads from `notes` in `database`.
fn titles(database: &str, sub: &str, org: &str) -> Vec<String> {
    let mut app = connect_with(APP_ROLE, database, "").unwrap();
    let mut tx = app.transaction().unwrap();
    set_local_token(&mut tx, sub, org);
    first_column(&mut tx, "SELECT title FROM notes ORDER BY title", &[])
}

#[test]
fn a_dump_restored_into_a_fresh_database_keeps_protection_and_configuration() {
    setup();
    let jwks = fixture_jwks();
    recreate_database(SOURCE, APP_ROLE);
    recreate_database(TARGET, APP_ROLE);
    let mut source = connect_with("postgres", SOURCE, "").unwrap();
    source
        .batch_execute(&format!(
            "CREATE EXTENSION pg_tenancy;
             SELECT tenancy.add_issuer('{ISSUER}', '{jwks}'::jsonb);
             INSERT INTO tenancy.workspaces VALUES ('ws_acme', 'org_acme', 'Acme', NULL),
                                                   ('ws_globex', 'org_globex', 'Globex', NULL);
             INSERT INTO tenancy.members VALUES ('ws_acme', 'user_alice', NULL, NULL),
                                                ('ws_globex', 'user_bob', NULL, NULL);
             CREATE TABLE notes (id bigserial PRIMARY KEY, workspace_id text NOT NULL, title text NOT NULL);
             CREATE INDEX ON notes (workspace_id);
             SELECT tenancy.protect('notes');
             GRANT SELECT, INSERT ON notes TO {APP_ROLE};
             GRANT USAGE ON SEQUENCE notes_id_seq TO {APP_ROLE};
             ALTER TABLE notes NO FORCE ROW LEVEL SECURITY;
             ALTER TABLE notes DISABLE ROW LEVEL SECURITY;
             INSERT INTO notes (workspace_id, title) VALUES ('ws_acme', 'acme note'), ('ws_globex', 'globex note');
             ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
             ALTER TABLE notes FORCE ROW LEVEL SECURITY;"
        ))
        .unwrap();
    let key: String = source
        .query_one("SELECT tenancy.create_api_key('ws_globex', 'survives-restore')", &[])
        .unwrap()
        .get(0);
    assert_eq!(titles(SOURCE, "user_alice", "org_acme"), ["acme note"]);

    let file = std::env::temp_dir().join(format!("tenancy_dump_{}.pgdump", std::process::id()));
    let file = file.to_str().unwrap();
    run("pg_dump", &["-Fc", "-f", file, SOURCE]);
    run("pg_restore", &["--exit-on-error", "-d", TARGET, file]);
    std::fs::remove_file(file).ok();

    let mut target = connect_with("postgres", TARGET, "").unwrap();
    let (rls, forced, intact): (bool, bool, bool) = target
        .query_one(
            "SELECT rls_enabled, rls_forced, policies_intact FROM tenancy.protected_tables WHERE table_name = 'notes'",
            &[],
        )
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .unwrap();
    assert_eq!(
        (rls, forced, intact),
        (true, true, true),
        "protection restored unmodified"
    );
    let findings = |client: &mut postgres::Client| -> Vec<String> {
        first_column(
            client,
            "SELECT severity || ' ' || finding FROM tenancy.coverage WHERE object LIKE '%notes%' ORDER BY 1",
            &[],
        )
    };
    assert_eq!(
        findings(&mut target),
        findings(&mut source),
        "the restored table has the same coverage findings as the original"
    );
    assert_eq!(titles(TARGET, "user_alice", "org_acme"), ["acme note"]);
    assert_eq!(titles(TARGET, "user_bob", "org_globex"), ["globex note"]);

    let mut app = connect_with(APP_ROLE, TARGET, "").unwrap();
    let err = app.query("SELECT title FROM notes", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "still no anonymous access: {err}");
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT set_config('tenancy.api_key', $1, true)", &[&key])
        .unwrap();
    let rows: Vec<String> = first_column(&mut tx, "SELECT title FROM notes", &[]);
    assert_eq!(
        rows,
        ["globex note"],
        "an API key issued before the dump works after the restore"
    );
}
