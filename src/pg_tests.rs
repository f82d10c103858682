//! `#[pg_test]`s: behaviour that needs a backend, one table-driven case list per concern.

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use pgrx::prelude::*;
    use ring::rand::SystemRandom;
    use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};

    /// Runs `sql` inside a subtransaction and returns the SQLSTATE it failed with, if any.
    fn sqlstate_of(sql: &str) -> Option<String> {
        let quoted = pgrx::spi::quote_literal(sql);
        Spi::get_one::<String>(&format!(
            "DO $$ BEGIN EXECUTE {quoted}; RAISE EXCEPTION USING ERRCODE = '00000'; \
             EXCEPTION WHEN OTHERS THEN PERFORM set_config('pg_tenancy_test.state', SQLSTATE, true); END $$; \
             SELECT current_setting('pg_tenancy_test.state')"
        ))
        .ok()
        .flatten()
        .filter(|s| s != "00000")
    }

    #[pg_test]
    fn every_identity_function_refuses_without_a_token() {
        for function in [
            "tenancy.workspace_id()",
            "tenancy.user_id()",
            "tenancy.role()",
            "tenancy.permissions()",
            "tenancy.has_permission('x')",
            "tenancy.session_id()",
            "tenancy.claims()",
            "tenancy.identity()",
        ] {
            assert_eq!(
                sqlstate_of(&format!("SELECT {function}")).as_deref(),
                Some("28000"),
                "{function}"
            );
        }
    }

    #[pg_test]
    fn derived_settings_refuse_every_assignment() {
        for attempt in [
            "SET tenancy.workspace_id = 'w'",
            "SET LOCAL tenancy.user_id = 'u'",
            "SELECT set_config('tenancy.role', 'admin', false)",
        ] {
            assert_eq!(sqlstate_of(attempt).as_deref(), Some("42501"), "{attempt}");
        }
    }

    #[pg_test]
    fn the_real_workos_jwks_passes_the_key_policy() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/workos/real-jwks.json");
        let jwks = std::fs::read_to_string(path).expect("shared test data beside the repository");
        let kids = Spi::get_one::<Vec<String>>(&format!(
            "SELECT tenancy._vet_jwks({}::jsonb, '{{RS256}}')",
            pgrx::spi::quote_literal(&jwks)
        ))
        .unwrap()
        .unwrap();
        assert_eq!(kids, vec!["sso_oidc_key_pair_01JXWR786PFV2T6FAANMCKF8TT"]);
    }

    #[pg_test]
    fn the_real_workos_token_is_refused_as_expired_today() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/workos");
        let jwks = std::fs::read_to_string(format!("{dir}/real-jwks.json")).unwrap();
        let token = std::fs::read_to_string(format!("{dir}/real-access-token.jwt")).unwrap();
        Spi::run(&format!(
            "SELECT tenancy.add_issuer('https://api.workos.com/user_management/client_01JXWR78G1RS943SJZG9G9KFDW', {}::jsonb)",
            pgrx::spi::quote_literal(&jwks)
        ))
        .unwrap();
        let set = format!("SET tenancy.token = {}", pgrx::spi::quote_literal(token.trim()));
        assert_eq!(sqlstate_of(&set).as_deref(), Some("28000"));
    }

    #[pg_test]
    fn token_shape_is_checked_at_set() {
        for bad in ["a.b", "a.b.c.d", "a..", "x".repeat(20_000).as_str()] {
            let set = format!("SET tenancy.token = {}", pgrx::spi::quote_literal(bad));
            assert_eq!(
                sqlstate_of(&set).as_deref(),
                Some("28000"),
                "{}",
                &bad[..bad.len().min(20)]
            );
        }
        assert_eq!(
            Spi::get_one::<String>("SELECT current_setting('tenancy.token')")
                .unwrap()
                .as_deref(),
            Some("")
        );
    }

    /// A token for `sub` in `org`, signed with the repository's test key.
    fn test_token(sub: &str, org: &str) -> String {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let key = RsaKeyPair::from_pkcs8(&std::fs::read(format!("{fixtures}/test-issuer-rsa.pk8")).unwrap()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({"iss": TEST_ISSUER, "sub": sub, "org_id": org, "iat": now, "exp": now + 300});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; key.public().modulus_len()];
        key.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            input.as_bytes(),
            &mut signature,
        )
        .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// Issuer of `test_token`.
    const TEST_ISSUER: &str = "https://auth.test/user_management/client_TEST";

    /// Registers the test issuer and two workspaces with a member each: `user_a` in `ws_a`
    /// (organization `org_a`) and `user_b` in `ws_b`.
    fn register_test_members() {
        let jwks = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/test-issuer-jwks.json"
        ))
        .unwrap();
        Spi::run(&format!(
            "SELECT tenancy.add_issuer('{TEST_ISSUER}', {}::jsonb);
             INSERT INTO tenancy.workspaces (workspace_id, organization_id, name) VALUES ('ws_a', 'org_a', 'A'), ('ws_b', 'org_b', 'B');
             INSERT INTO tenancy.members (workspace_id, user_id) VALUES ('ws_a', 'user_a'), ('ws_b', 'user_b')",
            pgrx::spi::quote_literal(jwks)
        ))
        .unwrap();
    }

    /// Makes the next identity change leave folded plans valid (see `folding::skip_next_invalidation`).
    #[pg_extern]
    fn skip_next_plan_invalidation() {
        crate::surface::folding::skip_next_invalidation();
    }

    #[pg_test]
    fn a_plan_that_escaped_invalidation_is_refused() {
        register_test_members();
        Spi::run(&format!(
            "SET tenancy.token = {};
             SET plan_cache_mode = force_generic_plan;
             PREPARE folded AS SELECT tenancy.workspace_id() FROM (VALUES (1)) v",
            pgrx::spi::quote_literal(test_token("user_a", "org_a"))
        ))
        .unwrap();
        Spi::run("EXECUTE folded").unwrap();
        Spi::run(&format!(
            "SELECT tests.skip_next_plan_invalidation(); SET tenancy.token = {}",
            pgrx::spi::quote_literal(test_token("user_b", "org_b"))
        ))
        .unwrap();
        assert_eq!(sqlstate_of("EXECUTE folded").as_deref(), Some("28000"));
        assert_eq!(
            Spi::get_one::<String>("SELECT tenancy.workspace_id() FROM (VALUES (1)) v")
                .unwrap()
                .as_deref(),
            Some("ws_b"),
            "a new plan folds the current identity"
        );
    }

    /// The identity epoch after the current command's invalidations were taken in.
    fn epoch_after_command() -> u64 {
        unsafe { pg_sys::CommandCounterIncrement() };
        crate::state::counters::epoch()
    }

    #[pg_test]
    fn writes_that_fire_no_trigger_still_invalidate_identities() {
        // A Citus shard of an identity table carries no trigger (Citus copies only explicit ones);
        // the identity tables' own triggers are disabled here, so only the hooks can tell.
        Spi::run(
            "CREATE TABLE tenancy.members_102008 (LIKE tenancy.members);
             CREATE TABLE public.unrelated (LIKE tenancy.members);
             ALTER TABLE tenancy.members DISABLE TRIGGER ALL;
             ALTER TABLE tenancy.revoked_sessions DISABLE TRIGGER ALL",
        )
        .unwrap();
        for (statement, invalidates) in [
            (
                "INSERT INTO tenancy.members_102008 VALUES ('ws_a', 'user_a', NULL, NULL)",
                true,
            ),
            ("UPDATE tenancy.members_102008 SET disabled_at = now()", true),
            ("DELETE FROM tenancy.members_102008", true),
            (
                "INSERT INTO tenancy.members VALUES ('ws_x', 'user_x', NULL, NULL)",
                true,
            ),
            (
                "WITH d AS (DELETE FROM tenancy.members WHERE user_id = 'user_x' RETURNING 1) SELECT count(*) FROM d",
                true,
            ),
            (
                "MERGE INTO tenancy.members_102008 m USING (VALUES ('ws_a', 'user_a')) v(w, u) ON m.user_id = v.u
                 WHEN NOT MATCHED THEN INSERT VALUES (v.w, v.u, NULL, NULL)",
                true,
            ),
            ("COPY tenancy.members_102008 FROM '/dev/null'", true),
            ("TRUNCATE tenancy.members_102008", true),
            ("TRUNCATE tenancy.revoked_sessions", true),
            ("SELECT count(*) FROM tenancy.members", false),
            (
                "INSERT INTO public.unrelated VALUES ('ws_a', 'user_a', NULL, NULL)",
                false,
            ),
            ("COPY public.unrelated FROM '/dev/null'", false),
            ("COPY tenancy.members TO '/dev/null'", false),
            ("TRUNCATE public.unrelated", false),
        ] {
            let before = epoch_after_command();
            Spi::run(statement).unwrap();
            let after = epoch_after_command();
            assert_eq!(after > before, invalidates, "{statement}");
        }
    }

    #[pg_test]
    fn the_invalidation_triggers_are_internal_and_recreatable() {
        let name = "SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'tenancy.members'::regclass
                     AND tgfoid = 'tenancy.invalidate_identities()'::regprocedure";
        let name = Spi::get_one::<String>(name).unwrap().unwrap_or_default();
        assert!(name.starts_with("invalidate_identities_"), "{name}");
        // What Citus counts before it makes a table a reference table: explicit triggers.
        let explicit = "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                         WHERE c.relnamespace = 'tenancy'::regnamespace AND NOT t.tgisinternal AND t.tgparentid = 0
                           AND c.relname IN ('issuers', 'workspaces', 'members', 'revoked_sessions', '_api_key_store')";
        assert_eq!(Spi::get_one::<i64>(explicit).unwrap(), Some(0));
        let internal = "SELECT count(*) FROM pg_trigger WHERE tgisinternal
                         AND tgfoid = 'tenancy.invalidate_identities()'::regprocedure";
        assert_eq!(Spi::get_one::<i64>(internal).unwrap(), Some(5));
        let missing = "SELECT count(*) FROM tenancy.coverage WHERE finding = 'invalidation_trigger_missing'";
        assert_eq!(Spi::get_one::<i64>(missing).unwrap(), Some(0));
        let drop = |table: &str| {
            format!(
                "DO $$ BEGIN EXECUTE (SELECT format('DROP TRIGGER %I ON tenancy.{table}', tgname) FROM pg_trigger
                   WHERE tgrelid = 'tenancy.{table}'::regclass AND tgfoid = 'tenancy.invalidate_identities()'::regprocedure); END $$"
            )
        };
        Spi::run(&drop("members")).unwrap();
        assert_eq!(Spi::get_one::<i64>(missing).unwrap(), Some(1), "coverage reports it");
        Spi::run("SELECT tenancy._create_invalidation_trigger('members')").unwrap();
        Spi::run("SELECT tenancy._create_invalidation_trigger('members')").unwrap();
        assert_eq!(Spi::get_one::<i64>(internal).unwrap(), Some(5), "recreated once");
        assert_eq!(Spi::get_one::<i64>(missing).unwrap(), Some(0));
        for (call, code) in [
            ("SELECT tenancy._create_invalidation_trigger('documents')", "22023"),
            ("SELECT tenancy._create_invalidation_trigger('members_102008')", "22023"),
        ] {
            assert_eq!(sqlstate_of(call).as_deref(), Some(code), "{call}");
        }
        Spi::run(&drop("issuers")).unwrap();
        Spi::run(
            "CREATE ROLE tenancy_test_not_owner;
             GRANT USAGE ON SCHEMA tenancy TO tenancy_test_not_owner;
             GRANT EXECUTE ON FUNCTION tenancy._create_invalidation_trigger(text) TO tenancy_test_not_owner;
             SET ROLE tenancy_test_not_owner",
        )
        .unwrap();

        assert_eq!(
            sqlstate_of("SELECT tenancy._create_invalidation_trigger('issuers')").as_deref(),
            Some("42501"),
            "only the owner"
        );
        Spi::run("RESET ROLE").unwrap();
    }

    #[pg_test]
    fn a_table_without_statistics_has_no_size_estimate() {
        Spi::run("CREATE TABLE public.unanalyzed (workspace_id text)").unwrap();
        let rel = Spi::get_one::<pg_sys::Oid>("SELECT 'public.unanalyzed'::regclass::oid")
            .unwrap()
            .unwrap();
        let estimate =
            || unsafe { crate::surface::workspace_sizes::read_statistics(rel, "workspace_id") }.map(|s| s.of("ws_a"));
        assert_eq!(estimate(), None, "no statistics row");
        Spi::run("INSERT INTO public.unanalyzed SELECT 'ws_a' FROM generate_series(1, 30); ANALYZE public.unanalyzed")
            .unwrap();
        unsafe { pg_sys::CommandCounterIncrement() };
        assert_eq!(estimate().map(f64::round), Some(30.0), "after ANALYZE");
    }
}
