//! JSON Web Key Sets (RFC 7517) as an administrator loads them, and the signature primitive.
//!
//! Key policy, enforced when the set is loaded rather than when a token arrives: asymmetric
//! signing keys only (no `oct`), RSA moduli of 2048 to 8192 bits with a sane odd exponent and no
//! ROCA fingerprint, P-256 points of the right length, Ed25519 keys of 32 bytes, a unique `kid`
//! on every key, `use`/`key_ops` that permit verification, each key's algorithm inside the
//! issuer's allow-list, and no private members (`d`, `p`, …) at all: a set that carries them was
//! exported by mistake and is refused rather than stored.

use super::base64url;
use super::json;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

/// A signature algorithm pg_tenancy verifies. HMAC and `none` are deliberately absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Rs256,
    Es256,
    EdDsa,
}

impl Algorithm {
    /// The JWS name, exactly as it must appear in a header (case-sensitive).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    /// Looks up a JWS algorithm name; unknown names (including `none` and `HS256`) give `None`.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "RS256" => Some(Algorithm::Rs256),
            "ES256" => Some(Algorithm::Es256),
            "EdDSA" => Some(Algorithm::EdDsa),
            _ => None,
        }
    }

    /// Parses an allow-list such as `{RS256,ES256}`; an empty or unknown entry is an error.
    pub fn parse_list(names: &[String]) -> Result<Vec<Algorithm>, String> {
        if names.is_empty() {
            return Err("the algorithm allow-list is empty".into());
        }
        names
            .iter()
            .map(|n| {
                Algorithm::from_name(n).ok_or_else(|| {
                    format!(
                        "algorithm \"{}\" is not supported (supported: RS256, ES256, EdDSA)",
                        json::printable(n)
                    )
                })
            })
            .collect()
    }
}

/// Public key material, already decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Material {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    P256 { point: Vec<u8> },
    Ed25519 { x: Vec<u8> },
}

/// One verification key of a trusted issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    pub kid: String,
    pub alg: Algorithm,
    material: Material,
}

impl Jwk {
    /// The key family as JWK names it (`RSA`, `EC`, `OKP`).
    pub fn kty(&self) -> &'static str {
        match self.material {
            Material::Rsa { .. } => "RSA",
            Material::P256 { .. } => "EC",
            Material::Ed25519 { .. } => "OKP",
        }
    }

    /// The key size in bits (RSA modulus, curve order size otherwise).
    pub fn bits(&self) -> usize {
        match &self.material {
            Material::Rsa { n, .. } => bit_length(n),
            Material::P256 { .. } | Material::Ed25519 { .. } => 256,
        }
    }

    /// Verifies `signature` over `message` with this key; `alg` must be the key's own.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        if alg != self.alg {
            return false;
        }
        match &self.material {
            Material::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            Material::P256 { point } => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(message, signature)
                .is_ok(),
            Material::Ed25519 { x } => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, signature)
                .is_ok(),
        }
    }
}

/// The verification keys of one issuer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

impl KeySet {
    /// Parses and vets a JWKS document against the issuer's algorithm allow-list.
    pub fn parse(document: &[u8], allowed: &[Algorithm]) -> Result<KeySet, String> {
        let top = json::parse_object(document).map_err(|e| format!("jwks is not valid JSON: {e}"))?;
        let Some(Value::Array(entries)) = top.get("keys") else {
            return Err("jwks must be an object with a \"keys\" array".into());
        };
        if entries.is_empty() {
            return Err("jwks has no keys".into());
        }
        let mut keys: Vec<Jwk> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let Value::Object(member) = entry else {
                return Err(format!("jwks key #{} is not an object", i + 1));
            };
            let key = parse_key(member, allowed).map_err(|e| match member.get("kid") {
                Some(Value::String(kid)) => format!("key \"{}\": {e}", json::printable(kid)),
                _ => format!("key #{}: {e}", i + 1),
            })?;
            if keys.iter().any(|k| k.kid == key.kid) {
                return Err(format!("duplicate kid \"{}\"", json::printable(&key.kid)));
            }
            keys.push(key);
        }
        Ok(KeySet { keys })
    }

    /// The key named by `kid`, if loaded.
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// Every loaded key.
    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }
}

/// Members that only a private key carries.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

/// Parses one key object under the policy described at the top of this file.
fn parse_key(m: &Map<String, Value>, allowed: &[Algorithm]) -> Result<Jwk, String> {
    let kty = string_member(m, "kty")?.ok_or("kty is missing")?;
    if kty == "oct" {
        return Err("symmetric keys (kty \"oct\") are not accepted".into());
    }
    if let Some(private) = PRIVATE_MEMBERS.iter().find(|p| m.contains_key(**p)) {
        return Err(format!("private key member \"{private}\" must not be loaded"));
    }
    let kid = string_member(m, "kid")?.ok_or("kid is missing")?;
    if kid.is_empty() || kid.len() > 256 {
        return Err("kid must be 1 to 256 characters".into());
    }
    if let Some(usage) = string_member(m, "use")? {
        if usage != "sig" {
            return Err(format!("use \"{}\" is not \"sig\"", json::printable(usage)));
        }
    }
    if let Some(ops) = m.get("key_ops") {
        let permits_verify = matches!(ops, Value::Array(a) if a.iter().any(|o| o == "verify"));
        if !permits_verify {
            return Err("key_ops does not include \"verify\"".into());
        }
    }
    let (material, natural_alg) = match kty {
        "RSA" => (rsa_material(m)?, Algorithm::Rs256),
        "EC" => {
            let crv = string_member(m, "crv")?.ok_or("crv is missing")?;
            if crv != "P-256" {
                return Err(format!("curve \"{}\" is not supported", json::printable(crv)));
            }
            let x = fixed_member(m, "x", 32)?;
            let y = fixed_member(m, "y", 32)?;
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (Material::P256 { point }, Algorithm::Es256)
        }
        "OKP" => {
            let crv = string_member(m, "crv")?.ok_or("crv is missing")?;
            if crv != "Ed25519" {
                return Err(format!("curve \"{}\" is not supported", json::printable(crv)));
            }
            (
                Material::Ed25519 {
                    x: fixed_member(m, "x", 32)?,
                },
                Algorithm::EdDsa,
            )
        }
        other => return Err(format!("kty \"{}\" is not supported", json::printable(other))),
    };
    if let Some(alg) = string_member(m, "alg")? {
        if Algorithm::from_name(alg) != Some(natural_alg) {
            return Err(format!(
                "alg \"{}\" does not fit a {kty} key (expected {})",
                json::printable(alg),
                natural_alg.name()
            ));
        }
    }
    if !allowed.contains(&natural_alg) {
        return Err(format!(
            "algorithm {} is outside the issuer's allow-list",
            natural_alg.name()
        ));
    }
    Ok(Jwk {
        kid: kid.to_owned(),
        alg: natural_alg,
        material,
    })
}

/// Decodes and vets an RSA public key.
fn rsa_material(m: &Map<String, Value>) -> Result<Material, String> {
    let n = strip_leading_zeros(bytes_member(m, "n")?);
    let e = strip_leading_zeros(bytes_member(m, "e")?);
    let bits = bit_length(&n);
    if !(2048..=8192).contains(&bits) {
        return Err(format!("RSA modulus of {bits} bits is outside 2048..8192"));
    }
    if n.last().is_none_or(|b| b & 1 == 0) {
        return Err("RSA modulus is even".into());
    }
    let e_value = e
        .iter()
        .try_fold(0u64, |acc, b| acc.checked_mul(256).map(|v| v | u64::from(*b)));
    match e_value {
        Some(v) if v >= 3 && v & 1 == 1 && v < (1 << 33) => {}
        _ => return Err("RSA public exponent must be odd and between 3 and 2^33".into()),
    }
    if super::roca::has_fingerprint(&n) {
        return Err("RSA modulus has the ROCA fingerprint (CVE-2017-15361)".into());
    }
    Ok(Material::Rsa { n, e })
}

/// A string member, `None` when absent, an error when of another type.
fn string_member<'a>(m: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match m.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

/// A required base64url member.
fn bytes_member(m: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = string_member(m, name)?.ok_or_else(|| format!("{name} is missing"))?;
    base64url::decode(text).ok_or_else(|| format!("{name} is not base64url"))
}

/// A required base64url member of an exact decoded length.
fn fixed_member(m: &Map<String, Value>, name: &str, len: usize) -> Result<Vec<u8>, String> {
    let bytes = bytes_member(m, name)?;
    if bytes.len() != len {
        return Err(format!("{name} must be {len} bytes, not {}", bytes.len()));
    }
    Ok(bytes)
}

/// Drops leading zero bytes of a big-endian integer.
fn strip_leading_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|b| **b == 0).count();
    v.drain(..zeros);
    v
}

/// Bit length of a big-endian integer without leading zero bytes.
fn bit_length(v: &[u8]) -> usize {
    match v.first() {
        None => 0,
        Some(top) => (v.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}
