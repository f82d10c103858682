//! Alert delivery against the real extension's audit writer and local receivers over real HTTP:
//! the signed webhook, Slack's and PagerDuty's documented shapes, a receiver down then back, 429
//! with `Retry-After`, 400, the companion killed mid-delivery, a rolled-back denial, and a WorkOS
//! outage that does not hold alerts back.

mod common;

use common::alerting::*;
use common::receiver::{Answer, Receiver};
use common::*;
use serde_json::Value;
use std::time::Duration;

/// Waits until the receiver has `n` requests.
fn wait_for(receiver: &Receiver, n: usize, seconds: u64) -> Vec<common::receiver::Received> {
    eventually(&format!("{n} requests"), seconds, || {
        let got = receiver.received();
        (got.len() >= n).then_some(got)
    })
}

/// The application names of webhook requests, in order.
fn apps_of(received: &[common::receiver::Received]) -> Vec<String> {
    received
        .iter()
        .map(|r| r.json()["application_name"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until the denial of `application` is in the audit log.
fn persisted(application: &str) {
    let mut audit = connect("postgres", "postgres");
    eventually(&format!("{application} persisted"), 20, || {
        audit
            .query_one(
                "SELECT EXISTS (SELECT FROM tenancy.audit_log WHERE application_name = $1)",
                &[&application],
            )
            .unwrap()
            .get::<_, bool>(0)
            .then_some(())
    });
}

/// Checks the webhook signature the way a receiver would: `t` recent, a `v1` for `secret`.
fn signed_with(received: &common::receiver::Received, secret: &str) -> bool {
    let header = &received.headers["pg-tenancy-signature"];
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1.push(v.to_string()),
            _ => {}
        }
    }
    let t = t.expect("a timestamp");
    let age = chrono::Utc::now().timestamp_millis() - t;
    assert!((0..60_000).contains(&age), "a fresh timestamp: {age} ms");
    v1.contains(&hmac_hex(secret, &format!("{t}.{}", received.body)))
}

#[test]
fn the_webhook_gets_each_new_denial_signed_in_order_even_while_workos_is_down() {
    let _serial = serial();
    let f = setup();
    // Unique per run: the audit database keeps earlier runs' rows.
    let before = format!("before-the-sink-{}", chrono::Utc::now().timestamp_micros());
    deny(&f, &before, Denial::Critical, false);
    persisted(&before);
    let receiver = Receiver::start(false);
    let audit = audit_url();
    let secrets = format!("{WEBHOOK_SECRET},{OLD_WEBHOOK_SECRET}");
    // Any role that may connect to the audit database can take the webhook's advisory lock
    // (class 0x616c, sink 1): a holder that is no companion must not silence the alerts.
    let mut squatter = connect(APP_ROLE, "postgres");
    squatter.execute("SELECT pg_advisory_lock(24940, 1)", &[]).unwrap();
    // WorkOS answers nothing but 503 throughout: alerts must not wait for it.
    f.with(|s| s.outage = Some(503));
    let running = start(
        &f,
        &alert_env(
            &[
                ("PG_TENANCY_ALERT_WEBHOOK_URL", &receiver.url),
                ("PG_TENANCY_ALERT_WEBHOOK_SECRET", &secrets),
            ],
            &audit,
        ),
    );
    following("webhook");
    let jwt_like = token(&f, "k1", "user_alice", "org_acme", "s9");
    deny(&f, "first", Denial::Critical, false);
    deny(&f, "rolled-back", Denial::Critical, true);
    deny(&f, &format!("leaky-{jwt_like}"), Denial::Critical, false);
    deny(&f, "not-critical", Denial::Malformed, false);
    // A sentinel after it: once the sentinel arrived, anything that was to come before it did.
    deny(&f, "sentinel", Denial::Critical, false);
    let got = wait_for(&receiver, 4, 20);
    let bodies: Vec<Value> = got.iter().map(|r| r.json()).collect();
    let apps: Vec<&str> = bodies.iter().map(|b| b["application_name"].as_str().unwrap()).collect();
    assert_eq!(
        apps[..2],
        ["first", "rolled-back"],
        "in order; the history before the sink is not sent"
    );
    assert_eq!(apps[3], "sentinel", "the non-critical denial was not sent: {apps:?}");
    assert!(
        apps[2].starts_with("leaky-[redacted]"),
        "the extension masked the application name: {}",
        apps[2]
    );
    for (received, body) in got.iter().zip(&bodies) {
        assert!(signed_with(received, WEBHOOK_SECRET), "signed with the current secret");
        assert!(
            signed_with(received, OLD_WEBHOOK_SECRET),
            "and with the previous one, for rotation"
        );
        assert!(!signed_with(received, "whsec_wrong"));
        assert_eq!(received.headers["idempotency-key"], body["id"].to_string());
        assert_eq!(received.headers["content-type"], "application/json");
        assert_eq!(body["reason"], "bad_signature");
        assert_eq!(body["severity"], "critical");
        assert_eq!(body["database"], DATABASE);
        assert_eq!(body["role"], APP_ROLE);
        assert_eq!(body["client_addr"], "127.0.0.1");
        assert_eq!(body["token"]["iss"], f.issuer());
        assert_eq!(body["token"]["kid"], "k1");
        assert!(body.get("statement").is_none() && body.get("detail").is_none());
        assert!(
            !received.body.contains("eyJ"),
            "no token in a payload: {}",
            received.body
        );
    }
    // The extension itself stored the application name masked.
    let stored: i64 = connect("postgres", "postgres")
        .query_one(
            "SELECT count(*) FROM tenancy.audit_log WHERE application_name LIKE '%eyJ%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(stored, 0, "the audit log holds no token");
    let log = stop(running);
    drop(squatter);
    assert!(!log.contains(WEBHOOK_SECRET) && !log.contains("eyJ"), "{log}");
    assert!(log.contains("held by a role that is no companion"), "{log}");
}

#[test]
fn slack_and_pagerduty_get_their_documented_shapes_with_bursts_folded() {
    let _serial = serial();
    let f = setup();
    let (slack, pagerduty) = (Receiver::start(false), Receiver::start(true));
    let audit = audit_url();
    let running = start(
        &f,
        &alert_env(
            &[
                ("PG_TENANCY_ALERT_SLACK_URL", &slack.url),
                ("PG_TENANCY_ALERT_PAGERDUTY_ROUTING_KEY", ROUTING_KEY),
                ("PG_TENANCY_ALERT_PAGERDUTY_URL", &pagerduty.url),
            ],
            &audit,
        ),
    );
    following("slack");
    following("pagerduty");
    let mut audit_db = connect("postgres", "postgres");
    let since: std::time::SystemTime = audit_db.query_one("SELECT now()", &[]).unwrap().get(0);
    // 25 malformed tokens from one source within the burst window (more than 20 make a burst,
    // alerted once), then one critical denial.
    for i in 0..25 {
        deny(&f, &format!("burst-{i}"), Denial::Malformed, false);
    }
    deny(&f, "critical", Denial::Critical, false);
    let alerting: i64 = eventually("the critical row persisted", 20, || {
        let row = audit_db
            .query_one(
                "SELECT count(*) FILTER (WHERE alert IS NOT NULL), count(*) FILTER (WHERE application_name = 'critical')
                   FROM tenancy.audit_log WHERE database = $1 AND at >= $2",
                &[&DATABASE, &since],
            )
            .unwrap();
        (row.get::<_, i64>(1) == 1).then(|| row.get(0))
    });
    assert_eq!(alerting, 2, "one burst row and one critical row alert");

    let events = eventually("two PagerDuty events", 20, || {
        let got = pagerduty.received();
        (got.len() >= 2).then_some(got)
    });
    let mut keys = Vec::new();
    for received in &events {
        let event = received.json();
        assert_eq!(event["routing_key"], ROUTING_KEY);
        assert_eq!(event["event_action"], "trigger");
        let payload = &event["payload"];
        for field in ["summary", "source", "severity", "timestamp", "component", "class"] {
            assert!(payload[field].is_string(), "payload.{field} in {event}");
        }
        assert_eq!(payload["severity"], "critical");
        assert!(payload["summary"].as_str().unwrap().len() <= 1024);
        keys.push(event["dedup_key"].as_str().unwrap().to_string());
    }
    assert_eq!(
        keys,
        [
            format!("pg_tenancy/{DATABASE}/burst/127.0.0.1/{APP_ROLE}"),
            format!("pg_tenancy/{DATABASE}/bad_signature/127.0.0.1/{APP_ROLE}"),
        ],
        "a burst from one source is one incident"
    );

    let messages = eventually("Slack covered both alerts", 20, || {
        let got = slack.received();
        (slack_rows(&got) >= 2).then_some(got)
    });
    for pair in messages.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= Duration::from_millis(950),
            "at most one message a second"
        );
    }
    let text: String = messages
        .iter()
        .map(|m| m.json()["text"].as_str().unwrap().to_string())
        .collect();
    assert!(text.contains("malformed") && text.contains("bad_signature"), "{text}");
    assert!(
        text.contains(&format!("as role {APP_ROLE} in database {DATABASE}")),
        "{text}"
    );
    let log = stop(running);
    assert!(!log.contains(ROUTING_KEY) && !log.contains(&slack.url), "{log}");
}

#[test]
fn a_receiver_down_then_back_a_429_and_a_400_lose_nothing_else() {
    let _serial = serial();
    let f = setup();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/alerts");
    // Slack stays down throughout: its URL (which carries Slack's secret) must not reach the log.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let slack = format!("http://127.0.0.1:{closed}/services/T0/B0/slacksecret0123");
    let audit = audit_url();
    let running = start(
        &f,
        &alert_env(
            &[
                ("PG_TENANCY_ALERT_WEBHOOK_URL", &url),
                ("PG_TENANCY_ALERT_WEBHOOK_SECRET", WEBHOOK_SECRET),
                ("PG_TENANCY_ALERT_SLACK_URL", &slack),
            ],
            &audit,
        ),
    );
    following("webhook");
    for name in ["a", "b", "c", "d"] {
        deny(&f, name, Denial::Critical, false);
    }
    std::thread::sleep(Duration::from_secs(3));
    // Back: the first answer is 429 (retry after 1 s), then 200, then 400 (skipped), then 200s.
    let receiver = Receiver::start_on(port, false);
    receiver.script(&[
        Answer::Status(429, Some("1")),
        Answer::Status(200, None),
        Answer::Status(400, None),
    ]);
    let got = wait_for(&receiver, 5, 40);
    let apps: Vec<String> = got
        .iter()
        .map(|r| r.json()["application_name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        apps,
        ["a", "a", "b", "c", "d"],
        "a retried after 429; b answered 400 and skipped; nothing lost while down"
    );
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    assert_eq!(got[0].headers["idempotency-key"], got[1].headers["idempotency-key"]);
    deny(&f, "e", Denial::Critical, false);
    let got = wait_for(&receiver, 6, 20);
    assert_eq!(apps_of(&got)[5..], ["e"], "the rejected one is not retried");
    let log = stop(running);
    assert!(!log.contains("slacksecret"), "{log}");
    assert!(log.contains("an alert sink failed; retrying"), "{log}");
    assert!(
        log.contains("an alert sink rejected a request; skipped") && log.contains("\"status\":400"),
        "{log}"
    );
}

#[test]
fn killed_mid_delivery_and_restarted_repeats_only_under_the_same_key() {
    let _serial = serial();
    let f = setup();
    let receiver = Receiver::start(false);
    // The second request is held: the companion is killed while waiting for its answer.
    receiver.script(&[Answer::Status(200, None), Answer::Hold(Duration::from_secs(30))]);
    let audit = audit_url();
    let env = alert_env(
        &[
            ("PG_TENANCY_ALERT_WEBHOOK_URL", &receiver.url),
            ("PG_TENANCY_ALERT_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
        &audit,
    );
    let first = start(&f, &env);
    following("webhook");
    for name in ["one", "two", "three"] {
        deny(&f, name, Denial::Critical, false);
    }
    wait_for(&receiver, 2, 20);
    drop(first); // SIGKILL while "two" is in flight
    let second = start(&f, &env);
    let got = wait_for(&receiver, 4, 20);
    deny(&f, "four", Denial::Critical, false);
    let got_all = wait_for(&receiver, 5, 20);
    assert_eq!(
        apps_of(&got_all),
        ["one", "two", "two", "three", "four"],
        "only the request in flight is repeated"
    );
    assert_eq!(
        got[1].headers["idempotency-key"], got[2].headers["idempotency-key"],
        "with the same key"
    );
    let log = stop(second);
    assert!(
        !log.contains("a new alert sink starts"),
        "the restart kept the cursor: {log}"
    );
}

#[test]
fn a_claim_no_client_library_can_read_holds_back_no_alert() {
    let _serial = serial();
    let f = setup();
    let receiver = Receiver::start(false);
    let audit = audit_url();
    let running = start(
        &f,
        &alert_env(
            &[
                ("PG_TENANCY_ALERT_WEBHOOK_URL", &receiver.url),
                ("PG_TENANCY_ALERT_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ],
            &audit,
        ),
    );
    following("webhook");
    // An unsigned token with exp = 9e12 s: stored as 287168-08-24, beyond what the companion's
    // date type holds. It once failed every drain of the sink, so nothing after it arrived.
    deny(&f, "far-future-exp", Denial::FarFutureExpiry, false);
    deny(&f, "after-it", Denial::Critical, false);
    let got = wait_for(&receiver, 2, 30);
    let bodies: Vec<Value> = got.iter().map(|r| r.json()).collect();
    assert_eq!(apps_of(&got), ["far-future-exp", "after-it"], "{bodies:?}");
    assert_eq!(bodies[0]["reason"], "bad_signature", "{}", bodies[0]);
    assert!(
        bodies[0]["token"]["exp"].is_null() && bodies[0]["token"]["sub"] == "user_alice",
        "delivered without the unreadable claim, with the others: {}",
        bodies[0]
    );
    assert!(
        bodies[1]["token"]["exp"].is_string(),
        "an ordinary exp is delivered: {}",
        bodies[1]
    );
    let log = stop(running);
    assert!(log.contains("does not decode"), "the row is logged: {log}");
    assert!(!log.contains("panicked"), "{log}");
}
