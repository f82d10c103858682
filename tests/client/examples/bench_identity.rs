//! What an identity costs, measured against a baseline in the same run (scripts/bench-identity).
//!
//! 1. Cold `SET LOCAL tenancy.token`: a token never seen before (RS256 verify + membership query).
//! 2. Cached `SET LOCAL tenancy.token`: a token this backend verified before (SHA-256 + lookup).
//! 3. One evaluation of `tenancy.workspace_id()` (a PL/pgSQL assignment), beside the two
//!    patterns in use today.
//!    (1–3 are loops inside the server; the baseline loop differs only by the measured step.)
//! 4. pgbench TPS of `BEGIN; SET LOCAL tenancy.token …; SELECT …; COMMIT` against the same
//!    transaction without the token line, and against a protected table.

mod bench_support;
#[path = "../tests/common/mod.rs"]
#[allow(dead_code)]
mod common;

use common::{connect_with, mint, unix_now, ISSUER};
use serde_json::json;

const DATABASE: &str = "tenancy_bench";
const APP_ROLE: &str = "tenancy_bench_app";
/// Distinct tokens for the cold measurement (more than the per-backend cache holds).
const COLD_TOKENS: usize = 3000;

/// The server-side loops: each returns microseconds per iteration.
const LOOPS: &str = r#"
CREATE FUNCTION bench_set(tokens text[], setting text, rounds int) RETURNS float8
LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp(); n int := array_length(tokens, 1);
BEGIN
    FOR i IN 1 .. rounds LOOP
        PERFORM set_config(setting, tokens[1 + (i % n)], true);
    END LOOP;
    RETURN extract(epoch FROM clock_timestamp() - t0) * 1e6 / rounds;
END $$;
CREATE FUNCTION bench_calls(expression text, rounds int) RETURNS float8
LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz;
BEGIN
    -- A PL/pgSQL assignment evaluates its expression each time: a query that reads rows would
    -- fold the identity into its plan instead (src/folding.rs) and call nothing per row.
    EXECUTE format('CREATE OR REPLACE FUNCTION pg_temp.bench_loop(n int) RETURNS void LANGUAGE plpgsql AS %L',
                   format('DECLARE x text; BEGIN FOR i IN 1 .. n LOOP x := %s; END LOOP; END', expression));
    t0 := clock_timestamp();
    PERFORM pg_temp.bench_loop(rounds);
    RETURN extract(epoch FROM clock_timestamp() - t0) * 1e6 / rounds;
END $$;
"#;

/// A token for the benchmark user, made distinct by `jti`.
fn bench_token(jti: usize) -> String {
    mint(
        &json!({"iss": ISSUER, "sub": "user_bench", "org_id": "org_bench", "role": "member",
                 "sid": "session_bench", "jti": format!("jti_{jti}"), "iat": unix_now(), "exp": unix_now() + 3600}),
    )
}

/// Creates the benchmark database: the extension, one workspace, a plain and a protected table.
fn set_up() {
    let mut db = bench_support::bench_database(DATABASE, APP_ROLE);
    db.batch_execute(&format!(
        "CREATE TABLE plain_items (id int PRIMARY KEY, workspace_id text NOT NULL, v int NOT NULL);
         INSERT INTO plain_items SELECT i, 'ws_' || (i % 100), i FROM generate_series(1, 100000) i;
         CREATE TABLE items (LIKE plain_items INCLUDING ALL);
         INSERT INTO items SELECT * FROM plain_items;
         CREATE INDEX ON items (workspace_id);
         SELECT tenancy.protect('items');
         GRANT SELECT ON plain_items, items TO {APP_ROLE};
         ANALYZE;
         {LOOPS}
         GRANT EXECUTE ON FUNCTION bench_set, bench_calls TO {APP_ROLE};"
    ))
    .unwrap();
}

/// Runs `f` `runs` times and keeps the fastest (least disturbed) figure.
fn best_of(runs: usize, mut f: impl FnMut() -> f64) -> f64 {
    (0..runs).map(|_| f()).fold(f64::INFINITY, f64::min)
}

/// One server-side loop, in microseconds per iteration.
fn measure(app: &mut postgres::Client, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> f64 {
    let mut tx = app.transaction().unwrap();
    let micros: f64 = tx.query_one(sql, params).unwrap().get(0);
    tx.rollback().unwrap();
    micros
}

/// TPS reported by pgbench for one script, as the application role (simple protocol).
fn pgbench(script: &str, seconds: u32) -> f64 {
    pgbench_with(script, seconds, &[])
}

/// TPS reported by pgbench for one script with extra options (`-M prepared`, `-D name=value`).
fn pgbench_with(script: &str, seconds: u32, extra: &[String]) -> f64 {
    bench_support::pgbench(DATABASE, APP_ROLE, script, seconds, extra)
}

/// The pooled pattern: what a driver behind PgBouncer sends per transaction, each statement on
/// its own (`-M prepared`: every statement is parsed once and bound, `:tok` a bound parameter),
/// against a control that sets an unknown setting to a value of the same length.
fn pooled_pattern(token: &str, key: &str) {
    let pick = "\\set id 100 * random(1, 999)\n";
    let plain = "SELECT v FROM plain_items WHERE id = :id;";
    let protected = "SELECT v FROM items WHERE id = :id;";
    let tx = |set: &str, select: &str| format!("{pick}BEGIN;\n{set}\n{select}\nCOMMIT;\n");
    let literal = |setting: &str, value: &str| format!("SET LOCAL {setting} = '{value}';");
    let bound = |setting: &str, var: &str| format!("SELECT set_config('{setting}', :{var}, true);");
    let control_token = "x".repeat(token.len());
    let control_key = "x".repeat(key.len());
    // (row, script, the index of its control row)
    let rows: Vec<(&str, String, usize)> = vec![
        (
            "control: `SET LOCAL` of an unknown setting as long as the token, plain select",
            tx(&literal("bench.control", &control_token), plain),
            0,
        ),
        (
            "`SET LOCAL tenancy.token = '…'`, plain select",
            tx(&literal("tenancy.token", token), plain),
            0,
        ),
        (
            "`SET LOCAL tenancy.token = '…'`, protected select",
            tx(&literal("tenancy.token", token), protected),
            0,
        ),
        (
            "control: `set_config(unknown, $1, true)`, value as long as the token, plain select",
            tx(&bound("bench.control", "ctl"), plain),
            3,
        ),
        (
            "`set_config('tenancy.token', $1, true)`, plain select",
            tx(&bound("tenancy.token", "tok"), plain),
            3,
        ),
        (
            "`set_config('tenancy.token', $1, true)`, protected select",
            tx(&bound("tenancy.token", "tok"), protected),
            3,
        ),
        (
            "control: `SET LOCAL` of an unknown setting as long as a key, plain select",
            tx(&literal("bench.control", &control_key), plain),
            6,
        ),
        (
            "`SET LOCAL tenancy.api_key = '…'`, protected select",
            tx(&literal("tenancy.api_key", key), protected),
            6,
        ),
        (
            "control: `set_config(unknown, $1, true)`, value as long as a key, plain select",
            tx(&bound("bench.control", "kctl"), plain),
            8,
        ),
        (
            "`set_config('tenancy.api_key', $1, true)`, protected select",
            tx(&bound("tenancy.api_key", "key"), protected),
            8,
        ),
    ];
    let options = [
        "-M".to_string(),
        "prepared".to_string(),
        "-D".to_string(),
        format!("tok={token}"),
        "-D".to_string(),
        format!("ctl={control_token}"),
        "-D".to_string(),
        format!("key={key}"),
        "-D".to_string(),
        format!("kctl={control_key}"),
    ];
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for _ in 0..3 {
        for (tps, (_, script, _)) in runs.iter_mut().zip(&rows) {
            tps.push(pgbench_with(script, 5, &options));
        }
    }
    let tps: Vec<f64> = runs.into_iter().map(bench_support::median).collect();
    println!();
    println!(
        "| pooled pattern (`-M prepared`, separate statements, 2 clients, median of 3 × 5 s) | TPS | vs its control |"
    );
    println!("|---|---:|---:|");
    for (i, (row, _, control)) in rows.iter().enumerate() {
        println!("| {row} | {:.0} | {:.3} |", tps[i], tps[i] / tps[*control]);
    }
}

fn main() {
    set_up();
    let mut app = connect_with(APP_ROLE, DATABASE, "").unwrap();
    let cold: Vec<String> = (0..COLD_TOKENS).map(bench_token).collect();
    let warm = vec![bench_token(COLD_TOKENS), bench_token(COLD_TOKENS + 1)];

    // Warm-up: the issuers and the membership plan are loaded once per backend.
    measure(&mut app, "SELECT bench_set($1, 'tenancy.token', 2)", &[&warm]);
    let dummy_cold = best_of(3, || {
        measure(
            &mut app,
            "SELECT bench_set($1, 'bench.dummy', $2)",
            &[&cold, &(COLD_TOKENS as i32)],
        )
    });
    let token_cold = best_of(3, || {
        // A fresh connection has an empty cache, so every token is verified.
        let mut fresh = connect_with(APP_ROLE, DATABASE, "").unwrap();
        measure(&mut fresh, "SELECT bench_set($1, 'tenancy.token', 1)", &[&warm]);
        measure(
            &mut fresh,
            "SELECT bench_set($1, 'tenancy.token', $2)",
            &[&cold, &(COLD_TOKENS as i32)],
        )
    });
    let rounds = 200_000_i32;
    let dummy_warm = best_of(3, || {
        measure(&mut app, "SELECT bench_set($1, 'bench.dummy', $2)", &[&warm, &rounds])
    });
    let token_warm = best_of(3, || {
        measure(&mut app, "SELECT bench_set($1, 'tenancy.token', $2)", &[&warm, &rounds])
    });

    app.execute("SELECT set_config('tenancy.token', $1, false)", &[&warm[0]])
        .unwrap();
    app.batch_execute(
        "SET app.workspace_id = 'ws_0';
         SET request.jwt.claims = '{\"sub\":\"user_bench\",\"org_id\":\"org_bench\",\"role\":\"member\",\"exp\":9999999999}'",
    )
    .unwrap();
    let calls = 2_000_000_i32;
    let mut per_call = |expression: &str| {
        best_of(3, || {
            measure(&mut app, "SELECT bench_calls($1, $2)", &[&expression, &calls])
        })
    };
    let base_call = per_call("'ws_0'");
    let ours = per_call("tenancy.workspace_id()");
    let setting = per_call("current_setting('app.workspace_id')");
    let claims = per_call("current_setting('request.jwt.claims')::jsonb ->> 'org_id'");

    // Ids of workspace ws_0 (the benchmark user's) are multiples of 100. The token line either
    // rides in BEGIN's round trip (`\\;` makes one compound query, as a driver sending
    // "BEGIN; SET LOCAL …" does) or costs a round trip of its own.
    let token = &warm[0];
    let pick = "\\set id 100 * random(1, 999)\n";
    let scripts = [
        format!("{pick}BEGIN;\nSELECT v FROM plain_items WHERE id = :id;\nCOMMIT;\n"),
        format!("{pick}BEGIN \\; SET LOCAL tenancy.token = '{token}';\nSELECT v FROM plain_items WHERE id = :id;\nCOMMIT;\n"),
        format!("{pick}BEGIN;\nSET LOCAL tenancy.token = '{token}';\nSELECT v FROM plain_items WHERE id = :id;\nCOMMIT;\n"),
        format!("{pick}BEGIN \\; SET LOCAL tenancy.token = '{token}';\nSELECT v FROM items WHERE id = :id;\nCOMMIT;\n"),
        // Control: the same statement for a setting pg_tenancy does not know, with a value as long.
        format!(
            "{pick}BEGIN \\; SET LOCAL bench.control = '{}';\nSELECT v FROM plain_items WHERE id = :id;\nCOMMIT;\n",
            "x".repeat(token.len())
        ),
    ];
    let seconds = 10;
    let mut tps = [0.0_f64; 5];
    for _ in 0..3 {
        for (best, script) in tps.iter_mut().zip(&scripts) {
            *best = best.max(pgbench(script, seconds));
        }
    }

    println!("| measurement | figure | target |");
    println!("|---|---|---|");
    println!(
        "| cold `SET LOCAL tenancy.token` (RS256 verify + membership), {COLD_TOKENS} distinct tokens | {:.1} µs | ≤ 100 µs |",
        token_cold - dummy_cold
    );
    println!(
        "| cached `SET LOCAL tenancy.token` (token seen before) | {:.2} µs | ≤ 5 µs |",
        token_warm - dummy_warm
    );
    println!(
        "| `tenancy.workspace_id()` per evaluation | {:.3} µs | ≤ 0.5 µs |",
        ours - base_call
    );
    println!(
        "| `current_setting('app.workspace_id')` per evaluation | {:.3} µs | (today's pattern) |",
        setting - base_call
    );
    println!(
        "| `current_setting('request.jwt.claims')::jsonb ->> 'org_id'` per evaluation | {:.3} µs | (Supabase-style) |",
        claims - base_call
    );
    let rows = [
        "pgbench `BEGIN; SELECT …; COMMIT` (baseline)",
        "… with `SET LOCAL tenancy.token` in BEGIN's round trip",
        "… with `SET LOCAL tenancy.token` as a round trip of its own",
        "… in BEGIN's round trip, protected table (RLS policy)",
        "control: `SET LOCAL` of an unknown setting, value as long as the token, in BEGIN's round trip",
    ];
    for (i, (row, figure)) in rows.iter().zip(tps).enumerate() {
        let target = if i == 1 { "≥ 0.9×" } else { "" };
        println!("| {row} | {figure:.0} TPS ({:.3}×) | {target} |", figure / tps[0]);
    }
    let key: String = connect_with("postgres", DATABASE, "")
        .unwrap()
        .query_one("SELECT tenancy.create_api_key('ws_0', 'bench')", &[])
        .unwrap()
        .get(0);
    pooled_pattern(&warm[0], &key);
}
