//! `tenancy.nearest` meets `tenancy.nearest_recall` through a table's shared HNSW index too
//! (issue 36, item 3): a workspace of more than `tenancy._exact_max_rows()` rows without an index
//! of its own is searched through the shared graph, filtered by workspace, at the `ef_search` the
//! shared index's calibration for that workspace chose, or exactly when that is cheaper or the
//! only way to the target. Never calibrated, the shared strategy keeps its fixed floor.

#[allow(dead_code)] // each test binary uses a different part of it
mod common;

use common::*;
use std::sync::{Mutex, OnceLock};

/// Serializes the tests of this file (they change the calibration of one index).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const DIMENSIONS: usize = 64;
/// More than `tenancy._exact_max_rows()` (10,000): the shared path.
const ACME_ROWS: i64 = 12_000;
/// Queries per measurement: 50 of 10 neighbours, a standard error of about 0.01 at 0.95.
const QUERIES: u64 = 50;

/// The table: ws_acme's isotropic cloud of `ACME_ROWS` points and 300 of ws_globex's (mirrored),
/// protected, with one HNSW index over every row (no per-workspace index). Returns the index.
fn shared_items() -> String {
    static INDEX: OnceLock<String> = OnceLock::new();
    INDEX
        .get_or_init(|| {
            let mut db = protected_vector_table(
                "shared_items",
                DIMENSIONS,
                ACME_ROWS,
                |id| cloud_point(id, DIMENSIONS),
                |id| cloud_point(id, DIMENSIONS).iter().map(|x| -x).collect(),
            );
            db.batch_execute(
                "CREATE INDEX shared_items_hnsw ON shared_items USING hnsw (embedding vector_cosine_ops)
                   WITH (m = 16, ef_construction = 64);
                 ANALYZE shared_items",
            )
            .unwrap();
            "shared_items_hnsw".to_string()
        })
        .clone()
}

/// Mean recall@10 of tenancy.nearest on shared_items for `QUERIES` queries, at `target`, and
/// the strategy nearest reported (`common::measured_recall`).
fn measured_recall(target: f64) -> (f64, String) {
    common::measured_recall("shared_items", DIMENSIONS, target, 2_000_000..2_000_000 + QUERIES)
}

#[test]
fn a_shared_index_is_calibrated_per_workspace_and_nearest_meets_the_target() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let index = shared_items();
    let mut db = admin();
    // Shared by every workspace: calibrated for one.
    let refused = db
        .batch_execute(&format!("SELECT * FROM tenancy.calibrate_vector_index('{index}')"))
        .unwrap_err();
    assert_eq!(sqlstate(&refused), "22004", "{refused:?}");
    db.batch_execute(&format!(
        "SELECT * FROM tenancy.calibrate_vector_index('{index}', workspace => 'ws_acme')"
    ))
    .unwrap();
    let row = db
        .query_one(
            "SELECT workspace_id, shared, rows_at_calibration, complete, jsonb_array_length(ladder), strategy
               FROM tenancy.vector_indexes WHERE CAST(index_name AS text) = $1",
            &[&index],
        )
        .unwrap();
    let (workspace, shared, rows, complete, steps, strategy): (String, bool, i64, bool, i32, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
    assert_eq!((workspace.as_str(), shared, rows), ("ws_acme", true, ACME_ROWS));
    assert!(complete && steps >= 1, "{steps}");
    assert!(
        strategy == "exact" || strategy.starts_with("hnsw_shared (ef_search "),
        "{strategy}"
    );
    for target in [0.99, 0.95] {
        let (recall, strategy) = measured_recall(target);
        eprintln!("target {target}: recall {recall} with {strategy}");
        // 50 queries of 10 neighbours: a standard error of about 0.01 at 0.95.
        assert!(
            recall >= target - 0.02,
            "recall {recall} at target {target} ({strategy})"
        );
        assert!(strategy == "hnsw" || strategy == "exact", "{strategy}");
    }
}

#[test]
fn the_shared_strategy_follows_the_recorded_calibration() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let index = shared_items();
    let mut db = admin();
    db.batch_execute(&format!(
        "SELECT * FROM tenancy.calibrate_vector_index('{index}', workspace => 'ws_acme')"
    ))
    .unwrap();
    // A ladder whose every step misses the target: the exact scan. One that reaches it cheaply:
    // the shared index.
    let set_ladder = |db: &mut postgres::Client, ladder: &str, exact_ms: f64| {
        db.execute(
            "UPDATE tenancy._vector_calibrations SET ladder = CAST(CAST($1 AS text) AS jsonb), exact_ms = $2
              WHERE index_oid = CAST(CAST($3 AS text) AS regclass) AND workspace_id = 'ws_acme'",
            &[&ladder, &exact_ms, &index],
        )
        .unwrap();
        db.batch_execute("SELECT tenancy._search_caches_changed('shared_items'::regclass)")
            .unwrap();
    };
    set_ladder(&mut db, r#"[{"ef_search": 40, "recall": 0.5, "ms": 0.1}]"#, 5.0);
    assert_eq!(measured_recall(0.99).1, "exact");
    set_ladder(&mut db, r#"[{"ef_search": 40, "recall": 1.0, "ms": 0.1}]"#, 5.0);
    assert_eq!(measured_recall(0.99).1, "hnsw");
}

#[test]
fn calibrate_vector_indexes_covers_the_shared_path() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let index = shared_items();
    let mut db = admin();
    db.batch_execute(&format!(
        "DELETE FROM tenancy._vector_calibrations WHERE index_oid = '{index}'::regclass"
    ))
    .unwrap();
    let rows = db
        .query(
            "SELECT CAST(index AS text), workspace_id, rows_then, rows_now
               FROM tenancy.calibrate_vector_indexes('shared_items', 'embedding')",
            &[],
        )
        .unwrap();
    let calibrated: Vec<(String, String, Option<i64>, i64)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    assert_eq!(
        calibrated,
        vec![(index.clone(), "ws_acme".to_string(), None, ACME_ROWS)]
    );
    // Nothing grew: nothing to do.
    let again = db
        .query(
            "SELECT * FROM tenancy.calibrate_vector_indexes('shared_items', 'embedding')",
            &[],
        )
        .unwrap();
    assert!(again.is_empty());
}
