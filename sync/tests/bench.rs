//! Benchmark (run by scripts/bench-sync, not by scripts/test): a full reconcile of 10,000
//! memberships from the WorkOS fixture into an empty database, then a second one that finds
//! nothing to change. Prints seconds and memberships per second for both.

mod common;

use common::fixture::{self, Fixture};
use common::*;
use std::time::Instant;

#[test]
#[ignore]
fn reconcile_10000_memberships() {
    let _serial = serial();
    let f = Fixture::start();
    let orgs = 100;
    f.with(|s| {
        s.jwks = jwks("test-issuer-jwks.json");
        for o in 0..orgs {
            s.organizations.push(fixture::organization(
                &format!("org_{o:03}"),
                "Org",
                Some(&format!("ws_{o:03}")),
                1,
            ));
            for u in 0..100 {
                let status = if u % 10 == 0 { "inactive" } else { "active" };
                s.memberships.push(fixture::membership(
                    &format!("om_{o:03}_{u:03}"),
                    &format!("user_{o:03}_{u:03}"),
                    &format!("org_{o:03}"),
                    status,
                    1,
                ));
            }
        }
    });
    let mut admin = fresh_database(&f, &jwks("test-issuer-jwks.json").to_string());
    let mode = [
        ("PG_TENANCY_SYNC_WORKSPACES", "create"),
        ("PG_TENANCY_SYNC_REQUESTS_PER_SECOND", "100"),
    ];
    let started = Instant::now();
    let (code, log) = once(&f, &mode);
    let first = started.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{log}");
    let members: i64 = admin
        .query_one("SELECT count(*) FROM tenancy.members", &[])
        .unwrap()
        .get(0);
    assert_eq!(members, 9_000, "the active memberships became members");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let started = Instant::now();
    let (code, log) = once(&f, &[mode[0], mode[1], ("PG_TENANCY_SYNC_RECONCILE_INTERVAL", "1")]);
    let second = started.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("\"differences\":0"), "{log}");
    let requests = f.with(|s| s.requests.len());
    println!(
        "reconcile of 10,000 memberships in {orgs} organizations (empty database): {first:.2} s, {:.0} memberships/s",
        10_000.0 / first
    );
    println!(
        "second reconcile, nothing to change: {second:.2} s, {:.0} memberships/s",
        10_000.0 / second
    );
    println!("WorkOS requests in all: {requests}");
}
