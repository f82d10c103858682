//! The companion's one error type. Each variant names a cause; `kind` is its short stable name in
//! logs and in the `errors_total{kind}` metric. Messages are lowercase and carry no secret: a URL
//! that is a secret is never part of one (the configuration names the setting instead), and
//! HTTP errors are described without their URL (`retry::without_url`).

use std::fmt;

/// Why something did not happen; whatever a failed step was doing is left as it was.
#[derive(Debug)]
pub enum SyncError {
    /// A setting is missing or invalid, or the configuration file cannot be used.
    Config(String),
    /// The database URL does not parse.
    DatabaseUrl(String),
    /// TLS for the database connection cannot be set up.
    Tls(String),
    /// The database failed (connection, SQL, permissions).
    Database(String),
    /// The audit database failed while alerts were delivered.
    AuditDatabase(String),
    /// An HTTP client cannot be built.
    HttpClient(String),
    /// WorkOS answered a 4xx other than 429 (not retried); `body` is its error text, truncated.
    ApiRefused { status: u16, body: String },
    /// WorkOS stayed unreachable until the deadline; `last` is the last failure.
    ApiUnavailable { last: String },
    /// WorkOS answered 2xx with a body that is not the JSON expected.
    ApiDecode(String),
    /// A WorkOS object lacks a field or has one of the wrong form.
    Malformed(String),
    /// WorkOS sent something the companion will not apply (an empty or policy-violating JWKS, a
    /// malformed object in a listing).
    Refused(String),
    /// An alert sink kept failing until the deadline (`once`).
    SinkUnavailable(String),
    /// Another companion holds an alert sink's lock.
    SinkClaimed,
    /// A condition `check` found unmet (the extension missing, a role not granted, an issuer not
    /// trusted).
    Unmet(String),
    /// A supervised task of the service panicked or ended.
    Task { task: String, problem: String },
}

impl SyncError {
    /// A short stable name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            SyncError::Config(_) | SyncError::DatabaseUrl(_) => "config",
            SyncError::Tls(_) | SyncError::Database(_) => "database",
            SyncError::AuditDatabase(_) => "alert_database",
            SyncError::HttpClient(_) => "start",
            SyncError::ApiRefused { .. } => "api_refused",
            SyncError::ApiUnavailable { .. } => "api_unavailable",
            SyncError::ApiDecode(_) => "api_decode",
            SyncError::Malformed(_) => "malformed",
            SyncError::Refused(_) => "refused",
            SyncError::SinkUnavailable(_) | SyncError::SinkClaimed => "alert_delivery",
            SyncError::Unmet(_) => "unmet",
            SyncError::Task { .. } => "task",
        }
    }
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::Config(e) | SyncError::Malformed(e) | SyncError::Refused(e) | SyncError::Unmet(e) => {
                write!(f, "{e}")
            }
            SyncError::DatabaseUrl(e) => write!(f, "database URL: {e}"),
            SyncError::Tls(e) => write!(f, "TLS: {e}"),
            SyncError::Database(e) => write!(f, "database: {e}"),
            SyncError::AuditDatabase(e) => write!(f, "audit database: {e}"),
            SyncError::HttpClient(e) => write!(f, "HTTP client: {e}"),
            SyncError::ApiRefused { status, body } => write!(f, "WorkOS answered {status}: {body}"),
            SyncError::ApiUnavailable { last } => write!(f, "WorkOS unreachable until the deadline: {last}"),
            SyncError::ApiDecode(e) => write!(f, "WorkOS sent an unexpected body: {e}"),
            SyncError::SinkUnavailable(e) => write!(f, "sink unreachable until the deadline: {e}"),
            SyncError::SinkClaimed => write!(f, "another companion delivers to this sink"),
            SyncError::Task { task, problem } => write!(f, "task {task}: {problem}"),
        }
    }
}

impl std::error::Error for SyncError {}

impl From<tokio_postgres::Error> for SyncError {
    fn from(e: tokio_postgres::Error) -> Self {
        SyncError::Database(describe(&e))
    }
}

/// A database error as one line: SQLSTATE, message, and hint when there is one.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} ({})", db.message(), db.code().code());
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        None => e.to_string(),
    }
}

/// An error of the audit database, as alert delivery reports it.
pub fn audit(e: tokio_postgres::Error) -> SyncError {
    SyncError::AuditDatabase(describe(&e))
}
