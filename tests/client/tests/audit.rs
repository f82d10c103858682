//! Every denial is recorded in the server log, the shared-memory ring (`tenancy.denials`,
//! `tenancy.stats`) and, through the background worker, `tenancy.audit_log`, whatever happens to
//! the denying transaction; critical ones raise `NOTIFY tenancy_alert`.
//!
//! The counters are cluster-wide, so the tests of this file run one at a time.

#[allow(dead_code)] // each test binary uses a different part of it
mod common;

use common::*;
use fallible_iterator::FallibleIterator;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Serializes the tests of this file.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A superuser connection to the audit database (`tenancy.audit_database`, default postgres),
/// where the worker writes `tenancy.audit_log`.
fn audit_db() -> postgres::Client {
    setup();
    let mut db = connect_with("postgres", "postgres", "").unwrap();
    db.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_tenancy").unwrap();
    db
}

/// A connection as the application role, tagged with `application_name`.
fn tagged_app(tag: &str) -> postgres::Client {
    setup();
    connect_with(APP_ROLE, DATABASE, &format!("-c application_name={tag}")).unwrap()
}

/// A counter of `tenancy.stats`.
fn stat(client: &mut postgres::Client, name: &str) -> i64 {
    client
        .query_one("SELECT value FROM tenancy.stats WHERE name = $1", &[&name])
        .unwrap()
        .get(0)
}

/// Waits (at most 10 s) until the audit writer has persisted every denial recorded so far and
/// the alert counter has stopped moving: the denials of earlier test binaries are written
/// asynchronously, and an alert they raised after a test read the counter was counted as the
/// test's (`no_claim_value_stops_the_audit_trail`: 26 alerts against 25, now and then).
fn settle(client: &mut postgres::Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last_alerts = -1;
    while Instant::now() < deadline {
        let (denials, persisted, alerts) = (
            stat(client, "denials"),
            stat(client, "persisted"),
            stat(client, "alerts"),
        );
        if persisted >= denials && alerts == last_alerts {
            return;
        }
        last_alerts = alerts;
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `sql` (one bigint) until it returns at least `want` or 20 s pass; returns the last value.
fn wait_for(client: &mut postgres::Client, sql: &str, tag: &str, want: i64) -> i64 {
    let start = Instant::now();
    loop {
        let n: i64 = client.query_one(sql, &[&tag]).unwrap().get(0);
        if n >= want || start.elapsed() > Duration::from_secs(20) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A token for alice whose signature does not verify.
fn forged_token() -> String {
    let good = token("user_alice", "org_acme");
    format!("{}.{}", &good[..good.rfind('.').unwrap()], "A".repeat(342))
}

#[test]
fn a_rolled_back_denial_reaches_log_ring_table_and_listeners() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tag = &unique("audit_rollback");
    // The listener is the application role: any role that may connect to the audit database.
    drop(audit_db());
    let mut listener = connect_with(APP_ROLE, "postgres", "").unwrap();
    listener.batch_execute("LISTEN tenancy_alert").unwrap();
    let forged = forged_token();

    let mut app = tagged_app(tag);
    let mut tx = app.transaction().unwrap();
    let err = tx
        .execute("SELECT set_config('tenancy.token', $1, true)", &[&forged])
        .unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    drop(tx); // ROLLBACK

    let mut admin = admin();
    let (reason, sub, role, critical): (String, Option<String>, String, bool) = admin
        .query_one(
            "SELECT reason, sub, role, critical FROM tenancy.denials
              WHERE application_name = $1 ORDER BY seq DESC LIMIT 1",
            &[&tag],
        )
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .unwrap();
    assert_eq!(
        (reason.as_str(), sub.as_deref(), role.as_str(), critical),
        ("bad_signature", Some("user_alice"), APP_ROLE, true)
    );

    let mut audit = audit_db();
    let persisted = wait_for(
        &mut audit,
        "SELECT count(*) FROM tenancy.audit_log WHERE application_name = $1 AND reason = 'bad_signature'",
        tag,
        1,
    );
    assert_eq!(persisted, 1, "the worker persisted the rolled-back denial");

    // The listener gets a wake-up signal only; the details are read from the audit log, which
    // only tenancy_admin and tenancy_auditor may read.
    let mut alerts = listener.notifications();
    let alert = alerts
        .timeout_iter(Duration::from_secs(20))
        .find(|n| Ok(n.channel() == "tenancy_alert"))
        .unwrap()
        .expect("a tenancy_alert notification for the critical denial");
    drop(alerts);
    let payload: serde_json::Value = serde_json::from_str(alert.payload()).unwrap();
    assert_eq!(
        payload,
        serde_json::json!({"kind": "denial", "severity": "critical"}),
        "the signal carries no tenant data"
    );
    for secret in [tag.as_str(), "user_alice", "org_acme"] {
        assert!(!alert.payload().contains(secret), "{}", alert.payload());
    }
    let (reason, sub): (String, Option<String>) = audit
        .query_one(
            "SELECT reason, sub FROM tenancy.audit_log WHERE application_name = $1",
            &[&tag],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((reason.as_str(), sub.as_deref()), ("bad_signature", Some("user_alice")));
    let refused = listener
        .query("SELECT count(*) FROM tenancy.audit_log", &[])
        .unwrap_err();
    assert_eq!(
        sqlstate(&refused),
        "42501",
        "the listener cannot read the details: {refused}"
    );

    if let Ok(path) = std::env::var("PG_TENANCY_SERVER_LOG") {
        let log = std::fs::read_to_string(path).unwrap();
        let line = log
            .lines()
            .find(|l| l.contains("pg_tenancy denial:") && l.contains(tag))
            .expect("a structured log line");
        assert!(line.contains("\"reason\":\"bad_signature\""), "{line}");
        assert!(!line.contains(&forged[forged.len() - 40..]), "no token in the log line");
    }
}

#[test]
fn concurrent_denials_add_up_exactly() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const CLIENTS: usize = 8;
    const EACH: usize = 1250;
    let tag = unique("audit_storm");
    let tag = tag.as_str();
    let mut admin = admin();
    let before = ["denials", "denials.no_token", "dropped"].map(|name| stat(&mut admin, name));
    let mut audit = audit_db();
    let persisted_before: i64 = audit
        .query_one(
            "SELECT count(*) FROM tenancy.audit_log WHERE application_name = $1",
            &[&tag],
        )
        .unwrap()
        .get(0);

    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let tag = tag.to_string();
            std::thread::spawn(move || {
                let mut app = tagged_app(&tag);
                for _ in 0..EACH {
                    let err = app.query_one("SELECT tenancy.workspace_id()", &[]).unwrap_err();
                    assert_eq!(sqlstate(&err), "28000");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }

    let total = (CLIENTS * EACH) as i64;
    let after = ["denials", "denials.no_token", "dropped"].map(|name| stat(&mut admin, name));
    assert_eq!(after[0] - before[0], total, "every denial counted once");
    assert_eq!(after[1] - before[1], total, "and under its reason");

    let ring: Vec<(String, String, String)> = admin
        .query(
            "SELECT reason, statement, detail FROM tenancy.denials WHERE application_name = $1",
            &[&tag],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let capacity = stat(&mut admin, "ring_capacity") as usize;
    assert_eq!(
        ring.len(),
        capacity.min(CLIENTS * EACH),
        "the ring holds the newest entries"
    );
    for (reason, statement, detail) in &ring {
        assert_eq!(reason, "no_token");
        assert_eq!(statement, "SELECT tenancy.workspace_id()", "entries are intact");
        assert_eq!(detail, "tenancy.token is not set");
    }

    let dropped = after[2] - before[2];
    let sql = "SELECT count(*) FROM tenancy.audit_log WHERE application_name = $1";
    let want = persisted_before + total - dropped;
    let persisted = wait_for(&mut audit, sql, tag, want);
    assert_eq!(
        persisted - persisted_before + dropped,
        total,
        "each denial is persisted or counted as dropped"
    );
    let leaked: i64 = audit
        .query_one(
            "SELECT count(*) FROM tenancy.audit_log WHERE statement LIKE '%eyJ%' OR detail LIKE '%eyJ%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0, "no token in the audit log");
}

#[test]
fn spoofing_and_refused_admin_calls_are_denials_too() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tag = &unique("audit_spoof");
    let mut app = tagged_app(tag);
    assert!(app.batch_execute("SET tenancy.workspace_id = 'ws_globex'").is_err());
    assert!(app
        .batch_execute("SELECT tenancy.revoke_session('session_user_bob')")
        .is_err());
    let err = refusal_as(
        &mut app,
        "user_alice",
        "org_acme",
        "INSERT INTO documents (workspace_id, title) VALUES ('ws_globex', 'planted')",
    );
    assert_eq!(sqlstate(&err), "42501", "{err}");
    let reasons: Vec<String> = first_column(
        &mut admin(),
        "SELECT reason FROM tenancy.denials WHERE application_name = $1 ORDER BY seq",
        &[&tag],
    );
    assert_eq!(reasons, ["spoof_attempt", "admin_refused", "write_refused"]);
}

#[test]
fn the_audit_writer_resolves_nothing_through_the_audit_databases_settings() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tag = &unique("audit_hostile_path");
    // The owner of the audit database (here: a role that owns schema evil there) shadows the
    // operators and types the writer's statements use, and sets the database's search_path, which
    // every new session of that database, the audit writer's included, starts with.
    let mut audit = audit_db();
    audit
        .batch_execute(
            "DROP SCHEMA IF EXISTS evil CASCADE;
             DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenancy_audit_attacker') THEN
                 CREATE ROLE tenancy_audit_attacker NOLOGIN NOSUPERUSER; END IF; END $$;
             CREATE SCHEMA evil AUTHORIZATION tenancy_audit_attacker;
             SET ROLE tenancy_audit_attacker;
             CREATE TABLE evil.ran (who name, what text);
             GRANT INSERT ON evil.ran TO PUBLIC;
             CREATE FUNCTION evil.trap(what pg_catalog.text) RETURNS boolean LANGUAGE plpgsql AS $f$
             BEGIN
                 INSERT INTO evil.ran VALUES (current_user, what);
                 BEGIN EXECUTE 'ALTER ROLE tenancy_audit_attacker SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
                 RETURN true;
             END $f$;
             CREATE FUNCTION evil.text_eq(a pg_catalog.text, b pg_catalog.text) RETURNS boolean
                 LANGUAGE sql AS $f$ SELECT evil.trap('=') AND pg_catalog.texteq(a, b) $f$;
             CREATE OPERATOR evil.= (LEFTARG = pg_catalog.text, RIGHTARG = pg_catalog.text, FUNCTION = evil.text_eq);
             CREATE FUNCTION evil.cat(a pg_catalog.text, b pg_catalog.int8) RETURNS pg_catalog.text
                 LANGUAGE sql AS $f$ SELECT CASE WHEN evil.trap('||') THEN a OPERATOR(pg_catalog.||) b END $f$;
             CREATE OPERATOR evil.|| (LEFTARG = pg_catalog.text, RIGHTARG = pg_catalog.int8, FUNCTION = evil.cat);
             CREATE DOMAIN evil.text AS pg_catalog.text CHECK (evil.trap('type text'));
             RESET ROLE;
             ALTER DATABASE postgres SET search_path = evil, pg_catalog;",
        )
        .unwrap();
    // A new writer starts with those settings.
    audit
        .batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'pg_tenancy audit'")
        .unwrap();
    let mut app = tagged_app(tag);
    let err = app
        .execute("SELECT set_config('tenancy.token', $1, true)", &[&forged_token()])
        .unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    let start = Instant::now();
    let persisted = loop {
        let n: i64 = audit
            .query_one(
                "SELECT count(*) FROM tenancy.audit_log WHERE application_name = $1",
                &[&tag],
            )
            .unwrap()
            .get(0);
        if n > 0 || start.elapsed() > Duration::from_secs(40) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let ran: Vec<String> = first_column(
        &mut audit,
        "SELECT who || ' ran ' || what FROM evil.ran WHERE who <> 'tenancy_audit_attacker'",
        &[],
    );
    let superuser: bool = audit
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'tenancy_audit_attacker'",
            &[],
        )
        .unwrap()
        .get(0);
    audit
        .batch_execute(
            "ALTER DATABASE postgres RESET search_path;
             ALTER ROLE tenancy_audit_attacker NOSUPERUSER;
             DROP SCHEMA evil CASCADE;",
        )
        .unwrap();
    assert_eq!(
        persisted, 1,
        "the writer persisted the denial under the hostile settings"
    );
    assert!(ran.is_empty(), "attacker code ran with raised rights: {ran:?}");
    assert!(!superuser, "the attacker became a superuser");
}

/// An unsigned token: a header naming `kid`, the given payload, a signature of four bytes.
fn unsigned_token(kid: &serde_json::Value, payload: &serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header = serde_json::json!({"alg": "RS256", "kid": kid});
    format!(
        "{}.{}.AAAA",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}

/// A small deterministic generator (xorshift64*), so that a failure names its seed.
struct Values(u64);

impl Values {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A JSON value of any kind a claim could hold: numbers of every magnitude and sign, strings
    /// with NUL, control characters, non-ASCII and token-shaped text, nesting, null, booleans.
    fn claim(&mut self, depth: u32) -> serde_json::Value {
        use serde_json::json;
        let magnitude = 10f64.powi((self.next() % 610) as i32 - 305);
        let sign = if self.next().is_multiple_of(2) { 1.0 } else { -1.0 };
        match self.next() % (if depth > 2 { 8 } else { 10 }) {
            0 => json!(sign * magnitude * (self.next() % 1000) as f64),
            1 => json!((self.next() as i64)),
            2 => json!(self.next()),
            3 => [
                json!(1e300),
                json!(-1e12),
                json!(1e13),
                json!(9_224_318_016_000_i64),
                json!(-210_866_803_201_i64),
                json!(0),
                json!(4_102_444_800_u64),
            ][(self.next() % 7) as usize]
                .clone(),
            4 => json!(format!("user_\u{0}{}\u{7}é\u{202e}", self.next())),
            5 => json!("x".repeat((self.next() % 5000) as usize)),
            6 => json!(format!("eyJ{}.eyJ{}.sig", "A".repeat(20), "B".repeat(20))),
            7 => [json!(null), json!(true), json!(false)][(self.next() % 3) as usize].clone(),
            8 => json!([self.claim(depth + 1), self.claim(depth + 1)]),
            _ => json!({"nested": self.claim(depth + 1), "exp": self.claim(depth + 1)}),
        }
    }
}

#[test]
fn no_claim_value_stops_the_audit_trail() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tag = &unique("audit_claims");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut values = Values(seed);
    let mut admin = admin();
    settle(&mut admin);
    let alerts_before = stat(&mut admin, "alerts");
    let mut audit = audit_db();
    let mut app = tagged_app(tag);

    // The token of the report first (`exp` 1e300 from an unknown issuer), then arbitrary values in
    // every claim the audit trail records, unsigned and signed.
    let mut tokens = vec![unsigned_token(
        &serde_json::json!("x"),
        &serde_json::json!({"iss": "https://nobody.example", "exp": 1e300}),
    )];
    for i in 0..150 {
        let mut payload = serde_json::json!({
            "iss": if i % 3 == 0 { values.claim(0) } else { serde_json::json!("https://nobody.example") },
            "sub": values.claim(0),
            "org_id": values.claim(0),
            "sid": values.claim(0),
            "exp": values.claim(0),
        });
        if i % 5 == 0 {
            // Signed by the trusted key: the claim rules see these values too.
            payload["iss"] = serde_json::json!("https://auth.test/user_management/client_TEST");
            tokens.push(mint(&payload));
        } else {
            tokens.push(unsigned_token(&values.claim(0), &payload));
        }
    }
    for token in &tokens {
        let mut tx = app.transaction().unwrap();
        let refused = tx.execute("SELECT set_config('tenancy.token', $1, true)", &[token]);
        assert!(refused.is_err(), "seed {seed}: a token was accepted");
        drop(tx);
    }
    // A marker after them: it is persisted only once the writer got past everything before it.
    let mut tx = app.transaction().unwrap();
    assert!(tx
        .execute("SELECT set_config('tenancy.token', $1, true)", &[&forged_token()])
        .is_err());
    drop(tx);
    let denied = tokens.len() as i64 + 1;

    let recent: i64 = admin
        .query_one(
            "SELECT count(*) FROM tenancy.denials WHERE application_name = $1",
            &[&tag],
        )
        .unwrap_or_else(|e| panic!("seed {seed}: tenancy.denials failed: {e}"))
        .get(0);
    assert_eq!(
        recent, denied,
        "seed {seed}: every denial is in the ring and the view reads it"
    );

    let sql = "SELECT count(*) FROM tenancy.audit_log WHERE application_name = $1";
    let persisted = wait_for(&mut audit, sql, tag, denied);
    assert_eq!(persisted, denied, "seed {seed}: every denial reached tenancy.audit_log");
    let (unrecorded, critical, alerted): (i64, i64, i64) = audit
        .query_one(
            "SELECT count(*) FILTER (WHERE exp IS NULL AND detail LIKE '%not a time PostgreSQL can hold%'),
                    count(*) FILTER (WHERE critical), count(*) FILTER (WHERE alert IS NOT NULL)
               FROM tenancy.audit_log WHERE application_name = $1",
            &[&tag],
        )
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .unwrap();
    assert!(unrecorded >= 1, "seed {seed}: exp 1e300 is recorded as not recordable");
    assert!(
        critical >= 1 && alerted >= critical,
        "seed {seed}: critical denials raise alerts"
    );
    let alerts = stat(&mut admin, "alerts") - alerts_before;
    assert_eq!(
        alerts, alerted,
        "seed {seed}: the alert counter counts each alert once (it counted every retry of a blocked batch)"
    );
    let nul: i64 = audit
        .query_one(
            "SELECT count(*) FROM tenancy.audit_log WHERE application_name = $1
                AND (sub LIKE '%' || chr(1) || '%' OR statement LIKE '%eyJ%')",
            &[&tag],
        )
        .unwrap()
        .get(0);
    assert_eq!(nul, 0, "seed {seed}: control characters are escaped and tokens masked");
}

#[test]
fn a_denial_names_its_caller_and_only_pg_tenancy_classifies_denials() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tag = &unique("audit_origin");
    // A forged token given as a startup option is checked only when first used: here inside
    // tenancy.create_api_key, a SECURITY DEFINER function owned by the bootstrap superuser.
    let options = format!("-c application_name={tag} -c tenancy.token={}", forged_token());
    let mut forger = connect_with(APP_ROLE, DATABASE, &options).unwrap();
    let err = forger
        .query_one("SELECT tenancy.create_api_key('ws_acme', 'stolen')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");
    drop(forger);

    // Errors that only read like denials: a RAISE with an administration refusal's words and
    // SQLSTATE, and a row-level security refusal on a table that pg_tenancy does not protect.
    let mut app = tagged_app(tag);
    let raised = app
        .batch_execute(
            r#"DO $$BEGIN RAISE EXCEPTION 'permission denied to rotate api key 1: it carries more than the identity (x)' USING ERRCODE = '42501'; END$$"#,
        )
        .unwrap_err();
    assert_eq!(sqlstate(&raised), "42501");
    let refused = app
        .batch_execute(
            "CREATE TEMP TABLE documents (id int);
             ALTER TABLE documents ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
             CREATE POLICY nothing ON documents USING (true) WITH CHECK (false);
             INSERT INTO documents VALUES (1);",
        )
        .unwrap_err();
    assert_eq!(sqlstate(&refused), "42501", "{refused}");
    app.batch_execute("DISCARD TEMP").unwrap();
    // A real refusal by pg_tenancy's policy, for comparison.
    let real = refusal_as(
        &mut app,
        "user_alice",
        "org_acme",
        "INSERT INTO documents (workspace_id, title) VALUES ('ws_globex', 'planted')",
    );
    assert_eq!(sqlstate(&real), "42501", "{real}");

    let rows: Vec<(String, String)> = admin()
        .query(
            "SELECT reason, role FROM tenancy.denials WHERE application_name = $1 ORDER BY seq",
            &[&tag],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        [
            ("bad_signature".to_string(), APP_ROLE.to_string()),
            ("write_refused".to_string(), APP_ROLE.to_string())
        ],
        "the forged token is the caller's (not the function owner's); the look-alike errors are no denials"
    );
    let mut audit = audit_db();
    wait_for(
        &mut audit,
        "SELECT count(*) FROM tenancy.audit_log WHERE application_name = $1",
        tag,
        2,
    );
    let (role, acting, database): (String, Option<String>, String) = audit
        .query_one(
            "SELECT role, acting_role, database FROM tenancy.audit_log
              WHERE application_name = $1 AND reason = 'bad_signature'",
            &[&tag],
        )
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .unwrap();
    assert_eq!(
        (role.as_str(), acting.as_deref(), database.as_str()),
        (APP_ROLE, Some("postgres"), DATABASE)
    );
    if let Ok(path) = std::env::var("PG_TENANCY_SERVER_LOG") {
        let log = std::fs::read_to_string(path).unwrap();
        let line = log
            .lines()
            .find(|l| l.contains("pg_tenancy denial:") && l.contains(tag.as_str()) && l.contains("write_refused"))
            .expect("the write_refused log line");
        assert!(
            line.contains(&format!("\"database\":\"{DATABASE}\""))
                && line.contains(&format!("\"role\":\"{APP_ROLE}\"")),
            "the line observed inside error reporting names the database and role: {line}"
        );
    }
}
