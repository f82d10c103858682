//! Benchmark (run by scripts/bench-alerts, not by scripts/test): the latency from a denying
//! statement to the webhook receiving its alert (p50, p99, at the default audit naptime), then a
//! storm of 10,000 critical denials from 100 sources delivered to all three sinks at once
//! (deliveries per second, requests per sink, nothing lost).

mod common;

use common::alerting::*;
use common::receiver::Receiver;
use common::*;
use std::time::{Duration, Instant};

const SOURCES: usize = 100;
const PER_SOURCE: usize = 100;
const SAMPLES: usize = 200;

/// The `p`-th percentile of sorted `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    values[((values.len() - 1) as f64 * p).round() as usize]
}

#[test]
#[ignore]
fn latency_and_a_storm_of_10000_denials() {
    let _serial = serial();
    let f = setup();
    let (webhook, slack, pagerduty) = (Receiver::start(false), Receiver::start(false), Receiver::start(true));
    let audit = audit_url();
    let running = start(
        &f,
        &alert_env(
            &[
                ("PG_TENANCY_ALERT_WEBHOOK_URL", &webhook.url),
                ("PG_TENANCY_ALERT_WEBHOOK_SECRET", WEBHOOK_SECRET),
                ("PG_TENANCY_ALERT_SLACK_URL", &slack.url),
                ("PG_TENANCY_ALERT_PAGERDUTY_ROUTING_KEY", ROUTING_KEY),
                ("PG_TENANCY_ALERT_PAGERDUTY_URL", &pagerduty.url),
                ("PG_TENANCY_ALERT_INTERVAL", "5"),
            ],
            &audit,
        ),
    );
    for sink in ["webhook", "slack", "pagerduty"] {
        following(sink);
    }
    let bad = credential(&f, Denial::Critical);
    let port = std::env::var("PG_TENANCY_TEST_PORT").unwrap();
    let connect_as = |role: &str| {
        postgres::Client::connect(
            &format!("host=127.0.0.1 port={port} user={role} dbname={DATABASE}"),
            postgres::NoTls,
        )
        .unwrap()
    };

    // Latency: one denial at a time, at varied phases of the audit writer's naptime.
    let mut app = connect_as(APP_ROLE);
    let mut latencies = Vec::new();
    for i in 0..SAMPLES {
        app.batch_execute(&format!("SET application_name = 'latency-{i}'"))
            .unwrap();
        let before = webhook.received().len();
        let started = Instant::now();
        assert!(app
            .execute("SELECT set_config('tenancy.token', $1, false)", &[&bad])
            .is_err());
        let arrived = eventually("the alert", 20, || webhook.received().get(before).map(|r| r.at));
        latencies.push((arrived - started).as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis((i as u64 * 37) % 100));
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "latency, denying statement to webhook received ({SAMPLES} alerts, default naptime): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );

    // The storm: 100 roles (one source each), 100 critical denials each, from 4 threads.
    let mut admin = connect("postgres", DATABASE);
    for s in 0..SOURCES {
        admin
            .batch_execute(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'alert_storm_{s:03}')
                 THEN CREATE ROLE alert_storm_{s:03} LOGIN; END IF; END $$"
            ))
            .unwrap();
    }
    let mut audit_db = connect("postgres", "postgres");
    let dropped = |db: &mut postgres::Client| -> i64 {
        db.query_one("SELECT value FROM tenancy.stats WHERE name = 'dropped'", &[])
            .unwrap()
            .get(0)
    };
    let dropped_before = dropped(&mut audit_db);
    let since: std::time::SystemTime = audit_db.query_one("SELECT now()", &[]).unwrap().get(0);
    // Slack sends a message a second: let it finish the latency rows before the storm starts.
    eventually("Slack covered the latency rows", 120, || {
        (slack_rows(&slack.received()) >= SAMPLES).then_some(())
    });
    let (webhook_before, slack_before, pagerduty_before) = (
        webhook.received().len(),
        slack.received().len(),
        pagerduty.received().len(),
    );
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (bad, connect_as) = (&bad, &connect_as);
            scope.spawn(move || {
                for s in (t..SOURCES).step_by(4) {
                    let mut c = connect_as(&format!("alert_storm_{s:03}"));
                    for _ in 0..PER_SOURCE {
                        assert!(c
                            .execute("SELECT set_config('tenancy.token', $1, false)", &[bad])
                            .is_err());
                    }
                }
            });
        }
    });
    let raised = started.elapsed().as_secs_f64();
    let total = SOURCES * PER_SOURCE;
    // Every denial accounted for (persisted, or dropped from a full ring) before waiting on sinks.
    let (persisted, dropped) = eventually("the storm persisted or dropped", 120, || {
        let persisted: i64 = audit_db
            .query_one(
                "SELECT count(*) FROM tenancy.audit_log WHERE role LIKE 'alert_storm_%' AND alert = 'denial' AND at >= $1",
                &[&since],
            )
            .unwrap()
            .get(0);
        let dropped = dropped(&mut audit_db) - dropped_before;
        (persisted + dropped >= total as i64).then_some((persisted as usize, dropped))
    });
    let delivered = eventually("every persisted storm alert at the webhook", 300, || {
        let n = webhook.received().len() - webhook_before;
        (n >= persisted).then(Instant::now)
    });
    let webhook_seconds = (delivered - started).as_secs_f64();
    let slack_done = eventually("Slack covered the storm", 300, || {
        (slack_rows(&slack.received()[slack_before..]) >= persisted).then(Instant::now)
    });
    let pagerduty_done = eventually("an incident per source", 300, || {
        (pagerduty.received().len() - pagerduty_before >= SOURCES).then(Instant::now)
    });
    std::thread::sleep(Duration::from_secs(3));
    let webhook_rows = webhook.received()[webhook_before..].len();
    let keys: std::collections::HashSet<String> = webhook.received()[webhook_before..]
        .iter()
        .map(|r| r.headers["idempotency-key"].clone())
        .collect();
    let messages = &slack.received()[slack_before..];
    let covered = slack_rows(messages);
    let events = &pagerduty.received()[pagerduty_before..];
    let incidents: std::collections::HashSet<String> = events
        .iter()
        .map(|e| e.json()["dedup_key"].as_str().unwrap().to_string())
        .collect();
    println!(
        "storm: {total} critical denials from {SOURCES} sources raised in {raised:.2} s ({:.0}/s); persisted {persisted}, dropped from the ring {dropped}",
        total as f64 / raised
    );
    println!(
        "webhook: {webhook_rows} requests ({} distinct idempotency keys), the last {webhook_seconds:.2} s after the storm began ({:.0} deliveries/s)",
        keys.len(),
        webhook_rows as f64 / webhook_seconds
    );
    println!(
        "slack: {} messages covering {covered} rows, the last {:.2} s after the storm began; pagerduty: {} events for {} incidents (dedup keys), the last {:.2} s after",
        messages.len(),
        (slack_done - started).as_secs_f64(),
        events.len(),
        incidents.len(),
        (pagerduty_done - started).as_secs_f64()
    );
    assert_eq!(
        dropped, 0,
        "the ring dropped entries: the storm outran the audit writer"
    );
    assert_eq!(persisted, total);
    assert_eq!(webhook_rows, total, "no alert delivered twice");
    assert_eq!(keys.len(), total, "every alert delivered");
    assert_eq!(covered, total, "Slack covered every row");
    assert_eq!(incidents.len(), SOURCES, "one incident per source");
    stop(running);
}
