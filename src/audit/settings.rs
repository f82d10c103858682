//! The audit trail's settings, each in its narrowest context: the POSTMASTER ones only while
//! preloading (as pg_stat_statements does), since shared memory is sized from them then and only
//! then.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use std::ffi::CString;

/// `tenancy.audit_ring_size` (POSTMASTER): denials kept in shared memory.
pub static AUDIT_RING_SIZE: GucSetting<i32> = GucSetting::<i32>::new(1024);
/// `tenancy.audit_database` (POSTMASTER): where the worker writes `tenancy.audit_log`.
pub static AUDIT_DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));
/// `tenancy.audit_primary_conninfo` (SIGHUP, superuser-only: it may hold a password): where a hot
/// standby's audit writer sends its denials; empty uses `primary_conninfo` with `dbname` set to
/// `tenancy.audit_database`.
pub static AUDIT_PRIMARY_CONNINFO: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// `tenancy.audit_coordinator_conninfo` (SIGHUP, superuser-only: it may hold a password): set on
/// a Citus worker, its audit writer sends its denials to the coordinator's audit database, as a
/// hot standby sends them to its primary, instead of recording them on the worker.
pub static AUDIT_COORDINATOR_CONNINFO: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// `tenancy.audit_naptime` (SIGHUP): milliseconds between the worker's rounds.
pub static AUDIT_NAPTIME: GucSetting<i32> = GucSetting::<i32>::new(200);
/// `tenancy.audit_retention` (SIGHUP): days `tenancy.audit_log` keeps a row; 0 keeps them all.
pub static AUDIT_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(90);
/// `tenancy.alert_burst_count` (SIGHUP): more denials than this from one source make a burst.
pub static ALERT_BURST_COUNT: GucSetting<i32> = GucSetting::<i32>::new(20);
/// `tenancy.alert_burst_window` (SIGHUP): seconds over which a burst is counted.
pub static ALERT_BURST_WINDOW: GucSetting<i32> = GucSetting::<i32>::new(10);

/// Settings of the audit trail: the POSTMASTER ones only while preloading (as
/// pg_stat_statements does), since shared memory is sized from them then and only then.
pub fn define() {
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        GucRegistry::define_int_guc(
            c"tenancy.audit_ring_size",
            c"Denials kept in the shared-memory ring (tenancy.denials).",
            c"The oldest entry is overwritten when the ring is full; tenancy.stats counts the dropped ones.",
            &AUDIT_RING_SIZE,
            16,
            1 << 20,
            GucContext::Postmaster,
            GucFlags::default(),
        );
        GucRegistry::define_string_guc(
            c"tenancy.audit_database",
            c"Database whose tenancy.audit_log receives every database's denials.",
            c"pg_tenancy must be installed there.",
            &AUDIT_DATABASE,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    GucRegistry::define_string_guc(
        c"tenancy.audit_primary_conninfo",
        c"Connection string a hot standby's audit writer uses to record its denials on the primary.",
        c"Empty: primary_conninfo with dbname set to tenancy.audit_database. The role needs REPLICATION or superuser.",
        &AUDIT_PRIMARY_CONNINFO,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"tenancy.audit_coordinator_conninfo",
        c"Connection string a Citus worker's audit writer uses to record its denials on the coordinator.",
        c"Empty: denials are recorded on this server. The role needs REPLICATION or superuser on the coordinator.",
        &AUDIT_COORDINATOR_CONNINFO,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_int_guc(
        c"tenancy.audit_naptime",
        c"Milliseconds between rounds of the audit writer.",
        c"",
        &AUDIT_NAPTIME,
        10,
        10_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"tenancy.audit_retention",
        c"Days tenancy.audit_log keeps a row; 0 keeps every row.",
        c"",
        &AUDIT_RETENTION,
        0,
        36_500,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"tenancy.alert_burst_count",
        c"More denials than this from one source within tenancy.alert_burst_window raise an alert.",
        c"A source is a client address, database role and database.",
        &ALERT_BURST_COUNT,
        1,
        1_000_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"tenancy.alert_burst_window",
        c"Seconds over which denials from one source are counted for a burst alert.",
        c"",
        &ALERT_BURST_WINDOW,
        1,
        3600,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
}

/// The audit database's name.
pub fn audit_database() -> String {
    AUDIT_DATABASE
        .get()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "postgres".into())
}

/// `tenancy.audit_primary_conninfo`, when set.
pub fn audit_primary_conninfo() -> Option<String> {
    AUDIT_PRIMARY_CONNINFO
        .get()
        .map(|v| v.to_string_lossy().into_owned())
        .filter(|v| !v.trim().is_empty())
}

/// `tenancy.audit_coordinator_conninfo`, when set.
pub fn audit_coordinator_conninfo() -> Option<String> {
    AUDIT_COORDINATOR_CONNINFO
        .get()
        .map(|v| v.to_string_lossy().into_owned())
        .filter(|v| !v.trim().is_empty())
}
