//! Runs a search: the checked target of the call, the query as the column's type, the HNSW
//! settings a strategy needs, and the kept plan of the strategy, with the exact plan after a short
//! own-index scan. The SQL runs as the caller (row-level security applies) under `search_path =
//! pg_catalog, pg_temp` (pinned by the entry points), with every name qualified; the scope comes
//! from the verified identity, never from an argument.

use super::index_choice::{with_choice, Choice};
use super::model::{Call, Strategy, Target};
use super::plan_cache::{self as cache, PlanKey};
use super::sql_text;
use super::strategy::caller_scope;
use crate::plumbing::errors::error;
use crate::plumbing::pinned_context::set_at_nest_level;
use crate::plumbing::spi;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{CStr, CString};
use std::rc::Rc;

/// ef_search of the shared-index strategy, at least.
const EF_FLOOR: i32 = 200;
/// ef_search on a workspace's own index (m 16, ef_construction 160), at least: pgvector's
/// default. Measured on the 36,000-, 17,000- and 12,000-row workspaces of `scripts/bench-search`
/// (docs/benchmarks.md): recall@10 1.000 in both flavours at 40 and at 64, p50 within noise of
/// each other; ef_search 200 with 100 candidates cost 2–3× the latency for the same recall.
const OWN_EF_FLOOR: i32 = 40;

/// Starts a call: applies the queued cache invalidations (freeing dropped plans when no other
/// call is running) and connects to SPI.
pub fn begin() {
    cache::apply_invalidations();
    cache::call_started();
    spi::connect();
}

/// Ends a call that began with `begin`: disconnects from SPI.
pub fn end() {
    spi::finish();
    cache::call_ended();
}

/// Runs the search of `call` and puts its rows (item, distance) into `store`.
///
/// # Safety
/// Between `begin` and `spi::finish`; `store` and `desc` from the call's materialized result.
pub unsafe fn search(call: &Call, store: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc) {
    unsafe {
        let target = target_of(call);
        let metric = call.metric.clone().unwrap_or_default();
        let column = call.column.clone().unwrap_or_default();
        let vector = query_vector(call, &target, &column);
        let scope = caller_scope(call, &target);
        let strategy = scope.strategy;
        let types = [target.vector_base_oid, pg_sys::TEXTOID, pg_sys::TEXTOID];
        // The workspace's own index and the exact scan plan without the shared index in sight:
        // left to cost alone, the planner took the shared HNSW index, filtered, for the
        // own-index plan (4.6 ms against 0.9 ms on the workspace's own graph).
        let choice = if strategy == Strategy::SharedHnsw {
            Choice::Every
        } else {
            Choice::OwnOnly
        };
        if !strategy.is_exact() {
            set_hnsw_options(call.k, strategy, scope.ef_search);
        }
        // The kept plan of a strategy for this call's table, column, metric and k.
        let plan_of = |strategy: Strategy| {
            let key = PlanKey::search(&target, &column, &metric, strategy, call.k, &scope.workspace);
            with_choice(choice, || {
                cache::plan(key, &types, || {
                    sql_text::search_sql(&target, &column, strategy, call.k, &scope.workspace)
                })
            })
        };
        let plan = plan_of(strategy);
        let mut values = [
            vector,
            spi::text_datum(&scope.workspace),
            scope.user.as_deref().map_or(pg_sys::Datum::from(0), spi::text_datum),
        ];
        let nulls = [
            spi::null_flag(true),
            spi::null_flag(true),
            spi::null_flag(scope.user.is_some()),
        ];
        // Read-only: in the snapshot of the caller's statement, so that a fallback below sees
        // the same rows. Executing may replan a kept plan (after an invalidation): with the same
        // choice.
        let mut run = |plan: cache::Plan| {
            let status = with_choice(choice, || {
                pg_sys::SPI_execute_plan(plan.0, values.as_mut_ptr(), nulls.as_ptr(), true, 0)
            });
            if status != pg_sys::SPI_OK_SELECT as i32 {
                crate::plumbing::errors::internal(format!("the search plan failed (SPI result {status})"));
            }
        };
        run(plan);
        let mut ran = strategy;
        if strategy == Strategy::WorkspaceHnsw && (pg_sys::SPI_processed as i64) < i64::from(call.k) {
            // The workspace's own index came back short (it hit hnsw.max_scan_tuples, or the
            // workspace shrank since it was made): the exact scan answers instead.
            run(plan_of(Strategy::Exact));
            ran = Strategy::Exact;
        }
        let table = pg_sys::SPI_tuptable;
        if sql_text::columns_then_row(&target, ran) {
            rows_from_columns(call, store, desc);
            return;
        }
        for i in 0..pg_sys::SPI_processed as usize {
            let tuple = *(*table).vals.add(i);
            let mut row = [pg_sys::Datum::from(0); 2];
            let mut null = [false; 2];
            for (j, (value, isnull)) in row.iter_mut().zip(null.iter_mut()).enumerate() {
                *value = pg_sys::SPI_getbinval(tuple, (*table).tupdesc, j as i32 + 1, isnull);
            }
            pg_sys::tuplestore_putvalues(store, desc, row.as_mut_ptr(), null.as_mut_ptr());
        }
    }
}

/// Puts the rows of a plan that returned (distance, the row's columns…) into `store` as (item,
/// distance), forming each item in the table's row type here (`sql_text::columns_then_row`):
/// the columns in attribute order, a dropped attribute null.
///
/// # Safety
/// Right after such a plan ran (`SPI_tuptable`), between `begin` and `spi::finish`.
unsafe fn rows_from_columns(call: &Call, store: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc) {
    unsafe {
        let table = pg_sys::SPI_tuptable;
        let row_desc = pg_sys::lookup_rowtype_tupdesc(call.row_type, -1);
        let dropped: Vec<bool> = {
            let attributes = pgrx::PgTupleDesc::from_pg_unchecked(row_desc);
            attributes.iter().map(|attr| attr.attisdropped).collect()
        };
        let natts = dropped.len();
        let mut values = vec![pg_sys::Datum::from(0); natts];
        let mut nulls = vec![true; natts];
        for i in 0..pg_sys::SPI_processed as usize {
            let tuple = *(*table).vals.add(i);
            let mut distance_null = false;
            let distance = pg_sys::SPI_getbinval(tuple, (*table).tupdesc, 1, &mut distance_null);
            let mut column = 2;
            for (a, &is_dropped) in dropped.iter().enumerate() {
                if is_dropped {
                    values[a] = pg_sys::Datum::from(0);
                    nulls[a] = true;
                } else {
                    values[a] = pg_sys::SPI_getbinval(tuple, (*table).tupdesc, column, &mut nulls[a]);
                    column += 1;
                }
            }
            let formed = pg_sys::heap_form_tuple(row_desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            let mut row = [pg_sys::heap_copy_tuple_as_datum(formed, row_desc), distance];
            let mut null = [false, distance_null];
            pg_sys::tuplestore_putvalues(store, desc, row.as_mut_ptr(), null.as_mut_ptr());
        }
        pgrx::tupdesc::release_tupdesc(row_desc);
    }
}

/// The checked target of the call, from the cache or from `tenancy._vector_target` (which
/// raises the argument errors: a NULL or unknown column or metric, a table that is not protected,
/// a column that is not a vector).
///
/// # Safety
/// Between `begin` and `spi::finish`.
pub unsafe fn target_of(call: &Call) -> Rc<Target> {
    if let (Some(column), Some(metric)) = (&call.column, &call.metric) {
        if let Some(hit) = cache::target(call.row_type, column, metric) {
            return hit;
        }
    }
    let rows = unsafe {
        spi::texts(
            "SELECT t.rel, t.rel_name, t.workspace_column, t.workspace_type, t.user_column, t.user_type,
                    t.vector_type, t.vector_base,
                    CAST(CAST(t.vector_base AS pg_catalog.regtype) AS pg_catalog.oid), t.dims, t.op
               FROM tenancy._vector_target($1, CAST($2 AS pg_catalog.name), $3) t",
            &[
                (pg_sys::REGTYPEOID, Some(pg_sys::Datum::from(call.row_type))),
                (pg_sys::TEXTOID, call.column.as_deref().map(spi::text_datum)),
                (pg_sys::TEXTOID, call.metric.as_deref().map(spi::text_datum)),
            ],
            "reading the search target",
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
        distributed: crate::plumbing::citus::loaded() && unsafe { distributed(oid(0)) },
    };
    // Both are known here: _vector_target raised on a NULL one.
    let (column, metric) = (
        call.column.clone().unwrap_or_default(),
        call.metric.clone().unwrap_or_default(),
    );
    cache::remember_target(call.row_type, &column, &metric, target)
}

/// Whether `rel` is a Citus distributed table (asked only with Citus loaded, whose catalog
/// `pg_dist_partition` then exists).
///
/// # Safety
/// Between `begin` and `spi::finish`.
unsafe fn distributed(rel: pg_sys::Oid) -> bool {
    let rows = unsafe {
        spi::texts(
            "SELECT pg_catalog.count(*) FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid OPERATOR(pg_catalog.=) $1",
            &[(pg_sys::OIDOID, Some(pg_sys::Datum::from(rel)))],
            "reading whether the search target is distributed",
        )
    };
    rows.into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten())
        .is_some_and(|count| count != "0")
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
                error(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE)
                    .message(format!(
                        "query vector has {dims} dimensions, column \"{column}\" has {expected}"
                    ))
                    .hint("Embed the query with the same model as the column.")
                    .raise();
            }
        }
        pg_sys::Datum::from(detoasted)
    }
}

/// Casts the query to the column's base type with a kept plan per source type; a type without a
/// cast gets a clear 42804.
unsafe fn cast_query(call: &Call, target: &Target) -> pg_sys::Datum {
    let key = PlanKey::Cast {
        from: call.query_type,
        to: target.vector_base.clone(),
    };
    let query_type = call.query_type;
    let plan =
        PgTryBuilder::new(|| cache::plan(key.clone(), &[query_type], || sql_text::cast_sql(&target.vector_base)))
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
            crate::plumbing::errors::internal(format!("casting the query vector failed (SPI result {status})"));
        }
        let (value, isnull) = spi::first_value();
        if isnull {
            error(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED)
                .message("query vector must not be null")
                .raise();
        }
        value
    }
}

/// The error for a query of a type that does not cast to the column's.
fn cannot_cast(call: &Call, target: &Target) -> ! {
    let name = unsafe { CStr::from_ptr(pg_sys::format_type_be(call.query_type)) }
        .to_string_lossy()
        .into_owned();
    error(PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH)
        .message(format!(
            "query has type {name}, which cannot be cast to {}",
            target.vector_type
        ))
        .hint(format!(
            "Pass a {}, e.g. $1::{}.",
            target.vector_type, target.vector_base
        ))
        .raise()
}

/// The ef_search floor of a strategy: on the shared graph the scan must walk past other
/// workspaces' rows, on a workspace's own graph pgvector's default suffices.
fn ef_floor(strategy: Strategy) -> i32 {
    if strategy == Strategy::WorkspaceHnsw {
        OWN_EF_FLOOR
    } else {
        EF_FLOOR
    }
}

/// Raises hnsw.ef_search to at least the strategy's floor, or the calibrated value (and k), turns
/// on relaxed iterative
/// scans and turns JIT off (planning and executing, which may replan), until the pinned
/// search_path's nest level ends (which restores all three). JIT: these plans run in
/// milliseconds, and a compile costs hundreds (measured: `enable_sort = off`, tried to keep the
/// planner off B-tree-and-sort plans, pushed the cost past `jit_above_cost`, and the whales'
/// p50 went from 1.6 to 230 ms, 292 ms of each call compiling).
unsafe fn set_hnsw_options(k: i32, strategy: Strategy, calibrated: Option<i32>) {
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
        let floor = calibrated.unwrap_or_else(|| ef_floor(strategy));
        let ef = CString::new(floor.max(k).max(current).to_string()).unwrap_or_default();
        set_at_nest_level(c"hnsw.ef_search", &ef);
        set_at_nest_level(c"hnsw.iterative_scan", c"relaxed_order");
        set_at_nest_level(c"jit", c"off");
        // The shared-index plan is generic: its workspace is a parameter, which the planner
        // costs as an average workspace, so it answered the candidates' `ORDER BY … LIMIT` with
        // the workspace B-tree and a sort, an exact scan under the name of the index
        // (scripts/bench-recall: 1.8 ms for 1k–10k-row workspaces calibrated at ef_search 40,
        // where the index answered in 0.4–0.6). Sorts cost more while it is planned; the outer
        // sort of at most `CANDIDATES` rows is needed by every plan alike.
        if strategy == Strategy::SharedHnsw {
            set_at_nest_level(c"enable_sort", c"off");
        }
    }
}
