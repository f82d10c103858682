//! Tenant-scoped vector search (issue 5), measured against its peers in the same run
//! (scripts/bench-search). For each data flavour it builds a protected table of Zipf-sized
//! workspaces, computes exact per-workspace ground truth here in Rust, and runs the same queries
//! through tenancy.nearest and through plain SQL under row-level security (HNSW with iterative
//! scan off / strict_order / relaxed_order, and an exact scan), each as the workspace's own user.
//! Prints one Markdown table per flavour: per size bucket and method, recall@10 (mean and 5th
//! percentile), the share of queries returning min(k, workspace size) rows, rows of another
//! workspace, and p50/p95 latency.
//!
//!   --quick          a small sanity run (about a minute)
//!   REUSE=1 ONLY=<method> EXTRA_SETTINGS=<SQL> SHOW_MISSES=1: re-measure the kept database, one
//!                    method, with extra settings, printing queries of recall < 0.9 (for tuning)
//!   env DIMS, ROWS, WORKSPACES override the sizes

mod vector_data;

#[path = "../tests/common/mod.rs"]
#[allow(dead_code)]
mod common;

use common::{connect_with, fixture_jwks, mint, recreate_database, unix_now, ISSUER};
use pgvector::Vector;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use vector_data::{bucket, copy_rows, cosine, percentile, sizes, truth, Rng, Topic};

const DATABASE: &str = "tenancy_bench_search";
const APP_ROLE: &str = "tenancy_bench_search_app";
const K: usize = 10;

/// Per bucket: recalls, latencies (ms), queries with min(k, n) rows, foreign rows, queries.
type Tally = (Vec<f64>, Vec<f64>, usize, usize, usize);

/// Queries per bucket (spread over the bucket's workspaces).
fn queries_for(b: &str, quick: bool) -> usize {
    let n = match &b[..1] {
        "1" => 80,
        "2" => 100,
        "3" => 100,
        "4" => 100,
        "5" => 60,
        _ => 20,
    };
    if quick {
        n / 4
    } else {
        n
    }
}

struct Data {
    ws_of: Vec<usize>,        // row id - 1 -> workspace index
    vecs: Vec<Vec<f32>>,      // row id - 1 -> vector
    members: Vec<Vec<usize>>, // workspace -> row indexes
}

fn generate(flavour: &str, dims: usize, size: &[usize], seed: u64) -> (Data, Vec<Vec<Topic>>) {
    let mut rng = Rng(seed);
    let global: Vec<Topic> = (0..1000).map(|_| Topic::new(&mut rng, dims, None, 0.0)).collect();
    // Clustered: each workspace has its own centre and 1 + n/2000 topics around it.
    let own: Vec<Vec<Topic>> = size
        .iter()
        .map(|&n| {
            let c = Topic::new(&mut rng, dims, None, 0.0);
            (0..1 + n / 2000)
                .map(|_| Topic::new(&mut rng, dims, Some(&c.centre), 0.6))
                .collect()
        })
        .collect();
    let mut data = Data {
        ws_of: vec![],
        vecs: vec![],
        members: vec![vec![]; size.len()],
    };
    // Rows are interleaved across workspaces, as concurrent tenants would insert them.
    let mut left: Vec<usize> = size.to_vec();
    let mut order: Vec<usize> = size
        .iter()
        .enumerate()
        .flat_map(|(w, &n)| std::iter::repeat_n(w, n))
        .collect();
    for i in (1..order.len()).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    for w in order {
        left[w] -= 1;
        let v = if flavour == "clustered" {
            let t = &own[w][rng.below(own[w].len())];
            t.sample(&mut rng)
        } else {
            global[rng.below(global.len())].sample(&mut rng)
        };
        data.members[w].push(data.vecs.len());
        data.ws_of.push(w);
        data.vecs.push(v);
    }
    let topics = if flavour == "clustered" { own } else { vec![global] };
    (data, topics)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let env = |name: &str, full: usize, small: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { small } else { full })
    };
    let dims = env("DIMS", 64, 64);
    let rows = env("ROWS", 200_000, 30_000);
    let workspaces = env("WORKSPACES", 500, 100);
    let index_rows = env("INDEX_ROWS", 10_000, 3_000) as i64;
    let size = sizes(workspaces, rows);
    let total: usize = size.iter().sum();

    // REUSE=1 (tuning): keep the database of the previous run, measure again.
    let reuse = std::env::var("REUSE").is_ok();
    let only = std::env::var("ONLY").ok();
    if !reuse {
        recreate_database(DATABASE, APP_ROLE);
    }
    let mut db = connect_with("postgres", DATABASE, "").unwrap();
    let jwks = fixture_jwks();
    if !reuse {
        db.batch_execute(&format!(
            "CREATE EXTENSION pg_tenancy; CREATE EXTENSION vector;
         SELECT tenancy.add_issuer('{ISSUER}', '{jwks}'::jsonb);
         INSERT INTO tenancy.workspaces SELECT 'ws_' || i, 'org_' || i, NULL, NULL FROM generate_series(0, {}) i;
         INSERT INTO tenancy.members SELECT 'ws_' || i, 'user_' || i, NULL, NULL FROM generate_series(0, {}) i;",
            workspaces - 1,
            workspaces - 1
        ))
        .unwrap();
        // Until the extension script includes them, load the SQL files of a development checkout.
        for (probe, file) in [
            (
                "tenancy.protect(regclass,name,name,text)",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../../sql/protect.sql"),
            ),
            (
                "tenancy.nearest(anyelement,name,anycompatible,integer,text)",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../../sql/search.sql"),
            ),
        ] {
            let present: bool = db
                .query_one(&format!("SELECT to_regprocedure('{probe}') IS NOT NULL"), &[])
                .unwrap()
                .get(0);
            if !present {
                let path = std::env::var("SEARCH_SQL")
                    .ok()
                    .filter(|_| file.ends_with("search.sql"))
                    .unwrap_or(file.into());
                db.batch_execute(&std::fs::read_to_string(path).unwrap()).unwrap();
            }
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("# Vector search benchmark\n");
    println!(
        "{total} rows of {dims} dimensions over {workspaces} workspaces (largest {}, {} under 10 rows, {} empty); k = {K}, cosine; load average at start: {}",
        size[0],
        size.iter().filter(|&&n| n > 0 && n < 10).count(),
        size.iter().filter(|&&n| n == 0).count(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let tokens: Vec<String> = (0..workspaces)
        .map(|i| {
            mint(
                &json!({"iss": ISSUER, "sub": format!("user_{i}"), "org_id": format!("org_{i}"),
                         "sid": format!("session_{i}"), "iat": unix_now(), "exp": unix_now() + 7200}),
            )
        })
        .collect();

    for (f, flavour) in ["random", "clustered"].iter().enumerate() {
        let t0 = Instant::now();
        let (data, topics) = generate(flavour, dims, &size, 42 + f as u64);
        let table = format!("items_{flavour}");
        if !reuse {
            db.batch_execute(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, workspace_id text NOT NULL, body text, embedding vector({dims}));"
        ))
        .unwrap();
            copy_rows(&mut db, &table, &data.ws_of, &data.vecs);
            let loaded = t0.elapsed().as_secs_f64();
            // CVE-2026-3172: HNSW builds in pgvector <= 0.8.1 must not run in parallel.
            let t1 = Instant::now();
            db.batch_execute(&format!(
                "CREATE INDEX ON {table} (workspace_id);
             SET max_parallel_maintenance_workers = 0; SET maintenance_work_mem = '1GB';
             CREATE INDEX {table}_hnsw ON {table} USING hnsw (embedding vector_cosine_ops);
             SELECT tenancy.protect('{table}');
             GRANT SELECT ON {table} TO {APP_ROLE};"
            ))
            .unwrap();
            let shared = t1.elapsed().as_secs_f64();
            let t2 = Instant::now();
            let made = db
                .query(
                    &format!("SELECT * FROM tenancy.create_vector_indexes('{table}', 'embedding', {index_rows})"),
                    &[],
                )
                .unwrap()
                .len();
            db.batch_execute(&format!("VACUUM ANALYZE {table}")).unwrap();
            let partial = t2.elapsed().as_secs_f64();
            println!(
            "\n## {flavour}\n\nload {loaded:.0} s; B-tree + shared HNSW (m 16, ef_construction 64, serial) {shared:.0} s; \
             {made} per-workspace HNSW indexes (workspaces >= {index_rows} rows) {partial:.0} s\n"
        );
        }

        // Every page of the table and its indexes in shared buffers (scripts/bench-search sizes
        // them to hold both tables): otherwise whichever method runs first pays for reading pages
        // in, and the whales' p50 moved by 50 % between two runs on the same data.
        db.batch_execute(&format!(
            "CREATE EXTENSION IF NOT EXISTS pg_prewarm;
             SELECT pg_prewarm(c.oid) FROM pg_class c
              WHERE c.oid = '{table}'::regclass OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = '{table}'::regclass);"
        ))
        .unwrap();

        // Queries: per bucket, round-robin over its workspaces; each a fresh point drawn from
        // the workspace's own distribution (clustered) or from the global one (random).
        let mut rng = Rng(7 + f as u64);
        let mut by_bucket: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (w, &n) in size.iter().enumerate() {
            by_bucket.entry(bucket(n)).or_default().push(w);
        }
        let mut queries: Vec<(usize, Vec<f32>, Vec<i64>)> = vec![];
        for (b, ws) in &by_bucket {
            for i in 0..queries_for(b, quick) {
                let w = ws[i % ws.len()];
                let q = if *flavour == "clustered" {
                    topics[w][rng.below(topics[w].len())].sample(&mut rng)
                } else {
                    topics[0][rng.below(topics[0].len())].sample(&mut rng)
                };
                let t = truth(&data.members[w], &data.vecs, &q, K);
                queries.push((w, q, t));
            }
        }
        // The HNSW peers run with enable_sort off: left alone, the planner answers plain SQL under
        // row-level security on this table with the workspace B-tree and a sort (an exact scan,
        // the "exact scan" row), and the peers are meant to measure the HNSW plans.
        // "plain SQL" is what ORMs and RAG frameworks issue, with pgvector's default settings, the
        // identity bound per transaction (SET LOCAL) or for the session (folded into the plan).
        let plain = format!("SELECT id FROM {table} ORDER BY embedding <=> $1 LIMIT {K}");
        let methods: [(&str, &str, String); 7] = [
            (
                "pg_tenancy",
                "",
                format!("SELECT (n.item).id FROM tenancy.nearest(NULL::{table}, 'embedding', $1::vector, {K}) n"),
            ),
            (
                "hnsw, iterative off",
                "SET hnsw.iterative_scan = off; SET enable_sort = off; SET tenancy.shared_vector_indexes = on",
                format!("SELECT id FROM {table} ORDER BY embedding <=> $1 LIMIT {K}"),
            ),
            (
                "hnsw, strict_order",
                "SET hnsw.iterative_scan = strict_order; SET enable_sort = off; SET tenancy.shared_vector_indexes = on",
                format!("SELECT id FROM {table} ORDER BY embedding <=> $1 LIMIT {K}"),
            ),
            (
                "hnsw, relaxed_order",
                "SET hnsw.iterative_scan = relaxed_order; SET enable_sort = off; SET tenancy.shared_vector_indexes = on",
                format!("SELECT id FROM {table} ORDER BY embedding <=> $1 LIMIT {K}"),
            ),
            (
                "exact scan",
                "SET hnsw.iterative_scan = off",
                format!(
                    "SELECT id FROM (SELECT id, embedding <=> $1 AS d FROM {table} OFFSET 0) s ORDER BY d LIMIT {K}"
                ),
            ),
            ("plain SQL, SET LOCAL", "", plain.clone()),
            ("plain SQL, session", "", plain),
        ];
        let mut strategies: HashMap<String, usize> = HashMap::new();
        // One connection per method, with its settings and its prepared statement. Every method
        // runs all the queries ROUNDS times (default 3), the methods in a rotated order each
        // round, so that the machine's drift over the run (other work, clock frequency) falls on
        // all of them alike: measured once, one method after the other, the same data gave
        // pg_tenancy / exact 1.18 and 1.41 for one bucket in two runs. (Running each query by
        // every method in turn instead kept no backend warm: the tiny buckets' exact scan went
        // from 0.08 to 0.18 ms, which no application sees either.)
        let chosen: Vec<&(&str, &str, String)> = methods
            .iter()
            .filter(|(name, _, _)| only.as_deref().is_none_or(|o| o == *name))
            .collect();
        let mut conns: Vec<(postgres::Client, postgres::Statement)> = chosen
            .iter()
            .map(|(_, setting, sql)| {
                let mut app = connect_with(APP_ROLE, DATABASE, "").unwrap();
                if let Ok(extra) = std::env::var("EXTRA_SETTINGS") {
                    app.batch_execute(&extra).unwrap();
                }
                if !setting.is_empty() {
                    app.batch_execute(setting).unwrap();
                }
                let stmt = app.prepare(sql).unwrap();
                (app, stmt)
            })
            .collect();
        // Warm-up: the tokens (each backend verifies a token once) and the caches.
        for (c, (app, _)) in conns.iter_mut().enumerate() {
            for (w, tok) in tokens.iter().enumerate().take(size.len()) {
                let mut tx = app.transaction().unwrap();
                tx.execute("SELECT set_config('tenancy.token', $1, true)", &[tok])
                    .unwrap();
                if size[w] > 0 || w % 50 == 0 {
                    let s: String = tx
                        .query_one(
                            &format!("SELECT tenancy.nearest_strategy(NULL::{table}, 'embedding')"),
                            &[],
                        )
                        .unwrap()
                        .get(0);
                    if c == 0 {
                        *strategies.entry(format!("{} {s}", &bucket(size[w])[2..])).or_default() += 1;
                    }
                }
                tx.commit().unwrap();
            }
        }
        // (bucket, method) → (p50 ms, recall mean, rows = min(k, n) %), for the ratio table.
        let mut summary: BTreeMap<(&str, String), (f64, f64, f64)> = BTreeMap::new();
        println!("| bucket | method | runs | recall@10 mean | recall@10 p5 | rows = min(k, n) | foreign rows | p50 ms | p95 ms |");
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
        let mut tallies: Vec<BTreeMap<&str, Tally>> = chosen.iter().map(|_| BTreeMap::new()).collect();
        let rounds: usize = std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
        let count = chosen.len().max(1);
        let order: Vec<usize> = (0..rounds)
            .flat_map(|r| (0..count).map(move |i| (i + r) % count))
            .collect();
        for m in order {
            let (name, _, _) = chosen[m];
            let (app, stmt) = &mut conns[m];
            let per = &mut tallies[m];
            for (w, q, t) in &queries {
                let v = Vector::from(q.clone());
                let session = name.ends_with("session");
                if session {
                    app.execute("SELECT set_config('tenancy.token', $1, false)", &[&tokens[*w]])
                        .unwrap();
                }
                let mut tx = app.transaction().unwrap();
                if !session {
                    tx.execute("SELECT set_config('tenancy.token', $1, true)", &[&tokens[*w]])
                        .unwrap();
                }
                let start = Instant::now();
                let got: Vec<i64> = tx.query(&*stmt, &[&v]).unwrap().iter().map(|r| r.get(0)).collect();
                let ms = start.elapsed().as_secs_f64() * 1e3;
                tx.commit().unwrap();
                let e = per.entry(bucket(size[*w])).or_default();
                let foreign = got.iter().filter(|&&id| data.ws_of[id as usize - 1] != *w).count();
                if !t.is_empty() {
                    let r = got.iter().filter(|id| t.contains(id)).count() as f64 / t.len() as f64;
                    if r < 0.9 && std::env::var("SHOW_MISSES").is_ok() {
                        let nq = q.iter().map(|x| x * x).sum::<f32>().sqrt();
                        let d = |id: &i64| cosine(&data.vecs[*id as usize - 1], q, nq);
                        eprintln!(
                            "{name}: ws_{w} recall {r}: got {:?} truth {:?}",
                            got.iter().map(d).collect::<Vec<_>>(),
                            t.iter().map(d).collect::<Vec<_>>()
                        );
                    }
                    e.0.push(r);
                }
                e.1.push(ms);
                e.2 += usize::from(got.len() == K.min(size[*w]));
                e.3 += foreign;
                e.4 += 1;
            }
        }
        for ((name, _, _), per) in chosen.iter().zip(tallies) {
            for (b, (mut rec, mut lat, ok, foreign, n)) in per {
                let mean = if rec.is_empty() {
                    f64::NAN
                } else {
                    rec.iter().sum::<f64>() / rec.len() as f64
                };
                println!(
                    "| {} | {name} | {n} | {} | {} | {:.1}% | {foreign} | {:.2} | {:.2} |",
                    &b[2..],
                    if mean.is_nan() {
                        "–".into()
                    } else {
                        format!("{mean:.3}")
                    },
                    if rec.is_empty() {
                        "–".into()
                    } else {
                        format!("{:.2}", percentile(&mut rec, 0.05))
                    },
                    100.0 * ok as f64 / n as f64,
                    percentile(&mut lat, 0.5),
                    percentile(&mut lat, 0.95)
                );
                summary.insert(
                    (b, name.to_string()),
                    (percentile(&mut lat, 0.5), mean, 100.0 * ok as f64 / n as f64),
                );
            }
        }
        // The targets as ratios measured in this run: pg_tenancy against the hand-written exact
        // scan and against the shared HNSW index (relaxed iterative scan), per bucket.
        println!("\n| bucket | pg_tenancy p50 ms | exact p50 ms | pg_tenancy / exact | HNSW relaxed p50 ms | pg_tenancy / HNSW | recall pg_tenancy | recall HNSW | rows pg_tenancy |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        let buckets: std::collections::BTreeSet<&str> = summary.keys().map(|(b, _)| *b).collect();
        for b in buckets {
            let get = |m: &str| summary.get(&(b, m.to_string())).copied();
            let (Some(ours), Some(exact)) = (get("pg_tenancy"), get("exact scan")) else {
                continue;
            };
            let hnsw = get("hnsw, relaxed_order");
            let fmt = |v: f64| {
                if v.is_nan() {
                    "–".to_string()
                } else {
                    format!("{v:.3}")
                }
            };
            println!(
                "| {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {:.1}% |",
                &b[2..],
                ours.0,
                exact.0,
                ours.0 / exact.0,
                hnsw.map_or("–".into(), |h| format!("{:.2}", h.0)),
                hnsw.map_or("–".into(), |h| format!("{:.2}", ours.0 / h.0)),
                fmt(ours.1),
                hnsw.map_or("–".into(), |h| fmt(h.1)),
                ours.2
            );
        }
        // Plain SQL under row-level security: rows and recall per identity mode.
        println!("\n| bucket | plain SQL, SET LOCAL: p50 ms | recall | rows = min(k, n) | plain SQL, session: p50 ms | recall | rows = min(k, n) |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        let buckets: std::collections::BTreeSet<&str> = summary.keys().map(|(b, _)| *b).collect();
        for b in buckets {
            let cell = |m: &str| {
                summary
                    .get(&(b, m.to_string()))
                    .map_or("– | – | –".to_string(), |(p50, recall, rows)| {
                        let recall = if recall.is_nan() {
                            "–".to_string()
                        } else {
                            format!("{recall:.3}")
                        };
                        format!("{p50:.2} | {recall} | {rows:.1}%")
                    })
            };
            println!(
                "| {} | {} | {} |",
                &b[2..],
                cell("plain SQL, SET LOCAL"),
                cell("plain SQL, session")
            );
        }
        let mut s: Vec<_> = strategies.into_iter().collect();
        s.sort();
        println!(
            "\npg_tenancy strategy per workspace: {}",
            s.iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nload average at end: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
}
