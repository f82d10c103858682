//! What the pgbench-driven benchmarks share: their database's identity setup, one pgbench run as a
//! role, and the median.

use super::common::{connect_with, fixture_jwks, recreate_database, ISSUER};
use std::process::Command;

/// Creates `database` afresh for `role` with the extension, the test issuer, 100 workspaces
/// (`ws_0` … `ws_99`, organisations `org_bench` and `org_1` …) and `user_bench` a member of
/// `ws_0`; returns a superuser connection to it.
pub fn bench_database(database: &str, role: &str) -> postgres::Client {
    recreate_database(database, role);
    let jwks = fixture_jwks();
    let mut db = connect_with("postgres", database, "").unwrap();
    db.batch_execute(&format!(
        "CREATE EXTENSION pg_tenancy;
         SELECT tenancy.add_issuer('{ISSUER}', '{jwks}'::jsonb);
         INSERT INTO tenancy.workspaces
             SELECT 'ws_' || i, CASE WHEN i = 0 THEN 'org_bench' ELSE 'org_' || i END, NULL, NULL
               FROM generate_series(0, 99) i;
         INSERT INTO tenancy.members VALUES ('ws_0', 'user_bench', NULL, NULL);"
    ))
    .unwrap();
    db
}

/// TPS reported by pgbench for `script` against `database` as `role` (2 clients, 2 threads,
/// `seconds` long, `extra` options such as `-M prepared` or `-D name=value`), over TCP to the port
/// in `PG_TENANCY_TEST_PORT`.
pub fn pgbench(database: &str, role: &str, script: &str, seconds: u32, extra: &[String]) -> f64 {
    let dir = std::env::temp_dir().join(format!("pg_tenancy_bench_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("script.sql");
    std::fs::write(&file, script).unwrap();
    let port = std::env::var("PG_TENANCY_TEST_PORT").unwrap();
    let out = Command::new("pgbench")
        .args(["-n", "-h", "127.0.0.1", "-p", &port, "-U", role, "-c", "2", "-j", "2"])
        .args(extra)
        .args(["-T", &seconds.to_string(), "-f", file.to_str().unwrap(), database])
        .output()
        .expect("pgbench on PATH");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tps in: {text}"))
}

/// The median of `values`.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
