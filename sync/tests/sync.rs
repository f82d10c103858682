//! pg-tenancy-sync against the real extension and a WorkOS fixture over real HTTP: memberships,
//! sessions and organizations followed; keys rotated (and the fast path measured); a crash
//! between applying a batch and committing it; stale, reordered and malformed input; API faults.

mod common;

use common::fixture::{self, Fault, Fixture};
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// A fixture with org_acme and alice's active membership, and a database trusting key k1.
fn acme() -> (Fixture, postgres::Client) {
    let f = Fixture::start();
    f.with(|s| {
        s.jwks = jwks("test-issuer-jwks.json");
        s.organizations = vec![fixture::organization("org_acme", "Acme", None, 1)];
        s.memberships = vec![fixture::membership("om_alice", "user_alice", "org_acme", "active", 1)];
    });
    let admin = fresh_database(&f, &jwks("test-issuer-jwks.json").to_string());
    (f, admin)
}

#[test]
fn memberships_sessions_and_organizations_follow_workos() {
    let _serial = serial();
    let (f, mut admin) = acme();
    let alice = || token(&f, "k1", "user_alice", "org_acme", "session_a1");
    assert_eq!(
        identity(&alice()),
        Err("28000".into()),
        "not a member before the first pass"
    );
    let (code, log) = once(&f, &[]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(
        identity(&alice()),
        Ok("ws_acme".into()),
        "the reconcile made alice a member"
    );

    f.event(
        "organization_membership.updated",
        fixture::membership("om_alice", "user_alice", "org_acme", "inactive", 2),
    );
    assert_eq!(once(&f, &[]).0, 0);
    assert_eq!(
        identity(&alice()),
        Err("28000".into()),
        "deactivated in WorkOS: refused"
    );

    f.event(
        "organization_membership.updated",
        fixture::membership("om_alice", "user_alice", "org_acme", "active", 3),
    );
    assert_eq!(once(&f, &[]).0, 0);
    assert_eq!(identity(&alice()), Ok("ws_acme".into()), "reactivated: accepted again");

    f.event("session.revoked", json!({"object": "session", "id": "session_a1", "user_id": "user_alice", "organization_id": "org_acme", "status": "revoked"}));
    assert_eq!(once(&f, &[]).0, 0);
    assert_eq!(identity(&alice()), Err("28000".into()), "revoked session refused");
    let other_session = token(&f, "k1", "user_alice", "org_acme", "session_a2");
    assert_eq!(
        identity(&other_session),
        Ok("ws_acme".into()),
        "another session still works"
    );

    f.event(
        "organization.deleted",
        fixture::organization("org_acme", "Acme", None, 4),
    );
    assert_eq!(once(&f, &[]).0, 0);
    assert_eq!(
        identity(&other_session),
        Err("28000".into()),
        "a deleted organization's members are refused"
    );
    let outcomes: Vec<String> = admin
        .query("SELECT outcome FROM tenancy.sync_log ORDER BY event_id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(outcomes, ["applied", "applied", "applied", "applied"]);
    let (members, disabled): (i64, i64) = {
        let r = admin
            .query_one("SELECT count(*), count(disabled_at) FROM tenancy.members", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (members, disabled),
        (1, 0),
        "nothing deleted; the workspace, not the member, was disabled"
    );
}

#[test]
fn keys_rotate_and_a_new_kid_is_fetched_at_once() {
    let _serial = serial();
    let (f, mut admin) = acme();
    assert_eq!(once(&f, &[]).0, 0);
    let k1 = || token(&f, "k1", "user_alice", "org_acme", "session_k");
    let k2 = || token(&f, "k2", "user_alice", "org_acme", "session_k");
    assert_eq!(identity(&k2()), Err("28000".into()), "k2 unknown");

    f.with(|s| s.jwks = both_keys());
    assert_eq!(once(&f, &[]).0, 0);
    assert_eq!(
        (identity(&k1()), identity(&k2())),
        (Ok("ws_acme".into()), Ok("ws_acme".into())),
        "old and new both verify"
    );
    f.with(|s| s.jwks = jwks("test-issuer-k2-jwks.json"));
    assert_eq!(once(&f, &[]).0, 0);
    assert_eq!(
        (identity(&k1()), identity(&k2())),
        (Err("28000".into()), Ok("ws_acme".into())),
        "new alone: old refused"
    );

    // The fast path: the database holds k1 only, WorkOS now publishes k2, and the companion's
    // regular refresh is an hour away. The first token with kid k2 is refused; the audit writer
    // signals the issuer; the companion fetches at once.
    admin
        .execute(
            "SELECT tenancy.set_jwks($1, $2)",
            &[&f.issuer(), &jwks("test-issuer-jwks.json")],
        )
        .unwrap();
    f.with(|s| s.jwks = both_keys());
    // The audit writer signals in the audit database (`tenancy.audit_database`, here postgres).
    let audit_url = sync_url().replace(&format!("/{DATABASE}?"), "/postgres?");
    let running = start(
        &f,
        &[
            ("PG_TENANCY_SYNC_JWKS_INTERVAL", "3600"),
            ("PG_TENANCY_SYNC_EVENTS_INTERVAL", "3600"),
            ("PG_TENANCY_ALERT_DATABASE_URL", &audit_url),
        ],
    );
    eventually("the companion's first refresh and its LISTEN", 20, || {
        let listening: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg-tenancy-sync'
                    AND datname = 'postgres' AND query LIKE 'LISTEN tenancy_jwks%'",
                &[],
            )
            .unwrap()
            .get(0);
        let keys: Vec<String> = admin
            .query_one("SELECT key_ids FROM tenancy.issuers", &[])
            .unwrap()
            .get(0);
        (listening == 1 && keys.len() == 2).then_some(())
    });
    admin
        .execute(
            "SELECT tenancy.set_jwks($1, $2)",
            &[&f.issuer(), &jwks("test-issuer-jwks.json")],
        )
        .unwrap();
    let first_refusal = Instant::now();
    assert_eq!(identity(&k2()), Err("28000".into()));
    let accepted = eventually("k2 accepted through the fast path", 15, || identity(&k2()).ok());
    let elapsed = first_refusal.elapsed();
    assert_eq!(accepted, "ws_acme");
    println!(
        "fast rotation: first refused token with a new kid to the first accepted one: {} ms",
        elapsed.as_millis()
    );
    stop(running);
}

#[test]
fn a_policy_violating_or_empty_jwks_keeps_the_current_keys() {
    let _serial = serial();
    let (f, mut admin) = acme();
    let keys = |admin: &mut postgres::Client| -> Vec<String> {
        admin
            .query_one("SELECT key_ids FROM tenancy.issuers", &[])
            .unwrap()
            .get(0)
    };
    for (name, bad) in [
        (
            "a symmetric key",
            json!({"keys": [{"kty": "oct", "kid": "h1", "k": "c2VjcmV0"}]}),
        ),
        ("a 1024-bit RSA key", jwks("test-issuer-weak-1024-jwks.json")),
        ("an empty set", json!({"keys": []})),
        ("no keys member", json!({"error": "oops"})),
    ] {
        f.with(|s| s.jwks = bad);
        let (code, log) = once(&f, &[]);
        assert_ne!(code, 0, "{name}: reported as a failure");
        assert!(log.contains("current keys kept"), "{name}: {log}");
        assert_eq!(keys(&mut admin), vec!["k1".to_string()], "{name}: keys unchanged");
        assert_eq!(
            identity(&token(&f, "k1", "user_alice", "org_acme", "s")),
            Ok("ws_acme".into()),
            "{name}: k1 still verifies"
        );
    }
}

#[test]
fn stale_reordered_duplicate_and_malformed_events_never_widen() {
    let _serial = serial();
    let (f, mut admin) = acme();
    assert_eq!(once(&f, &[]).0, 0);
    let alice = || identity(&token(&f, "k1", "user_alice", "org_acme", "s"));
    // Reordered: the newer deactivation arrives first, then an older activation.
    f.event(
        "organization_membership.updated",
        fixture::membership("om_alice", "user_alice", "org_acme", "inactive", 5),
    );
    f.event(
        "organization_membership.updated",
        fixture::membership("om_alice", "user_alice", "org_acme", "active", 4),
    );
    f.event(
        "organization_membership.updated",
        fixture::membership("om_alice", "user_alice", "org_acme", "inactive", 5),
    );
    // Malformed: a membership without its user.
    f.event(
        "organization_membership.updated",
        json!({"id": "om_bob", "organization_id": "org_acme", "status": "active", "updated_at": fixture::time(6)}),
    );
    f.with(|s| s.memberships[0] = fixture::membership("om_alice", "user_alice", "org_acme", "inactive", 5));
    let (code, log) = once(&f, &[]);
    assert_ne!(code, 0, "a malformed event is reported as a failure");
    assert!(log.contains("malformed"), "{log}");
    assert_eq!(
        alice(),
        Err("28000".into()),
        "the older activation did not re-enable alice"
    );
    let outcomes: Vec<String> = admin
        .query("SELECT outcome FROM tenancy.sync_log ORDER BY event_id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(&outcomes[..3], ["applied", "stale", "stale"]);
    assert!(outcomes[3].starts_with("malformed"), "{outcomes:?}");
    let bob: i64 = admin
        .query_one("SELECT count(*) FROM tenancy.members WHERE user_id = 'user_bob'", &[])
        .unwrap()
        .get(0);
    assert_eq!(bob, 0, "nothing guessed from a malformed event");
    assert_eq!(once(&f, &[]).0, 0, "the next pass is clean: nothing applied twice");
    let total: i64 = admin
        .query_one("SELECT count(*) FROM tenancy.sync_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(total, 4);
}

#[test]
fn an_administrators_disable_holds_and_reconcile_finds_deletions() {
    let _serial = serial();
    let (f, mut admin) = acme();
    f.with(|s| {
        s.memberships
            .push(fixture::membership("om_carol", "user_carol", "org_acme", "active", 1))
    });
    assert_eq!(once(&f, &[]).0, 0);
    admin
        .execute(
            "UPDATE tenancy.members SET disabled_at = now() WHERE user_id = 'user_carol'",
            &[],
        )
        .unwrap();
    // WorkOS drops alice's membership without an event reaching us; a reconcile is due.
    f.with(|s| s.memberships.retain(|m| m["id"] != "om_alice"));
    std::thread::sleep(Duration::from_millis(1100));
    let (code, log) = once(&f, &[("PG_TENANCY_SYNC_RECONCILE_INTERVAL", "1")]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(
        identity(&token(&f, "k1", "user_alice", "org_acme", "s")),
        Err("28000".into()),
        "a membership gone from WorkOS is disabled"
    );
    assert_eq!(
        identity(&token(&f, "k1", "user_carol", "org_acme", "s")),
        Err("28000".into()),
        "the administrator's disable holds"
    );
    let rows: i64 = admin
        .query_one("SELECT count(*) FROM tenancy.members", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 2, "disabled, never deleted");
}

#[test]
fn killed_between_applying_a_batch_and_committing_it_then_exactly_once() {
    let _serial = serial();
    let (f, mut admin) = acme();
    assert_eq!(once(&f, &[]).0, 0);
    for i in 0..250 {
        let status = if i % 2 == 0 { "inactive" } else { "active" };
        f.event(
            "organization_membership.updated",
            fixture::membership("om_alice", "user_alice", "org_acme", status, 10 + i),
        );
    }
    // Hold the cursor row: the companion applies its first page, then waits on the cursor write.
    let mut holder = connect("postgres", DATABASE);
    let mut tx = holder.transaction().unwrap();
    tx.execute("SELECT 1 FROM tenancy.sync_state WHERE name = 'events' FOR UPDATE", &[])
        .unwrap();
    let mut child = command(&f, "once", &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("the companion waiting on the cursor row", 20, || {
        let n: i64 = admin
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg-tenancy-sync' AND wait_event_type = 'Lock'", &[])
            .unwrap()
            .get(0);
        (n == 1).then_some(())
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    tx.rollback().unwrap();
    eventually("the killed session gone", 20, || {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg-tenancy-sync'",
                &[],
            )
            .unwrap()
            .get(0);
        (n == 0).then_some(())
    });
    let logged: i64 = admin
        .query_one("SELECT count(*) FROM tenancy.sync_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(logged, 0, "the killed transaction applied nothing");
    assert_eq!(once(&f, &[]).0, 0);
    let (logged, distinct): (i64, i64) = {
        let r = admin
            .query_one("SELECT count(*), count(DISTINCT event_id) FROM tenancy.sync_log", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((logged, distinct), (250, 250), "every event applied exactly once");
    let cursor: String = admin
        .query_one("SELECT value FROM tenancy.sync_state WHERE name = 'events'", &[])
        .unwrap()
        .get(0);
    assert!(cursor.contains("event_000250"), "{cursor}");
    assert_eq!(
        identity(&token(&f, "k1", "user_alice", "org_acme", "s")),
        Ok("ws_acme".into()),
        "the last event (active) won"
    );
}

#[test]
fn api_faults_are_retried_and_an_outage_gives_up_at_the_deadline() {
    let _serial = serial();
    let (f, mut admin) = acme();
    f.with(|s| {
        s.faults.push_back(Fault::Status(429, Some("1")));
        s.faults.push_back(Fault::Status(503, None));
        s.faults.push_back(Fault::Hang(Duration::from_secs(3)));
    });
    let (code, log) = once(&f, &[]);
    assert_eq!(code, 0, "429, 503 and a timeout are retried: {log}");
    let requests = f.with(|s| s.requests.clone());
    let authed: Vec<&(Instant, String)> = requests
        .iter()
        .filter(|(_, t)| t.starts_with("/organizations"))
        .collect();
    assert!(authed.len() >= 4, "{authed:?}");
    assert!(
        authed[1].0 - authed[0].0 >= Duration::from_millis(950),
        "Retry-After: 1 honoured"
    );
    assert_eq!(
        identity(&token(&f, "k1", "user_alice", "org_acme", "s")),
        Ok("ws_acme".into())
    );

    f.with(|s| s.outage = Some(500));
    f.event(
        "organization_membership.updated",
        fixture::membership("om_alice", "user_alice", "org_acme", "inactive", 9),
    );
    let started = Instant::now();
    let (code, log) = once(&f, &[("PG_TENANCY_SYNC_GIVE_UP", "3")]);
    assert_ne!(code, 0, "an outage fails the pass");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "gave up near its deadline: {:?}",
        started.elapsed()
    );
    assert!(log.contains("api_unavailable"), "{log}");
    let logged: i64 = admin
        .query_one("SELECT count(*) FROM tenancy.sync_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(logged, 0, "nothing applied during the outage");
    assert_eq!(
        identity(&token(&f, "k1", "user_alice", "org_acme", "s")),
        Ok("ws_acme".into()),
        "an outage changes nothing"
    );
}

#[test]
fn a_cursor_past_retention_triggers_a_full_reconcile() {
    let _serial = serial();
    let (f, mut admin) = acme();
    assert_eq!(once(&f, &[]).0, 0);
    f.event(
        "organization_membership.updated",
        fixture::membership("om_alice", "user_alice", "org_acme", "active", 2),
    );
    assert_eq!(once(&f, &[]).0, 0);
    // The applied event falls out of retention, and alice is deactivated meanwhile.
    f.with(|s| {
        s.retained_from = s.events.len();
        s.memberships[0] = fixture::membership("om_alice", "user_alice", "org_acme", "inactive", 3);
    });
    let (code, log) = once(&f, &[]);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("refused the cursor"), "{log}");
    assert_eq!(
        identity(&token(&f, "k1", "user_alice", "org_acme", "s")),
        Err("28000".into()),
        "the reconcile caught the change"
    );
    let cursor: String = admin
        .query_one("SELECT value FROM tenancy.sync_state WHERE name = 'events'", &[])
        .unwrap()
        .get(0);
    assert!(
        cursor.contains("since"),
        "the cursor restarted from the reconcile: {cursor}"
    );
}

#[test]
fn signed_webhooks_trigger_a_poll_and_health_and_metrics_answer() {
    let _serial = serial();
    let (f, _admin) = acme();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let running = start(
        &f,
        &[
            ("PG_TENANCY_SYNC_LISTEN", &address),
            ("WORKOS_WEBHOOK_SECRET", "whsec_test_1"),
            ("PG_TENANCY_SYNC_EVENTS_INTERVAL", "3600"),
        ],
    );
    let http = |m: &str, p: &str, h: &str, b: &str| -> (u16, String) {
        (|| -> Option<(u16, String)> {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(&address).ok()?;
            write!(
                s,
                "{m} {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n{h}\r\n{b}",
                b.len()
            )
            .ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some((out.split_whitespace().nth(1)?.parse().ok()?, out))
        })()
        .unwrap_or((0, String::new()))
    };
    eventually("health ok after the first pass", 20, || {
        (http("GET", "/health", "", "").0 == 200).then_some(())
    });
    assert_eq!(
        identity(&token(&f, "k1", "user_alice", "org_acme", "s")),
        Ok("ws_acme".into())
    );
    f.event(
        "organization_membership.updated",
        fixture::membership("om_alice", "user_alice", "org_acme", "inactive", 2),
    );
    let body = r#"{"id":"event_000001","event":"organization_membership.updated","data":{}}"#;
    let t = chrono::Utc::now().timestamp_millis();
    let forged = format!("WorkOS-Signature: t={t}, v1={}\r\n", "00".repeat(32));
    assert_eq!(
        http("POST", "/webhooks/workos", &forged, body).0,
        401,
        "a forged signature is refused"
    );
    assert_eq!(
        http("POST", "/webhooks/workos", "", body).0,
        401,
        "no signature is refused"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        identity(&token(&f, "k1", "user_alice", "org_acme", "s")),
        Ok("ws_acme".into()),
        "refused webhooks trigger nothing"
    );
    let signed = hmac_hex("whsec_test_1", &format!("{t}.{body}"));
    assert_eq!(
        http(
            "POST",
            "/webhooks/workos",
            &format!("WorkOS-Signature: t={t}, v1={signed}\r\n"),
            body
        )
        .0,
        202
    );
    eventually("the event applied after the webhook", 10, || {
        identity(&token(&f, "k1", "user_alice", "org_acme", "s")).err()
    });
    let (status, metrics) = http("GET", "/metrics", "", "");
    assert_eq!(status, 200);
    for name in [
        "pg_tenancy_sync_newest_event_age_seconds",
        "pg_tenancy_sync_jwks_refresh_timestamp_seconds",
        "pg_tenancy_sync_events_total{outcome=\"applied\"} 1",
        "pg_tenancy_sync_reconcile_runs_total 1",
        "pg_tenancy_sync_errors_total{kind=\"webhook_signature\"} 2",
    ] {
        assert!(metrics.contains(name), "{name} in\n{metrics}");
    }
    let log = stop(running);
    assert!(log.contains("\"msg\":\"webhook refused\""), "{log}");
}

#[test]
fn the_companions_role_cannot_widen_beyond_its_rights() {
    let _serial = serial();
    let (f, mut admin) = acme();
    // An issuer the administrator trusts but did not hand to the companion.
    admin
        .batch_execute(&format!(
            "SELECT tenancy.add_issuer('https://other.example', '{}'::jsonb)",
            common::jwks("test-issuer-jwks.json")
        ))
        .unwrap();
    let mut bot = postgres::Client::connect(&sync_url(), postgres::NoTls).unwrap();
    let attacks = [
        // A stolen companion login adding its own key to an issuer it does not manage (residual
        // risk 15a): refused.
        (
            "SELECT tenancy.sync_set_jwks('https://other.example', '{\"keys\":[]}'::jsonb)",
            "42501",
        ),
        (
            "UPDATE tenancy.issuers SET sync_jwks_url = 'https://evil.example/jwks'",
            "42501",
        ),
        // Alert cursors never move past the newest audit row, nor backwards.
        (
            "INSERT INTO tenancy.sync_state (name, value) VALUES ('alerts:hidden', '{\"id\": 9000000000000}')",
            "42501",
        ),
        (
            "INSERT INTO tenancy.sync_state (name, value) VALUES ('alerts:garbled', 'not json')",
            "42501",
        ),
        // Alert cursors belong to alert delivery's own login (tenancy_alerts): the companion's
        // login can neither move one nor rename one away.
        (
            "INSERT INTO tenancy.sync_state (name, value) VALUES ('alerts:webhook', '{\"id\": 0}')",
            "42501",
        ),
        ("DELETE FROM tenancy.members", "42501"),
        ("TRUNCATE tenancy.members", "42501"),
        ("DELETE FROM tenancy.revoked_sessions", "42501"),
        (
            "SELECT tenancy.add_issuer('https://evil.example', '{\"keys\":[]}'::jsonb)",
            "42501",
        ),
        (
            "SELECT tenancy.set_jwks('https://evil.example', '{\"keys\":[]}'::jsonb)",
            "42501",
        ),
        (
            "SELECT tenancy.sync_set_jwks('https://evil.example', '{\"keys\":[]}'::jsonb)",
            "22023",
        ),
        ("UPDATE tenancy.issuers SET key_ids = '{}'", "42501"),
        ("SELECT tenancy.create_api_key('ws_acme', 'k')", "42501"),
        // Alert delivery reads the audit log, but never the statement text or the detail, and
        // cannot rewrite history (its own exactly-once record included).
        ("SELECT * FROM tenancy.audit_log", "42501"),
        ("SELECT statement FROM tenancy.audit_log", "42501"),
        ("SELECT detail FROM tenancy.audit_log", "42501"),
        ("DELETE FROM tenancy.audit_log", "42501"),
        ("UPDATE tenancy.audit_log SET alert = NULL", "42501"),
        ("DELETE FROM tenancy.sync_log", "42501"),
    ];
    for (sql, state) in attacks {
        let e = bot.batch_execute(sql).expect_err(sql);
        assert_eq!(e.code().map(|c| c.code()), Some(state), "{sql}: {e}");
    }
    let _ = f;
}

#[test]
fn after_an_unusable_cursor_a_retained_revocation_is_still_applied() {
    let _serial = serial();
    let (f, mut admin) = acme();
    assert_eq!(once(&f, &[]).0, 0);
    let minutes_ago = |m: i64| {
        (chrono::Utc::now() - chrono::Duration::minutes(m)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    // The companion applied an event of 20 minutes ago (its cursor points there).
    let a = f.event(
        "organization_membership.updated",
        fixture::membership("om_alice", "user_alice", "org_acme", "active", 2),
    );
    let a_at = minutes_ago(20);
    f.with(|s| s.events.last_mut().unwrap()["created_at"] = a_at.clone().into());
    admin
        .execute(
            "UPDATE tenancy.sync_state SET value = json_build_object('after', $1::text, 'at', $2::text)::text WHERE name = 'events'",
            &[&a, &a_at],
        )
        .unwrap();
    // A revocation 19 minutes ago, still retained; the cursor event itself falls out of retention.
    f.event(
        "session.revoked",
        json!({"object": "session", "id": "session_old", "user_id": "user_alice", "status": "revoked"}),
    );
    f.with(|s| {
        s.events.last_mut().unwrap()["created_at"] = minutes_ago(19).into();
        s.retained_from = s.events.len() - 1;
    });
    let (code, log) = once(&f, &[]);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("refused the cursor"), "{log}");
    assert_eq!(
        identity(&token(&f, "k1", "user_alice", "org_acme", "session_old")),
        Err("28000".into()),
        "the revocation older than the reconcile's margin was replayed, not skipped"
    );
}

#[test]
fn alert_cursors_belong_to_alert_delivery_and_neither_login_can_stall_the_other() {
    let _serial = serial();
    let (f, mut admin) = acme();
    admin
        .batch_execute("DELETE FROM tenancy.sync_state WHERE name LIKE 'alerts:%'")
        .unwrap();
    let alerts_url = sync_url().replace(&format!("{SYNC_ROLE}:"), &format!("{ALERT_ROLE}:"));
    let mut alerter = postgres::Client::connect(&alerts_url, postgres::NoTls).unwrap();
    let mut bot = postgres::Client::connect(&sync_url(), postgres::NoTls).unwrap();
    // Alert delivery writes its cursor in the one form the companion reads back.
    alerter
        .batch_execute("INSERT INTO tenancy.sync_state (name, value) VALUES ('alerts:webhook', '{\"id\":0}')")
        .unwrap();
    for unreadable in ["{\"id\": 0e0}", "{\"id\":1,\"id\":0}", "{\"id\":\"0\"}", "{\"id\":0.0}"] {
        let e = alerter
            .execute(
                "UPDATE tenancy.sync_state SET value = $1 WHERE name = 'alerts:webhook'",
                &[&unreadable],
            )
            .expect_err(unreadable);
        assert_eq!(e.code().map(|c| c.code()), Some("22023"), "{unreadable}: {e}");
    }
    // The companion's login neither sees alert cursors (so it cannot lock them) nor locks the table.
    let visible: i64 = bot
        .query_one(
            "SELECT count(*) FROM tenancy.sync_state WHERE name LIKE 'alerts:%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(visible, 0, "alert cursors are invisible to tenancy_sync");
    let mut tx = bot.transaction().unwrap();
    let e = tx
        .batch_execute("LOCK TABLE tenancy.sync_state IN ACCESS EXCLUSIVE MODE")
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e}");
    drop(tx);
    // And alert delivery cannot touch the companion's own cursors.
    let touched = alerter
        .execute("UPDATE tenancy.sync_state SET value = value WHERE name = 'events'", &[])
        .unwrap();
    assert_eq!(touched, 0, "the events cursor is invisible to tenancy_alerts");
    let _ = f;
}

/// CPU time (user + system) `pid` has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn an_endpoint_out_of_file_descriptors_waits_instead_of_spinning() {
    let _serial = serial();
    let (f, _admin) = acme();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let running = start_with_file_limit(
        &f,
        &[
            ("PG_TENANCY_SYNC_LISTEN", &address),
            ("PG_TENANCY_SYNC_EVENTS_INTERVAL", "3600"),
        ],
        48,
    );
    let health = || -> u16 {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(&address) else {
            return 0;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        if write!(s, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_err() {
            return 0;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
    };
    eventually("health ok after the first pass", 20, || (health() == 200).then_some(()));
    // Idle connections until the companion has no descriptor left to accept with.
    let held: Vec<std::net::TcpStream> = (0..120)
        .filter_map(|_| std::net::TcpStream::connect(&address).ok())
        .collect();
    assert!(held.len() >= 60, "the kernel queued the connections: {}", held.len());
    std::thread::sleep(std::time::Duration::from_secs(1));
    let before = cpu_ticks(running.pid());
    std::thread::sleep(std::time::Duration::from_secs(3));
    let used = cpu_ticks(running.pid()) - before;
    // A loop retrying accept at once used about 1.2 cores: some 360 ticks in 3 s.
    assert!(used < 60, "{used} ticks of CPU in 3 s while out of descriptors");
    drop(held);
    eventually("health ok once descriptors are free", 30, || {
        (health() == 200).then_some(())
    });
    let log = stop(running);
    assert!(log.contains("cannot accept connections"), "the wait is logged: {log}");
}
