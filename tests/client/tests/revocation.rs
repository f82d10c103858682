//! Revocation applies from the next statement whatever the statement. Inside an open transaction
//! whose first statements already hold the table's locks, PostgreSQL takes in no invalidation by
//! itself; before every statement took them in, a protocol-level prepared statement (what every
//! driver sends), `tenancy.nearest` and the identity functions kept serving a revoked identity.
//!
//! Each case: a transaction sets its credential (bound), prepares and runs a statement (it works),
//! an administrator commits a revocation on another connection, and the same prepared statement
//! run again in the same transaction is refused with 28000. The tests of this file share one
//! issuer and run one at a time.

#[allow(dead_code)] // each test binary uses a different part of it
mod common;

use common::*;
use pgvector::Vector;
use serde_json::json;
use std::sync::Mutex;

/// Serializes the tests of this file (one issuer's keys are rotated).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A second issuer with the test key, whose keys this file may rotate without disturbing others.
const REVOCATION_ISSUER: &str = "https://auth.test/revocation";

/// How the identity is taken away.
#[derive(Clone, Copy, Debug)]
enum Revocation {
    MemberDisabled,
    SessionRevoked,
    WorkspaceDisabled,
    KeysRotated,
    ApiKeyRevoked,
}

/// What the transaction runs, prepared once at the protocol level.
#[derive(Clone, Copy, Debug)]
enum Statement {
    Read,
    Insert,
    WorkspaceId,
    Nearest,
}

impl Statement {
    fn sql(self) -> &'static str {
        match self {
            Statement::Read => "SELECT count(*)::int FROM documents",
            Statement::Insert => "INSERT INTO documents (title) VALUES ('by a revoked identity') RETURNING 1",
            Statement::WorkspaceId => "SELECT tenancy.workspace_id()",
            Statement::Nearest => {
                "SELECT count(*)::int FROM tenancy.nearest(NULL::documents, 'embedding', $1::vector, 3)"
            }
        }
    }

    fn run(self, tx: &mut postgres::Transaction, prepared: &postgres::Statement) -> Result<(), postgres::Error> {
        match self {
            Statement::Nearest => tx.query(prepared, &[&Vector::from(vec![1.0, 0.0, 0.0])]),
            _ => tx.query(prepared, &[]),
        }
        .map(|_| ())
    }
}

/// A workspace, member, session and API key of their own for one case.
fn fixtures(db: &mut postgres::Client, case: &str) -> (String, String) {
    db.batch_execute(&format!(
        "INSERT INTO tenancy.workspaces VALUES ('ws_{case}', 'org_{case}', '{case}', NULL);
         INSERT INTO tenancy.members VALUES ('ws_{case}', 'user_{case}', NULL, NULL);"
    ))
    .unwrap();
    let key: String = db
        .query_one(
            "SELECT tenancy.create_api_key($1, 'revocation test')",
            &[&format!("ws_{case}")],
        )
        .unwrap()
        .get(0);
    let now = unix_now();
    let token = mint(
        &json!({"iss": REVOCATION_ISSUER, "sub": format!("user_{case}"), "org_id": format!("org_{case}"),
                             "sid": format!("session_{case}"), "iat": now, "exp": now + 300}),
    );
    (token, key)
}

/// Commits `revocation` of the case's identity as the administrator.
fn revoke(db: &mut postgres::Client, revocation: Revocation, case: &str) {
    let sql = match revocation {
        Revocation::MemberDisabled => {
            format!("UPDATE tenancy.members SET disabled_at = now() WHERE user_id = 'user_{case}'")
        }
        Revocation::SessionRevoked => format!("SELECT tenancy.revoke_session('session_{case}')"),
        Revocation::WorkspaceDisabled => {
            format!("UPDATE tenancy.workspaces SET disabled_at = now() WHERE workspace_id = 'ws_{case}'")
        }
        Revocation::KeysRotated => {
            let other = std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../fixtures/test-issuer-k2-jwks.json"
            ))
            .unwrap();
            format!("SELECT tenancy.set_jwks('{REVOCATION_ISSUER}', '{other}'::jsonb)")
        }
        Revocation::ApiKeyRevoked => {
            format!("SELECT tenancy.revoke_api_key(id) FROM tenancy.api_keys WHERE workspace_id = 'ws_{case}'")
        }
    };
    db.batch_execute(&sql).unwrap();
}

/// Registers this file's issuer if it is not yet, with the fixture's keys (a test may have
/// rotated them).
fn revocation_issuer(admin: &mut postgres::Client) {
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM tenancy.issuers WHERE issuer = '{REVOCATION_ISSUER}') THEN
                     PERFORM tenancy.add_issuer('{REVOCATION_ISSUER}', '{}'::jsonb);
                 END IF;
             END $$",
            fixture_jwks()
        ))
        .unwrap();
    admin
        .execute(
            "SELECT tenancy.set_jwks($1, $2::text::jsonb)",
            &[&REVOCATION_ISSUER, &fixture_jwks()],
        )
        .unwrap();
}

#[test]
fn every_statement_kind_stops_serving_a_revoked_identity_in_an_open_transaction() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut admin = admin();
    revocation_issuer(&mut admin);
    let mut refused = Vec::new();
    for revocation in [
        Revocation::MemberDisabled,
        Revocation::SessionRevoked,
        Revocation::WorkspaceDisabled,
        Revocation::KeysRotated,
        Revocation::ApiKeyRevoked,
    ] {
        for statement in [
            Statement::Read,
            Statement::Insert,
            Statement::WorkspaceId,
            Statement::Nearest,
        ] {
            admin
                .execute(
                    "SELECT tenancy.set_jwks($1, $2::text::jsonb)",
                    &[&REVOCATION_ISSUER, &fixture_jwks()],
                )
                .unwrap();
            let case = unique("rev").replace('-', "_");
            let (token, key) = fixtures(&mut admin, &case);
            let mut app = app();
            let mut tx = app.transaction().unwrap();
            match revocation {
                Revocation::ApiKeyRevoked => tx.execute("SELECT set_config('tenancy.api_key', $1, true)", &[&key]),
                _ => tx.execute("SELECT set_config('tenancy.token', $1, true)", &[&token]),
            }
            .unwrap();
            // The table's lock is taken by the first statement and held from then on.
            tx.query("SELECT count(*) FROM documents", &[]).unwrap();
            let prepared = tx.prepare(statement.sql()).unwrap();
            statement
                .run(&mut tx, &prepared)
                .unwrap_or_else(|e| panic!("{revocation:?} × {statement:?}: works before: {e}"));
            revoke(&mut admin, revocation, &case);
            match statement.run(&mut tx, &prepared) {
                Err(e) if sqlstate(&e) == "28000" => refused.push((revocation, statement)),
                Err(e) => panic!("{revocation:?} × {statement:?}: refused with {e}"),
                Ok(()) => panic!("{revocation:?} × {statement:?}: still served after the revocation committed"),
            }
            drop(tx);
        }
    }
    admin
        .execute(
            "SELECT tenancy.set_jwks($1, $2::text::jsonb)",
            &[&REVOCATION_ISSUER, &fixture_jwks()],
        )
        .unwrap();
    assert_eq!(refused.len(), 20);
}

/// A cursor reads its identity when it first needs it: declared (in SQL, or bound as a
/// protocol-level portal, which runs without passing `ExecutorStart` again) under a valid
/// identity, then the identity is revoked and the revocation committed, then the first fetch is
/// refused with 28000.
#[test]
fn a_cursor_fetched_after_a_revocation_is_refused() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut admin = admin();
    revocation_issuer(&mut admin);
    for portal in [false, true] {
        let case = unique("cur").replace('-', "_");
        let (token, _) = fixtures(&mut admin, &case);
        let mut app = app();
        let mut tx = app.transaction().unwrap();
        tx.execute("SELECT set_config('tenancy.token', $1, true)", &[&token])
            .unwrap();
        tx.query("SELECT count(*) FROM documents", &[]).unwrap();
        let outcome = if portal {
            let statement = tx.prepare("SELECT count(*)::int FROM documents").unwrap();
            let bound = tx.bind(&statement, &[]).unwrap();
            revoke(&mut admin, Revocation::MemberDisabled, &case);
            tx.query_portal(&bound, 0).map(|_| ())
        } else {
            tx.batch_execute("DECLARE revoked_cursor CURSOR FOR SELECT count(*) FROM documents")
                .unwrap();
            revoke(&mut admin, Revocation::MemberDisabled, &case);
            tx.query("FETCH ALL FROM revoked_cursor", &[]).map(|_| ())
        };
        match outcome {
            Err(e) if sqlstate(&e) == "28000" => {}
            Err(e) => panic!("portal {portal}: refused with {e}"),
            Ok(()) => panic!("portal {portal}: the first fetch after the revocation served rows"),
        }
    }
}
