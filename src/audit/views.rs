//! The rows behind `tenancy.denials` and `tenancy.stats` (sql/audit.sql adds names and grants).

use super::ring;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

/// The denials in the shared-memory ring, oldest first.
#[pg_extern(volatile, parallel_restricted)]
#[allow(clippy::type_complexity)]
fn _denials() -> TableIterator<
    'static,
    (
        name!(seq, i64),
        name!(at, TimestampWithTimeZone),
        name!(reason, String),
        name!(critical, bool),
        name!(pid, i32),
        name!(database_oid, pg_sys::Oid),
        name!(role_oid, pg_sys::Oid),
        name!(client_addr, Option<String>),
        name!(application_name, String),
        name!(iss, Option<String>),
        name!(sub, Option<String>),
        name!(org_id, Option<String>),
        name!(sid, Option<String>),
        name!(kid, Option<String>),
        name!(exp, Option<i64>),
        name!(detail, String),
        name!(statement, String),
    ),
> {
    let optional = |t: &str| (!t.is_empty()).then(|| t.to_string());
    let rows: Vec<_> = ring::since(1, usize::MAX)
        .into_iter()
        .filter(|e| e.seq != 0)
        .map(|e| {
            let reason = e.reason();
            (
                e.seq as i64,
                TimestampWithTimeZone::try_from(e.at)
                    .unwrap_or_else(|_| crate::plumbing::errors::internal("a denial's timestamp is out of range")),
                reason.code().to_string(),
                reason.is_critical(),
                e.pid,
                pg_sys::Oid::from(e.database),
                pg_sys::Oid::from(e.role),
                optional(e.client.get()),
                e.application.get().to_string(),
                optional(e.iss.get()),
                optional(e.sub.get()),
                optional(e.org_id.get()),
                optional(e.sid.get()),
                optional(e.kid.get()),
                (e.exp != i64::MIN).then_some(e.exp),
                e.detail.get().to_string(),
                e.statement.get().to_string(),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Every audit counter as (name, value); empty without `shared_preload_libraries`.
#[pg_extern(volatile, parallel_restricted)]
fn _stats() -> TableIterator<'static, (name!(name, String), name!(value, i64))> {
    TableIterator::new(ring::counters())
}
