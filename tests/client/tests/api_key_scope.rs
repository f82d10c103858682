//! API keys carry no more than whoever made them. Attacks as a workspace member would make them,
//! whose token carries `api_keys:manage` and role `member`: permissions beyond its own, a higher
//! role, another member's user, taking over or revoking an administrator's broader key, a key
//! minting a broader key, and a key outliving the member who made it. Each is refused (42501) and
//! recorded as a denial; the legitimate forms keep working, and every create, rotate and revoke
//! shows who did it in `tenancy.api_keys`.

#[allow(dead_code)] // each test binary uses a different part of it
mod common;

use common::*;
use postgres::Client;
use serde_json::json;
use std::sync::OnceLock;

/// Members of ws_acme for these tests, and a table whose rows belong to single users.
fn fixtures() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        setup();
        admin()
            .batch_execute(&format!(
                "INSERT INTO tenancy.members VALUES ('ws_acme', 'user_keymaker', NULL, NULL),
                                                    ('ws_acme', 'user_victim', NULL, NULL),
                                                    ('ws_acme', 'user_minter', NULL, NULL),
                                                    ('ws_acme', 'user_leaver', NULL, NULL)
                     ON CONFLICT DO NOTHING;
                 CREATE TABLE IF NOT EXISTS private_notes (
                     id bigserial PRIMARY KEY, workspace_id text NOT NULL, owner_id text NOT NULL, body text);
                 CREATE INDEX IF NOT EXISTS private_notes_ws ON private_notes (workspace_id);
                 INSERT INTO private_notes (workspace_id, owner_id, body)
                     VALUES ('ws_acme', 'user_victim', 'victim diary'), ('ws_acme', 'user_keymaker', 'my notes');
                 SELECT tenancy.protect('private_notes', user_column => 'owner_id');
                 GRANT SELECT ON private_notes TO {APP_ROLE};"
            ))
            .unwrap();
    });
}

/// The key maker's token: role member, permissions api_keys:manage and documents:read.
fn keymaker_token() -> String {
    manager_token("user_keymaker")
}

/// A token of member `sub` of ws_acme: role member, permissions api_keys:manage and documents:read.
fn manager_token(sub: &str) -> String {
    let now = unix_now();
    mint(
        &json!({"iss": ISSUER, "sub": sub, "org_id": "org_acme", "role": "member",
                 "sid": format!("session_{sub}"), "permissions": ["api_keys:manage", "documents:read"],
                 "iat": now, "exp": now + 300}),
    )
}

/// Runs `sql` in a transaction whose credential is `setting` = `value` (bound), tagged with
/// `application_name` = `tag`; returns the first column of the first row, or the error.
fn as_credential(setting: &str, value: &str, tag: &str, sql: &str) -> Result<Option<String>, postgres::Error> {
    let mut app = app();
    app.execute("SELECT set_config('application_name', $1, false)", &[&tag])?;
    let mut tx = app.transaction()?;
    tx.execute("SELECT set_config($1, $2, true)", &[&setting, &value])?;
    let row = tx.query_opt(sql, &[])?;
    tx.commit()?;
    Ok(row.and_then(|r| r.get(0)))
}

/// The error of a statement that must fail.
fn refused(setting: &str, value: &str, tag: &str, sql: &str) -> postgres::Error {
    as_credential(setting, value, tag, sql).expect_err(sql)
}

/// Creates a key as the superuser: (secret, id).
fn admin_key(name: &str, extra: &str) -> (String, String) {
    let mut admin = admin();
    let secret: String = admin
        .query_one(
            &format!("SELECT tenancy.create_api_key('ws_acme', $1{extra})"),
            &[&name],
        )
        .unwrap()
        .get(0);
    (secret, key_id(&mut admin, name))
}

/// The id of the key named `name`.
fn key_id(admin: &mut Client, name: &str) -> String {
    admin
        .query_one("SELECT id::text FROM tenancy.api_keys WHERE name = $1", &[&name])
        .unwrap()
        .get(0)
}

/// The denial reasons recorded for connections tagged `tag`.
fn denials(tag: &str) -> Vec<String> {
    first_column(
        &mut admin(),
        "SELECT reason FROM tenancy.denials WHERE application_name = $1 ORDER BY seq",
        &[&tag],
    )
}

#[test]
fn a_member_cannot_mint_a_key_beyond_its_own_rights() {
    fixtures();
    let tag = &unique("scope_create");
    let token = keymaker_token();
    for (what, args) in [
        ("a higher role", "role => 'owner'"),
        (
            "permissions it does not hold",
            "permissions => '{billing:admin,documents:delete}'",
        ),
        (
            "one permission more",
            "permissions => '{documents:read,documents:write}'",
        ),
        ("another member's user", "user_id => 'user_victim'"),
        (
            "all of it at once",
            "role => 'owner', permissions => '{billing:admin,documents:delete}', user_id => 'user_victim'",
        ),
    ] {
        let sql = format!("SELECT tenancy.create_api_key('ws_acme', 'escalation', {args})");
        let err = refused("tenancy.token", &token, tag, &sql);
        assert_eq!(sqlstate(&err), "42501", "{what}: {err}");
        let message = err.as_db_error().unwrap().message().to_string();
        assert!(message.contains("beyond its creator's rights"), "{what}: {message}");
    }
    assert_eq!(
        denials(tag),
        vec!["admin_refused"; 5],
        "each refusal is a recorded denial"
    );
    let err = refused(
        "tenancy.token",
        &token,
        tag,
        "SELECT tenancy.create_api_key('ws_acme', '', permissions => '{billing:admin}')",
    );
    assert_eq!(sqlstate(&err), "22023", "a malformed argument stays 22023: {err}");
    let mut admin = admin();
    let made: i64 = admin
        .query_one("SELECT count(*) FROM tenancy.api_keys WHERE name = 'escalation'", &[])
        .unwrap()
        .get(0);
    assert_eq!(made, 0);

    // Within its rights: its own role, a subset of its permissions, its own user or none.
    let secret = as_credential(
        "tenancy.token",
        &token,
        tag,
        "SELECT tenancy.create_api_key('ws_acme', 'keymaker own', role => 'member',
                                       permissions => '{documents:read}', user_id => 'user_keymaker')",
    )
    .unwrap()
    .unwrap();
    let seen = as_credential(
        "tenancy.api_key",
        &secret,
        tag,
        "SELECT tenancy.user_id() || ' ' || tenancy.role() || ' ' || string_agg(body, ',' ORDER BY body) FROM private_notes",
    )
    .unwrap();
    assert_eq!(
        seen.as_deref(),
        Some("user_keymaker member my notes"),
        "never the victim's rows"
    );
    let created_by: String = admin
        .query_one(
            "SELECT created_by FROM tenancy.api_keys WHERE name = 'keymaker own'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(created_by, "user_keymaker");
}

#[test]
fn a_member_cannot_take_over_or_revoke_a_broader_key() {
    fixtures();
    let tag = &unique("scope_takeover");
    let token = keymaker_token();
    let (service_secret, service_id) = admin_key(
        "admin service",
        ", role => 'admin', permissions => '{documents:read,documents:delete,api_keys:manage}'",
    );
    for sql in [
        format!("SELECT tenancy.rotate_api_key('{service_id}')"),
        format!("SELECT tenancy.rotate_api_key('{service_id}', '1 day')"),
        format!("SELECT tenancy.revoke_api_key('{service_id}')::text"),
    ] {
        let err = refused("tenancy.token", &token, tag, &sql);
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err}");
    }
    assert_eq!(denials(tag), vec!["admin_refused"; 3]);
    let still = as_credential("tenancy.api_key", &service_secret, tag, "SELECT tenancy.role()").unwrap();
    assert_eq!(still.as_deref(), Some("admin"), "the administrator's key is untouched");

    // Its own key, within its rights: rotated and revoked, each recorded with who did it.
    let own = as_credential(
        "tenancy.token",
        &token,
        tag,
        "SELECT tenancy.create_api_key('ws_acme', 'keymaker rotates', permissions => '{documents:read}')",
    )
    .unwrap()
    .unwrap();
    let mut admin = admin();
    let own_id = key_id(&mut admin, "keymaker rotates");
    let rotated = as_credential(
        "tenancy.token",
        &token,
        tag,
        &format!("SELECT tenancy.rotate_api_key('{own_id}')"),
    )
    .unwrap()
    .unwrap();
    assert_ne!(rotated, own);
    as_credential(
        "tenancy.token",
        &token,
        tag,
        &format!("SELECT tenancy.revoke_api_key('{own_id}')::text"),
    )
    .unwrap();
    let row = admin
        .query_one(
            "SELECT created_by, rotated_by, revoked_by, rotated_at IS NOT NULL FROM tenancy.api_keys WHERE id = $1::text::uuid",
            &[&own_id],
        )
        .unwrap();
    let seen: (String, String, String, bool) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        seen,
        (
            "user_keymaker".into(),
            "user_keymaker".into(),
            "user_keymaker".into(),
            true
        )
    );
    // An administrator keeps full control, and is recorded as a database role.
    admin
        .execute("SELECT tenancy.rotate_api_key($1::text::uuid)", &[&service_id])
        .unwrap();
    let rotated_by: String = admin
        .query_one(
            "SELECT rotated_by FROM tenancy.api_keys WHERE id = $1::text::uuid",
            &[&service_id],
        )
        .unwrap()
        .get(0);
    assert_eq!(rotated_by, "role:postgres");
}

#[test]
fn a_key_mints_keys_only_within_its_own_rights() {
    fixtures();
    let tag = &unique("scope_key_mints");
    let minter = as_credential(
        "tenancy.token",
        &manager_token("user_minter"),
        tag,
        "SELECT tenancy.create_api_key('ws_acme', 'minting key', permissions => '{api_keys:manage,documents:read}')",
    )
    .unwrap()
    .unwrap();
    for args in [
        "permissions => '{documents:delete}'",
        "role => 'owner'",
        "user_id => 'user_victim'",
    ] {
        let sql = format!("SELECT tenancy.create_api_key('ws_acme', 'broader child', {args})");
        let err = refused("tenancy.api_key", &minter, tag, &sql);
        assert_eq!(sqlstate(&err), "42501", "{args}: {err}");
    }
    let child = as_credential(
        "tenancy.api_key",
        &minter,
        tag,
        "SELECT tenancy.create_api_key('ws_acme', 'narrow child', permissions => '{documents:read}')",
    )
    .unwrap()
    .unwrap();
    let mut admin = admin();
    let minter_id = key_id(&mut admin, "minting key");
    let created_by: String = admin
        .query_one(
            "SELECT created_by FROM tenancy.api_keys WHERE name = 'narrow child'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(created_by, format!("api_key:{minter_id}"));
    // The child stays tied to the member the chain started from.
    admin
        .execute(
            "UPDATE tenancy.members SET disabled_at = now() WHERE user_id = 'user_minter'",
            &[],
        )
        .unwrap();
    let refused_child = as_credential("tenancy.api_key", &child, tag, "SELECT tenancy.workspace_id()").unwrap_err();
    admin
        .execute(
            "UPDATE tenancy.members SET disabled_at = NULL WHERE user_id = 'user_minter'",
            &[],
        )
        .unwrap();
    assert_eq!(sqlstate(&refused_child), "28000", "{refused_child}");
}

#[test]
fn a_key_made_by_a_member_stops_when_the_member_is_disabled() {
    fixtures();
    let tag = &unique("scope_disabled");
    let leaver = manager_token("user_leaver");
    let key = as_credential(
        "tenancy.token",
        &leaver,
        tag,
        "SELECT tenancy.create_api_key('ws_acme', 'leaver key', permissions => '{documents:read}')",
    )
    .unwrap()
    .unwrap();
    let read = "SELECT count(*)::text FROM documents";
    assert_eq!(
        as_credential("tenancy.api_key", &key, tag, read).unwrap().as_deref(),
        Some("2")
    );
    let mut admin = admin();
    admin
        .execute(
            "UPDATE tenancy.members SET disabled_at = now() WHERE user_id = 'user_leaver'",
            &[],
        )
        .unwrap();
    let err = as_credential("tenancy.api_key", &key, tag, read).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    admin
        .execute("DELETE FROM tenancy.members WHERE user_id = 'user_leaver'", &[])
        .unwrap();
    let err = as_credential("tenancy.api_key", &key, tag, read).unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "removed altogether: {err}");
}
