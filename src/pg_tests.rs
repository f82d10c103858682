//! `#[pg_test]`s: behaviour that needs a backend, one table-driven case list per concern.

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

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
}
