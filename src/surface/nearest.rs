//! `tenancy.nearest(tbl, column, query, k, metric)`: the caller's k nearest rows of a protected
//! table, in Rust. Checks its arguments, chooses the strategy and runs a prepared plan, with
//! everything that does not change between calls kept per backend (`nearest_cache.rs`).
//!
//! Measured (docs/benchmarks.md, "Vector search"): the PL/pgSQL version this replaces spent about
//! 1 ms per call before the search itself (entering helpers with pinned `search_path`, catalog
//! checks, a capped count of the workspace, planning a dynamic statement); a cache hit here is a
//! few hash lookups, a `search_path` pin and the execution of a kept generic plan.
//!
//! Strategies (docs/search.md): the workspace's own HNSW index when it has one (a plan per
//! workspace, whose literal scope matches the partial index); else the exact scan when the
//! table's statistics estimate at most 5,000 rows (`workspace_sizes.rs`) or, past that or without
//! statistics, a count capped at 10,001 rows (remembered for a minute) finds at most 10,000;
//! else the shared HNSW index with iterative scan. HNSW candidates are re-ranked exactly, and a
//! scan that came back short falls back to the exact scan in the same snapshot: min(k, n) rows
//! always. The SQL runs as the caller (row-level security applies) under `search_path =
//! pg_catalog, pg_temp`, with every name qualified; the scope comes from the verified identity,
//! never from an argument.

use super::functions::workspace_of;
use super::nearest_cache::{self as cache, PlanKey, Strategy, Target};
use super::vector_plans::{with_choice, Choice};
use super::workspace_sizes as sizes;
use crate::identity;
use crate::plumbing::errors::raise;
use crate::plumbing::raised::{set_at_nest_level, with_pinned_search_path};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::rc::Rc;

/// The largest k (hnsw.ef_search cannot exceed 1000).
const MAX_K: i32 = 1000;
/// ef_search of the shared-index strategy, at least.
const EF_FLOOR: i32 = 200;
/// HNSW candidates of the shared-index strategy re-ranked exactly, at least k.
const CANDIDATES: i32 = 100;
/// ef_search on a workspace's own index (m 16, ef_construction 160), at least: pgvector's
/// default. Measured on the 36,000-, 17,000- and 12,000-row workspaces of `scripts/bench-search`
/// (docs/benchmarks.md): recall@10 1.000 in both flavours at 40 and at 64, p50 within noise of
/// each other; ef_search 200 with 100 candidates cost 2–3× the latency for the same recall.
const OWN_EF_FLOOR: i32 = 40;
/// Workspaces with at most this many rows are searched exactly (`tenancy._exact_max_rows()`).
const EXACT_MAX_ROWS: i64 = 10_000;
/// Workspaces with at most this many rows are searched exactly in one scan that builds each row
/// as it goes, without the fetch of the winners by TID. Measured in the server (generic plans,
/// 64 dimensions, k 10, docs/benchmarks.md): 8–10 µs less per call at 2 and 51 rows, 24 µs more
/// at 257 and 140 µs more at 984 (building every row costs about 0.17 µs each, the TID fetch's
/// extra plan nodes about 10 µs a call): even near 110 rows.
const SMALL_MAX_ROWS: i64 = 64;

/// The arguments of one call.
struct Call {
    row_type: pg_sys::Oid,
    column: Option<String>,
    query: pg_sys::Datum,
    query_type: pg_sys::Oid,
    k: i32,
    metric: Option<String>,
}

/// fmgr's version-1 record for `tenancy_nearest`.
#[no_mangle]
pub extern "C" fn pg_finfo_tenancy_nearest() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// The C entry point of `tenancy.nearest` (a set-returning function in materialize mode).
///
/// # Safety
/// Called by fmgr with a valid `fcinfo` for the SQL signature in sql/search.sql.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn tenancy_nearest(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    unsafe {
        let call = arguments(fcinfo);
        pg_sys::InitMaterializedSRF(fcinfo, 0);
        let result = (*fcinfo).resultinfo.cast::<pg_sys::ReturnSetInfo>();
        with_pinned_search_path(|| search(&call, (*result).setResult, (*result).setDesc));
        pg_sys::Datum::from(0)
    }
}

/// fmgr's version-1 record for `tenancy_nearest_strategy`.
#[no_mangle]
pub extern "C" fn pg_finfo_tenancy_nearest_strategy() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// The C entry point of `tenancy.nearest_strategy(tbl, column, metric)`: the strategy
/// `tenancy.nearest` would use now for the caller, from the same caches ('exact', 'hnsw' or
/// 'hnsw_workspace').
///
/// # Safety
/// Called by fmgr with a valid `fcinfo` for the SQL signature in sql/search.sql.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn tenancy_nearest_strategy(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    unsafe {
        let call = Call {
            row_type: pg_sys::get_fn_expr_argtype((*fcinfo).flinfo, 0),
            column: argument(fcinfo, 3, 1).map(|d| name_of(d)),
            query: pg_sys::Datum::from(0),
            query_type: pg_sys::InvalidOid,
            k: 10,
            metric: argument(fcinfo, 3, 2).map(|d| text_of(d)),
        };
        let name = with_pinned_search_path(|| {
            connect();
            let target = target_of(&call);
            let (_, _, strategy) = caller_strategy(&call, &target);
            pg_sys::SPI_finish();
            strategy.name()
        });
        text_datum(name)
    }
}

/// Reads and checks the arguments that need no catalog (the order of the PL/pgSQL version).
unsafe fn arguments(fcinfo: pg_sys::FunctionCallInfo) -> Call {
    unsafe {
        let arg = |i: usize| argument(fcinfo, 5, i);
        let flinfo = (*fcinfo).flinfo;
        let query = arg(2);
        if query.is_none() {
            raise(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "query vector must not be null",
                None,
                None,
            );
        }
        let Some(k) = arg(3).map(|d| d.value() as i32) else {
            raise(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "k must not be null",
                None,
                None,
            );
        };
        if !(1..=MAX_K).contains(&k) {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("k must be between 1 and {MAX_K}, not {k}"),
                None,
                Some("Page through more results with a larger k up to the limit, or use plain SQL with LIMIT."),
            );
        }
        Call {
            row_type: pg_sys::get_fn_expr_argtype(flinfo, 0),
            column: arg(1).map(|d| name_of(d)),
            query: query.unwrap_or(pg_sys::Datum::from(0)),
            query_type: pg_sys::get_fn_expr_argtype(flinfo, 2),
            k,
            metric: arg(4).map(|d| text_of(d)),
        }
    }
}

/// Runs the search and puts its rows into `store`.
unsafe fn search(call: &Call, store: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc) {
    unsafe {
        connect();
        let target = target_of(call);
        let metric = call.metric.clone().unwrap_or_default();
        let column = call.column.clone().unwrap_or_default();
        let vector = query_vector(call, &target, &column);
        let (workspace, user, strategy) = caller_strategy(call, &target);
        let types = [target.vector_base_oid, pg_sys::TEXTOID, pg_sys::TEXTOID];
        // The workspace's own index and the exact scan plan without the shared index in sight:
        // left to cost alone, the planner took the shared HNSW index, filtered, for the
        // own-index plan (4.6 ms against 0.9 ms on the workspace's own graph).
        let choice = if strategy == Strategy::SharedHnsw {
            Choice::Every
        } else {
            Choice::OwnOnly
        };
        if !matches!(strategy, Strategy::Exact | Strategy::ExactSmall) {
            set_hnsw_options(call.k, strategy);
        }
        // The kept plan of a strategy for this call's table, column, metric and k.
        let plan_of = |strategy: Strategy| {
            let key = PlanKey {
                rel: target.rel,
                column: column.clone(),
                metric: metric.clone(),
                strategy,
                k: call.k,
                workspace: (strategy == Strategy::WorkspaceHnsw).then(|| workspace.clone()),
                sql: None,
            };
            with_choice(choice, || {
                cache::plan(key, &types, || {
                    search_sql(&target, &column, strategy, call.k, &workspace)
                })
            })
        };
        let plan = plan_of(strategy);
        let mut values = [
            vector,
            text_datum(&workspace),
            user.as_deref().map_or(pg_sys::Datum::from(0), text_datum),
        ];
        let nulls = [null_flag(true), null_flag(true), null_flag(user.is_some())];
        // Read-only: in the snapshot of the caller's statement, so that a fallback below sees
        // the same rows. Executing may replan a kept plan (after an invalidation): with the same
        // choice.
        let mut run = |plan: cache::Plan| {
            let status = with_choice(choice, || {
                pg_sys::SPI_execute_plan(plan.0, values.as_mut_ptr(), nulls.as_ptr(), true, 0)
            });
            if status != pg_sys::SPI_OK_SELECT as i32 {
                pgrx::error!("pg_tenancy: the search plan failed (SPI result {status})");
            }
        };
        run(plan);
        if strategy == Strategy::WorkspaceHnsw && (pg_sys::SPI_processed as i64) < i64::from(call.k) {
            // The workspace's own index came back short (it hit hnsw.max_scan_tuples, or the
            // workspace shrank since it was made): the exact scan answers instead.
            run(plan_of(Strategy::Exact));
        }
        let table = pg_sys::SPI_tuptable;
        for i in 0..pg_sys::SPI_processed as usize {
            let tuple = *(*table).vals.add(i);
            let mut row = [pg_sys::Datum::from(0); 2];
            let mut null = [false; 2];
            for (j, (value, isnull)) in row.iter_mut().zip(null.iter_mut()).enumerate() {
                *value = pg_sys::SPI_getbinval(tuple, (*table).tupdesc, j as i32 + 1, isnull);
            }
            pg_sys::tuplestore_putvalues(store, desc, row.as_mut_ptr(), null.as_mut_ptr());
        }
        pg_sys::SPI_finish();
    }
}

/// Argument `i` of a call with `count` arguments, or None when NULL.
unsafe fn argument(fcinfo: pg_sys::FunctionCallInfo, count: usize, i: usize) -> Option<pg_sys::Datum> {
    let a = unsafe { (*fcinfo).args.as_slice(count)[i] };
    (!a.isnull).then_some(a.value)
}

/// A `name` datum as a string.
unsafe fn name_of(d: pg_sys::Datum) -> String {
    unsafe { CStr::from_ptr(d.cast_mut_ptr::<std::ffi::c_char>()) }
        .to_string_lossy()
        .into_owned()
}

/// A `text` datum as a string.
unsafe fn text_of(d: pg_sys::Datum) -> String {
    unsafe { String::from_datum(d, false) }.unwrap_or_default()
}

/// Starts a call: applies the queued invalidations and connects to SPI.
unsafe fn connect() {
    cache::apply_invalidations();
    if unsafe { pg_sys::SPI_connect() } != pg_sys::SPI_OK_CONNECT as i32 {
        pgrx::error!("pg_tenancy: SPI_connect failed");
    }
}

/// The caller's scope (workspace, and user for a user-scoped table) from the verified identity,
/// and the strategy for it (28000 without an identity).
unsafe fn caller_strategy(call: &Call, target: &Target) -> (String, Option<String>, Strategy) {
    let identity = identity::require();
    let workspace = workspace_of(&identity);
    let user = target.user_column.as_ref().map(|_| identity.user_id.clone());
    let column = call.column.as_deref().unwrap_or_default();
    let metric = call.metric.as_deref().unwrap_or_default();
    let strategy = unsafe { strategy_of(target, column, metric, &workspace, user.as_deref()) };
    (workspace, user, strategy)
}

/// The checked target of the call, from the cache or from `tenancy._vector_target` (which
/// raises the argument errors: a NULL or unknown column or metric, a table that is not protected,
/// a column that is not a vector).
unsafe fn target_of(call: &Call) -> Rc<Target> {
    if let (Some(column), Some(metric)) = (&call.column, &call.metric) {
        if let Some(hit) = cache::target(call.row_type, column, metric) {
            return hit;
        }
    }
    let rows = unsafe {
        texts(
            "SELECT t.rel, t.rel_name, t.workspace_column, t.workspace_type, t.user_column, t.user_type,
                    t.vector_type, t.vector_base,
                    CAST(CAST(t.vector_base AS pg_catalog.regtype) AS pg_catalog.oid), t.dims, t.op
               FROM tenancy._vector_target($1, CAST($2 AS pg_catalog.name), $3) t",
            &[
                (pg_sys::REGTYPEOID, Some(pg_sys::Datum::from(call.row_type))),
                (pg_sys::TEXTOID, call.column.as_deref().map(text_datum)),
                (pg_sys::TEXTOID, call.metric.as_deref().map(text_datum)),
            ],
        )
    };
    let row = rows.into_iter().next().unwrap_or_default();
    let field = |i: usize| row.get(i).cloned().flatten();
    let oid = |i: usize| pg_sys::Oid::from(field(i).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0));
    let target = Target {
        rel: oid(0),
        rel_name: field(1).unwrap_or_default(),
        workspace_column: field(2).unwrap_or_default(),
        workspace_type: field(3).unwrap_or_default(),
        user_column: field(4),
        user_type: field(5),
        vector_type: field(6).unwrap_or_default(),
        vector_base: field(7).unwrap_or_default(),
        vector_base_oid: oid(8),
        dims: field(9).and_then(|v| v.parse().ok()),
        op: field(10).unwrap_or_default(),
    };
    // Both are known here: _vector_target raised on a NULL one.
    let (column, metric) = (
        call.column.clone().unwrap_or_default(),
        call.metric.clone().unwrap_or_default(),
    );
    cache::remember_target(call.row_type, &column, &metric, target)
}

/// The query as the column's base type, cast when it is another type (a text literal, a real[]);
/// its dimensions checked against the column's.
unsafe fn query_vector(call: &Call, target: &Target, column: &str) -> pg_sys::Datum {
    unsafe {
        let value = if call.query_type == target.vector_base_oid {
            call.query
        } else {
            cast_query(call, target)
        };
        // vector and halfvec: a varlena whose data starts with the int16 dimension count;
        // sparsevec: with an int32 one.
        let detoasted = pg_sys::pg_detoast_datum(value.cast_mut_ptr::<pg_sys::varlena>());
        let data = detoasted.cast::<u8>().add(pg_sys::VARHDRSZ);
        let dims = if target.vector_base.ends_with(".sparsevec") {
            data.cast::<i32>().read_unaligned()
        } else {
            i32::from(data.cast::<i16>().read_unaligned())
        };
        if let Some(expected) = target.dims {
            if dims != expected {
                raise(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!("query vector has {dims} dimensions, column \"{column}\" has {expected}"),
                    None,
                    Some("Embed the query with the same model as the column."),
                );
            }
        }
        pg_sys::Datum::from(detoasted)
    }
}

/// Casts the query to the column's base type with a kept plan per source type; a type without a
/// cast gets a clear 42804.
unsafe fn cast_query(call: &Call, target: &Target) -> pg_sys::Datum {
    let sql = format!("SELECT CAST($1 AS {})", target.vector_base);
    let key = PlanKey {
        rel: pg_sys::InvalidOid,
        column: String::new(),
        metric: String::new(),
        strategy: Strategy::Exact,
        k: 0,
        workspace: None,
        sql: Some(format!("{sql}/{}", u32::from(call.query_type))),
    };
    let query_type = call.query_type;
    let plan = PgTryBuilder::new(|| cache::plan(key.clone(), &[query_type], || sql.clone()))
        .catch_when(PgSqlErrorCode::ERRCODE_CANNOT_COERCE, |_| -> cache::Plan {
            cannot_cast(call, target)
        })
        .catch_when(PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION, |_| -> cache::Plan {
            cannot_cast(call, target)
        })
        .catch_when(PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH, |_| -> cache::Plan {
            cannot_cast(call, target)
        })
        .execute();
    unsafe {
        let mut values = [call.query];
        let status = pg_sys::SPI_execute_plan(plan.0, values.as_mut_ptr(), c" ".as_ptr(), true, 1);
        if status != pg_sys::SPI_OK_SELECT as i32 || pg_sys::SPI_processed != 1 {
            pgrx::error!("pg_tenancy: casting the query vector failed (SPI result {status})");
        }
        let table = pg_sys::SPI_tuptable;
        let mut isnull = false;
        let value = pg_sys::SPI_getbinval(*(*table).vals, (*table).tupdesc, 1, &mut isnull);
        if isnull {
            raise(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "query vector must not be null",
                None,
                None,
            );
        }
        value
    }
}

/// The error for a query of a type that does not cast to the column's.
fn cannot_cast(call: &Call, target: &Target) -> ! {
    let name = unsafe { CStr::from_ptr(pg_sys::format_type_be(call.query_type)) }
        .to_string_lossy()
        .into_owned();
    raise(
        PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
        format!("query has type {name}, which cannot be cast to {}", target.vector_type),
        None,
        Some(format!("Pass a {}, e.g. $1::{}.", target.vector_type, target.vector_base).as_str()),
    )
}

/// The strategy for the caller's scope: the workspace's own index, else the exact scan or the
/// shared index by a capped count (both remembered for a minute, see `nearest_cache.rs`).
unsafe fn strategy_of(target: &Target, column: &str, metric: &str, workspace: &str, user: Option<&str>) -> Strategy {
    let own = cache::own_indexes(target.rel, column, metric).unwrap_or_else(|| {
        let prefix = format!("pg_tenancy:hnsw:{metric}:{column}:");
        let rows = unsafe {
            texts(
                "SELECT pg_catalog.substr(d.description, pg_catalog.length($2) OPERATOR(pg_catalog.+) 1)
                   FROM pg_catalog.pg_index i
                   JOIN pg_catalog.pg_description d ON d.objoid OPERATOR(pg_catalog.=) i.indexrelid
                        AND d.classoid OPERATOR(pg_catalog.=) CAST('pg_catalog.pg_class' AS pg_catalog.regclass)
                        AND d.objsubid OPERATOR(pg_catalog.=) 0
                  WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indisvalid AND i.indisready
                    AND pg_catalog.starts_with(d.description, $2)",
                &[
                    (pg_sys::OIDOID, Some(pg_sys::Datum::from(target.rel))),
                    (pg_sys::TEXTOID, Some(text_datum(&prefix))),
                ],
            )
        };
        let set: HashSet<String> = rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect();
        cache::remember_own_indexes(target.rel, column, metric, set)
    });
    if own.contains(workspace) {
        return Strategy::WorkspaceHnsw;
    }
    // The planner's estimate (workspace_sizes.rs) decides, unless it puts the workspace near the
    // shared-index threshold or the table has no statistics: then a capped count does.
    if let Some(estimate) = unsafe { estimated_rows(target, workspace) } {
        if estimate <= SMALL_MAX_ROWS as f64 {
            return Strategy::ExactSmall;
        }
        if estimate <= (EXACT_MAX_ROWS / 2) as f64 {
            return Strategy::Exact;
        }
    }
    let n = cache::count(target.rel, workspace, user).unwrap_or_else(|| {
        let key = PlanKey {
            rel: target.rel,
            column: String::new(),
            metric: String::new(),
            strategy: Strategy::Exact,
            k: 0,
            workspace: None,
            sql: None,
        };
        let plan = cache::plan(key, &[pg_sys::TEXTOID, pg_sys::TEXTOID, pg_sys::TEXTOID], || {
            format!(
                "SELECT pg_catalog.count(*) FROM (SELECT FROM {} t WHERE {} LIMIT {}) s",
                target.rel_name,
                scope(target, None),
                EXACT_MAX_ROWS + 1
            )
        });
        let n = unsafe { scalar_i64(plan, workspace, user) };
        cache::remember_count(target.rel, workspace, user, n);
        n
    });
    if n <= SMALL_MAX_ROWS {
        Strategy::ExactSmall
    } else if n <= EXACT_MAX_ROWS {
        Strategy::Exact
    } else {
        Strategy::SharedHnsw
    }
}

/// The estimated rows of `workspace` in the target's table, from its statistics, or None when
/// it has none.
unsafe fn estimated_rows(target: &Target, workspace: &str) -> Option<f64> {
    let sizes = sizes::cached(target.rel).unwrap_or_else(|| {
        sizes::remember(target.rel, unsafe {
            sizes::read_statistics(target.rel, &target.workspace_column)
        })
    })?;
    Some(sizes.of(workspace))
}

/// The caller's scope over alias t: `$2` (or the literal `workspace`, which lets the planner match
/// a per-workspace partial index) for the workspace column, `$3` for the user column.
fn scope(target: &Target, workspace: Option<&str>) -> String {
    let value = workspace.map_or_else(|| "$2".to_string(), literal);
    let mut scope = format!(
        "t.{} OPERATOR(pg_catalog.=) CAST({value} AS {})",
        identifier(&target.workspace_column),
        target.workspace_type
    );
    if let (Some(column), Some(kind)) = (&target.user_column, &target.user_type) {
        scope.push_str(&format!(
            " AND t.{} OPERATOR(pg_catalog.=) CAST($3 AS {kind})",
            identifier(column)
        ));
    }
    scope
}

/// The SQL of a strategy's plan. Parameters: $1 the query vector, $2 the workspace and $3 the
/// user (text, cast to the columns' types); k and the candidate count are literals, so the
/// planner sees the LIMIT an HNSW index scan needs.
///
/// The scans carry only (tableoid, ctid, distance); the k winners' rows are fetched afterwards
/// by TID in the same statement (same snapshot), except in the smallest workspaces
/// (`SMALL_MAX_ROWS`). Building the whole row for every row of the
/// scope before the sort cost 0.3 ms of 1 ms in a workspace of a few hundred rows
/// (docs/benchmarks.md, "tenancy.nearest in Rust"); tableoid keeps the join exact on partitioned
/// and inherited tables, whose ctids repeat across children.
fn search_sql(target: &Target, column: &str, strategy: Strategy, k: i32, workspace: &str) -> String {
    let c = identifier(column);
    let (op, rel) = (&target.op, &target.rel_name);
    let exact_scope = scope(target, None);
    // Every row of the scope through its B-tree; OFFSET 0 keeps the planner from answering the
    // ORDER BY … LIMIT with an HNSW index (whose filtered scan can come back short).
    let exact = format!(
        "SELECT t.tableoid AS rel, t.ctid AS tid, t.{c} {op} $1 AS distance FROM {rel} t \
          WHERE {exact_scope} AND t.{c} IS NOT NULL OFFSET 0"
    );
    // The same scan with whole rows, for the smallest workspaces.
    if strategy == Strategy::ExactSmall {
        return format!(
            "SELECT e.item, e.distance FROM (SELECT t AS item, t.{c} {op} $1 AS distance FROM {rel} t \
              WHERE {exact_scope} AND t.{c} IS NOT NULL OFFSET 0) e ORDER BY e.distance LIMIT {k}"
        );
    }
    if strategy == Strategy::WorkspaceHnsw {
        // The workspace's own graph yields its rows nearest first, k of them: their rows are
        // built as they come, with no fetch by TID, and re-sorted (relaxed_order may return them
        // slightly out of order). Fewer than k: `search` runs the exact plan after it.
        let own_scope = scope(target, Some(workspace));
        return format!(
            "SELECT h.item, h.distance FROM (SELECT t AS item, t.{c} {op} $1 AS distance FROM {rel} t \
              WHERE {own_scope} ORDER BY t.{c} {op} $1 LIMIT {k}) h ORDER BY h.distance"
        );
    }
    let winners = if strategy == Strategy::Exact {
        format!("SELECT e.rel, e.tid, e.distance FROM ({exact}) e ORDER BY e.distance LIMIT {k}")
    } else {
        let hnsw_scope = scope(target, None);
        // The shared index: h is the HNSW scan cut at the candidate count; the ORDER BY
        // re-ranks the candidates exactly; the exact branch runs only when h came back short.
        format!(
            "WITH h AS MATERIALIZED (SELECT t.tableoid AS rel, t.ctid AS tid, t.{c} {op} $1 AS distance FROM {rel} t \
              WHERE {hnsw_scope} ORDER BY t.{c} {op} $1 LIMIT {candidates}) \
             SELECT u.rel, u.tid, u.distance FROM ( \
                 SELECT h.rel, h.tid, h.distance FROM h WHERE (SELECT pg_catalog.count(*) FROM h) OPERATOR(pg_catalog.>=) {k} \
                 UNION ALL \
                 SELECT e.rel, e.tid, e.distance FROM ({exact}) e WHERE (SELECT pg_catalog.count(*) FROM h) OPERATOR(pg_catalog.<) {k}) u \
             ORDER BY u.distance LIMIT {k}",
            candidates = CANDIDATES.max(k)
        )
    };
    // One statement, one snapshot: the winners' rows by TID, still under the scope and the
    // table's row-level security.
    format!(
        "SELECT t AS item, w.distance FROM ({winners}) w \
           JOIN {rel} t ON t.ctid OPERATOR(pg_catalog.=) w.tid AND t.tableoid OPERATOR(pg_catalog.=) w.rel \
          WHERE {exact_scope} ORDER BY w.distance"
    )
}

/// The ef_search floor of a strategy: on the shared graph the scan must walk past other
/// workspaces' rows, on a workspace's own graph pgvector's default suffices (measured below).
fn ef_floor(strategy: Strategy) -> i32 {
    if strategy == Strategy::WorkspaceHnsw {
        OWN_EF_FLOOR
    } else {
        EF_FLOOR
    }
}

/// Raises hnsw.ef_search to at least the strategy's floor (and k), turns on relaxed iterative
/// scans and turns JIT off (planning and executing, which may replan), until the pinned
/// search_path's nest level ends (which restores all three). JIT: these plans run in
/// milliseconds, and a compile costs hundreds (measured: `enable_sort = off`, tried to keep the
/// planner off B-tree-and-sort plans, pushed the cost past `jit_above_cost`, and the whales'
/// p50 went from 1.6 to 230 ms, 292 ms of each call compiling).
unsafe fn set_hnsw_options(k: i32, strategy: Strategy) {
    unsafe {
        let current = pg_sys::GetConfigOption(c"hnsw.ef_search".as_ptr(), true, false);
        let current = if current.is_null() {
            40
        } else {
            CStr::from_ptr(current)
                .to_str()
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(40)
        };
        let ef = CString::new(ef_floor(strategy).max(k).max(current).to_string()).unwrap_or_default();
        set_at_nest_level(c"hnsw.ef_search", &ef);
        set_at_nest_level(c"hnsw.iterative_scan", c"relaxed_order");
        set_at_nest_level(c"jit", c"off");
    }
}

/// `sql` run with `args` (type, value or NULL); every row's columns as text.
unsafe fn texts(sql: &str, args: &[(pg_sys::Oid, Option<pg_sys::Datum>)]) -> Vec<Vec<Option<String>>> {
    let text = CString::new(sql).expect("no NUL in SQL");
    let mut types: Vec<pg_sys::Oid> = args.iter().map(|a| a.0).collect();
    let mut values: Vec<pg_sys::Datum> = args.iter().map(|a| a.1.unwrap_or(pg_sys::Datum::from(0))).collect();
    let nulls: Vec<std::ffi::c_char> = args.iter().map(|a| null_flag(a.1.is_some())).collect();
    unsafe {
        let status = pg_sys::SPI_execute_with_args(
            text.as_ptr(),
            args.len() as i32,
            types.as_mut_ptr(),
            values.as_mut_ptr(),
            nulls.as_ptr(),
            true,
            0,
        );
        if status != pg_sys::SPI_OK_SELECT as i32 {
            pgrx::error!("pg_tenancy: a search lookup failed (SPI result {status})");
        }
        let table = pg_sys::SPI_tuptable;
        let columns = (*(*table).tupdesc).natts;
        (0..pg_sys::SPI_processed as usize)
            .map(|i| {
                let tuple = *(*table).vals.add(i);
                (1..=columns)
                    .map(|c| {
                        let v = pg_sys::SPI_getvalue(tuple, (*table).tupdesc, c);
                        (!v.is_null()).then(|| CStr::from_ptr(v).to_string_lossy().into_owned())
                    })
                    .collect()
            })
            .collect()
    }
}

/// The one bigint a kept plan over ($1 unused, $2 workspace, $3 user) returns.
unsafe fn scalar_i64(plan: cache::Plan, workspace: &str, user: Option<&str>) -> i64 {
    unsafe {
        let mut values = [
            pg_sys::Datum::from(0),
            text_datum(workspace),
            user.map_or(pg_sys::Datum::from(0), text_datum),
        ];
        let nulls = [null_flag(false), null_flag(true), null_flag(user.is_some())];
        let status = pg_sys::SPI_execute_plan(plan.0, values.as_mut_ptr(), nulls.as_ptr(), true, 1);
        if status != pg_sys::SPI_OK_SELECT as i32 || pg_sys::SPI_processed != 1 {
            pgrx::error!("pg_tenancy: counting the workspace's rows failed (SPI result {status})");
        }
        let table = pg_sys::SPI_tuptable;
        let mut isnull = false;
        pg_sys::SPI_getbinval(*(*table).vals, (*table).tupdesc, 1, &mut isnull).value() as i64
    }
}

/// SPI's null flag for an argument: ' ' present, 'n' NULL.
fn null_flag(present: bool) -> std::ffi::c_char {
    (if present { b' ' } else { b'n' }) as std::ffi::c_char
}

/// A text datum of `value` (palloc'd in the current memory context).
fn text_datum(value: &str) -> pg_sys::Datum {
    let c = CString::new(value).unwrap_or_default();
    pg_sys::Datum::from(unsafe { pg_sys::cstring_to_text(c.as_ptr()) })
}

/// `name` quoted as an SQL identifier when it needs to be.
fn identifier(name: &str) -> String {
    let c = CString::new(name).unwrap_or_default();
    unsafe { CStr::from_ptr(pg_sys::quote_identifier(c.as_ptr())) }
        .to_string_lossy()
        .into_owned()
}

/// `value` as an SQL string literal.
fn literal(value: &str) -> String {
    let c = CString::new(value).unwrap_or_default();
    unsafe { CStr::from_ptr(pg_sys::quote_literal_cstr(c.as_ptr())) }
        .to_string_lossy()
        .into_owned()
}
