//! Shared set-up of the companion's tests: the WorkOS fixture, a database with the extension that
//! trusts the fixture's issuer, the companion's login role (granted tenancy_sync only), an
//! application role, tokens signed with the repository's test keys, and the companion binary.

#![allow(dead_code)]

pub mod alerting;
pub mod fixture;
pub mod receiver;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fixture::{Fixture, API_KEY, CLIENT_ID};
use postgres::{Client, NoTls};
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde_json::{json, Value};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

pub const DATABASE: &str = "tenancy_sync_tests";
pub const SYNC_ROLE: &str = "tenancy_sync_bot";
pub const SYNC_PASSWORD: &str = "pw-9d8c7b6a-not-for-logs";
/// Alert delivery's own login (granted `tenancy_alerts`), apart from the companion's.
pub const ALERT_ROLE: &str = "tenancy_alert_bot";
pub const APP_ROLE: &str = "tenancy_sync_app";

/// One test at a time: they share the database and the audit writer.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn port() -> String {
    std::env::var("PG_TENANCY_TEST_PORT").expect("PG_TENANCY_TEST_PORT: run through scripts/test")
}

/// A connection as `user` to `dbname`.
pub fn connect(user: &str, dbname: &str) -> Client {
    Client::connect(
        &format!("host=127.0.0.1 port={} user={user} dbname={dbname}", port()),
        NoTls,
    )
    .expect("connection")
}

/// The companion's database URL (with a password, which must never be logged).
pub fn sync_url() -> String {
    format!(
        "postgresql://{SYNC_ROLE}:{SYNC_PASSWORD}@127.0.0.1:{}/{DATABASE}?sslmode=disable",
        port()
    )
}

/// Recreates the test database: the extension, the fixture's issuer with `jwks`, workspace
/// ws_acme ↔ org_acme and ws_globex ↔ org_globex, no members.
pub fn fresh_database(fixture: &Fixture, jwks: &str) -> Client {
    let mut postgres = connect("postgres", "postgres");
    // The audit writer persists denials (and signals unknown key ids) in the audit database.
    postgres
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_tenancy")
        .unwrap();
    postgres
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .unwrap();
    postgres.batch_execute(&format!("CREATE DATABASE {DATABASE}")).unwrap();
    postgres
        .batch_execute(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{SYNC_ROLE}') THEN
                 CREATE ROLE {SYNC_ROLE} LOGIN PASSWORD '{SYNC_PASSWORD}';
               END IF;
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ALERT_ROLE}') THEN
                 CREATE ROLE {ALERT_ROLE} LOGIN PASSWORD '{SYNC_PASSWORD}';
               END IF;
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                 CREATE ROLE {APP_ROLE} LOGIN;
               END IF;
             END $$;
             GRANT tenancy_alerts TO {ALERT_ROLE};"
        ))
        .unwrap();
    let mut admin = connect("postgres", DATABASE);
    admin
        .batch_execute(&format!(
            "CREATE EXTENSION pg_tenancy;
             GRANT tenancy_sync TO {SYNC_ROLE};
             SELECT tenancy.add_issuer('{0}', '{jwks}'::jsonb);
             UPDATE tenancy.issuers SET sync_jwks_url = 'https://api.workos.test/sso/jwks' WHERE issuer = '{0}';
             INSERT INTO tenancy.workspaces VALUES ('ws_acme', 'org_acme', 'Acme', NULL),
                                                   ('ws_globex', 'org_globex', 'Globex', NULL);",
            fixture.issuer()
        ))
        .unwrap();
    admin
}

/// The repository's test JWKS (kid k1) and the second key's (k2).
pub fn jwks(name: &str) -> Value {
    let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// k1 and k2 published together.
pub fn both_keys() -> Value {
    let mut keys = jwks("test-issuer-jwks.json")["keys"].as_array().unwrap().clone();
    keys.extend(
        jwks("test-issuer-k2-jwks.json")["keys"]
            .as_array()
            .unwrap()
            .iter()
            .cloned(),
    );
    json!({ "keys": keys })
}

/// A token for `sub` in `org` with session `sid`, signed with key `kid` (k1 or k2).
pub fn token(fixture: &Fixture, kid: &str, sub: &str, org: &str, sid: &str) -> String {
    let file = if kid == "k1" {
        "test-issuer-rsa.pk8"
    } else {
        "test-issuer-rsa-k2.pk8"
    };
    let der = std::fs::read(format!("{}/../tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let key = RsaKeyPair::from_pkcs8(&der).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": fixture.issuer(), "sub": sub, "org_id": org, "role": "member", "sid": sid,
                        "permissions": [], "iat": now, "exp": now + 300});
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"RS256","kid":"{kid}","typ":"JWT"}}"#));
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut sig)
        .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// The workspace the token resolves to as the application role, or the refusal's SQLSTATE.
pub fn identity(token: &str) -> Result<String, String> {
    let mut app = connect(APP_ROLE, DATABASE);
    let mut tx = app.transaction().unwrap();
    let code = |e: postgres::Error| e.code().map(|c| c.code().to_string()).unwrap_or_else(|| e.to_string());
    tx.execute("SELECT set_config('tenancy.token', $1, true)", &[&token])
        .map_err(code)?;
    tx.query_one("SELECT tenancy.workspace_id()", &[])
        .map(|row| row.get(0))
        .map_err(code)
}

/// The companion's environment for `fixture`.
pub fn command(fixture: &Fixture, subcommand: &str, extra: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pg-tenancy-sync"));
    cmd.arg(subcommand)
        .env_clear()
        .env("PG_TENANCY_SYNC_DATABASE_URL", sync_url())
        .env("WORKOS_API_KEY", API_KEY)
        .env("WORKOS_CLIENT_ID", CLIENT_ID)
        .env("WORKOS_API_BASE", &fixture.base)
        .env("WORKOS_ISSUER", fixture.issuer())
        .env("PG_TENANCY_SYNC_REQUEST_TIMEOUT", "2");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `once`; checks that no secret reached its output; returns its exit code and stderr.
pub fn once(fixture: &Fixture, extra: &[(&str, &str)]) -> (i32, String) {
    let output = command(fixture, "once", extra).output().unwrap();
    let log = no_secrets(&output);
    (output.status.code().unwrap_or(-1), log)
}

/// The output as text, after asserting it carries neither the API key nor the password.
pub fn no_secrets(output: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!text.contains(API_KEY), "the API key reached the output:\n{text}");
    assert!(
        !text.contains(SYNC_PASSWORD),
        "the database password reached the output:\n{text}"
    );
    text
}

/// A `run` in the background, killed when dropped (a failing test leaves no process behind).
pub struct Running {
    child: Child,
    pub log: std::path::PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `run` in the background (stderr captured to a file checked on `stop`).
pub fn start(fixture: &Fixture, extra: &[(&str, &str)]) -> Running {
    let log = std::env::temp_dir().join(format!(
        "pg-tenancy-sync-{}-{}.log",
        std::process::id(),
        fixture.base.rsplit(':').next().unwrap()
    ));
    let file = std::fs::File::create(&log).unwrap();
    let child = command(fixture, "run", extra)
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    Running { child, log }
}

/// Starts `run` like `start`, with at most `files` open file descriptors (`prlimit`, which
/// executes the companion in its own process: `Running::pid` is the companion's).
pub fn start_with_file_limit(fixture: &Fixture, extra: &[(&str, &str)], files: u32) -> Running {
    let log = std::env::temp_dir().join(format!("pg-tenancy-sync-{}-limited.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let inner = command(fixture, "run", extra);
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={files}:{files}"))
        .arg("--")
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_clear();
    for (key, value) in inner.get_envs() {
        if let Some(value) = value {
            cmd.env(key, value);
        }
    }
    let child = cmd.stdout(Stdio::null()).stderr(file).spawn().unwrap();
    Running { child, log }
}

impl Running {
    /// The companion's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Stops a `run` with SIGTERM and checks its log for secrets; returns the log.
pub fn stop(mut running: Running) -> String {
    let _ = Command::new("kill").arg(running.child.id().to_string()).status();
    let _ = running.child.wait();
    let text = std::fs::read_to_string(&running.log).unwrap_or_default();
    assert!(
        !text.contains(API_KEY) && !text.contains(SYNC_PASSWORD),
        "a secret reached the log:\n{text}"
    );
    text
}

/// Polls `f` every 50 ms until it returns Some, for at most `seconds`.
pub fn eventually<T>(what: &str, seconds: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// HMAC-SHA256 of `message` under `secret`, in hex (as WorkOS and pg-tenancy-sync sign webhooks).
pub fn hmac_hex(secret: &str, message: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, message.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
