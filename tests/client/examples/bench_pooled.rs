//! The pooled pattern decomposed (scripts/bench-identity, issue 37): what a per-transaction
//! identity costs a protected statement, against the same statement with the workspace written
//! in, in the same run.
//!
//! Every transaction is what a driver behind a transaction pooler sends, each statement on its
//! own (`pgbench -M prepared`: parsed once, then bound): `BEGIN`, the credential line, one select,
//! `COMMIT`. Three rows per credential form and statement shape:
//! - control: the credential line sets a setting pg_tenancy does not know to a value as long as
//!   the token, and the select names the workspace literally on an unprotected copy;
//! - token + literal: the real credential line, the same literal select (what the line costs);
//! - token + protected: the real credential line, the select without a workspace on the protected
//!   table (what the policy costs).
//!
//! Credential forms: `SET LOCAL tenancy.token = '…'` and `set_config('tenancy.token', $1, true)`
//! with a bound value. Shapes: a point select by id, a 50-row range of ids, `count(*)` of the
//! workspace (2,000 rows). Tables: 200,000 rows over 100 workspaces, an index on
//! `(workspace_id, id)`, identical but for `tenancy.protect`.
//!
//! `BENCH_RUNS` runs (default 3); in each, every control and its two variants run back to back in
//! `BENCH_ROUNDS` rounds (default 7) of `BENCH_SECONDS` seconds (default 2) per script, the order
//! rotated from round to round, 2 clients; every run is printed. A ratio is the median of the
//! rounds' ratios, each taken between scripts that ran seconds apart: measured on this machine,
//! the medians of 3 rounds of 4 s with the 18 scripts in one sequence (a control and its variant
//! 8 s apart, a round 72 s long) moved identical work by ±0.04 between runs, as much as the
//! effect measured.

mod bench_support;
#[path = "../tests/common/mod.rs"]
#[allow(dead_code)]
mod common;

use common::{mint, unix_now, ISSUER};
use serde_json::json;

const DATABASE: &str = "tenancy_bench_pooled";
const APP_ROLE: &str = "tenancy_bench_app";

/// A setting from the environment, or its default.
fn setting(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Creates the database: one workspace with a member, the unprotected and the protected table.
fn set_up() {
    let mut db = bench_support::bench_database(DATABASE, APP_ROLE);
    db.batch_execute(&format!(
        "CREATE TABLE pooled_plain (id bigint NOT NULL, workspace_id text NOT NULL, v int NOT NULL);
         INSERT INTO pooled_plain SELECT i, 'ws_' || (i % 100), i FROM generate_series(1, 200000) i;
         CREATE INDEX ON pooled_plain (workspace_id, id);
         CREATE TABLE pooled_items (LIKE pooled_plain INCLUDING ALL);
         INSERT INTO pooled_items SELECT * FROM pooled_plain;
         SELECT tenancy.protect('pooled_items');
         GRANT SELECT ON pooled_plain, pooled_items TO {APP_ROLE};"
    ))
    .unwrap();
    // Both tables all-visible (index-only scans for the counts). A plain VACUUM left the protected
    // copy's visibility map empty (0 of 1,274 pages, where the unprotected one had all), which made
    // its count a bitmap heap scan against an index-only scan: FREEZE sets it.
    for _ in 0..10 {
        db.batch_execute("VACUUM (FREEZE, ANALYZE) pooled_plain").unwrap();
        db.batch_execute("VACUUM (FREEZE, ANALYZE) pooled_items").unwrap();
        let visible: bool = db
            .query_one(
                "SELECT bool_and(relallvisible = relpages) FROM pg_class WHERE relname IN ('pooled_plain', 'pooled_items')",
                &[],
            )
            .unwrap()
            .get(0);
        if visible {
            return;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    panic!("the benchmark tables never became all-visible");
}

/// TPS reported by pgbench for one script (`-M prepared`, 2 clients) with `defines`.
fn pgbench(script: &str, seconds: u32, defines: &[String]) -> f64 {
    let mut extra = vec!["-M".to_string(), "prepared".to_string()];
    extra.extend(defines.iter().flat_map(|d| ["-D".to_string(), d.clone()]));
    bench_support::pgbench(DATABASE, APP_ROLE, script, seconds, &extra)
}

/// A statement shape: its pgbench variables, and its select with the workspace written in on the
/// unprotected table and without it on the protected one.
struct Shape {
    name: &'static str,
    pick: &'static str,
    literal: &'static str,
    protected: &'static str,
}

/// A credential form: how the line is written for a setting and a value (or the variable that
/// holds it).
struct Form {
    name: &'static str,
    control: String,
    token: String,
}

/// One row of the table: its label and its script. Rows come in threes: control, token +
/// literal, token + protected.
struct Row {
    label: String,
    script: String,
}

fn main() {
    set_up();
    let token = mint(
        &json!({"iss": ISSUER, "sub": "user_bench", "org_id": "org_bench", "role": "member",
                             "sid": "session_bench", "iat": unix_now(), "exp": unix_now() + 7200}),
    );
    let filler = "x".repeat(token.len());
    // Ids of ws_0 are the multiples of 100.
    let shapes = [
        Shape {
            name: "point select",
            pick: "\\set id 100 * random(1, 1999)\n",
            literal: "SELECT v FROM pooled_plain WHERE workspace_id = 'ws_0' AND id = :id;",
            protected: "SELECT v FROM pooled_items WHERE id = :id;",
        },
        Shape {
            name: "50-row range",
            pick: "\\set lo 100 * random(1, 1949)\n",
            literal: "SELECT v FROM pooled_plain WHERE workspace_id = 'ws_0' AND id BETWEEN :lo AND :lo + 4999;",
            protected: "SELECT v FROM pooled_items WHERE id BETWEEN :lo AND :lo + 4999;",
        },
        Shape {
            name: "count(*) of the workspace",
            pick: "",
            literal: "SELECT count(*) FROM pooled_plain WHERE workspace_id = 'ws_0';",
            protected: "SELECT count(*) FROM pooled_items;",
        },
    ];
    let forms = [
        Form {
            name: "SET LOCAL",
            control: format!("SET LOCAL bench.control = '{filler}';"),
            token: format!("SET LOCAL tenancy.token = '{token}';"),
        },
        Form {
            name: "set_config($1)",
            control: "SELECT set_config('bench.control', :ctl, true);".to_string(),
            token: "SELECT set_config('tenancy.token', :tok, true);".to_string(),
        },
    ];
    let mut rows = Vec::new();
    for shape in &shapes {
        for form in &forms {
            let tx = |set: &str, select: &str| format!("{}BEGIN;\n{set}\n{select}\nCOMMIT;\n", shape.pick);
            let label = |what: &str| format!("{}, {}: {what}", shape.name, form.name);
            rows.push(Row {
                label: label("control (unknown setting, literal `WHERE`)"),
                script: tx(&form.control, shape.literal),
            });
            rows.push(Row {
                label: label("token + literal `WHERE`"),
                script: tx(&form.token, shape.literal),
            });
            rows.push(Row {
                label: label("token + protected"),
                script: tx(&form.token, shape.protected),
            });
        }
    }
    let defines = [format!("tok={token}"), format!("ctl={filler}")];
    let (runs, rounds, seconds) = (
        setting("BENCH_RUNS", 3),
        setting("BENCH_ROUNDS", 7),
        setting("BENCH_SECONDS", 2),
    );
    let mut protected_ratios: Vec<Vec<f64>> = Vec::new();
    for run in 1..=runs {
        println!();
        println!(
            "Run {run} of {runs}: each control and its variants back to back, {rounds} rounds of {seconds} s \
             in rotated order, 2 clients, `-M prepared`; TPS the median of the rounds, ratios the median \
             of the rounds' ratios"
        );
        println!();
        println!("| transaction | TPS | vs control | protected vs token + literal |");
        println!("|---|---:|---:|---:|");
        let mut ratios = Vec::new();
        for group in rows.chunks(3) {
            let mut tps: Vec<Vec<f64>> = vec![Vec::new(); 3];
            for round in 0..rounds as usize {
                for step in 0..3 {
                    let variant = (round + step) % 3;
                    tps[variant].push(pgbench(&group[variant].script, seconds, &defines));
                }
            }
            let ratio_of =
                |a: usize, b: usize| bench_support::median(tps[a].iter().zip(&tps[b]).map(|(x, y)| x / y).collect());
            for (i, row) in group.iter().enumerate() {
                let against_literal = if i == 2 {
                    format!("{:.3}", ratio_of(2, 1))
                } else {
                    String::new()
                };
                println!(
                    "| {} | {:.0} | {:.3} | {against_literal} |",
                    row.label,
                    bench_support::median(tps[i].clone()),
                    ratio_of(i, 0)
                );
            }
            ratios.push(ratio_of(2, 0));
        }
        protected_ratios.push(ratios);
    }
    println!();
    println!("Protected rows against their controls, per run (target ≥ 0.98 in every run):");
    for (i, ratios) in protected_ratios.iter().enumerate() {
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
        let lowest = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        println!("- run {}: {} (lowest {lowest:.3})", i + 1, shown.join(", "));
    }
}
