//! Hand-written attacks on the verifier, one row each: the token, and the reason it must fail with.

use super::*;
use crate::verify::{verify, Reason};

/// Replaces one claim of the valid claim set.
fn with(name: &str, value: Value) -> Value {
    let mut c = workos_claims();
    c[name] = value;
    c
}

/// Removes one claim of the valid claim set.
fn without(name: &str) -> Value {
    let mut c = workos_claims();
    c.as_object_mut().unwrap().remove(name);
    c
}

/// A token whose header is `header` and whose signature is made by `signer` anyway.
fn with_header(signer: &Signer, header: Value) -> String {
    mint_raw(signer, &header.to_string(), &workos_claims().to_string())
}

#[test]
fn a_valid_token_verifies_for_every_algorithm() {
    for signer in [Signer::rsa(), Signer::ec(), Signer::ed()] {
        let trust = trust_for(&signer, None);
        let claims = verify(&mint(&signer, "k1", &workos_claims()), trust.as_slice(), AT_NOW).expect("valid");
        assert_eq!(claims.sub, "user_A1");
        assert_eq!(claims.org_id.as_deref(), Some("org_A"));
        assert_eq!(claims.permissions, vec!["documents:read"]);
        assert_eq!(claims.all["jti"], "01K4EZCJYF91797FMG152DW48H", "a ULID jti is fine");
    }
}

#[test]
fn attacks_are_refused_with_their_reason() {
    let rsa = Signer::rsa();
    let trust = trust_for(&rsa, Some("api://tenancy"));
    let good = || with("aud", json!("api://tenancy"));
    let valid = mint(&rsa, "k1", &good());
    let (h, rest) = valid.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    let b64 = |t: &str| base64url::encode(t.as_bytes());
    let unsigned = |alg: &str| format!("{}.{}.", b64(&json!({"alg": alg, "kid": "k1"}).to_string()), p);

    // HS256 "signed" with the RSA public key as the HMAC secret: the classic algorithm confusion.
    let public_key_bytes = rsa.jwk("k1").to_string();
    let hs_input = format!("{}.{p}", b64(r#"{"alg":"HS256","kid":"k1"}"#));
    let hmac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, public_key_bytes.as_bytes());
    let hs256 = format!(
        "{hs_input}.{}",
        base64url::encode(ring::hmac::sign(&hmac_key, hs_input.as_bytes()).as_ref())
    );

    let huge = format!("{h}.{}.{s}", "A".repeat(1 << 20));
    let rows: Vec<(&str, String, Reason)> = vec![
        ("alg none, empty signature", unsigned("none"), Reason::Malformed),
        (
            "alg none with a signature",
            format!("{}.{p}.{s}", b64(r#"{"alg":"none","kid":"k1"}"#)),
            Reason::UnsupportedAlgorithm,
        ),
        (
            "alg None",
            format!("{}.{p}.{s}", b64(r#"{"alg":"None","kid":"k1"}"#)),
            Reason::UnsupportedAlgorithm,
        ),
        (
            "alg NONE",
            format!("{}.{p}.{s}", b64(r#"{"alg":"NONE","kid":"k1"}"#)),
            Reason::UnsupportedAlgorithm,
        ),
        (
            "alg nOnE",
            format!("{}.{p}.{s}", b64(r#"{"alg":"nOnE","kid":"k1"}"#)),
            Reason::UnsupportedAlgorithm,
        ),
        (
            "alg rs256 lowercase",
            format!("{}.{p}.{s}", b64(r#"{"alg":"rs256","kid":"k1"}"#)),
            Reason::UnsupportedAlgorithm,
        ),
        (
            "HS256 with the public key as secret",
            hs256,
            Reason::UnsupportedAlgorithm,
        ),
        (
            "ES256 header over an RSA key",
            format!("{}.{p}.{s}", b64(r#"{"alg":"ES256","kid":"k1"}"#)),
            Reason::AlgorithmNotAllowed,
        ),
        ("unknown kid", mint(&rsa, "k2", &good()), Reason::UnknownKey),
        (
            "no kid",
            mint_raw(&rsa, r#"{"alg":"RS256"}"#, &good().to_string()),
            Reason::UnknownKey,
        ),
        ("injected kid", mint(&rsa, "k1' OR '1'='1", &good()), Reason::UnknownKey),
        (
            "kid path traversal",
            mint(&rsa, "../../dev/null", &good()),
            Reason::UnknownKey,
        ),
        (
            "embedded jwk",
            with_header(&rsa, json!({"alg":"RS256","kid":"k1","jwk":rsa.jwk("k1")})),
            Reason::EmbeddedKey,
        ),
        (
            "jku",
            with_header(&rsa, json!({"alg":"RS256","kid":"k1","jku":"https://evil.test/jwks"})),
            Reason::EmbeddedKey,
        ),
        (
            "x5u",
            with_header(&rsa, json!({"alg":"RS256","kid":"k1","x5u":"https://evil.test/cert"})),
            Reason::EmbeddedKey,
        ),
        (
            "x5c",
            with_header(&rsa, json!({"alg":"RS256","kid":"k1","x5c":["MIIB"]})),
            Reason::EmbeddedKey,
        ),
        (
            "crit",
            with_header(&rsa, json!({"alg":"RS256","kid":"k1","crit":["exp"],"exp":1})),
            Reason::CriticalHeader,
        ),
        (
            "expired",
            mint(&rsa, "k1", &with("exp", json!(NOW - 31))),
            Reason::Expired,
        ),
        (
            "not yet valid",
            mint(&rsa, "k1", &with("nbf", json!(NOW + 31))),
            Reason::NotYetValid,
        ),
        (
            "issued in the future",
            mint(&rsa, "k1", &with("iat", json!(NOW + 3600))),
            Reason::IssuedInFuture,
        ),
        ("no exp", mint(&rsa, "k1", &without("exp")), Reason::InvalidClaim),
        (
            "string exp",
            mint(&rsa, "k1", &with("exp", json!((NOW + 300).to_string()))),
            Reason::InvalidClaim,
        ),
        (
            "wrong iss",
            mint(&rsa, "k1", &with("iss", json!("https://evil.test"))),
            Reason::IssuerNotTrusted,
        ),
        (
            "iss with trailing slash",
            mint(&rsa, "k1", &with("iss", json!(format!("{ISSUER}/")))),
            Reason::IssuerNotTrusted,
        ),
        ("no aud", mint(&rsa, "k1", &workos_claims()), Reason::AudienceMismatch),
        (
            "wrong aud",
            mint(&rsa, "k1", &with("aud", json!("api://other"))),
            Reason::AudienceMismatch,
        ),
        (
            "duplicate sub",
            mint_raw(
                &rsa,
                r#"{"alg":"RS256","kid":"k1"}"#,
                &good().to_string().replacen('{', r#"{"sub":"user_EVIL","#, 1),
            ),
            Reason::Malformed,
        ),
        (
            "duplicate header alg",
            mint_raw(&rsa, r#"{"alg":"RS256","alg":"none","kid":"k1"}"#, &good().to_string()),
            Reason::Malformed,
        ),
        (
            "non-string permissions",
            mint(&rsa, "k1", &{
                let mut c = good();
                c["permissions"] = json!([1]);
                c
            }),
            Reason::InvalidClaim,
        ),
        ("padding", format!("{valid}="), Reason::Malformed),
        (
            "plus instead of minus",
            format!("{h}.{p}.{}", s.replace('-', "+").replace('_', "/") + "+"),
            Reason::Malformed,
        ),
        ("two segments", format!("{h}.{p}"), Reason::Malformed),
        ("four segments", format!("{valid}.{s}"), Reason::Malformed),
        ("whitespace", format!(" {valid}"), Reason::Malformed),
        ("1 MiB token", huge, Reason::TooLarge),
        ("empty", String::new(), Reason::Malformed),
        (
            "signature of another token",
            format!("{h}.{}.{s}", b64(&with("sub", json!("user_B1")).to_string())),
            Reason::BadSignature,
        ),
    ];
    assert!(
        verify(&valid, trust.as_slice(), AT_NOW).is_ok(),
        "the baseline must verify"
    );
    for (name, token, expected) in rows {
        match verify(&token, trust.as_slice(), AT_NOW) {
            Ok(_) => panic!("{name}: accepted"),
            Err(d) => assert_eq!(d.reason, expected, "{name}: {}", d.detail),
        }
    }
}

#[test]
fn leeway_is_honoured_at_its_bound() {
    let rsa = Signer::rsa();
    let trust = trust_for(&rsa, None);
    let token = mint(&rsa, "k1", &with("exp", json!(NOW - 29)));
    assert!(verify(&token, trust.as_slice(), AT_NOW).is_ok(), "inside 30 s leeway");
    let strict = TimeRules { now: NOW, leeway: 0 };
    assert_eq!(
        verify(&token, trust.as_slice(), strict).unwrap_err().reason,
        Reason::Expired
    );
}

#[test]
fn key_policy_refuses_at_load() {
    let rsa = Signer::rsa();
    let mut private = rsa.jwk("k1");
    private["d"] = json!("AQAB");
    let mut small = rsa.jwk("k1");
    small["n"] = json!(base64url::encode(&[0xff; 128]));
    let mut even = rsa.jwk("k1");
    even["n"] = json!(base64url::encode(&[&[0xc0u8][..], &[0u8; 255]].concat()));
    let mut exp_one = rsa.jwk("k1");
    exp_one["e"] = json!("AQ");
    let mut enc = rsa.jwk("k1");
    enc["use"] = json!("enc");
    let mut wrong_alg = rsa.jwk("k1");
    wrong_alg["alg"] = json!("ES256");
    let rows: Vec<(&str, Value, &[Algorithm], &str)> = vec![
        (
            "symmetric",
            json!([{"kty":"oct","kid":"h","k":"c2VjcmV0"}]),
            &[Algorithm::Rs256],
            "symmetric",
        ),
        (
            "private members",
            json!([private]),
            &[Algorithm::Rs256],
            "private key member",
        ),
        ("1024-bit modulus", json!([small]), &[Algorithm::Rs256], "outside 2048"),
        ("even modulus", json!([even]), &[Algorithm::Rs256], "even"),
        ("exponent 1", json!([exp_one]), &[Algorithm::Rs256], "exponent"),
        ("use enc", json!([enc]), &[Algorithm::Rs256], "use"),
        (
            "alg of another family",
            json!([wrong_alg]),
            &[Algorithm::Rs256],
            "does not fit",
        ),
        (
            "outside the allow-list",
            json!([rsa.jwk("k1")]),
            &[Algorithm::Es256],
            "allow-list",
        ),
        (
            "duplicate kid",
            json!([rsa.jwk("k1"), Signer::ec().jwk("k1")]),
            &[Algorithm::Rs256, Algorithm::Es256],
            "duplicate kid",
        ),
        (
            "unknown kty",
            json!([{"kty":"XYZ","kid":"x"}]),
            &[Algorithm::Rs256],
            "not supported",
        ),
        (
            "P-384",
            json!([{"kty":"EC","crv":"P-384","kid":"x","x":"AA","y":"AA"}]),
            &[Algorithm::Es256],
            "curve",
        ),
        (
            "no kid",
            json!([{"kty":"OKP","crv":"Ed25519","x":base64url::encode(&[1; 32])}]),
            &[Algorithm::EdDsa],
            "kid is missing",
        ),
        ("empty set", json!([]), &[Algorithm::Rs256], "no keys"),
    ];
    for (name, keys, allowed, expected) in rows {
        let doc = json!({"keys": keys}).to_string();
        let err = KeySet::parse(doc.as_bytes(), allowed).expect_err(name);
        assert!(err.contains(expected), "{name}: {err}");
    }
}
