//! tenancy.nearest through a driver, as an application would call it: a prepared statement with
//! a bound `pgvector::Vector`, as the NOSUPERUSER NOBYPASSRLS application role over TCP. The
//! pg_regress suite (pg_regress/sql/search.sql) covers the strategies and every error in SQL.

#[allow(dead_code)] // each test binary uses a different part of it
mod common;

use common::*;
use pgvector::Vector;
use std::sync::OnceLock;

/// A protected table: ws_acme has 3 rows, ws_globex 3,000 around another direction, with the
/// shared HNSW index built serially (CVE-2026-3172).
fn items() -> postgres::Client {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let mut db = admin();
        let present: bool = db
            .query_one(
                "SELECT to_regprocedure('tenancy.nearest(anyelement,name,anycompatible,integer,text)') IS NOT NULL",
                &[],
            )
            .unwrap()
            .get(0);
        if !present {
            // A development checkout whose installed extension predates sql/search.sql.
            let sql = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../sql/search.sql")).unwrap();
            db.batch_execute(&sql).unwrap();
        }
        db.batch_execute(&format!(
            "CREATE TABLE search_items (id bigint PRIMARY KEY, workspace_id text NOT NULL, body text NOT NULL,
                                        embedding vector(3), compact halfvec(3), sparse sparsevec(3));
             INSERT INTO search_items
             SELECT i, 'ws_globex', 'globex ' || i, v, v::halfvec, v::sparsevec
               FROM generate_series(1, 3000) i, LATERAL (SELECT format('[1,%s,%s]', i % 50, i / 50)::vector AS v) g;
             INSERT INTO search_items VALUES (10001, 'ws_acme', 'acme plan', '[0,0,1]', '[0,0,1]', '{{3:1}}/3'),
                                             (10002, 'ws_acme', 'acme budget', '[0,0.5,1]', '[0,0.5,1]', '{{2:0.5,3:1}}/3'),
                                             (10003, 'ws_acme', 'acme memo', '[0,1,0]', '[0,1,0]', '{{2:1}}/3');
             CREATE INDEX ON search_items (workspace_id);
             SET max_parallel_maintenance_workers = 0;
             CREATE INDEX ON search_items USING hnsw (embedding vector_cosine_ops);
             SELECT tenancy.protect('search_items');
             GRANT SELECT ON search_items TO {APP_ROLE};
             CREATE TABLE search_hand_written (id bigint PRIMARY KEY, workspace_id text NOT NULL, embedding vector(3));
             ALTER TABLE search_hand_written ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
             CREATE POLICY tenant ON search_hand_written USING (workspace_id = (SELECT tenancy.workspace_id()));
             GRANT SELECT ON search_hand_written TO {APP_ROLE};"
        ))
        .unwrap();
    });
    app()
}

#[test]
fn a_bound_vector_returns_the_callers_rows_nearest_first() {
    let mut app = items();
    let mut tx = app.transaction().unwrap();
    set_local_token(&mut tx, "user_alice", "org_acme");
    let nearest = tx
        .prepare(
            "SELECT (n.item).id, (n.item).workspace_id, (n.item).body, n.distance
               FROM tenancy.nearest(NULL::search_items, 'embedding', $1::vector, $2) n ORDER BY n.distance",
        )
        .unwrap();
    let rows = tx
        .query(&nearest, &[&Vector::from(vec![1.0, 0.0, 0.0]), &10i32])
        .unwrap();
    assert_eq!(rows.len(), 3, "min(k, workspace size) rows");
    assert!(rows.iter().all(|r| r.get::<_, String>(1) == "ws_acme"));
    let distances: Vec<f64> = rows.iter().map(|r| r.get(3)).collect();
    assert!(
        distances.windows(2).all(|w| w[0] <= w[1]),
        "nearest first: {distances:?}"
    );

    // The same vector against a halfvec column (cast by nearest), and k = 1.
    let compact = tx
        .query(
            "SELECT (n.item).id FROM tenancy.nearest(NULL::search_items, 'compact', $1::vector, 1) n",
            &[&Vector::from(vec![0.0, 0.0, 1.0])],
        )
        .unwrap();
    assert_eq!(compact.len(), 1);
    assert_eq!(compact[0].get::<_, i64>(0), 10001);
    // A sparsevec column, its query given as text.
    let sparse = tx
        .query(
            "SELECT (n.item).id FROM tenancy.nearest(NULL::search_items, 'sparse', '{2:1}/3', 1) n",
            &[],
        )
        .unwrap();
    assert_eq!(sparse.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>(), [10003]);
    tx.commit().unwrap();

    // Another workspace, same statement: only its rows.
    let mut tx = app.transaction().unwrap();
    set_local_token(&mut tx, "user_bob", "org_globex");
    let rows = tx
        .query(&nearest, &[&Vector::from(vec![0.0, 0.0, 1.0]), &25i32])
        .unwrap();
    assert_eq!(rows.len(), 25);
    assert!(rows.iter().all(|r| r.get::<_, String>(1) == "ws_globex"));
    tx.commit().unwrap();
}

#[test]
fn bad_input_is_refused_with_its_sqlstate() {
    let mut app = items();
    let mut tx = app.transaction().unwrap();
    set_local_token(&mut tx, "user_alice", "org_acme");
    tx.batch_execute("SAVEPOINT s").unwrap();
    let cases: [(&str, Vector, i32, &str); 4] = [
        ("embedding", Vector::from(vec![1.0, 0.0]), 10, "22023"),
        ("embedding", Vector::from(vec![1.0, 0.0, 0.0]), 0, "22023"),
        ("embedding", Vector::from(vec![1.0, 0.0, 0.0]), 100_000, "22023"),
        ("body", Vector::from(vec![1.0, 0.0, 0.0]), 10, "42804"),
    ];
    for (column, query, k, want) in cases {
        let err = tx
            .query(
                "SELECT * FROM tenancy.nearest(NULL::search_items, $1, $2::vector, $3)",
                &[&column, &query, &k],
            )
            .unwrap_err();
        assert_eq!(sqlstate(&err), want, "{column} {k}: {err}");
        tx.batch_execute("ROLLBACK TO SAVEPOINT s").unwrap();
    }
    let err = tx
        .query(
            "SELECT * FROM tenancy.nearest(NULL::search_items, 'embedding', NULL::vector, 10)",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), "22004");
    tx.batch_execute("ROLLBACK TO SAVEPOINT s").unwrap();
    // A sparsevec query of other dimensions than the column's.
    let err = tx
        .query(
            "SELECT * FROM tenancy.nearest(NULL::search_items, 'sparse', '{1:1}/2'::sparsevec, 10)",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), "22023", "{err}");
    tx.batch_execute("ROLLBACK TO SAVEPOINT s").unwrap();
    let err = tx
        .query(
            "SELECT * FROM tenancy.nearest(NULL::search_hand_written, 'embedding', '[1,0,0]'::vector, 10)",
            &[],
        )
        .unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "55000",
        "search_hand_written has hand-written policies, not tenancy.protect"
    );
    tx.rollback().unwrap();

    // No identity at all.
    let err = app
        .query(
            "SELECT * FROM tenancy.nearest(NULL::search_items, 'embedding', '[1,0,0]'::vector, 10)",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&err), "28000");
}

/// An empty protected table `name` (id, workspace_id, embedding vector(3)) the application role
/// may read.
fn protected_vector_table(db: &mut postgres::Client, name: &str) {
    db.batch_execute(&format!(
        "CREATE TABLE {name} (id bigint PRIMARY KEY, workspace_id text NOT NULL, embedding vector(3));
         CREATE INDEX ON {name} (workspace_id);
         SELECT tenancy.protect('{name}');
         GRANT SELECT ON {name} TO {APP_ROLE};"
    ))
    .unwrap();
}

#[test]
fn every_exact_plan_returns_the_exact_answer() {
    // Both exact plans (rows built while scanning up to 64 rows, winners fetched by TID above)
    // against the exact answer, at sizes around the boundary. Each size starts with TRUNCATE and
    // ends with ANALYZE, whose invalidations drop the kept estimates, so the strategy is chosen
    // afresh from the new statistics.
    let mut app = items();
    let mut db = admin();
    protected_vector_table(&mut db, "search_sizes");
    for n in [0_i64, 1, 3, 64, 65, 300] {
        // Row i points further from [1,0,0] as i grows: the exact answer is ids 1..=min(10, n).
        db.batch_execute(&format!(
            "TRUNCATE search_sizes;
             INSERT INTO search_sizes SELECT i, 'ws_acme', format('[1,%s,0]', i / 1000.0)::vector FROM generate_series(1, {n}) i;
             INSERT INTO search_sizes SELECT 100000 + i, 'ws_globex', '[1,0,0]' FROM generate_series(1, 20) i;
             ANALYZE search_sizes;"
        ))
        .unwrap();
        let mut tx = app.transaction().unwrap();
        set_local_token(&mut tx, "user_alice", "org_acme");
        let got: Vec<i64> = tx
            .query(
                "SELECT (n.item).id FROM tenancy.nearest(NULL::search_sizes, 'embedding', $1::vector, 10) n ORDER BY n.distance",
                &[&Vector::from(vec![1.0, 0.0, 0.0])],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.commit().unwrap();
        let want: Vec<i64> = (1..=n.min(10)).collect();
        assert_eq!(got, want, "workspace of {n} rows");
    }
    db.batch_execute("DROP TABLE search_sizes").unwrap();
}

#[test]
fn the_tables_statistics_choose_the_plan_until_the_next_analyze() {
    // nearest estimates a workspace's rows from the planner's statistics instead of counting
    // them (src/search/workspace_sizes.rs), also for a caller under row-level security (to whom
    // pg_stats shows nothing): rows added since the last ANALYZE do not change the strategy (a
    // count would have), and cost no rows; ANALYZE's invalidation brings them in.
    let mut app = items();
    let mut db = admin();
    protected_vector_table(&mut db, "search_estimated");
    db.batch_execute(
        "INSERT INTO search_estimated SELECT i, 'ws_acme', format('[1,%s,0]', i / 1000.0)::vector FROM generate_series(1, 3) i;
         INSERT INTO search_estimated SELECT 100 + i, 'ws_globex', '[1,0,0]' FROM generate_series(1, 20) i;
         ANALYZE search_estimated;",
    )
    .unwrap();
    let strategy_and_rows = |app: &mut postgres::Client| -> (String, usize) {
        let mut tx = app.transaction().unwrap();
        set_local_token(&mut tx, "user_alice", "org_acme");
        let strategy: String = tx
            .query_one(
                "SELECT tenancy.nearest_strategy(NULL::search_estimated, 'embedding')",
                &[],
            )
            .unwrap()
            .get(0);
        let rows = tx
            .query(
                "SELECT (n.item).id FROM tenancy.nearest(NULL::search_estimated, 'embedding', $1::vector, 10) n",
                &[&Vector::from(vec![1.0, 0.0, 0.0])],
            )
            .unwrap()
            .len();
        tx.commit().unwrap();
        (strategy, rows)
    };
    // The first call on this table comes after the rows: a count would find 12,003.
    db.batch_execute(
        "INSERT INTO search_estimated SELECT 1000 + i, 'ws_acme', format('[1,%s,1]', i / 1000.0)::vector
           FROM generate_series(1, 12000) i",
    )
    .unwrap();
    assert_eq!(
        strategy_and_rows(&mut app),
        ("exact".to_string(), 10),
        "the statistics still say 3 rows"
    );
    db.batch_execute("ANALYZE search_estimated").unwrap();
    assert_eq!(
        strategy_and_rows(&mut app),
        ("hnsw".to_string(), 10),
        "after ANALYZE: past the threshold"
    );
    db.batch_execute("DROP TABLE search_estimated").unwrap();
}
