//! How many rows a workspace has in a table, estimated from the planner's statistics, for
//! `tenancy.nearest`'s choice between its exact plans and the shared HNSW index.
//!
//! Counting the workspace's rows instead (capped at 10,001, remembered a minute per backend) cost
//! a scan of up to 10,001 index entries on the first call per workspace and minute: in
//! `scripts/bench-search` with five rounds over 500 workspaces (each backend sees a workspace
//! less than once a minute, as a pooled backend serving many tenants does), pg_tenancy / exact
//! went from 1.10 to 1.56 in the 100–999-row bucket once the counts expired. The statistics
//! `ANALYZE` keeps (`pg_stats`: most common values with their frequencies, the number of
//! distinct values, the table's `reltuples`) answer the same question with no scan: a workspace
//! among the most common values has its own frequency, any other the average of the rest. They
//! are read once per table and kept until the table's next relcache invalidation (`ANALYZE`
//! sends one when it updates `reltuples`) or `FRESH_FOR`. Only a workspace the estimate puts near
//! the shared-index threshold is still counted (`strategy.rs`); a table never analyzed is counted
//! as before. A wrong estimate costs speed, never rows: every strategy returns min(k, n) rows.

use pgrx::pg_sys;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a table's estimates are kept without an invalidation.
const FRESH_FOR: Duration = Duration::from_secs(600);

/// The estimates of one table.
pub struct Sizes {
    /// Rows of each of the most common workspaces.
    common: HashMap<String, f64>,
    /// Rows of any other workspace (the rest of the table over the rest of the distinct values).
    other: f64,
}

impl Sizes {
    /// The estimated rows of `workspace`.
    pub fn of(&self, workspace: &str) -> f64 {
        self.common.get(workspace).copied().unwrap_or(self.other)
    }

    /// Estimates from one column's statistics: its most common values with their frequencies,
    /// `n_distinct` (negative: a fraction of the rows), `null_frac`, and the table's `reltuples`.
    /// None when the table was never analyzed (`reltuples` -1).
    pub fn from_statistics(common: &[(String, f64)], n_distinct: f64, null_frac: f64, tuples: f64) -> Option<Sizes> {
        if tuples < 0.0 {
            return None;
        }
        let distinct = if n_distinct < 0.0 {
            -n_distinct * tuples
        } else {
            n_distinct
        };
        let common_share: f64 = common.iter().map(|(_, f)| f).sum();
        let rest = ((1.0 - common_share - null_frac) * tuples).max(0.0);
        let other = rest / (distinct - common.len() as f64).max(1.0);
        let common = common.iter().map(|(v, f)| (v.clone(), f * tuples)).collect();
        Some(Sizes { common, other })
    }
}

/// When a table's statistics were read, and the estimates (None: it has none).
type Kept = (Instant, Option<Rc<Sizes>>);

/// The estimates of `rel` from its statistics on `column`, read from the catalog (`pg_statistic`
/// and `pg_class`) directly: the `pg_stats` view shows nothing to a caller under row-level
/// security (it would show other workspaces' ids), and nothing read here leaves this module but
/// the strategy `nearest` picks for the caller's own workspace. None without statistics.
///
/// # Safety
/// Inside a transaction; `rel` is a table the caller may read.
pub unsafe fn read_statistics(rel: pg_sys::Oid, column: &str) -> Option<Sizes> {
    let name = std::ffi::CString::new(column).ok()?;
    unsafe {
        let attnum = pg_sys::get_attnum(rel, name.as_ptr());
        if attnum <= 0 {
            return None;
        }
        let class = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::RELOID as i32, pg_sys::Datum::from(rel));
        if class.is_null() {
            return None;
        }
        let reltuples = f64::from((*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(class)).reltuples);
        pg_sys::ReleaseSysCache(class);
        // As pg_stats: the statistics over inheritance children first (a partitioned table has
        // only those), else the table's own.
        let tuple = [true, false].iter().find_map(|&inherited| {
            let t = pg_sys::SearchSysCache3(
                pg_sys::SysCacheIdentifier::STATRELATTINH as i32,
                pg_sys::Datum::from(rel),
                pg_sys::Datum::from(attnum),
                pg_sys::Datum::from(inherited),
            );
            (!t.is_null()).then_some(t)
        })?;
        let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_statistic>(tuple);
        let (null_frac, n_distinct) = (f64::from((*form).stanullfrac), f64::from((*form).stadistinct));
        let mut common = Vec::new();
        let mut slot = pg_sys::AttStatsSlot::default();
        if pg_sys::get_attstatsslot(
            &mut slot,
            tuple,
            pg_sys::STATISTIC_KIND_MCV as i32,
            pg_sys::InvalidOid,
            (pg_sys::ATTSTATSSLOT_VALUES | pg_sys::ATTSTATSSLOT_NUMBERS) as i32,
        ) {
            let (mut output, mut varlena) = (pg_sys::InvalidOid, false);
            pg_sys::getTypeOutputInfo(slot.valuetype, &mut output, &mut varlena);
            let count = slot.nvalues.min(slot.nnumbers).max(0) as usize;
            for i in 0..count {
                let text = pg_sys::OidOutputFunctionCall(output, *slot.values.add(i));
                common.push((
                    std::ffi::CStr::from_ptr(text).to_string_lossy().into_owned(),
                    f64::from(*slot.numbers.add(i)),
                ));
            }
            pg_sys::free_attstatsslot(&mut slot);
        }
        pg_sys::ReleaseSysCache(tuple);
        Sizes::from_statistics(&common, n_distinct, null_frac, reltuples)
    }
}

thread_local! {
    static SIZES: RefCell<HashMap<pg_sys::Oid, Kept>> = RefCell::new(HashMap::new());
}

/// The kept estimates of `rel`: Some(None) when the table has no statistics, None when they
/// must be read.
pub fn cached(rel: pg_sys::Oid) -> Option<Option<Rc<Sizes>>> {
    SIZES.with_borrow(|s| {
        s.get(&rel)
            .filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, sizes)| sizes.clone())
    })
}

/// Keeps the estimates of `rel`.
pub fn remember(rel: pg_sys::Oid, sizes: Option<Sizes>) -> Option<Rc<Sizes>> {
    let sizes = sizes.map(Rc::new);
    SIZES.with_borrow_mut(|s| s.insert(rel, (Instant::now(), sizes.clone())));
    sizes
}

/// Drops the estimates of the relations `hit` selects (called with the other caches').
pub fn forget(hit: impl Fn(&pg_sys::Oid) -> bool) {
    SIZES.with_borrow_mut(|s| s.retain(|rel, _| !hit(rel)));
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    #[cfg(test)]
    use super::Sizes;
    use pgrx::prelude::*;

    #[pg_test]
    fn a_table_without_statistics_has_no_size_estimate() {
        Spi::run("CREATE TABLE public.unanalyzed (workspace_id text)").unwrap();
        let rel = Spi::get_one::<pg_sys::Oid>("SELECT 'public.unanalyzed'::regclass::oid")
            .unwrap()
            .unwrap();
        let estimate = || unsafe { super::read_statistics(rel, "workspace_id") }.map(|s| s.of("ws_a"));
        assert_eq!(estimate(), None, "no statistics row");
        Spi::run("INSERT INTO public.unanalyzed SELECT 'ws_a' FROM generate_series(1, 30); ANALYZE public.unanalyzed")
            .unwrap();
        unsafe { pg_sys::CommandCounterIncrement() };
        assert_eq!(estimate().map(f64::round), Some(30.0), "after ANALYZE");
    }

    #[test]
    fn estimates_follow_the_statistics() {
        // 100,000 rows, 50 workspaces: ws_a holds half, ws_b a tenth, 48 others the rest.
        let common = [("ws_a".to_string(), 0.5), ("ws_b".to_string(), 0.1)];
        let sizes = Sizes::from_statistics(&common, 50.0, 0.0, 100_000.0).unwrap();
        for (workspace, want) in [("ws_a", 50_000.0), ("ws_b", 10_000.0), ("ws_other", 40_000.0 / 48.0)] {
            assert!(
                (sizes.of(workspace) - want).abs() < 1e-6,
                "{workspace}: {}",
                sizes.of(workspace)
            );
        }
        // A negative n_distinct is a fraction of the rows; no common values: the average.
        let sizes = Sizes::from_statistics(&[], -0.5, 0.0, 1_000.0).unwrap();
        assert!((sizes.of("any") - 2.0).abs() < 1e-6);
        // Never analyzed (reltuples -1): no estimate. (No statistics row at all:
        // `a_table_without_statistics_has_no_size_estimate` below.)
        assert!(Sizes::from_statistics(&[], 0.0, 0.0, -1.0).is_none());
    }
}
