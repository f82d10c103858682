//! What pg_tenancy does for Citus, tested without Citus (docs/scale-out.md): on a worker, a write
//! to an identity table arrives on its shard (`tenancy.members_102008` for `tenancy.members`), and
//! the shard's invalidation trigger must drop the identities cached from the table the shard
//! belongs to.

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
fn a_write_to_a_shard_of_an_identity_table_drops_cached_identities() {
    let mut admin = admin();
    admin
        .batch_execute(
            "INSERT INTO tenancy.members VALUES ('ws_acme', 'user_sharded', NULL, NULL);
             CREATE TABLE tenancy.members_102008 (LIKE tenancy.members);
             CREATE TRIGGER invalidate_identities AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.members_102008
                 FOR EACH STATEMENT EXECUTE FUNCTION tenancy.invalidate_identities();",
        )
        .unwrap();
    let mut app = app();
    // One token throughout: its verification and membership are cached under its digest.
    let sharded = token("user_sharded", "org_acme");
    assert!(let_in(&mut app, &sharded), "a member is let in (and cached)");

    // A change to the table that sends no invalidation (as a worker's shard write does for the
    // table itself): statement triggers do not fire with session_replication_role = replica.
    admin
        .batch_execute(
            "SET session_replication_role = replica;
             UPDATE tenancy.members SET disabled_at = now() WHERE user_id = 'user_sharded';
             RESET session_replication_role;",
        )
        .unwrap();
    assert!(
        let_in(&mut app, &sharded),
        "without an invalidation the cached membership still lets the user in (so the next step proves something)"
    );

    // The write on the shard: its trigger names the base table too.
    admin
        .batch_execute("INSERT INTO tenancy.members_102008 VALUES ('ws_acme', 'user_sharded', NULL, now())")
        .unwrap();
    assert!(!let_in(&mut app, &sharded), "refused from the next statement on");
    admin.batch_execute("DROP TABLE tenancy.members_102008").unwrap();
}
