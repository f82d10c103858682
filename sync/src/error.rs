//! Why a pass did not complete, by kind (the `errors_total{kind}` metric).

use crate::workos::ApiError;

/// A failure of one step; the database is left as it was for that step.
#[derive(Debug)]
pub enum SyncError {
    /// The WorkOS API failed or refused.
    Api(ApiError),
    /// The database failed (connection, SQL, permissions).
    Database(String),
    /// WorkOS sent something the companion will not apply (an empty or policy-violating JWKS, a
    /// malformed object in a listing).
    Refused(String),
}

impl SyncError {
    /// A short stable name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            SyncError::Api(e) => e.kind(),
            SyncError::Database(_) => "database",
            SyncError::Refused(_) => "refused",
        }
    }
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::Api(e) => write!(f, "{e}"),
            SyncError::Database(e) => write!(f, "database: {e}"),
            SyncError::Refused(e) => write!(f, "{e}"),
        }
    }
}

impl From<ApiError> for SyncError {
    fn from(e: ApiError) -> Self {
        SyncError::Api(e)
    }
}

impl From<tokio_postgres::Error> for SyncError {
    fn from(e: tokio_postgres::Error) -> Self {
        SyncError::Database(crate::db::describe(&e))
    }
}
