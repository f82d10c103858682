//! The real WorkOS access token and JWKS in `../shared/testdata/workos/`.

use super::*;
use crate::verify::{verify, Reason};

/// The token's issuer and the trust store built from the real JWKS.
fn real() -> (String, Vec<TrustedIssuer>) {
    let token = std::fs::read_to_string(shared("workos/real-access-token.jwt")).unwrap();
    let jwks = std::fs::read(shared("workos/real-jwks.json")).unwrap();
    let keys = KeySet::parse(&jwks, &[Algorithm::Rs256]).expect("the real WorkOS JWKS loads");
    let issuer = "https://api.workos.com/user_management/client_01JXWR78G1RS943SJZG9G9KFDW";
    let trust = vec![TrustedIssuer {
        issuer: issuer.into(),
        audience: None,
        algorithms: vec![Algorithm::Rs256],
        keys,
        allows_no_organization: false,
    }];
    (token.trim().to_owned(), trust)
}

#[test]
fn accepted_inside_its_lifetime() {
    let (token, trust) = real();
    let claims = verify(
        &token,
        trust.as_slice(),
        TimeRules {
            now: 1_757_144_400,
            leeway: 30,
        },
    )
    .expect("verifies");
    assert_eq!(claims.sub, "user_01K4EZC631GGHFKB5VXEARPB0G");
    assert_eq!(claims.sid.as_deref(), Some("session_01K4EZC6PYSEB5JWSKFDZFGWDB"));
    assert_eq!(
        claims.iss,
        "https://api.workos.com/user_management/client_01JXWR78G1RS943SJZG9G9KFDW"
    );
    assert_eq!(claims.org_id, None, "issued outside an organization");
    assert_eq!(claims.exp, 1_757_144_604);
}

#[test]
fn refused_as_expired_today() {
    let (token, trust) = real();
    let denial = verify(
        &token,
        trust.as_slice(),
        TimeRules {
            now: 1_795_000_000,
            leeway: 30,
        },
    )
    .unwrap_err();
    assert_eq!(denial.reason, Reason::Expired);
    assert_eq!(denial.seen.sub.as_deref(), Some("user_01K4EZC631GGHFKB5VXEARPB0G"));
}

#[test]
fn one_flipped_signature_bit_is_refused() {
    let (token, trust) = real();
    let mut sig = base64url::decode(token.rsplit('.').next().unwrap()).unwrap();
    sig[10] ^= 1;
    let prefix = &token[..token.rfind('.').unwrap()];
    let forged = format!("{prefix}.{}", base64url::encode(&sig));
    let denial = verify(
        &forged,
        trust.as_slice(),
        TimeRules {
            now: 1_757_144_400,
            leeway: 30,
        },
    )
    .unwrap_err();
    assert_eq!(denial.reason, Reason::BadSignature);
}
