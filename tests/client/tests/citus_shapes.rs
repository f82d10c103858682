//! What pg_tenancy does for Citus, tested without Citus (docs/scale-out.md): the identity tables'
//! invalidation triggers are internal (Citus copies none onto the shards of a reference table), so
//! a write that fires no trigger must still drop the identities other backends cached: the hooks
//! of the writing backend see it. The shards themselves (`tenancy.members_102008`) and each kind
//! of statement are covered in one backend by the `#[pg_test]`
//! `src/state/invalidation.rs::writes_that_fire_no_trigger_still_invalidate_identities`.

#[allow(dead_code)] // each test binary uses a different part of it
mod common;

use common::*;

/// Whether the holder of `token` is let in for one transaction (false: 28000).
fn let_in(app: &mut postgres::Client, token: &str) -> bool {
    let mut tx = app.transaction().unwrap();
    let outcome = tx
        .execute("SELECT set_config('tenancy.token', $1, true)", &[&token])
        .and_then(|_| tx.query("SELECT count(*) FROM documents", &[]));
    match outcome {
        Ok(_) => {
            tx.commit().unwrap();
            true
        }
        Err(e) => {
            assert_eq!(sqlstate(&e), "28000", "{e}");
            false
        }
    }
}

#[test]
fn a_write_that_fires_no_trigger_still_drops_cached_identities() {
    let mut admin = admin();
    admin
        .batch_execute("INSERT INTO tenancy.members VALUES ('ws_acme', 'user_untriggered', NULL, NULL)")
        .unwrap();
    let mut app = app();
    // One token throughout: its verification and membership are cached under its digest.
    let member = token("user_untriggered", "org_acme");
    for (how, write) in [
        (
            "session_replication_role = replica (no trigger fires)",
            "SET session_replication_role = replica;
             UPDATE tenancy.members SET disabled_at = now() WHERE user_id = 'user_untriggered';
             RESET session_replication_role;",
        ),
        (
            "the table's triggers disabled, as on a shard without them",
            "ALTER TABLE tenancy.revoked_sessions DISABLE TRIGGER ALL;
             INSERT INTO tenancy.revoked_sessions (sid) VALUES ('session_user_untriggered');
             ALTER TABLE tenancy.revoked_sessions ENABLE TRIGGER ALL;",
        ),
    ] {
        assert!(let_in(&mut app, &member), "{how}: a member is let in (and cached)");
        admin.batch_execute(write).unwrap();
        assert!(!let_in(&mut app, &member), "{how}: refused from the next statement on");
        admin
            .batch_execute(
                "UPDATE tenancy.members SET disabled_at = NULL WHERE user_id = 'user_untriggered';
                 DELETE FROM tenancy.revoked_sessions WHERE sid = 'session_user_untriggered';",
            )
            .unwrap();
    }
}

/// `tenancy.distribute` (sql/distribute.sql) says what is missing instead of half-distributing:
/// without Citus in the database, 55000; for a role that is no superuser, 42501. What it does on
/// a cluster is proven by scripts/citus-test.
#[test]
fn distribute_refuses_without_citus_and_to_ordinary_roles() {
    let mut admin = admin();
    let err = admin.query("SELECT * FROM tenancy.distribute()", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "55000", "{err}");
    let message = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
    assert_eq!(message, "citus is not installed in this database");
    let mut app = app();
    let err = app.query("SELECT * FROM tenancy.distribute()", &[]).unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
}
