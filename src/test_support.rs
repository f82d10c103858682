//! What the `#[pg_test]`s beside the code share: the SQLSTATE a statement fails with, and a
//! signed test token with the issuer and members it needs. Compiled only for tests.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pgrx::prelude::*;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};

/// Issuer of `test_token`.
pub const TEST_ISSUER: &str = "https://auth.test/user_management/client_TEST";

/// Runs `sql` inside a subtransaction and returns the SQLSTATE it failed with, if any.
pub fn sqlstate_of(sql: &str) -> Option<String> {
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

/// A token for `sub` in `org`, signed with the repository's test key.
pub fn test_token(sub: &str, org: &str) -> String {
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

/// Registers the test issuer and two workspaces with a member each: `user_a` in `ws_a`
/// (organization `org_a`) and `user_b` in `ws_b`.
pub fn register_test_members() {
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
