//! The SQL text of each plan `tenancy.nearest` keeps: pure string building from a checked
//! target, unit-tested without a server.
//!
//! Parameters of every search plan: `$1` the query vector, `$2` the workspace and `$3` the user
//! (text, cast to the columns' types). k and the candidate count are literals, so the planner
//! sees the LIMIT an HNSW index scan needs. Every name is qualified or quoted: the plans run under
//! `search_path = pg_catalog, pg_temp` as the caller, and the table's row-level security applies.

use super::model::{Strategy, Target};

/// HNSW candidates of the shared-index strategy re-ranked exactly, at least k.
pub const CANDIDATES: i32 = 100;

/// `name` as a quoted SQL identifier (always quoted: correct for every name, keywords included).
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as an SQL string literal, as PostgreSQL's `quote_literal` writes it: quotes doubled,
/// and an `E''` literal with doubled backslashes when it holds one (right whatever
/// `standard_conforming_strings` says).
pub fn quote_literal(value: &str) -> String {
    let quoted = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// Whether the plan of `strategy` on `target` returns (distance, the row's columns…) rather
/// than (item, distance). Citus sends a row of a shard's row type as text (its binary form names
/// the shard's type), and parsing it back (`record_in`, a vector's floats by `strtof`) cost the
/// coordinator more than the search (`scripts/bench-citus`, 64 dimensions, docs/benchmarks.md):
/// the columns come in their binary forms, and the coordinator forms the row itself.
pub fn columns_then_row(target: &Target, strategy: Strategy) -> bool {
    target.distributed && matches!(strategy, Strategy::ExactSmall | Strategy::WorkspaceHnsw)
}

/// The caller's scope over alias t: `$2` (or the literal `workspace`, which lets the planner match
/// a per-workspace partial index) for the workspace column, `$3` for the user column.
pub fn scope(target: &Target, workspace: Option<&str>) -> String {
    let value = workspace.map_or_else(|| "$2".to_string(), quote_literal);
    let mut scope = format!(
        "t.{} OPERATOR(pg_catalog.=) CAST({value} AS {})",
        quote_identifier(&target.workspace_column),
        target.workspace_type
    );
    if let (Some(column), Some(kind)) = (&target.user_column, &target.user_type) {
        scope.push_str(&format!(
            " AND t.{} OPERATOR(pg_catalog.=) CAST($3 AS {kind})",
            quote_identifier(column)
        ));
    }
    scope
}

/// The count of the scope's rows, capped at `cap` (its single column is a bigint).
pub fn count_sql(target: &Target, cap: i64) -> String {
    format!(
        "SELECT pg_catalog.count(*) FROM (SELECT FROM {} t WHERE {} LIMIT {cap}) s",
        target.rel_name,
        scope(target, None)
    )
}

/// The cast of a query (`$1`) to the column's base type.
pub fn cast_sql(vector_base: &str) -> String {
    format!("SELECT CAST($1 AS {vector_base})")
}

/// The SQL of a strategy's plan: rows (item, distance), nearest first (on a Citus distributed
/// table, for the strategies that build rows as they go: (distance, the row's columns…), see
/// `columns_then_row`).
///
/// The scans carry only (tableoid, ctid, distance); the k winners' rows are fetched afterwards
/// by TID in the same statement (same snapshot), except for the smallest workspaces
/// (`Strategy::ExactSmall`) and the workspace's own index, which build rows as they go. Building
/// the whole row for every row of the scope before the sort cost 0.3 ms of 1 ms in a workspace of
/// a few hundred rows (docs/benchmarks.md, "tenancy.nearest in Rust"); tableoid keeps the join
/// exact on partitioned and inherited tables, whose ctids repeat across children.
pub fn search_sql(target: &Target, column: &str, strategy: Strategy, k: i32, workspace: &str) -> String {
    let c = quote_identifier(column);
    let (op, rel) = (&target.op, &target.rel_name);
    let exact_scope = scope(target, None);
    // Every row of the scope through its B-tree; OFFSET 0 keeps the planner from answering the
    // ORDER BY … LIMIT with an HNSW index (whose filtered scan can come back short).
    let exact = format!(
        "SELECT t.tableoid AS rel, t.ctid AS tid, t.{c} {op} $1 AS distance FROM {rel} t \
          WHERE {exact_scope} AND t.{c} IS NOT NULL OFFSET 0"
    );
    let winners = match strategy {
        // On a Citus distributed table: the distance first, then the row's columns, which
        // `execute.rs` makes into the row on the coordinator (`columns_then_row`).
        Strategy::ExactSmall if target.distributed => {
            return format!(
                "SELECT e.* FROM (SELECT t.{c} {op} $1 AS distance, t.* FROM {rel} t \
                  WHERE {exact_scope} AND t.{c} IS NOT NULL OFFSET 0) e ORDER BY 1 LIMIT {k}"
            );
        }
        Strategy::WorkspaceHnsw if target.distributed => {
            let own_scope = scope(target, Some(workspace));
            return format!(
                "SELECT h.* FROM (SELECT t.{c} {op} $1 AS distance, t.* FROM {rel} t \
                  WHERE {own_scope} ORDER BY t.{c} {op} $1 LIMIT {k}) h ORDER BY 1"
            );
        }
        // The same scan with whole rows, for the smallest workspaces.
        Strategy::ExactSmall => {
            return format!(
                "SELECT e.item, e.distance FROM (SELECT t AS item, t.{c} {op} $1 AS distance FROM {rel} t \
                  WHERE {exact_scope} AND t.{c} IS NOT NULL OFFSET 0) e ORDER BY e.distance LIMIT {k}"
            );
        }
        // The workspace's own graph yields its rows nearest first, k of them: their rows are
        // built as they come, with no fetch by TID, and re-sorted (relaxed_order may return them
        // slightly out of order). Fewer than k: the caller runs the exact plan after it.
        Strategy::WorkspaceHnsw => {
            let own_scope = scope(target, Some(workspace));
            return format!(
                "SELECT h.item, h.distance FROM (SELECT t AS item, t.{c} {op} $1 AS distance FROM {rel} t \
                  WHERE {own_scope} ORDER BY t.{c} {op} $1 LIMIT {k}) h ORDER BY h.distance"
            );
        }
        Strategy::Exact => format!("SELECT e.rel, e.tid, e.distance FROM ({exact}) e ORDER BY e.distance LIMIT {k}"),
        // The shared index: h is the HNSW scan cut at the candidate count; the ORDER BY
        // re-ranks the candidates exactly; the exact branch runs only when h came back short.
        Strategy::SharedHnsw => format!(
            "WITH h AS MATERIALIZED (SELECT t.tableoid AS rel, t.ctid AS tid, t.{c} {op} $1 AS distance FROM {rel} t \
              WHERE {exact_scope} ORDER BY t.{c} {op} $1 LIMIT {candidates}) \
             SELECT u.rel, u.tid, u.distance FROM ( \
                 SELECT h.rel, h.tid, h.distance FROM h WHERE (SELECT pg_catalog.count(*) FROM h) OPERATOR(pg_catalog.>=) {k} \
                 UNION ALL \
                 SELECT e.rel, e.tid, e.distance FROM ({exact}) e WHERE (SELECT pg_catalog.count(*) FROM h) OPERATOR(pg_catalog.<) {k}) u \
             ORDER BY u.distance LIMIT {k}",
            candidates = CANDIDATES.max(k)
        ),
    };
    // One statement, one snapshot: the winners' rows by TID, still under the scope and the
    // table's row-level security.
    format!(
        "SELECT t AS item, w.distance FROM ({winners}) w \
           JOIN {rel} t ON t.ctid OPERATOR(pg_catalog.=) w.tid AND t.tableoid OPERATOR(pg_catalog.=) w.rel \
          WHERE {exact_scope} ORDER BY w.distance"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrx::pg_sys;

    /// A target like `tenancy._vector_target` returns for `public.docs(workspace_id text,
    /// owner text, embedding vector(3))`, user-scoped when `user` is set.
    fn target(user: bool) -> Target {
        Target {
            rel: pg_sys::Oid::from(16_384),
            rel_name: "public.docs".into(),
            workspace_column: "workspace_id".into(),
            workspace_type: "text".into(),
            user_column: user.then(|| "owner".into()),
            user_type: user.then(|| "text".into()),
            vector_type: "vector(3)".into(),
            vector_base: "public.vector".into(),
            vector_base_oid: pg_sys::Oid::from(16_385),
            dims: Some(3),
            op: "OPERATOR(public.<=>)".into(),
            distributed: false,
        }
    }

    #[test]
    fn identifiers_are_always_quoted_and_quotes_doubled() {
        struct Case {
            name: &'static str,
            quoted: &'static str,
        }
        for case in [
            Case {
                name: "embedding",
                quoted: "\"embedding\"",
            },
            Case {
                name: "order",
                quoted: "\"order\"",
            },
            Case {
                name: "Mixed Case",
                quoted: "\"Mixed Case\"",
            },
            Case {
                name: "a\"b",
                quoted: "\"a\"\"b\"",
            },
        ] {
            assert_eq!(quote_identifier(case.name), case.quoted, "{}", case.name);
        }
    }

    #[test]
    fn literals_double_quotes_and_escape_backslashes() {
        struct Case {
            value: &'static str,
            literal: &'static str,
        }
        for case in [
            Case {
                value: "ws_acme",
                literal: "'ws_acme'",
            },
            Case {
                value: "o'brien",
                literal: "'o''brien'",
            },
            Case {
                value: "a\\b'",
                literal: "E'a\\\\b'''",
            },
        ] {
            assert_eq!(quote_literal(case.value), case.literal, "{}", case.value);
        }
    }

    #[test]
    fn the_scope_binds_the_workspace_unless_a_literal_is_asked_for() {
        assert_eq!(
            scope(&target(false), None),
            "t.\"workspace_id\" OPERATOR(pg_catalog.=) CAST($2 AS text)"
        );
        assert_eq!(
            scope(&target(true), Some("ws_'x")),
            "t.\"workspace_id\" OPERATOR(pg_catalog.=) CAST('ws_''x' AS text) \
             AND t.\"owner\" OPERATOR(pg_catalog.=) CAST($3 AS text)"
        );
    }

    #[test]
    fn only_the_own_index_plan_carries_the_workspace_as_a_literal() {
        for strategy in [Strategy::Exact, Strategy::ExactSmall, Strategy::SharedHnsw] {
            let sql = search_sql(&target(false), "embedding", strategy, 10, "ws_secret");
            assert!(!sql.contains("ws_secret"), "{strategy:?}: {sql}");
            assert!(sql.contains("CAST($2 AS text)"), "{strategy:?}: {sql}");
        }
        let own = search_sql(&target(false), "embedding", Strategy::WorkspaceHnsw, 10, "ws_secret");
        assert!(own.contains("CAST('ws_secret' AS text)"), "{own}");
        assert!(!own.contains("$2"), "{own}");
    }

    #[test]
    fn every_plan_keeps_the_scope_on_the_rows_it_returns() {
        // A user-scoped table: the user condition is in every plan, on the final rows.
        for strategy in [
            Strategy::Exact,
            Strategy::ExactSmall,
            Strategy::SharedHnsw,
            Strategy::WorkspaceHnsw,
        ] {
            let sql = search_sql(&target(true), "embedding", strategy, 7, "ws_a");
            assert!(
                sql.contains("t.\"owner\" OPERATOR(pg_catalog.=) CAST($3 AS text)"),
                "{strategy:?}: {sql}"
            );
            assert!(
                sql.ends_with("ORDER BY w.distance") || sql.contains("LIMIT 7"),
                "{strategy:?}: {sql}"
            );
        }
    }

    #[test]
    fn exact_scans_hide_the_order_from_an_hnsw_index_and_skip_null_vectors() {
        for strategy in [Strategy::Exact, Strategy::ExactSmall] {
            let sql = search_sql(&target(false), "embedding", strategy, 10, "ws_a");
            assert!(sql.contains("IS NOT NULL OFFSET 0"), "{strategy:?}: {sql}");
            assert!(sql.contains("LIMIT 10"), "{strategy:?}: {sql}");
        }
    }

    #[test]
    fn the_shared_index_plan_reranks_at_least_k_candidates_and_falls_back_when_short() {
        let few = search_sql(&target(false), "embedding", Strategy::SharedHnsw, 10, "ws_a");
        assert!(few.contains(&format!("LIMIT {CANDIDATES})")), "{few}");
        assert!(
            few.contains("OPERATOR(pg_catalog.>=) 10") && few.contains("OPERATOR(pg_catalog.<) 10"),
            "{few}"
        );
        let many = search_sql(&target(false), "embedding", Strategy::SharedHnsw, 500, "ws_a");
        assert!(many.contains("LIMIT 500)"), "{many}");
    }

    #[test]
    fn on_a_distributed_table_rows_come_as_distance_then_columns() {
        let mut distributed = target(false);
        distributed.distributed = true;
        for strategy in [Strategy::ExactSmall, Strategy::WorkspaceHnsw] {
            assert!(columns_then_row(&distributed, strategy));
            assert!(!columns_then_row(&target(false), strategy));
            let sql = search_sql(&distributed, "embedding", strategy, 10, "ws_a");
            assert!(
                sql.contains("SELECT t.\"embedding\" OPERATOR(public.<=>) $1 AS distance, t.* FROM public.docs t"),
                "{strategy:?}: {sql}"
            );
            assert!(sql.contains("ORDER BY 1"), "{strategy:?}: {sql}");
            assert!(!sql.contains(" AS item"), "{strategy:?}: {sql}");
        }
        // The TID-fetching plans keep their shape (item, distance).
        for strategy in [Strategy::Exact, Strategy::SharedHnsw] {
            assert!(!columns_then_row(&distributed, strategy));
            let sql = search_sql(&distributed, "embedding", strategy, 10, "ws_a");
            assert!(sql.starts_with("SELECT t AS item, w.distance"), "{strategy:?}: {sql}");
        }
    }

    #[test]
    fn the_count_is_capped_and_scoped() {
        assert_eq!(
            count_sql(&target(false), 10_001),
            "SELECT pg_catalog.count(*) FROM (SELECT FROM public.docs t WHERE \
             t.\"workspace_id\" OPERATOR(pg_catalog.=) CAST($2 AS text) LIMIT 10001) s"
        );
        assert_eq!(cast_sql("public.halfvec"), "SELECT CAST($1 AS public.halfvec)");
    }
}
