//! Shared helpers of the verifier's tests: test data paths and a local token issuer.

mod attacks;
mod properties;
mod workos;
mod wycheproof;

use super::base64url;
use super::jwks::{Algorithm, KeySet};
use super::{TimeRules, TrustedIssuer};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};
use std::path::PathBuf;

/// A path inside `../shared/testdata`, the read-only test data beside the repository.
pub fn shared(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/testdata")
        .join(relative)
}

/// A path inside the repository's own `tests/fixtures`.
pub fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

/// Decodes lowercase or uppercase hex.
pub fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

pub const ISSUER: &str = "https://auth.example.test/user_management/client_TEST";
pub const NOW: i64 = 1_900_000_000;

/// One signing key of the local test issuer.
pub enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl Signer {
    /// The repository's fixed RSA-2048 test key (`tests/fixtures/test-issuer-rsa.pk8`).
    pub fn rsa() -> Signer {
        let der = std::fs::read(fixture("test-issuer-rsa.pk8")).expect("test key");
        Signer::Rsa(RsaKeyPair::from_pkcs8(&der).expect("pkcs8"))
    }

    /// A fresh P-256 key.
    pub fn ec() -> Signer {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let doc = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        Signer::Ec(EcdsaKeyPair::from_pkcs8(alg, doc.as_ref(), &rng).unwrap())
    }

    /// A fresh Ed25519 key.
    pub fn ed() -> Signer {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Signer::Ed(Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap())
    }

    pub fn alg(&self) -> Algorithm {
        match self {
            Signer::Rsa(_) => Algorithm::Rs256,
            Signer::Ec(_) => Algorithm::Es256,
            Signer::Ed(_) => Algorithm::EdDsa,
        }
    }

    /// The public JWK of this key under `kid`.
    pub fn jwk(&self, kid: &str) -> Value {
        match self {
            Signer::Rsa(k) => {
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                let (n, e) = (c.n, c.e);
                json!({"kty":"RSA","kid":kid,"alg":"RS256","use":"sig",
                       "n":base64url::encode(&n),"e":base64url::encode(&e)})
            }
            Signer::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty":"EC","crv":"P-256","kid":kid,
                       "x":base64url::encode(&p[1..33]),"y":base64url::encode(&p[33..65])})
            }
            Signer::Ed(k) => json!({"kty":"OKP","crv":"Ed25519","kid":kid,
                                    "x":base64url::encode(k.public_key().as_ref())}),
        }
    }

    /// Signs `input` with this key.
    pub fn sign(&self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig).unwrap();
                sig
            }
            Signer::Ec(k) => k.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::Ed(k) => k.sign(input).as_ref().to_vec(),
        }
    }
}

/// Builds a compact JWS from raw header and payload text, signed by `signer`.
pub fn mint_raw(signer: &Signer, header: &str, payload: &str) -> String {
    let input = format!(
        "{}.{}",
        base64url::encode(header.as_bytes()),
        base64url::encode(payload.as_bytes())
    );
    let sig = signer.sign(input.as_bytes());
    format!("{input}.{}", base64url::encode(&sig))
}

/// Builds a WorkOS-shaped token signed by `signer` under `kid`.
pub fn mint(signer: &Signer, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": signer.alg().name(), "kid": kid, "typ": "JWT"});
    mint_raw(signer, &header.to_string(), &claims.to_string())
}

/// Claims of a valid in-organization WorkOS access token at `NOW`.
pub fn workos_claims() -> Value {
    json!({"iss": ISSUER, "sub": "user_A1", "org_id": "org_A", "role": "member",
           "permissions": ["documents:read"], "sid": "session_1", "jti": "01K4EZCJYF91797FMG152DW48H",
           "iat": NOW - 10, "exp": NOW + 290})
}

/// A trust store holding the test issuer with `signer`'s key as `kid` "k1".
pub fn trust_for(signer: &Signer, audience: Option<&str>) -> Vec<TrustedIssuer> {
    let jwks = json!({"keys": [signer.jwk("k1")]}).to_string();
    let algorithms = vec![signer.alg()];
    let keys = KeySet::parse(jwks.as_bytes(), &algorithms).expect("test jwks");
    vec![TrustedIssuer {
        issuer: ISSUER.into(),
        audience: audience.map(Into::into),
        algorithms,
        keys,
        allows_no_organization: false,
    }]
}

pub const AT_NOW: TimeRules = TimeRules { now: NOW, leeway: 30 };
