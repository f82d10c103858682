//! PostgreSQL lists read in place, and tags carried in a plan's dependency list
//! (`PlannedStmt.invalItems`): a `PlanInvalItem` with a negative `cacheId`, which no syscache
//! invalidation ever matches, survives plan caching and copying untouched and costs nothing
//! until read. Folded identities (`surface/folding.rs`) and identity parameters
//! (`surface/identity_params/`) record what `ExecutorStart` must know about a plan this way.

use pgrx::pg_sys;
use std::ffi::{c_int, c_void};

/// The pointers of a pointer list, read in place (no copy: this runs on every statement).
///
/// # Safety
/// `list` must be null or a valid pointer list that outlives the iterator.
pub unsafe fn cells<'a>(list: *mut pg_sys::List) -> impl Iterator<Item = *mut c_void> + 'a {
    let cells: &[pg_sys::ListCell] = match unsafe { list.as_ref() } {
        Some(list) => unsafe { std::slice::from_raw_parts(list.elements, list.length as usize) },
        None => &[],
    };
    cells.iter().map(|cell| unsafe { cell.ptr_value })
}

/// The tags of a dependency list, in order, as (tag, value).
///
/// # Safety
/// `items` must be null or a plan's dependency list.
pub unsafe fn read<'a>(items: *mut pg_sys::List) -> impl Iterator<Item = (c_int, u32)> + 'a {
    unsafe { cells(items) }.map(|item| {
        let item = item.cast::<pg_sys::PlanInvalItem>();
        unsafe { ((*item).cacheId, (*item).hashValue) }
    })
}

/// `items` with the tag (`tag`, `value`) appended, in the current memory context (the plan's,
/// while it is being built). `tag` must be negative.
///
/// # Safety
/// `items` must be null or a plan's dependency list.
pub unsafe fn append(items: *mut pg_sys::List, tag: c_int, value: u32) -> *mut pg_sys::List {
    debug_assert!(tag < 0, "a tag no syscache id can match");
    unsafe {
        let item = pg_sys::palloc0(size_of::<pg_sys::PlanInvalItem>()).cast::<pg_sys::PlanInvalItem>();
        (*item).type_ = pg_sys::NodeTag::T_PlanInvalItem;
        (*item).cacheId = tag;
        (*item).hashValue = value;
        pg_sys::lappend(items, item.cast())
    }
}
