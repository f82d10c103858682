//! Strict base64url (RFC 7515 §2): the URL-safe alphabet, no padding, no trailing bits.
//! `+`, `/`, `=` and whitespace are refused instead of being tolerated, so one token has exactly
//! one spelling and a digest of its text identifies it.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

const STRICT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

/// Decodes one base64url segment, or `None` when it is not canonical base64url.
pub fn decode(segment: &str) -> Option<Vec<u8>> {
    STRICT.decode(segment).ok()
}

/// Encodes bytes as unpadded base64url.
pub fn encode(bytes: &[u8]) -> String {
    STRICT.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_every_non_canonical_spelling() {
        for bad in ["Zm9v=", "Zm9v+", "Zm9v/", "Zm 9v", "Zm9", "Zm9w\n", "Zh"] {
            assert_eq!(decode(bad), None, "{bad:?} must be refused");
        }
    }

    #[test]
    fn round_trips() {
        for bytes in [&b""[..], b"f", b"fo", b"foo", &[0xfb, 0xff]] {
            assert_eq!(decode(&encode(bytes)).as_deref(), Some(bytes));
        }
        assert_eq!(encode(&[0xfb, 0xff]), "-_8");
    }
}
