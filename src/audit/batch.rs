//! Writing a batch of ring entries into `tenancy.audit_log`: one `INSERT` of one array per
//! column, built for the columns the installed audit log has, and an entry's bare form for when
//! it cannot be written whole. The worker (`worker.rs`) decides when and what; this decides how.

use super::ring::{self, Entry};
use super::settings as gucs;
use pgrx::prelude::*;

/// The insert of a whole batch, one array per column (`ROWS FROM` of one `unnest` each); names
/// are resolved from the shared catalogs. One statement per batch instead of one per entry: a
/// storm of 10,000 critical denials raised at 2,800/s overflowed the 1,024-entry ring when
/// each entry was its own statement (the writer kept up with ~1,100 rows/s). Every function,
/// operator and type is qualified (and `search_path` is pinned for the worker's life,
/// `src/plumbing/pinned_context.rs`).
///
/// Built for the columns the installed audit log has: the library may be newer than the
/// extension's SQL objects until `ALTER EXTENSION pg_tenancy UPDATE` runs (0.1.0 has no `alert`,
/// 0.2.0 no `acting_role`); every array is passed, and those of missing columns are not read.
fn insert_sql(alert_column: bool, acting_role_column: bool) -> String {
    let role_name = |column: &str| {
        format!(
            "coalesce((SELECT CAST(r.rolname AS pg_catalog.text) FROM pg_catalog.pg_roles r
                        WHERE r.oid OPERATOR(pg_catalog.=) {column}), 'oid:' OPERATOR(pg_catalog.||) {column})"
        )
    };
    let mut columns = String::from(
        "ring_started_at, seq, at, reason, critical, pid, database, role, client_addr, application_name, \
         iss, sub, org_id, sid, kid, exp, detail, statement",
    );
    let mut values = format!(
        "$1, e.seq, e.at, e.reason, e.critical, e.pid,
       coalesce((SELECT CAST(d.datname AS pg_catalog.text) FROM pg_catalog.pg_database d
                  WHERE d.oid OPERATOR(pg_catalog.=) e.database), 'oid:' OPERATOR(pg_catalog.||) e.database),
       {}, e.client_addr, e.application_name, e.iss, e.sub, e.org_id, e.sid, e.kid,
       pg_catalog.to_timestamp(e.exp), e.detail, e.statement",
        role_name("e.role")
    );
    if alert_column {
        columns.push_str(", alert");
        values.push_str(", e.alert");
    }
    if acting_role_column {
        columns.push_str(", acting_role");
        values.push_str(&format!(
            ", CASE WHEN e.acting_role OPERATOR(pg_catalog.<>) 0 THEN {} END",
            role_name("e.acting_role")
        ));
    }
    let unnests = (2..=20)
        .map(|i| format!("pg_catalog.unnest(${i})"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO tenancy.audit_log ({columns})
SELECT {values}
  FROM ROWS FROM ({unnests})
       AS e(seq, at, reason, critical, pid, database, role, client_addr, application_name, iss, sub,
            org_id, sid, kid, exp, detail, statement, alert, acting_role)
 ORDER BY e.seq
ON CONFLICT (ring_started_at, seq) DO NOTHING"
    )
}

/// A text field of a ring entry as a column value: empty (not recorded) is NULL.
fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

/// A batch as one array per column of the insert.
#[derive(Default)]
struct Columns {
    seq: Vec<i64>,
    at: Vec<pgrx::datum::TimestampWithTimeZone>,
    reason: Vec<String>,
    critical: Vec<bool>,
    pid: Vec<i32>,
    database: Vec<i64>,
    role: Vec<i64>,
    client: Vec<Option<String>>,
    application: Vec<String>,
    iss: Vec<Option<String>>,
    sub: Vec<Option<String>>,
    org_id: Vec<Option<String>>,
    sid: Vec<Option<String>>,
    kid: Vec<Option<String>>,
    exp: Vec<Option<f64>>,
    detail: Vec<String>,
    statement: Vec<String>,
    alert: Vec<Option<String>>,
    acting_role: Vec<i64>,
}

impl Columns {
    /// Appends `entry`, with the alert it raised.
    fn push(&mut self, entry: &Entry, alert: Option<&str>) -> Result<(), String> {
        self.seq.push(entry.seq as i64);
        self.at
            .push(pgrx::datum::TimestampWithTimeZone::try_from(entry.at).map_err(|e| format!("{e:?}"))?);
        self.reason.push(entry.reason().code().to_string());
        self.critical.push(entry.reason().is_critical());
        self.pid.push(entry.pid);
        self.database.push(i64::from(entry.database));
        self.role.push(i64::from(entry.role));
        self.client.push(non_empty(entry.client.get()));
        self.application.push(entry.application.get().to_string());
        self.iss.push(non_empty(entry.iss.get()));
        self.sub.push(non_empty(entry.sub.get()));
        self.org_id.push(non_empty(entry.org_id.get()));
        self.sid.push(non_empty(entry.sid.get()));
        self.kid.push(non_empty(entry.kid.get()));
        self.exp.push(
            crate::verify::TIMESTAMP_SECONDS
                .contains(&entry.exp)
                .then_some(entry.exp as f64),
        );
        self.detail.push(entry.detail.get().to_string());
        self.statement.push(entry.statement.get().to_string());
        self.alert.push(alert.map(str::to_string));
        self.acting_role.push(i64::from(entry.acting_role));
        Ok(())
    }
}

/// Writes `batch`, each entry with the alert it raised (`alerts`), and purges expired rows when
/// `purge` (the batch's signals are sent afterwards, by the worker, in a transaction of their
/// own).
pub(super) fn write_batch(batch: &[Entry], alerts: &[Option<&str>], purge: bool) -> Result<u64, String> {
    // Whether the audit log is installed and which of the later columns it has, in one query.
    let (installed, alert_column, acting_role_column) = Spi::get_three::<bool, bool, bool>(
        "SELECT pg_catalog.to_regclass('tenancy.audit_log') IS NOT NULL,
                EXISTS (SELECT FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('tenancy.audit_log')
                           AND a.attname OPERATOR(pg_catalog.=) 'alert' AND NOT a.attisdropped),
                EXISTS (SELECT FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('tenancy.audit_log')
                           AND a.attname OPERATOR(pg_catalog.=) 'acting_role' AND NOT a.attisdropped)",
    )
    .map_err(|e| e.to_string())?;
    if !installed.unwrap_or(false) {
        return Err(format!(
            "pg_tenancy is not installed in database \"{}\" (tenancy.audit_database)",
            gucs::audit_database()
        ));
    }
    let insert = insert_sql(alert_column.unwrap_or(false), acting_role_column.unwrap_or(false));
    let started = pgrx::datum::TimestampWithTimeZone::try_from(ring::started_at()).map_err(|e| format!("{e:?}"))?;
    let mut columns = Columns::default();
    for (entry, alert) in batch.iter().zip(alerts) {
        columns.push(entry, *alert)?;
    }
    let rows = batch.len() as u64;
    Spi::connect_mut(|client| {
        if !batch.is_empty() {
            let c = columns;
            let args: Vec<pgrx::datum::DatumWithOid> = vec![
                started.into(),
                c.seq.into(),
                c.at.into(),
                c.reason.into(),
                c.critical.into(),
                c.pid.into(),
                c.database.into(),
                c.role.into(),
                c.client.into(),
                c.application.into(),
                c.iss.into(),
                c.sub.into(),
                c.org_id.into(),
                c.sid.into(),
                c.kid.into(),
                c.exp.into(),
                c.detail.into(),
                c.statement.into(),
                c.alert.into(),
                c.acting_role.into(),
            ];
            client.update(insert.as_str(), None, &args).map_err(|e| e.to_string())?;
        }
        if purge && gucs::AUDIT_RETENTION.get() > 0 {
            client
                .update(
                    "DELETE FROM tenancy.audit_log
                      WHERE at OPERATOR(pg_catalog.<)
                            (pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.make_interval(days => $1))",
                    None,
                    &[gucs::AUDIT_RETENTION.get().into()],
                )
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    })?;
    Ok(rows)
}

/// `entry` without the fields a client chose, and why in `detail`.
pub(super) fn without_client_fields(entry: &Entry, problem: &str) -> Entry {
    let mut bare = Entry::empty();
    (bare.seq, bare.at, bare.exp, bare.pid) = (entry.seq, entry.at, i64::MIN, entry.pid);
    (bare.database, bare.role, bare.reason) = (entry.database, entry.role, entry.reason);
    bare.acting_role = entry.acting_role;
    bare.detail.set(&format!(
        "recorded without its client-supplied fields, which could not be written: {problem}"
    ));
    bare
}
