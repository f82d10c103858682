//! The identity a verified credential yields, as the layers above read it.

/// What a verified token and the membership rows agree on.
#[derive(Debug, Clone)]
pub struct Identity {
    pub workspace_id: Option<String>,
    pub organization_id: Option<String>,
    pub user_id: String,
    pub role: Option<String>,
    pub permissions: Vec<String>,
    pub session_id: Option<String>,
    pub issuer: String,
    pub expires_at: i64,
    pub claims: serde_json::Value,
    /// Set when the identity comes from an API key (`tenancy.api_key`).
    pub api_key_id: Option<String>,
}
