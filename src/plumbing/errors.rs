//! Raising errors: one SQLSTATE, a lowercase message, and a detail and hint where they help.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Raises an ERROR and does not return.
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>, detail: Option<String>, hint: Option<&str>) -> ! {
    let mut report = ErrorReport::new(code, message.into(), "pg_tenancy");
    if let Some(detail) = detail {
        report = report.set_detail(detail);
    }
    if let Some(hint) = hint {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// Raises 22023 (invalid_parameter_value).
pub fn bad_parameter(message: impl Into<String>) -> ! {
    raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message, None, None)
}

/// Makes pgrx attach no Rust backtrace to the errors raised through this library, whatever the
/// server's environment says. pgrx's panic hook captures `std::backtrace::Backtrace::capture()`
/// into the DETAIL of every PostgreSQL error that crosses Rust code, which with `RUST_BACKTRACE`
/// set (a DBA debugging another pgrx extension) sent dozens of lines of file paths to the client
/// with pg_tenancy's own errors. The standard library decides once per copy of itself whether to
/// capture, from `RUST_LIB_BACKTRACE` before `RUST_BACKTRACE`; this library carries its own copy,
/// so that decision is taken here with `RUST_LIB_BACKTRACE=0` and the environment is put back
/// as it was: other Rust libraries in the same server decide for themselves. Called first in
/// `_PG_init`, while the process is single-threaded.
pub fn never_attach_backtraces() {
    let previous = std::env::var_os("RUST_LIB_BACKTRACE");
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    let _ = std::backtrace::Backtrace::capture();
    match previous {
        Some(value) => std::env::set_var("RUST_LIB_BACKTRACE", value),
        None => std::env::remove_var("RUST_LIB_BACKTRACE"),
    }
}
