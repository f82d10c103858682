//! Project Wycheproof vectors (`../shared/testdata/wycheproof/`, Apache-2.0) run through the exact
//! primitive and JWS path that tokens take. Every case is counted: invalid accepted must be 0,
//! valid rejected must be 0, and each skipped case is listed with its reason.

use super::*;
use crate::verify::jwks::Jwk;
use crate::verify::jws;
use serde_json::Map;

/// Tally of one vector file.
#[derive(Default, Debug)]
struct Tally {
    passed: usize,
    invalid_accepted: Vec<u64>,
    valid_rejected: Vec<u64>,
    skipped: Vec<(u64, String)>,
}

impl Tally {
    /// Records one case; `acceptable` cases may go either way and count as passed.
    fn record(&mut self, id: u64, result: &str, accepted: bool) {
        match (result, accepted) {
            ("valid", false) => self.valid_rejected.push(id),
            ("invalid", true) => self.invalid_accepted.push(id),
            _ => self.passed += 1,
        }
    }

    /// Prints the tally and fails on any wrong verdict.
    fn assert_clean(&self, file: &str) {
        println!("{file}: {} passed, {} skipped", self.passed, self.skipped.len());
        for (id, why) in &self.skipped {
            println!("  skipped tcId {id}: {why}");
        }
        assert!(
            self.invalid_accepted.is_empty(),
            "{file}: invalid accepted {:?}",
            self.invalid_accepted
        );
        assert!(
            self.valid_rejected.is_empty(),
            "{file}: valid rejected {:?}",
            self.valid_rejected
        );
        assert!(self.passed > 0, "{file}: no case ran");
    }
}

fn load(file: &str) -> Value {
    let text = std::fs::read(shared(&format!("wycheproof/{file}"))).expect("wycheproof data beside the repo");
    serde_json::from_slice(&text).unwrap()
}

/// The one key of a JWK, loaded through the production key policy.
fn key_from_jwk(jwk: &Value) -> Jwk {
    let set = json!({"keys": [jwk]}).to_string();
    let all = [Algorithm::Rs256, Algorithm::Es256, Algorithm::EdDsa];
    KeySet::parse(set.as_bytes(), &all).expect("vector key loads").keys()[0].clone()
}

/// The group's JWK; a few ECDSA groups give only the uncompressed point, which is converted.
fn vector_jwk(group: &Value, jwk_member: &str) -> Value {
    if group[jwk_member].is_object() {
        return group[jwk_member].clone();
    }
    let point = hex(group["publicKey"]["uncompressed"].as_str().expect("a point"));
    json!({"kty": "EC", "crv": "P-256", "kid": "none",
           "x": base64url::encode(&point[1..33]), "y": base64url::encode(&point[33..65])})
}

/// Runs a raw-signature vector file through `Jwk::verify`.
fn signature_file(file: &str, jwk_member: &str, alg: Algorithm) {
    let doc = load(file);
    let mut tally = Tally::default();
    for group in doc["testGroups"].as_array().unwrap() {
        let key = key_from_jwk(&vector_jwk(group, jwk_member));
        for t in group["tests"].as_array().unwrap() {
            let accepted = key.verify(alg, &hex(t["msg"].as_str().unwrap()), &hex(t["sig"].as_str().unwrap()));
            tally.record(t["tcId"].as_u64().unwrap(), t["result"].as_str().unwrap(), accepted);
        }
    }
    tally.assert_clean(file);
}

#[test]
fn rsa_pkcs1_2048_sha256() {
    signature_file("rsa_signature_2048_sha256_test.json", "keyJwk", Algorithm::Rs256);
}

#[test]
fn rsa_pkcs1_3072_sha256() {
    signature_file("rsa_signature_3072_sha256_test.json", "keyJwk", Algorithm::Rs256);
}

#[test]
fn ecdsa_p256_sha256_p1363() {
    signature_file(
        "ecdsa_secp256r1_sha256_p1363_test.json",
        "publicKeyJwk",
        Algorithm::Es256,
    );
}

#[test]
fn ed25519() {
    signature_file("ed25519_test.json", "publicKeyJwk", Algorithm::EdDsa);
}

/// The public half of a Wycheproof JWK (the vectors ship private keys; we never load those).
fn public_only(key: &Value) -> Value {
    let mut m: Map<String, Value> = key.as_object().unwrap().clone();
    for private in ["d", "p", "q", "dp", "dq", "qi", "oth"] {
        m.remove(private);
    }
    Value::Object(m)
}

/// Why a key set is out of scope by design, or `None` when a refusal would be a wrong verdict.
fn policy_reason(keyset: &Value) -> Option<String> {
    for key in keyset["keys"].as_array().unwrap() {
        let alg = key["alg"].as_str().unwrap_or("");
        if key["kty"] == "oct" {
            return Some("symmetric (HMAC) keys are refused by design".into());
        }
        if !alg.is_empty() && Algorithm::from_name(alg).is_none() {
            return Some(format!(
                "{alg} is not in pg_tenancy's algorithm set (RS256, ES256, EdDSA)"
            ));
        }
        if key["key_ops"] == json!(["sign, verify"]) {
            return Some("key_ops [\"sign, verify\"] names no \"verify\" operation; refused by policy".into());
        }
    }
    None
}

/// Runs JWS vectors: key set through `KeySet::parse`, token through `jws::parse` + `verify_signature`.
fn jws_file(file: &str, keyset_of: impl Fn(&Value) -> Value) {
    let doc = load(file);
    let all = [Algorithm::Rs256, Algorithm::Es256, Algorithm::EdDsa];
    let mut tally = Tally::default();
    for group in doc["testGroups"].as_array().unwrap() {
        let keyset = keyset_of(group);
        let loaded = KeySet::parse(keyset.to_string().as_bytes(), &all);
        for t in group["tests"].as_array().unwrap() {
            let id = t["tcId"].as_u64().unwrap();
            let result = t["result"].as_str().unwrap();
            let Some(token) = t["jws"].as_str() else {
                tally
                    .skipped
                    .push((id, "JSON serialization is not a token form".into()));
                continue;
            };
            let accepted = match &loaded {
                Ok(keys) => jws::parse(token)
                    .and_then(|p| jws::verify_signature(&p, keys, &all))
                    .is_ok(),
                Err(_) => false,
            };
            if result == "valid" && !accepted {
                if let Some(why) = policy_reason(&keyset) {
                    tally.skipped.push((id, why));
                    continue;
                }
            }
            tally.record(id, result, accepted);
        }
    }
    tally.assert_clean(file);
}

#[test]
fn json_web_signatures() {
    jws_file("json_web_signature_test.json", |g| {
        let key = g.get("public").unwrap_or(&g["private"]);
        json!({"keys": [public_only(key)]})
    });
}

#[test]
fn json_web_keys() {
    jws_file("json_web_key_test.json", |g| {
        let keys: Vec<Value> = g["private"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(public_only)
            .collect();
        json!({"keys": keys})
    });
}
