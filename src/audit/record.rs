//! Turning a denial into a record with its full context: who (database role, client address,
//! application), where (database, backend), what the token claimed, and the statement text,
//! masked and truncated. The same record becomes the server-log line and the ring entry.

use super::ring::{self, Entry};
use crate::verify::masking;
use crate::verify::Denial;
use pgrx::pg_sys;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Characters of statement text kept in a record.
const STATEMENT_CHARS: usize = 1000;

/// Builds the ring entry of `denial` in the current backend.
pub fn entry_of(denial: &Denial) -> Entry {
    let mut entry = Entry::empty();
    entry.at = unsafe { pg_sys::GetCurrentTimestamp() };
    entry.exp = recordable_exp(denial.seen.exp);
    entry.reason = denial.reason.index() as u8;
    unsafe {
        entry.pid = pg_sys::MyProcPid;
        entry.database = pg_sys::MyDatabaseId.into();
        // The session user: a denial raised inside a SECURITY DEFINER function (a bad token
        // passed to tenancy.create_api_key) is the caller's, not the function owner's.
        let session = pg_sys::GetSessionUserId();
        let current = pg_sys::GetUserId();
        entry.role = session.into();
        entry.acting_role = if current == session { 0 } else { current.into() };
        entry.application.set(&masked(ring::c_text(pg_sys::application_name)));
        entry.client.set(&client_address());
        entry.statement.set(&statement_text());
    }
    let seen = &denial.seen;
    let claim = |value: &Option<String>| masked(value.clone().unwrap_or_default());
    entry.iss.set(&claim(&seen.iss));
    entry.sub.set(&claim(&seen.sub));
    entry.org_id.set(&claim(&seen.org_id));
    entry.sid.set(&claim(&seen.sid));
    entry.kid.set(&claim(&seen.kid));
    let mut detail = denial.detail.clone();
    if seen.exp_unrecordable {
        detail.push_str(" (the token's exp is not a time PostgreSQL can hold: not recorded)");
    }
    entry.detail.set(&masked(detail));
    entry
}

/// The `exp` an entry stores: Unix seconds inside PostgreSQL's timestamp range, else `i64::MIN`
/// (not recorded). The verifier bounds it already; the ring bounds it again because one entry the
/// writer cannot insert must never exist.
pub fn recordable_exp(exp: Option<i64>) -> i64 {
    exp.filter(|e| crate::verify::TIMESTAMP_SECONDS.contains(e))
        .unwrap_or(i64::MIN)
}

/// `text` with every credential-looking run masked. The application name and a refused token's
/// claims are chosen by the client: one that puts a token there must not have it copied into the
/// ring, `tenancy.audit_log` and the alerts built from them.
fn masked(text: String) -> String {
    let mut bytes = text.into_bytes();
    masking::mask_in_place(&mut bytes);
    // Masking writes ASCII over whole ASCII runs, so the text stays valid UTF-8.
    String::from_utf8(bytes).unwrap_or_default()
}

/// The current top-level statement, masked (tokens and keys) and truncated.
fn statement_text() -> String {
    let raw = ring::c_text(unsafe { pg_sys::debug_query_string });
    let mut bytes: Vec<u8> = raw.chars().take(STATEMENT_CHARS).collect::<String>().into_bytes();
    masking::mask_in_place(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The client's address as `pg_stat_activity.client_addr` shows it ("local" for a socket).
fn client_address() -> String {
    let entry = unsafe { pg_sys::MyBEEntry.as_ref() };
    let Some(entry) = entry else { return String::new() };
    let storage = &entry.st_clientaddr.addr;
    // SAFETY: sockaddr_storage is at least 128 bytes; the family says which layout fills it.
    let bytes = unsafe { std::slice::from_raw_parts(storage as *const _ as *const u8, 128) };
    match storage.ss_family as i32 {
        // sockaddr_in: family (2), port (2), address (4)
        libc_af::INET => Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]).to_string(),
        // sockaddr_in6: family (2), port (2), flow info (4), address (16)
        libc_af::INET6 => Ipv6Addr::from(<[u8; 16]>::try_from(&bytes[8..24]).expect("16 bytes")).to_string(),
        libc_af::UNIX => "local".into(),
        _ => String::new(),
    }
}

/// Address families of `sockaddr_storage` (Linux values).
mod libc_af {
    pub const UNIX: i32 = 1;
    pub const INET: i32 = 2;
    pub const INET6: i32 = 10;
}

/// The names an entry's OIDs stand for.
pub struct Names {
    pub database: String,
    pub role: String,
    /// The current user, when it was not the session user.
    pub acting_role: Option<String>,
}

/// The record as one JSON object, for the server log and `NOTIFY` payloads.
pub fn to_json(entry: &Entry, names: &Names) -> serde_json::Value {
    let (database, role) = (&names.database, &names.role);
    let reason = entry.reason();
    let optional = |t: &str| (!t.is_empty()).then(|| t.to_string());
    serde_json::json!({
        "at": timestamp_text(entry.at),
        "reason": reason.code(),
        "severity": if reason.is_critical() { "critical" } else { "warning" },
        "pid": entry.pid,
        "database": database,
        "role": role,
        "acting_role": names.acting_role,
        "client_addr": optional(entry.client.get()),
        "application_name": entry.application.get(),
        "iss": optional(entry.iss.get()),
        "sub": optional(entry.sub.get()),
        "org_id": optional(entry.org_id.get()),
        "sid": optional(entry.sid.get()),
        "kid": optional(entry.kid.get()),
        "exp": (entry.exp != i64::MIN).then_some(entry.exp),
        "detail": entry.detail.get(),
        "statement": entry.statement.get(),
    })
}

/// ISO-8601 UTC text of a PostgreSQL timestamp.
pub(super) fn timestamp_text(at: i64) -> String {
    let micros = at + 946_684_800 * 1_000_000;
    let secs = micros.div_euclid(1_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        micros.rem_euclid(1_000_000)
    )
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

thread_local! {
    /// Names looked up earlier in this backend, by OID: a denial observed inside error reporting
    /// (where the catalogs must not be read) still names its database and roles.
    static KNOWN_NAMES: std::cell::RefCell<Vec<(u32, bool, String)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Most names kept in `KNOWN_NAMES`.
const KNOWN_NAMES_MAX: usize = 16;

/// The name of database (`database`) or role `oid`: one kept earlier, else from the catalogs when
/// `lookup` and they can be read here (then kept), else `oid:N`.
fn name_of(oid: u32, database: bool, lookup: bool) -> String {
    let known = KNOWN_NAMES.with_borrow(|k| {
        k.iter()
            .find(|(o, d, _)| *o == oid && *d == database)
            .map(|(_, _, n)| n.clone())
    });
    if let Some(name) = known {
        return name;
    }
    let found = if lookup && unsafe { pg_sys::IsTransactionState() } {
        let raw = unsafe {
            if database {
                pg_sys::get_database_name(pg_sys::Oid::from(oid))
            } else {
                pg_sys::GetUserNameFromId(pg_sys::Oid::from(oid), true)
            }
        };
        (!raw.is_null()).then(|| ring::c_text(raw))
    } else {
        None
    };
    if let Some(name) = found {
        KNOWN_NAMES.with_borrow_mut(|k| {
            if k.len() >= KNOWN_NAMES_MAX {
                k.remove(0);
            }
            k.push((oid, database, name.clone()));
        });
        return name;
    }
    format!("oid:{oid}")
}

/// Learns the names of the connection's database and session user, once per backend, at a point
/// where the catalogs can be read (src/surface/hooks.rs, before a statement runs): a denial
/// observed inside error reporting then names them as every other record does.
pub fn learn_connection_names() {
    if LEARNED.replace(true) || !unsafe { pg_sys::IsTransactionState() } {
        return;
    }
    unsafe {
        name_of(u32::from(pg_sys::MyDatabaseId), true, true);
        name_of(u32::from(pg_sys::GetSessionUserId()), false, true);
    }
}

thread_local! {
    /// Whether `learn_connection_names` ran in this backend.
    static LEARNED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Names of the entry's database and roles. The catalogs are read only when `lookup` (not from
/// inside error reporting); names seen before in this backend, or the connection's own, are used
/// otherwise, so the log line, the ring and the audit row name the same database.
pub fn names_of(entry: &Entry, lookup: bool) -> Names {
    Names {
        database: name_of(entry.database, true, lookup),
        role: name_of(entry.role, false, lookup),
        acting_role: (entry.acting_role != 0).then(|| name_of(entry.acting_role, false, lookup)),
    }
}

#[cfg(test)]
mod tests {
    use super::timestamp_text;

    #[test]
    fn timestamps_print_as_utc() {
        for (at, text) in [
            (0, "2000-01-01T00:00:00.000000Z"),
            (-1, "1999-12-31T23:59:59.999999Z"),
            (848_707_200_000_000 + 1_500_000, "2026-11-23T00:00:01.500000Z"),
        ] {
            assert_eq!(timestamp_text(at), text);
        }
    }
}
