//! API keys: create, use, revoke, rotate with grace, expire; workspace isolation; revocation seen
//! by an already-connected session; malformed keys refused before any lookup; secrets never in
//! logs, statement statistics or errors.

#[allow(dead_code)] // each test binary uses a different part of it
mod common;

use common::*;
use std::time::Duration;

/// Creates a key as the superuser and returns (secret, id).
fn create_key(workspace: &str, name: &str, extra: &str) -> (String, String) {
    let mut admin = admin();
    let secret: String = admin
        .query_one(
            &format!("SELECT tenancy.create_api_key($1, $2{extra})"),
            &[&workspace, &name],
        )
        .unwrap()
        .get(0);
    let id: String = admin
        .query_one(
            "SELECT id::text FROM tenancy.api_keys WHERE workspace_id = $1 AND name = $2",
            &[&workspace, &name],
        )
        .unwrap()
        .get(0);
    (secret, id)
}

/// Titles the connection sees with `key` set for one transaction.
fn titles_with(client: &mut postgres::Client, key: &str) -> Result<Vec<String>, postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT set_config('tenancy.api_key', $1, true)", &[&key])?;
    let rows = tx.query("SELECT title FROM documents ORDER BY title", &[])?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[test]
fn a_key_reads_its_workspace_only_and_shows_no_secret() {
    let (secret, id) = create_key(
        "ws_acme",
        "ingest",
        ", role => 'service', permissions => '{documents:write}'",
    );
    assert!(secret.starts_with("tnk_") && secret.len() == 53, "{secret}");
    let mut app = app();
    assert_eq!(titles_with(&mut app, &secret).unwrap(), ["acme budget", "acme plan"]);
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT set_config('tenancy.api_key', $1, true)", &[&secret])
        .unwrap();
    let (ws, user, role, allowed): (String, String, String, bool) = tx
        .query_one(
            "SELECT tenancy.workspace_id(), tenancy.user_id(), tenancy.role(), tenancy.has_permission('documents:write')",
            &[],
        )
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .unwrap();
    assert_eq!(
        (ws.as_str(), user, role.as_str(), allowed),
        ("ws_acme", format!("api_key:{id}"), "service", true)
    );
    let foreign: i64 = tx
        .query_one("SELECT count(*) FROM documents WHERE workspace_id <> 'ws_acme'", &[])
        .unwrap()
        .get(0);
    assert_eq!(foreign, 0);
    drop(tx);

    let mut admin = admin();
    let columns: Vec<String> = first_column(
        &mut admin,
        "SELECT column_name::text FROM information_schema.columns
              WHERE table_schema = 'tenancy' AND table_name = 'api_keys' ORDER BY ordinal_position",
        &[],
    );
    assert!(
        !columns.iter().any(|c| c.contains("digest") || c.contains("secret")),
        "{columns:?}"
    );
    let prefix: String = admin
        .query_one(
            "SELECT key_prefix FROM tenancy.api_keys WHERE id = $1::text::uuid",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(secret.starts_with(&prefix) && prefix.len() == 12, "{prefix}");
    let err = app.query("SELECT * FROM tenancy._api_key_store", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "the store is not readable: {err}");
}

#[test]
fn revocation_reaches_an_already_connected_session() {
    let (secret, id) = create_key("ws_globex", "revoked-later", "");
    let mut app = app();
    app.execute("SELECT set_config('tenancy.api_key', $1, false)", &[&secret])
        .unwrap();
    assert_eq!(app.query("SELECT 1 FROM documents", &[]).unwrap().len(), 1);
    admin()
        .execute("SELECT tenancy.revoke_api_key($1::text::uuid)", &[&id])
        .unwrap();
    let err = app.query("SELECT 1 FROM documents", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    assert_eq!(err.as_db_error().unwrap().message(), "api key has been revoked");
}

#[test]
fn rotation_keeps_the_old_secret_for_the_grace_period_only() {
    let (old, id) = create_key("ws_acme", "rotated", "");
    let new: String = admin()
        .query_one("SELECT tenancy.rotate_api_key($1::text::uuid, '2 seconds')", &[&id])
        .unwrap()
        .get(0);
    assert_ne!(old, new);
    let mut app = app();
    assert_eq!(titles_with(&mut app, &new).unwrap().len(), 2);
    assert_eq!(
        titles_with(&mut app, &old).unwrap().len(),
        2,
        "old secret inside its grace"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let err = titles_with(&mut app, &old).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "old secret after its grace: {err}");
    assert_eq!(titles_with(&mut app, &new).unwrap().len(), 2);

    let newest: String = admin()
        .query_one("SELECT tenancy.rotate_api_key($1::text::uuid)", &[&id])
        .unwrap()
        .get(0);
    let err = titles_with(&mut app, &new).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "no grace by default: {err}");
    assert_eq!(titles_with(&mut app, &newest).unwrap().len(), 2);
}

#[test]
fn an_expired_key_stops_working() {
    let (secret, _) = create_key(
        "ws_initech",
        "short-lived",
        ", expires_at => now() + interval '3 seconds'",
    );
    let mut app = app();
    assert_eq!(titles_with(&mut app, &secret).unwrap(), ["initech memo"]);
    std::thread::sleep(Duration::from_millis(3500));
    let err = titles_with(&mut app, &secret).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    assert_eq!(err.as_db_error().unwrap().message(), "api key has expired");
}

#[test]
fn malformed_keys_fail_at_set_with_a_clear_error() {
    let (secret, _) = create_key("ws_acme", "for-corruption", "");
    let mut typo = secret.clone().into_bytes();
    typo[20] = if typo[20] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).unwrap();
    let mut app = app();
    for (name, bad) in [
        ("wrong prefix", secret.replacen("tnk_", "key_", 1)),
        ("bad checksum", typo),
        ("truncated", secret[..40].to_string()),
        ("1 MiB", format!("tnk_{}", "A".repeat(1 << 20))),
    ] {
        let err = app
            .execute("SELECT set_config('tenancy.api_key', $1, true)", &[&bad])
            .unwrap_err();
        assert_eq!(sqlstate(&err), "28000", "{name}: {err}");
        let db = err.as_db_error().unwrap();
        assert_eq!(db.message(), "api key is malformed", "{name}");
        assert!(
            !format!("{db:?}").contains(&secret[10..30]),
            "{name}: the key is echoed"
        );
    }
}

#[test]
fn a_key_and_a_token_together_are_an_error() {
    let (secret, _) = create_key("ws_acme", "not-both", "");
    let mut app = app();
    let mut tx = app.transaction().unwrap();
    set_local_token(&mut tx, "user_alice", "org_acme");
    let err = tx
        .execute("SELECT set_config('tenancy.api_key', $1, true)", &[&secret])
        .unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    assert_eq!(
        err.as_db_error().unwrap().message(),
        "both tenancy.token and tenancy.api_key are set"
    );
}

#[test]
fn a_workspace_manager_creates_keys_for_its_own_workspace_only() {
    let mut admin = admin();
    admin
        .batch_execute(
            "INSERT INTO tenancy.members VALUES ('ws_acme', 'user_manager', NULL, NULL) ON CONFLICT DO NOTHING",
        )
        .unwrap();
    let now = unix_now();
    let manager = mint(
        &serde_json::json!({"iss": ISSUER, "sub": "user_manager", "org_id": "org_acme",
        "permissions": ["api_keys:manage"], "exp": now + 300}),
    );
    let mut app = app();
    let mut tx = app.transaction().unwrap();
    tx.execute("SELECT set_config('tenancy.token', $1, true)", &[&manager])
        .unwrap();
    let secret: String = tx
        .query_one("SELECT tenancy.create_api_key('ws_acme', 'made-by-manager')", &[])
        .unwrap()
        .get(0);
    assert!(secret.starts_with("tnk_"));
    let err = tx
        .query_one("SELECT tenancy.create_api_key('ws_globex', 'foreign')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    drop(tx);
    let err = refusal_as(
        &mut app,
        "user_alice",
        "org_acme",
        "SELECT tenancy.create_api_key('ws_acme', 'no-permission')",
    );
    assert_eq!(sqlstate(&err), "42501", "{err}");
}

#[test]
fn secrets_never_reach_logs_or_statement_statistics() {
    let (secret, _) = create_key("ws_acme", "kept-secret", "");
    let mut app = app();
    app.batch_execute(&format!("SET tenancy.api_key = '{secret}'")).unwrap();
    app.batch_execute("RESET tenancy.api_key").unwrap();
    let bad = format!("{}x", &secret[..52]);
    assert!(app.batch_execute(&format!("SET tenancy.api_key = '{bad}'")).is_err());
    let mut admin = admin();
    admin
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .unwrap();
    let leaked: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_statements WHERE query LIKE '%' || $1 || '%'",
            &[&&secret[4..40]],
        )
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0, "pg_stat_statements keeps no key");
    if let Ok(path) = std::env::var("PG_TENANCY_SERVER_LOG") {
        let log = std::fs::read_to_string(path).unwrap();
        assert!(!log.contains(&secret[4..40]), "a key reached the server log");
        assert!(!log.contains(&bad[4..40]), "a malformed key reached the server log");
    }
}

#[test]
fn a_key_works_in_parallel_plans_and_its_use_is_recorded() {
    let (secret, id) = create_key("ws_acme", "parallel-reader", "");
    let mut app = app();
    app.batch_execute(
        "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
         SET max_parallel_workers_per_gather = 2; SET enable_indexscan = off; SET enable_bitmapscan = off",
    )
    .unwrap();
    app.execute("SELECT set_config('tenancy.api_key', $1, false)", &[&secret])
        .unwrap();
    let plan: Vec<String> = first_column(&mut app, "EXPLAIN (COSTS OFF) SELECT count(*) FROM documents", &[]);
    assert!(plan.iter().any(|l| l.contains("Gather")), "{plan:?}");
    let count: i64 = app.query_one("SELECT count(*) FROM documents", &[]).unwrap().get(0);
    assert_eq!(count, 2, "the first identity read happens inside the parallel plan");
    let titles = app.query("SELECT title FROM documents WHERE id > 0", &[]).unwrap();
    assert_eq!(titles.len(), 2);
    app.batch_execute("SET max_parallel_workers_per_gather = 0").unwrap();
    app.query("SELECT tenancy.workspace_id()", &[]).unwrap();
    let used: bool = admin()
        .query_one(
            "SELECT last_used_at IS NOT NULL FROM tenancy.api_keys WHERE id = $1::text::uuid",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(used, "last_used_at recorded by a statement that can write");
}
