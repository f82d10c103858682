//! Which plan answers a call: the workspace's own HNSW index when it has one (at the `ef_search`
//! calibration chose for `tenancy.nearest_recall`, or the exact scan when calibration found that
//! cheaper or the only way to the target: `calibration.rs`); else the exact
//! scan when the table's statistics estimate at most half of `EXACT_MAX_ROWS` rows for the
//! workspace (`workspace_sizes.rs`) or, past that or without statistics, a count capped at
//! `EXACT_MAX_ROWS + 1` rows (remembered for a minute) finds at most `EXACT_MAX_ROWS`; else the
//! shared HNSW index with iterative scan, at the `ef_search` its calibration for the workspace
//! chose (or the exact scan, as for an own index). A wrong guess costs speed, never rows: every strategy
//! returns min(k, n) rows (docs/search.md).

use super::calibration::{self, Decision};
use super::model::{Call, Strategy, Target};
use super::plan_cache::{self as cache, PlanKey};
use super::sql_text;
use super::workspace_sizes as sizes;
use crate::identity;
use crate::plumbing::spi;
use pgrx::pg_sys;
use std::collections::HashSet;

/// Workspaces with at most this many rows are searched exactly (`tenancy._exact_max_rows()`).
pub const EXACT_MAX_ROWS: i64 = 10_000;
/// Workspaces with at most this many rows are searched exactly in one scan that builds each row
/// as it goes, without the fetch of the winners by TID. Measured in the server (generic plans,
/// 64 dimensions, k 10, docs/benchmarks.md): 8–10 µs less per call at 2 and 51 rows, 24 µs more
/// at 257 and 140 µs more at 984 (building every row costs about 0.17 µs each, the TID fetch's
/// extra plan nodes about 10 µs a call): even near 110 rows.
const SMALL_MAX_ROWS: i64 = 64;

/// The caller's scope and the strategy for it.
pub struct Scope {
    pub workspace: String,
    /// The user, for a user-scoped table.
    pub user: Option<String>,
    pub strategy: Strategy,
    /// The `ef_search` calibration chose for the index searched (`WorkspaceHnsw`, `SharedHnsw`;
    /// None: never calibrated).
    pub ef_search: Option<i32>,
}

/// The caller's scope (workspace, and user for a user-scoped table) from the verified identity,
/// and the strategy for it (28000 without an identity).
///
/// # Safety
/// Inside an SPI connection (`plumbing::spi::connect`).
pub unsafe fn caller_scope(call: &Call, target: &Target) -> Scope {
    let identity = identity::require();
    let workspace = identity::workspace_of(&identity);
    let user = target.user_column.as_ref().map(|_| identity.user_id.clone());
    let column = call.column.as_deref().unwrap_or_default();
    let metric = call.metric.as_deref().unwrap_or_default();
    let (strategy, ef_search) = unsafe { strategy_of(target, column, metric, &workspace, user.as_deref(), call.k) };
    // On a Citus distributed table the exact scan builds whole rows instead of fetching the
    // winners by TID: Citus plans the joined statement on the coordinator and again on the
    // worker at every call (scripts/bench-citus, 1,000-row workspaces: 1.48 ms by hand with the
    // join, 1.29 ms with whole rows, against 1.16 ms for the hand-written exact query).
    let strategy = if target.distributed && strategy == Strategy::Exact {
        Strategy::ExactSmall
    } else {
        strategy
    };
    Scope {
        workspace,
        user,
        strategy,
        ef_search,
    }
}

/// The strategy for a scope (see the module's comment), and the calibrated `ef_search` of the
/// workspace's own index.
unsafe fn strategy_of(
    target: &Target,
    column: &str,
    metric: &str,
    workspace: &str,
    user: Option<&str>,
    k: i32,
) -> (Strategy, Option<i32>) {
    let own = cache::own_indexes(target.rel, column, metric).unwrap_or_else(|| {
        cache::remember_own_indexes(target.rel, column, metric, unsafe {
            own_indexes(target, column, metric)
        })
    });
    let calibrated = |shared: bool| {
        let calibrations = cache::calibrations(target.rel, column, metric).unwrap_or_else(|| {
            cache::remember_calibrations(target.rel, column, metric, unsafe {
                calibration::read(target, column, metric)
            })
        });
        let measured = if shared {
            calibrations.shared.get(workspace)
        } else {
            calibrations.own.get(workspace)
        };
        measured.map(|measured| (measured.rows, calibration::decide(measured, calibration::target(), k)))
    };
    if own.contains(workspace) {
        return match calibrated(false).map(|(_, decision)| decision) {
            None => (Strategy::WorkspaceHnsw, None),
            Some(Decision::Index { ef_search }) => (Strategy::WorkspaceHnsw, Some(ef_search)),
            Some(Decision::Exact) => (Strategy::Exact, None),
        };
    }
    // A workspace calibrated on the shared index (`calibrate_vector_indexes` calibrates every
    // workspace of at least 1,000 rows there): what calibration measured decides, unless the
    // statistics say the workspace has shrunk below half its size then. Measured in
    // `scripts/bench-recall` (skewed data, 1k–10k rows): the shared index at ef_search 64 reached
    // recall 0.998 in 0.92 ms where the exact scan took 1.61.
    let estimate = unsafe { estimated_rows(target, workspace) };
    if let Some((rows, decision)) = calibrated(true) {
        if estimate.is_none_or(|estimate| estimate * 2.0 >= rows as f64) {
            return match decision {
                Decision::Index { ef_search } => (Strategy::SharedHnsw, Some(ef_search)),
                Decision::Exact => (Strategy::Exact, None),
            };
        }
    }
    // The planner's estimate decides, unless it puts the workspace near the shared-index
    // threshold or the table has no statistics: then a capped count does.
    if let Some(estimate) = estimate {
        if estimate <= SMALL_MAX_ROWS as f64 {
            return (Strategy::ExactSmall, None);
        }
        if estimate <= (EXACT_MAX_ROWS / 2) as f64 {
            return (Strategy::Exact, None);
        }
    }
    let n = cache::count(target.rel, workspace, user).unwrap_or_else(|| {
        let n = unsafe { capped_count(target, workspace, user) };
        cache::remember_count(target.rel, workspace, user, n);
        n
    });
    if n <= SMALL_MAX_ROWS {
        (Strategy::ExactSmall, None)
    } else if n <= EXACT_MAX_ROWS {
        (Strategy::Exact, None)
    } else {
        // Never calibrated on the shared index (or calibrated when it was more than twice as
        // large): the shared floor (`execute.rs`).
        (Strategy::SharedHnsw, None)
    }
}

/// The workspaces with their own valid index on (column, metric): the indexes whose comment
/// `tenancy.create_vector_index` wrote (`pg_tenancy:hnsw:<metric>:<column>:<workspace>`).
unsafe fn own_indexes(target: &Target, column: &str, metric: &str) -> HashSet<String> {
    let prefix = format!("pg_tenancy:hnsw:{metric}:{column}:");
    let rows = unsafe {
        spi::texts(
            "SELECT pg_catalog.substr(d.description, pg_catalog.length($2) OPERATOR(pg_catalog.+) 1)
               FROM pg_catalog.pg_index i
               JOIN pg_catalog.pg_description d ON d.objoid OPERATOR(pg_catalog.=) i.indexrelid
                    AND d.classoid OPERATOR(pg_catalog.=) CAST('pg_catalog.pg_class' AS pg_catalog.regclass)
                    AND d.objsubid OPERATOR(pg_catalog.=) 0
              WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indisvalid AND i.indisready
                AND pg_catalog.starts_with(d.description, $2)",
            &[
                (pg_sys::OIDOID, Some(pg_sys::Datum::from(target.rel))),
                (pg_sys::TEXTOID, Some(spi::text_datum(&prefix))),
            ],
            "reading the workspace indexes",
        )
    };
    rows.into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect()
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

/// The scope's rows in the target's table, counted up to `EXACT_MAX_ROWS + 1` with a kept plan
/// over ($1 unused, $2 workspace, $3 user).
unsafe fn capped_count(target: &Target, workspace: &str, user: Option<&str>) -> i64 {
    let key = PlanKey::Count { rel: target.rel };
    let plan = cache::plan(key, &[pg_sys::TEXTOID, pg_sys::TEXTOID, pg_sys::TEXTOID], || {
        sql_text::count_sql(target, EXACT_MAX_ROWS + 1)
    });
    unsafe {
        let mut values = [
            pg_sys::Datum::from(0),
            spi::text_datum(workspace),
            user.map_or(pg_sys::Datum::from(0), spi::text_datum),
        ];
        let nulls = [
            spi::null_flag(false),
            spi::null_flag(true),
            spi::null_flag(user.is_some()),
        ];
        let status = pg_sys::SPI_execute_plan(plan.0, values.as_mut_ptr(), nulls.as_ptr(), true, 1);
        if status != pg_sys::SPI_OK_SELECT as i32 || pg_sys::SPI_processed != 1 {
            crate::plumbing::errors::internal(format!("counting the workspace's rows failed (SPI result {status})"));
        }
        spi::first_value().0.value() as i64
    }
}
