//! The C entry points of `tenancy.nearest(tbl, column, query, k, metric)` and
//! `tenancy.nearest_strategy(tbl, column, metric)` (`sql/search.sql`), and the decoding and
//! checking of their arguments. Version-1 C functions rather than `#[pg_extern]`s: `nearest`
//! takes `anyelement` and `anycompatible` and returns rows of the caller's table type, which only
//! the raw call info describes.

use super::execute::{self, begin};
use super::model::Call;
use super::strategy::caller_scope;
use crate::plumbing::errors::error;
use crate::plumbing::pinned_context::with_pinned_search_path;
use crate::plumbing::spi;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CStr;

/// The largest k (hnsw.ef_search cannot exceed 1000).
const MAX_K: i32 = 1000;

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
        with_pinned_search_path(|| {
            begin();
            execute::search(&call, (*result).setResult, (*result).setDesc);
            execute::end();
        });
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
            begin();
            let target = execute::target_of(&call);
            let strategy = caller_scope(&call, &target).strategy;
            execute::end();
            strategy.name()
        });
        spi::text_datum(name)
    }
}

/// Reads and checks the arguments that need no catalog (the order of the PL/pgSQL version).
unsafe fn arguments(fcinfo: pg_sys::FunctionCallInfo) -> Call {
    unsafe {
        let arg = |i: usize| argument(fcinfo, 5, i);
        let flinfo = (*fcinfo).flinfo;
        let query = arg(2);
        if query.is_none() {
            error(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED)
                .message("query vector must not be null")
                .raise();
        }
        let Some(k) = arg(3).map(|d| d.value() as i32) else {
            error(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED)
                .message("k must not be null")
                .raise();
        };
        if !(1..=MAX_K).contains(&k) {
            error(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE)
                .message(format!("k must be between 1 and {MAX_K}, not {k}"))
                .hint("Page through more results with a larger k up to the limit, or use plain SQL with LIMIT.")
                .raise();
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
