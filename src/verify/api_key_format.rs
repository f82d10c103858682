//! The API-key format: `tnk_` + 43 base64url characters (32 bytes from the operating system's
//! CSPRNG) + a 6-character checksum (the first 4 bytes of a SHA-256 over the random part), 53
//! characters in all. The checksum catches a mistyped or truncated key before any table is read.
//! Only SHA-256 of the whole key is stored: with 256 bits of entropy nothing can be recovered or
//! brute-forced from the digest, so a keyed hash would add a secret to keep and protect nothing
//! more. Pure Rust, like the rest of `verify/`.

use super::{sha256, Denial, Reason};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

/// What every key starts with.
pub const PREFIX: &str = "tnk_";
/// Characters of the random part (32 bytes in base64url).
const BODY_LEN: usize = 43;
/// Characters of the checksum (4 bytes in base64url).
const CHECKSUM_LEN: usize = 6;
/// Characters of a whole key.
pub const KEY_LEN: usize = PREFIX.len() + BODY_LEN + CHECKSUM_LEN;
/// Characters of the key shown in `tenancy.api_keys` (prefix and the first 8 random ones).
const DISPLAY_LEN: usize = PREFIX.len() + 8;

/// The checksum of a key's random part.
fn checksum(body: &str) -> String {
    let mut input = b"pg_tenancy api key\0".to_vec();
    input.extend_from_slice(body.as_bytes());
    URL_SAFE_NO_PAD.encode(&sha256(&input)[..4])
}

/// A new key: the secret (shown once), its digest (stored) and its display prefix.
pub fn generate() -> Result<(String, [u8; 32], String), ring::error::Unspecified> {
    let mut random = [0u8; 32];
    SystemRandom::new().fill(&mut random)?;
    let body = URL_SAFE_NO_PAD.encode(random);
    let key = format!("{PREFIX}{body}{}", checksum(&body));
    let digest = sha256(key.as_bytes());
    Ok((key.clone(), digest, key[..DISPLAY_LEN].to_string()))
}

/// Checks a key's shape and checksum without reading any table.
pub fn check_shape(key: &str) -> Result<(), Denial> {
    let malformed = |detail: String| Err(Denial::new(Reason::ApiKeyMalformed, detail));
    if key.len() != KEY_LEN {
        return malformed(format!("{} characters instead of {KEY_LEN}", key.len()));
    }
    if !key.starts_with(PREFIX) {
        return malformed(format!("it does not start with {PREFIX}"));
    }
    let rest = &key[PREFIX.len()..];
    if !rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return malformed("characters outside base64url".into());
    }
    let (body, sum) = rest.split_at(BODY_LEN);
    if !constant_time_eq(checksum(body).as_bytes(), sum.as_bytes()) {
        return malformed("the checksum does not match (mistyped or truncated)".into());
    }
    Ok(())
}

/// Equality that takes the same time wherever the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The row of a key, with what the double check needs ($1: the digest in hex). Every name is
/// qualified; times come back as `numeric` seconds (`EXTRACT` is `pg_catalog.extract`), whose
/// text no session setting changes (a float8's does, with `extra_float_digits`).
/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_pass_and_every_corruption_fails_before_lookup() {
        let (key, digest, display) = generate().unwrap();
        assert_eq!(key.len(), KEY_LEN);
        assert!(key.starts_with(&display));
        assert_eq!(digest, sha256(key.as_bytes()));
        assert!(check_shape(&key).is_ok());
        let flipped = {
            let mut bytes = key.clone().into_bytes();
            bytes[10] = if bytes[10] == b'A' { b'B' } else { b'A' };
            String::from_utf8(bytes).unwrap()
        };
        for (name, bad) in [
            ("wrong prefix", key.replacen("tnk_", "tnx_", 1)),
            ("one character mistyped", flipped),
            ("truncated", key[..KEY_LEN - 1].to_string()),
            ("one character more", format!("{key}A")),
            ("1 MiB", "tnk_".to_string() + &"A".repeat(1 << 20)),
            ("space inside", format!("{} {}", &key[..20], &key[21..])),
            ("empty", String::new()),
        ] {
            let denial = check_shape(&bad).expect_err(name);
            assert_eq!(denial.reason, Reason::ApiKeyMalformed, "{name}");
        }
    }

    #[test]
    fn two_keys_never_repeat() {
        assert_ne!(generate().unwrap().0, generate().unwrap().0);
    }
}
