//! WorkOS webhook signatures: `WorkOS-Signature: t=<unix ms>, v1=<hex HMAC-SHA256(secret,
//! "<t>.<raw body>")>`, within a tolerance of the receiver's clock, compared in constant time.
//! A verified webhook only triggers a poll of the Events API: its body is never applied.

use crate::config::Secret;
use hmac::{Mac, SimpleHmac};
use sha2::Sha256;

/// How far a signature's timestamp may be from the receiver's clock.
pub const TOLERANCE_MS: i64 = 180_000;

/// Why a webhook was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Malformed,
    Stale,
    Mismatch,
}

/// HMAC-SHA256 of `message` under `secret`.
#[cfg(test)]
pub fn hmac_sha256(secret: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <SimpleHmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Checks `header` over `body` against any of `secrets` (several during a rotation).
pub fn verify(header: Option<&str>, body: &[u8], secrets: &[Secret], now_ms: i64) -> Result<(), Refusal> {
    let header = header.ok_or(Refusal::Missing)?;
    let (mut t, mut v1) = (None, None);
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = Some(value.trim()),
            Some(("v1", value)) => v1 = Some(value.trim()),
            _ => {}
        }
    }
    let (t, v1) = (t.ok_or(Refusal::Malformed)?, v1.ok_or(Refusal::Malformed)?);
    let at: i64 = t.parse().map_err(|_| Refusal::Malformed)?;
    let given = hex::decode(v1).map_err(|_| Refusal::Malformed)?;
    // Saturating: `t` is the sender's, any i64 (an overflow must not panic or wrap into range).
    if now_ms.saturating_sub(at).saturating_abs() > TOLERANCE_MS {
        return Err(Refusal::Stale);
    }
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    for secret in secrets {
        let mut mac = <SimpleHmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes()).expect("any key length");
        mac.update(&message);
        if mac.verify_slice(&given).is_ok() {
            return Ok(());
        }
    }
    Err(Refusal::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s)
    }

    #[test]
    fn signatures_table() {
        let body = br#"{"id":"event_1","event":"user.deleted"}"#;
        let now = 1_700_000_000_000_i64;
        let sign = |key: &str, t: i64| {
            format!(
                "t={t}, v1={}",
                hex::encode(hmac_sha256(
                    key.as_bytes(),
                    format!("{t}.{}", std::str::from_utf8(body).unwrap()).as_bytes()
                ))
            )
        };
        let secrets = [secret("old"), secret("new")];
        let cases: Vec<(&str, Option<String>, Result<(), Refusal>)> = vec![
            ("current secret", Some(sign("new", now)), Ok(())),
            ("previous secret during rotation", Some(sign("old", now - 1000)), Ok(())),
            ("unknown secret", Some(sign("other", now)), Err(Refusal::Mismatch)),
            (
                "too old",
                Some(sign("new", now - TOLERANCE_MS - 1)),
                Err(Refusal::Stale),
            ),
            (
                "from the future",
                Some(sign("new", now + TOLERANCE_MS + 1)),
                Err(Refusal::Stale),
            ),
            ("no header", None, Err(Refusal::Missing)),
            ("no v1", Some(format!("t={now}")), Err(Refusal::Malformed)),
            (
                "the smallest i64 as the time",
                Some(format!("t={}, v1=00", i64::MIN)),
                Err(Refusal::Stale),
            ),
            (
                "the largest i64 as the time",
                Some(format!("t={}, v1=00", i64::MAX)),
                Err(Refusal::Stale),
            ),
            ("not hex", Some(format!("t={now}, v1=zz")), Err(Refusal::Malformed)),
        ];
        for (name, header, expected) in cases {
            assert_eq!(verify(header.as_deref(), body, &secrets, now), expected, "{name}");
        }
        let tampered = br#"{"id":"event_2","event":"user.deleted"}"#;
        assert_eq!(
            verify(Some(&sign("new", now)), tampered, &secrets, now),
            Err(Refusal::Mismatch),
            "body changed"
        );
    }
}
