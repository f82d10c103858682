//! A refusal as a value: why, a detail safe to show, and what the token claimed (unverified).
//!
//! Denials travel back up to the one place that reports and records them; nothing here knows how.
//! No field ever holds the token or a signature.

/// Why an identity (or an attempt around it) was refused. `code()` is the stable name recorded in
/// the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    NoToken,
    TooLarge,
    Malformed,
    UnsupportedAlgorithm,
    AlgorithmNotAllowed,
    CriticalHeader,
    EmbeddedKey,
    IssuerNotTrusted,
    UnknownKey,
    BadSignature,
    InvalidClaim,
    Expired,
    NotYetValid,
    IssuedInFuture,
    AudienceMismatch,
    NoWorkspace,
    WorkspaceUnknown,
    WorkspaceDisabled,
    NotMember,
    MemberDisabled,
    SessionRevoked,
    /// An attempt to assign a derived identity setting (SET, set_config, ALTER ROLE … SET …).
    SpoofAttempt,
    /// An attempt to store a token in role, database or function settings.
    TokenStored,
    /// A write refused by a row-level security check (`WITH CHECK`: wrong workspace or permission).
    WriteRefused,
    /// An administration function called by a role that may not.
    AdminRefused,
    /// A token set for the whole session where `tenancy.session_tokens = refuse` (pooled roles).
    SessionToken,
    /// An API key of the wrong shape or checksum (refused before any table is read).
    ApiKeyMalformed,
    /// An API key that no row matches.
    ApiKeyUnknown,
    /// A revoked API key.
    ApiKeyRevoked,
    /// An API key past its expiry, or a rotated key past its grace period.
    ApiKeyExpired,
    /// Both `tenancy.token` and `tenancy.api_key` are set.
    BothCredentials,
    /// A cursor `WITH HOLD` declared under a per-transaction credential: it would keep that
    /// identity's rows for the next client of a pooled server connection.
    HeldCursor,
    /// A credential that was not a bound parameter of the statement where
    /// `tenancy.credentials_in_text = refuse`: statement text is readable by others before parsing.
    CredentialInText,
    /// Not a refusal: the key set of a trusted issuer changed (who can add a key can mint every
    /// identity, so each change is recorded and alerts like a forgery would).
    IssuerKeysChanged,
}

impl Reason {
    /// The stable, snake_case name of the reason.
    pub fn code(self) -> &'static str {
        match self {
            Reason::NoToken => "no_token",
            Reason::TooLarge => "too_large",
            Reason::Malformed => "malformed",
            Reason::UnsupportedAlgorithm => "unsupported_algorithm",
            Reason::AlgorithmNotAllowed => "algorithm_not_allowed",
            Reason::CriticalHeader => "critical_header",
            Reason::EmbeddedKey => "embedded_key",
            Reason::IssuerNotTrusted => "issuer_not_trusted",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::InvalidClaim => "invalid_claim",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::IssuedInFuture => "issued_in_future",
            Reason::AudienceMismatch => "audience_mismatch",
            Reason::NoWorkspace => "no_workspace",
            Reason::WorkspaceUnknown => "workspace_unknown",
            Reason::WorkspaceDisabled => "workspace_disabled",
            Reason::NotMember => "not_member",
            Reason::MemberDisabled => "member_disabled",
            Reason::SessionRevoked => "session_revoked",
            Reason::SpoofAttempt => "spoof_attempt",
            Reason::TokenStored => "token_stored",
            Reason::WriteRefused => "write_refused",
            Reason::AdminRefused => "admin_refused",
            Reason::SessionToken => "session_token",
            Reason::ApiKeyMalformed => "api_key_malformed",
            Reason::ApiKeyUnknown => "api_key_unknown",
            Reason::ApiKeyRevoked => "api_key_revoked",
            Reason::ApiKeyExpired => "api_key_expired",
            Reason::BothCredentials => "both_credentials",
            Reason::HeldCursor => "held_cursor",
            Reason::CredentialInText => "credential_in_text",
            Reason::IssuerKeysChanged => "issuer_keys_changed",
        }
    }

    /// The lowercase error message a client sees.
    pub fn message(self) -> &'static str {
        match self {
            Reason::NoToken => "no tenancy token is set",
            Reason::TooLarge => "tenancy token is too large",
            Reason::Malformed => "tenancy token is malformed",
            Reason::UnsupportedAlgorithm => "tenancy token uses an unsupported signature algorithm",
            Reason::AlgorithmNotAllowed => "tenancy token algorithm is not allowed for its issuer",
            Reason::CriticalHeader => "tenancy token has a critical header extension",
            Reason::EmbeddedKey => "tenancy token carries its own key material",
            Reason::IssuerNotTrusted => "tenancy token issuer is not trusted",
            Reason::UnknownKey => "tenancy token key id is unknown",
            Reason::BadSignature => "tenancy token signature does not verify",
            Reason::InvalidClaim => "tenancy token has an invalid claim",
            Reason::Expired => "tenancy token has expired",
            Reason::NotYetValid => "tenancy token is not valid yet",
            Reason::IssuedInFuture => "tenancy token is issued in the future",
            Reason::AudienceMismatch => "tenancy token audience does not match",
            Reason::NoWorkspace => "tenancy token carries no organization",
            Reason::WorkspaceUnknown => "workspace is unknown",
            Reason::WorkspaceDisabled => "workspace is disabled",
            Reason::NotMember => "user is not a member of the workspace",
            Reason::MemberDisabled => "workspace member is disabled",
            Reason::SessionRevoked => "session has been revoked",
            Reason::SpoofAttempt => "identity settings are derived from the verified token and cannot be set",
            Reason::TokenStored => "tenancy.token cannot be stored in role, database or function settings",
            Reason::WriteRefused => "write refused by a row-level security policy",
            Reason::AdminRefused => "permission denied to administer pg_tenancy",
            Reason::SessionToken => "tenancy token was set for the whole session",
            Reason::ApiKeyMalformed => "api key is malformed",
            Reason::ApiKeyUnknown => "api key is unknown",
            Reason::ApiKeyRevoked => "api key has been revoked",
            Reason::ApiKeyExpired => "api key has expired",
            Reason::BothCredentials => "both tenancy.token and tenancy.api_key are set",
            Reason::HeldCursor => "a cursor with hold cannot outlive the transaction's identity",
            Reason::CredentialInText => "tenancy credential was not a bound parameter",
            Reason::IssuerKeysChanged => "the keys of a trusted issuer changed",
        }
    }

    /// What a client can do about it.
    pub fn hint(self) -> Option<&'static str> {
        match self {
            Reason::NoToken => Some(
                "Set a verified identity first: SELECT set_config('tenancy.token', $1, true), or SET LOCAL tenancy.token.",
            ),
            Reason::Expired => Some("Obtain a fresh access token from WorkOS and set it again."),
            Reason::IssuerNotTrusted | Reason::UnknownKey => Some(
                "An administrator registers issuers and keys with tenancy.add_issuer() and tenancy.set_jwks().",
            ),
            Reason::NoWorkspace => {
                Some("Request the access token inside an organization so that it carries org_id.")
            }
            Reason::BothCredentials => Some("Set one credential per transaction: RESET the other first."),
            Reason::HeldCursor => Some(
                "Declare the cursor without HOLD and fetch before COMMIT: a held cursor stays with the server connection, which a pooler hands to its next client.",
            ),
            Reason::ApiKeyMalformed => Some("An api key is 53 characters starting with tnk_; copy it again."),
            Reason::CredentialInText => Some(
                "Bind it as a parameter of the extended protocol: SELECT set_config('tenancy.token', $1, true). Statement text is visible in pg_stat_activity before it is parsed, so this role (tenancy.credentials_in_text = refuse) accepts no other form.",
            ),
            Reason::SessionToken => Some(
                "Behind a transaction pooler, set the token per transaction: SET LOCAL tenancy.token, or set_config('tenancy.token', $1, true).",
            ),
            Reason::WorkspaceUnknown | Reason::NotMember => Some(
                "An administrator maps organizations in tenancy.workspaces and users in tenancy.members.",
            ),
            _ => None,
        }
    }

    /// Critical denials raise a real-time alert: forgery, unknown trust anchors, revoked sessions.
    pub fn is_critical(self) -> bool {
        matches!(
            self,
            Reason::BadSignature
                | Reason::IssuerNotTrusted
                | Reason::UnknownKey
                | Reason::EmbeddedKey
                | Reason::AlgorithmNotAllowed
                | Reason::UnsupportedAlgorithm
                | Reason::SessionRevoked
                | Reason::SpoofAttempt
                | Reason::ApiKeyUnknown
                | Reason::ApiKeyRevoked
                | Reason::IssuerKeysChanged
        )
    }

    /// Every reason, in `index()` order (the audit counters are an array).
    pub const ALL: [Reason; 34] = [
        Reason::NoToken,
        Reason::TooLarge,
        Reason::Malformed,
        Reason::UnsupportedAlgorithm,
        Reason::AlgorithmNotAllowed,
        Reason::CriticalHeader,
        Reason::EmbeddedKey,
        Reason::IssuerNotTrusted,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::InvalidClaim,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::IssuedInFuture,
        Reason::AudienceMismatch,
        Reason::NoWorkspace,
        Reason::WorkspaceUnknown,
        Reason::WorkspaceDisabled,
        Reason::NotMember,
        Reason::MemberDisabled,
        Reason::SessionRevoked,
        Reason::SpoofAttempt,
        Reason::TokenStored,
        Reason::WriteRefused,
        Reason::AdminRefused,
        Reason::SessionToken,
        Reason::ApiKeyMalformed,
        Reason::ApiKeyUnknown,
        Reason::ApiKeyRevoked,
        Reason::ApiKeyExpired,
        Reason::BothCredentials,
        Reason::HeldCursor,
        Reason::CredentialInText,
        Reason::IssuerKeysChanged,
    ];

    /// Position of the reason in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What an (unverified) token said about itself, kept for the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenClaims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub org_id: Option<String>,
    pub sid: Option<String>,
    pub kid: Option<String>,
    /// Unix seconds, always inside `claims::TIMESTAMP_SECONDS`.
    pub exp: Option<i64>,
    /// The payload had an `exp` that is not a number of that range (recorded as such, not as a time).
    pub exp_unrecordable: bool,
}

/// A refusal: the reason, a detail that is safe to show, and the claims seen so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    pub detail: String,
    pub seen: SeenClaims,
}

impl Denial {
    /// A denial with a detail and no claims seen yet.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Denial {
        Denial {
            reason,
            detail: detail.into(),
            seen: SeenClaims::default(),
        }
    }

    /// Attaches what the token claimed.
    pub fn with_seen(mut self, seen: &SeenClaims) -> Denial {
        self.seen = seen.clone();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn all_lists_every_reason_in_index_order_with_distinct_codes() {
        let codes: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Reason::ALL.len());
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?}");
        }
    }
}
