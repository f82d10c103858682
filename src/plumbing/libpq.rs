//! A client connection to another PostgreSQL server through libpq, for the one place that needs
//! one: a hot standby's audit writer hands its denials to the primary (`src/audit/standby.rs`),
//! since a standby cannot write. libpq is linked as dblink and postgres_fdw link it; only the
//! handful of calls below are used, each blocking, with the connection's own `connect_timeout`
//! and a `statement_timeout` bounding how long the worker can wait.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

#[link(name = "pq")]
extern "C" {
    fn PQconnectdb(conninfo: *const c_char) -> *mut c_void;
    fn PQstatus(conn: *const c_void) -> c_int;
    fn PQerrorMessage(conn: *const c_void) -> *const c_char;
    fn PQfinish(conn: *mut c_void);
    fn PQexecParams(
        conn: *mut c_void,
        command: *const c_char,
        n_params: c_int,
        param_types: *const u32,
        param_values: *const *const c_char,
        param_lengths: *const c_int,
        param_formats: *const c_int,
        result_format: c_int,
    ) -> *mut c_void;
    fn PQresultStatus(res: *const c_void) -> c_int;
    fn PQresultErrorMessage(res: *const c_void) -> *const c_char;
    fn PQresultErrorField(res: *const c_void, field: c_int) -> *const c_char;
    fn PQntuples(res: *const c_void) -> c_int;
    fn PQgetisnull(res: *const c_void, row: c_int, column: c_int) -> c_int;
    fn PQgetvalue(res: *const c_void, row: c_int, column: c_int) -> *const c_char;
    fn PQclear(res: *mut c_void);
}

/// `CONNECTION_OK` of libpq's `ConnStatusType`.
const CONNECTION_OK: c_int = 0;
/// `PGRES_COMMAND_OK` and `PGRES_TUPLES_OK` of libpq's `ExecStatusType`.
const PGRES_COMMAND_OK: c_int = 1;
const PGRES_TUPLES_OK: c_int = 2;
/// `PG_DIAG_SQLSTATE` of postgres_ext.h.
const PG_DIAG_SQLSTATE: c_int = b'C' as c_int;

/// An open connection; closed when dropped.
pub struct Connection(*mut c_void);

/// A failed connection attempt or statement: libpq's message, and the SQLSTATE when the server
/// sent one.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub sqlstate: Option<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.sqlstate {
            Some(code) => write!(f, "{} ({code})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A C string of libpq's, trimmed.
fn text_of(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    unsafe { CStr::from_ptr(p) }.to_string_lossy().trim().to_string()
}

impl Connection {
    /// Connects with a libpq connection string (keywords given later override earlier ones).
    pub fn open(conninfo: &str) -> Result<Connection, Failure> {
        let c = CString::new(conninfo).map_err(|_| Failure {
            message: "the connection string contains a NUL byte".into(),
            sqlstate: None,
        })?;
        let conn = unsafe { PQconnectdb(c.as_ptr()) };
        if conn.is_null() {
            return Err(Failure {
                message: "libpq could not allocate a connection".into(),
                sqlstate: None,
            });
        }
        let connection = Connection(conn);
        if unsafe { PQstatus(conn) } != CONNECTION_OK {
            return Err(Failure {
                message: text_of(unsafe { PQerrorMessage(conn) }),
                sqlstate: None,
            });
        }
        Ok(connection)
    }

    /// Whether the connection is still usable.
    pub fn is_ok(&self) -> bool {
        unsafe { PQstatus(self.0) == CONNECTION_OK }
    }

    /// Runs `sql` with text parameters; returns the first column of the first row, if any.
    pub fn query(&mut self, sql: &str, params: &[&str]) -> Result<Option<String>, Failure> {
        let command = CString::new(sql).map_err(|_| Failure {
            message: "the statement contains a NUL byte".into(),
            sqlstate: None,
        })?;
        let values: Vec<CString> = params
            .iter()
            .map(|p| CString::new(*p))
            .collect::<Result<_, _>>()
            .map_err(|_| Failure {
                message: "a parameter contains a NUL byte".into(),
                sqlstate: None,
            })?;
        let pointers: Vec<*const c_char> = values.iter().map(|v| v.as_ptr()).collect();
        unsafe {
            let res = PQexecParams(
                self.0,
                command.as_ptr(),
                pointers.len() as c_int,
                std::ptr::null(),
                pointers.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                0,
            );
            if res.is_null() {
                return Err(Failure {
                    message: text_of(PQerrorMessage(self.0)),
                    sqlstate: None,
                });
            }
            let status = PQresultStatus(res);
            let outcome = if status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK {
                Ok(
                    (status == PGRES_TUPLES_OK && PQntuples(res) > 0 && PQgetisnull(res, 0, 0) == 0)
                        .then(|| text_of(PQgetvalue(res, 0, 0))),
                )
            } else {
                let code = text_of(PQresultErrorField(res, PG_DIAG_SQLSTATE));
                Err(Failure {
                    message: text_of(PQresultErrorMessage(res)),
                    sqlstate: (!code.is_empty()).then_some(code),
                })
            };
            PQclear(res);
            outcome
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        unsafe { PQfinish(self.0) };
    }
}

/// `value` quoted for a libpq connection string (single quotes, `\` and `'` escaped).
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn values_are_quoted_for_a_connection_string() {
        for (value, quoted) in [
            ("postgres", "'postgres'"),
            ("it's", "'it\\'s'"),
            ("a\\b", "'a\\\\b'"),
            ("", "''"),
        ] {
            assert_eq!(quote(value), quoted);
        }
    }
}
