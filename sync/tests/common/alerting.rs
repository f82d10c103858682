//! Shared set-up of the alert tests and benchmark: the audit database's URL for the companion,
//! fresh alert cursors, denials raised as the application role, and the companion's alert
//! settings.

use super::fixture::Fixture;
use super::*;

pub const WEBHOOK_SECRET: &str = "whsec_alerts_current";
pub const OLD_WEBHOOK_SECRET: &str = "whsec_alerts_previous";
pub const ROUTING_KEY: &str = "R0UTINGKEY0123456789abcdefabcdef";

/// A fresh test database, the audit database's alert cursors removed (every sink is new), and a
/// fixture that serves the test keys.
pub fn setup() -> Fixture {
    let f = Fixture::start();
    f.with(|s| s.jwks = jwks("test-issuer-jwks.json"));
    fresh_database(&f, &jwks("test-issuer-jwks.json").to_string());
    connect("postgres", "postgres")
        .batch_execute("DELETE FROM tenancy.sync_state WHERE name LIKE 'alerts:%'")
        .unwrap();
    f
}

/// The companion's settings for the receivers given (the audit database is `postgres`).
pub fn alert_env<'a>(extra: &[(&'a str, &'a str)], audit_url: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("PG_TENANCY_ALERT_DATABASE_URL", audit_url),
        ("PG_TENANCY_ALERT_INTERVAL", "1"),
    ];
    env.extend_from_slice(extra);
    env
}

/// The audit database's URL for alert delivery's own login (granted `tenancy_alerts`).
pub fn audit_url() -> String {
    sync_url()
        .replace(&format!("/{DATABASE}?"), "/postgres?")
        .replace(&format!("{SYNC_ROLE}:"), &format!("{ALERT_ROLE}:"))
}

/// Waits until `sink` has its cursor (the companion started following).
pub fn following(sink: &str) {
    let mut audit = connect("postgres", "postgres");
    eventually(&format!("the {sink} cursor"), 20, || {
        audit
            .query_opt(
                "SELECT 1 FROM tenancy.sync_state WHERE name = $1",
                &[&format!("alerts:{sink}")],
            )
            .unwrap()
            .map(|_| ())
    });
}

/// How a test denial is raised.
#[derive(Clone, Copy)]
pub enum Denial {
    /// A token whose signature was tampered with: `bad_signature`, critical.
    Critical,
    /// Text that is no token: `malformed`, not critical on its own.
    Malformed,
    /// A token of the trusted issuer with a random signature (`bad_signature`, critical) and an
    /// `exp` PostgreSQL can store but chrono cannot read (year 287168).
    FarFutureExpiry,
}

/// Raises one denial as the application role with `application_name`; `rolled_back` makes it
/// happen inside a transaction that is rolled back.
pub fn deny(f: &Fixture, application: &str, how: Denial, rolled_back: bool) {
    let port = std::env::var("PG_TENANCY_TEST_PORT").unwrap();
    let mut app = postgres::Client::connect(
        &format!("host=127.0.0.1 port={port} user={APP_ROLE} dbname={DATABASE} application_name={application}"),
        postgres::NoTls,
    )
    .unwrap();
    let credential = credential(f, how);
    let refused = if rolled_back {
        let mut tx = app.transaction().unwrap();
        tx.execute("SELECT 1", &[]).unwrap();
        let refused = tx
            .execute("SELECT set_config('tenancy.token', $1, true)", &[&credential])
            .and_then(|_| tx.execute("SELECT tenancy.workspace_id()", &[]));
        tx.rollback().unwrap();
        refused
    } else {
        app.execute("SELECT set_config('tenancy.token', $1, false)", &[&credential])
            .and_then(|_| app.execute("SELECT tenancy.workspace_id()", &[]))
    };
    assert_eq!(refused.unwrap_err().code().map(|c| c.code()), Some("28000"));
}

/// The credential that raises `how`'s denial.
pub fn credential(f: &Fixture, how: Denial) -> String {
    match how {
        Denial::Critical => {
            let good = token(f, "k1", "user_alice", "org_acme", "s1");
            let mut bytes = good.into_bytes();
            let at = bytes.len() - 10;
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            String::from_utf8(bytes).unwrap()
        }
        Denial::Malformed => "not-a-token".to_string(),
        Denial::FarFutureExpiry => {
            use base64::engine::general_purpose::URL_SAFE_NO_PAD;
            use base64::Engine;
            let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#);
            let claims = serde_json::json!({"iss": f.issuer(), "sub": "user_alice", "org_id": "org_acme",
                                            "exp": 9_000_000_000_000_i64});
            let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
            format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode([7_u8; 256]))
        }
    }
}

/// How many audit rows Slack messages cover: each message's header says "… N denial(s) …".
pub fn slack_rows(messages: &[super::receiver::Received]) -> usize {
    messages
        .iter()
        .map(|m| {
            let text = m.json()["text"].as_str().unwrap().to_string();
            text.split(' ')
                .nth(2)
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0)
        })
        .sum()
}
