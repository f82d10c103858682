//! Property-based tests (proptest) of the token parser and verifier: arbitrary input never
//! panics and never verifies; any change to a valid token makes it fail; a changed signature
//! fails as a bad signature. Case counts are modest so that `cargo pgrx test` stays quick; the
//! inputs are generated afresh on every run.

use super::*;
use crate::verify::{base64url, json, jws, verify, Reason};
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::sync::OnceLock;

/// The base64url alphabet and the segment separator: the characters a token is made of.
const TOKEN_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Valid tokens of the three algorithms, minted once, each with the trust store that accepts it.
fn valid() -> &'static [(String, Vec<TrustedIssuer>)] {
    static TOKENS: OnceLock<Vec<(String, Vec<TrustedIssuer>)>> = OnceLock::new();
    TOKENS.get_or_init(|| {
        [Signer::rsa(), Signer::ec(), Signer::ed()]
            .into_iter()
            .map(|signer| {
                let token = mint(&signer, "k1", &workos_claims());
                let trust = trust_for(&signer, None);
                verify(&token, trust.as_slice(), AT_NOW).expect("the unmutated token verifies");
                (token, trust)
            })
            .collect()
    })
}

/// Text in the token alphabet: three-segment-looking garbage as well as anything else.
fn token_like() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(TOKEN_CHARS), 0..600)
        .prop_map(|bytes| String::from_utf8(bytes).unwrap())
}

/// One edit of a token's text.
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    SwapSegments(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let index = any::<usize>();
    let ch = proptest::sample::select(TOKEN_CHARS);
    prop_oneof![
        (index, ch.clone()).prop_map(|(i, c)| Edit::Replace(i, c)),
        (index, ch).prop_map(|(i, c)| Edit::Insert(i, c)),
        index.prop_map(Edit::Delete),
        index.prop_map(Edit::Truncate),
        (0..3usize, 0..3usize).prop_map(|(a, b)| Edit::SwapSegments(a, b)),
    ]
}

fn apply(token: &str, edits: &[Edit]) -> String {
    let mut text = token.as_bytes().to_vec();
    for e in edits {
        match *e {
            Edit::Replace(i, c) if !text.is_empty() => {
                let i = i % text.len();
                text[i] = c;
            }
            Edit::Insert(i, c) => {
                let i = i % (text.len() + 1);
                text.insert(i, c);
            }
            Edit::Delete(i) if !text.is_empty() => {
                let i = i % text.len();
                text.remove(i);
            }
            Edit::Truncate(n) => text.truncate(n % (text.len() + 1)),
            Edit::SwapSegments(a, b) => {
                let mut parts: Vec<Vec<u8>> = text.split(|&c| c == b'.').map(<[u8]>::to_vec).collect();
                if a < parts.len() && b < parts.len() {
                    parts.swap(a, b);
                }
                text = parts.join(&b'.');
            }
            _ => {}
        }
    }
    String::from_utf8(text).unwrap()
}

proptest! {
    #![proptest_config(config(256))]

    /// Any bytes at all (as the server would hand them over, lossily decoded): every stage of
    /// the parser returns, and nothing verifies.
    #[test]
    fn arbitrary_bytes_never_panic_and_never_verify(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = base64url::decode(&text);
        let _ = json::parse_object(&bytes);
        let _ = jws::check_shape(&text);
        let _ = jws::parse(&text);
        for (_, trust) in valid() {
            prop_assert!(verify(&text, trust.as_slice(), AT_NOW).is_err());
        }
    }

    /// Garbage made of the token alphabet, which gets past the shape check far more often.
    #[test]
    fn token_shaped_garbage_never_verifies(text in token_like()) {
        let _ = jws::check_shape(&text);
        for (_, trust) in valid() {
            prop_assert!(verify(&text, trust.as_slice(), AT_NOW).is_err());
        }
    }

    /// Well-formed segments around arbitrary JSON-ish header and payload bytes and an arbitrary
    /// signature: the strict JSON reader and the claim rules see everything, and nothing verifies.
    #[test]
    fn arbitrary_segments_never_verify(
        header in proptest::collection::vec(any::<u8>(), 0..300),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        signature in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let text = format!(
            "{}.{}.{}",
            base64url::encode(&header),
            base64url::encode(&payload),
            base64url::encode(&signature)
        );
        for (_, trust) in valid() {
            prop_assert!(verify(&text, trust.as_slice(), AT_NOW).is_err());
        }
    }

    /// One to three edits of a valid token's text (replace, insert or delete a character, truncate,
    /// swap segments), for each algorithm: whatever changed, it never verifies.
    #[test]
    fn a_mutated_valid_token_never_verifies(which in 0..3usize, edits in proptest::collection::vec(edit(), 1..4)) {
        let (token, trust) = &valid()[which];
        let mutated = apply(token, &edits);
        prop_assume!(&mutated != token);
        prop_assert!(verify(&mutated, trust.as_slice(), AT_NOW).is_err(), "{:?}", edits);
    }

    /// Flipping any bits of the decoded signature: refused as a bad signature, for every algorithm.
    #[test]
    fn a_mutated_signature_never_verifies(which in 0..3usize, flips in proptest::collection::vec((any::<usize>(), 1..=255u8), 1..4)) {
        let (token, trust) = &valid()[which];
        let (input, signature) = token.rsplit_once('.').unwrap();
        let mut bytes = base64url::decode(signature).unwrap();
        for (i, mask) in &flips {
            let n = bytes.len();
            bytes[i % n] ^= mask;
        }
        prop_assume!(base64url::encode(&bytes) != signature);
        let mutated = format!("{input}.{}", base64url::encode(&bytes));
        let denial = verify(&mutated, trust.as_slice(), AT_NOW).unwrap_err();
        prop_assert_eq!(denial.reason, Reason::BadSignature);
    }

    /// A valid token's signature moved onto other claims (a different, correctly encoded payload)
    /// never verifies.
    #[test]
    fn a_signature_never_verifies_other_claims(which in 0..3usize, sub in "[a-zA-Z0-9_]{1,30}", org in "[a-zA-Z0-9_]{1,30}") {
        let (token, trust) = &valid()[which];
        let mut claims = workos_claims();
        claims["sub"] = serde_json::Value::String(sub);
        claims["org_id"] = serde_json::Value::String(org);
        let (header, rest) = token.split_once('.').unwrap();
        let (payload, signature) = rest.split_once('.').unwrap();
        let forged = base64url::encode(claims.to_string().as_bytes());
        prop_assume!(forged != payload);
        let denial = verify(&format!("{header}.{forged}.{signature}"), trust.as_slice(), AT_NOW).unwrap_err();
        prop_assert_eq!(denial.reason, Reason::BadSignature);
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// Arbitrary header and payload bytes signed with a trusted key: the signature is genuine, so
    /// the parser's and the claim rules' answers are what counts. They never panic, and without
    /// the trusted issuer's claims nothing verifies.
    #[test]
    fn signed_garbage_never_verifies(
        header in prop_oneof![
            Just(r#"{"alg":"EdDSA","kid":"k1"}"#.as_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..200),
        ],
        payload in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let signer = Signer::ed();
        let trust = trust_for(&signer, None);
        let input = format!("{}.{}", base64url::encode(&header), base64url::encode(&payload));
        let token = format!("{input}.{}", base64url::encode(&signer.sign(input.as_bytes())));
        prop_assert!(verify(&token, trust.as_slice(), AT_NOW).is_err());
    }
}
