//! Denials raised on a hot standby, made durable on its primary (and a Citus worker's on its
//! coordinator, when `tenancy.audit_coordinator_conninfo` is set: the same path). A standby cannot write, so its
//! audit writer hands each batch to `tenancy.record_standby_denials` in the primary's audit
//! database over libpq: by default the standby's own `primary_conninfo` with `dbname` set to
//! `tenancy.audit_database`, or `tenancy.audit_primary_conninfo` when set. Rows are keyed by the
//! standby ring's (start time, sequence number), so a batch sent twice (the reply lost, the
//! standby restarted) is recorded once.
//!
//! While the primary cannot be reached, batches go to a spool directory in the standby's data
//! directory (`pg_tenancy_spool/`, written, fsynced and renamed into place), so a restart of
//! either side loses nothing that left the ring; the spool is sent first once the primary answers,
//! and after a promotion it is written locally through the same function.

use super::record;
use super::ring::Entry;
use super::settings as gucs;
use crate::plumbing::libpq::{quote, Connection};
use pgrx::pg_sys;
use std::ffi::CStr;
use std::io::Write;
use std::path::PathBuf;

/// The statement that records a batch, on the primary or (after a promotion) locally.
const RECORD: &str =
    "SELECT tenancy.record_standby_denials($1, CAST($2 AS pg_catalog.timestamptz), CAST($3 AS pg_catalog.jsonb))";

/// Whether this server is in recovery (a standby).
pub fn in_recovery() -> bool {
    unsafe { pg_sys::RecoveryInProgress() }
}

/// Whether this server's denials are recorded elsewhere: a standby's on its primary, a Citus
/// worker's (`tenancy.audit_coordinator_conninfo` set) on its coordinator.
pub fn forwards() -> bool {
    in_recovery() || gucs::audit_coordinator_conninfo().is_some()
}

/// One batch as the primary records it.
pub struct Batch {
    /// The spool file name: the ring's start and the first entry's sequence number, zero-padded
    /// so that names sort in the order the entries were raised.
    name: String,
    /// `{"origin", "ring_started_at", "entries"}`.
    body: serde_json::Value,
}

impl Batch {
    /// The batch of `entries` (with the alert each raised) from the ring started at `started`.
    /// Database and role names are resolved here, inside the worker's transaction.
    pub fn of(entries: &[Entry], alerts: &[Option<&str>], started: i64) -> Batch {
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .zip(alerts)
            .map(|(entry, alert)| {
                let mut row = record::to_json(entry, &record::names_of(entry, true));
                row["seq"] = entry.seq.into();
                row["critical"] = entry.reason().is_critical().into();
                row["alert"] = alert.map(str::to_string).into();
                row
            })
            .collect();
        let first = entries.first().map_or(0, |e| e.seq);
        Batch {
            name: format!("{:020}-{first:020}.json", started as u64),
            body: serde_json::json!({
                "origin": origin(),
                "ring_started_at": record::timestamp_text(started),
                "entries": rows,
            }),
        }
    }

    /// The three parameters of `RECORD`.
    fn parameters(&self) -> [String; 3] {
        let field = |name: &str| match &self.body[name] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        [field("origin"), field("ring_started_at"), field("entries")]
    }
}

/// How this standby names itself in the primary's audit log: `cluster_name`, else host:port.
fn origin() -> String {
    let setting = |name: &CStr| {
        let v = unsafe { pg_sys::GetConfigOption(name.as_ptr(), true, false) };
        (!v.is_null())
            .then(|| unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned())
            .filter(|v| !v.is_empty())
    };
    setting(c"cluster_name").unwrap_or_else(|| {
        let mut host = [0u8; 256];
        let ok = unsafe { libc_gethostname(host.as_mut_ptr().cast(), host.len()) } == 0;
        let end = host.iter().position(|&b| b == 0).unwrap_or(0);
        let host = if ok {
            String::from_utf8_lossy(&host[..end]).into_owned()
        } else {
            "standby".into()
        };
        format!("{host}:{}", setting(c"port").unwrap_or_default())
    })
}

extern "C" {
    #[link_name = "gethostname"]
    fn libc_gethostname(name: *mut std::ffi::c_char, len: usize) -> i32;
}

/// The connection string to the primary's audit database (a Citus worker's: the coordinator's).
fn conninfo() -> String {
    if !in_recovery() {
        if let Some(coordinator) = gucs::audit_coordinator_conninfo() {
            let name = quote("pg_tenancy audit writer (Citus worker)");
            return format!("connect_timeout=10 application_name={name} {coordinator}");
        }
    }
    let name = quote("pg_tenancy audit writer (standby)");
    if let Some(explicit) = gucs::audit_primary_conninfo() {
        return format!("connect_timeout=10 application_name={name} {explicit}");
    }
    let primary = unsafe { pg_sys::GetConfigOption(c"primary_conninfo".as_ptr(), true, false) };
    let primary = if primary.is_null() {
        String::new()
    } else {
        unsafe { CStr::from_ptr(primary) }.to_string_lossy().into_owned()
    };
    format!(
        "connect_timeout=10 {primary} dbname={} application_name={name} replication=false options={}",
        quote(&gucs::audit_database()),
        quote("-c statement_timeout=30000")
    )
}

/// Seconds between attempts to reach a primary that did not answer.
const RETRY_SECONDS: u64 = 5;

/// The standby side: a connection to the primary, kept between rounds, and when to try again
/// after a failure.
#[derive(Default)]
pub struct Sender {
    /// The connection and the connection string it was opened with (a reload may change it).
    connection: Option<(Connection, String)>,
    retry_at: Option<std::time::Instant>,
}

impl Sender {
    /// Whether the primary may be tried now.
    pub fn due(&self) -> bool {
        self.retry_at.is_none_or(|at| std::time::Instant::now() >= at)
    }

    /// Sends every spooled batch, oldest first, then `batch`; what cannot be sent is spooled.
    /// Returns the problem when the primary could not be reached (for the writer's warning).
    pub fn send(&mut self, batch: Option<Batch>) -> Result<(), String> {
        let mut problem = (!self.due()).then(|| "the primary did not answer; retrying shortly".to_string());
        for name in spooled().into_iter().filter(|_| problem.is_none()) {
            let Ok(text) = std::fs::read_to_string(spool_dir().join(&name)) else {
                continue;
            };
            let Ok(body) = serde_json::from_str(&text) else {
                // Never half-written (renamed into place); unreadable means damaged: keep it
                // aside for an operator rather than block the spool.
                let _ = std::fs::rename(spool_dir().join(&name), spool_dir().join(format!("{name}.damaged")));
                continue;
            };
            match self.record(&Batch {
                name: name.clone(),
                body,
            }) {
                Ok(()) => remove(&name),
                Err(e) => {
                    problem = Some(e);
                    break;
                }
            }
        }
        if let Some(batch) = batch {
            let outcome = match problem {
                Some(_) => Err(String::new()),
                None => self.record(&batch),
            };
            if let Err(e) = outcome {
                spool(&batch)?;
                problem = problem.or(Some(e));
            }
        }
        if problem.is_some() && self.due() {
            self.retry_at = Some(std::time::Instant::now() + std::time::Duration::from_secs(RETRY_SECONDS));
        } else if problem.is_none() {
            self.retry_at = None;
        }
        problem.map_or(Ok(()), Err)
    }

    /// Records one batch on the primary, connecting first when needed.
    fn record(&mut self, batch: &Batch) -> Result<(), String> {
        let wanted = conninfo();
        if !self
            .connection
            .as_ref()
            .is_some_and(|(c, used)| c.is_ok() && *used == wanted)
        {
            self.connection = None;
            let opened = Connection::open(&wanted).map_err(|e| format!("cannot reach the primary: {e}"))?;
            self.connection = Some((opened, wanted));
        }
        let [origin, started, entries] = batch.parameters();
        let (connection, _) = self.connection.as_mut().expect("connected above");
        match connection.query(RECORD, &[&origin, &started, &entries]) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.connection = None;
                Err(format!("the primary refused the standby's denials: {e}"))
            }
        }
    }
}

/// After a promotion: records every spooled batch locally (inside the worker's transaction).
pub fn record_spool_locally() -> Result<u64, String> {
    let mut recorded = 0;
    let installed = pgrx::Spi::get_one::<bool>(
        "SELECT pg_catalog.to_regprocedure('tenancy.record_standby_denials(text,timestamp with time zone,jsonb)') IS NOT NULL",
    )
    .map_err(|e| e.to_string())?
    .unwrap_or(false);
    if !installed {
        // ALTER EXTENSION pg_tenancy UPDATE not yet run here: the spool waits.
        return Ok(0);
    }
    for name in spooled() {
        let path = spool_dir().join(&name);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let body: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let [origin, started, entries] = Batch {
            name: name.clone(),
            body,
        }
        .parameters();
        pgrx::Spi::get_one_with_args::<i64>(RECORD, &[origin.into(), started.into(), entries.into()])
            .map_err(|e| e.to_string())?;
        remove(&name);
        recorded += 1;
    }
    Ok(recorded)
}

/// The spool directory, in the data directory (readable by the server's OS user only).
fn spool_dir() -> PathBuf {
    let data = unsafe { CStr::from_ptr(pg_sys::DataDir) }
        .to_string_lossy()
        .into_owned();
    PathBuf::from(data).join("pg_tenancy_spool")
}

/// Spooled batch files, oldest first.
fn spooled() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(spool_dir())
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Writes `batch` to the spool durably: a temporary file, fsynced, renamed, the directory fsynced.
pub fn spool(batch: &Batch) -> Result<(), String> {
    let dir = spool_dir();
    let fail = |e: std::io::Error| format!("spooling denials to {}: {e}", dir.display());
    std::fs::create_dir_all(&dir).map_err(fail)?;
    let temporary = dir.join(format!("{}.tmp", batch.name));
    let mut file = std::fs::File::create(&temporary).map_err(fail)?;
    file.write_all(batch.body.to_string().as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&temporary, dir.join(&batch.name)).map_err(fail)?;
    std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(fail)
}

/// Removes a recorded batch from the spool.
fn remove(name: &str) {
    let _ = std::fs::remove_file(spool_dir().join(name));
    let _ = std::fs::File::open(spool_dir()).and_then(|d| d.sync_all());
}

/// Whether batches wait in the spool.
pub fn has_spool() -> bool {
    !spooled().is_empty()
}
