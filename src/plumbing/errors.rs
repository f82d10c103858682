//! Raising errors: one SQLSTATE, a lowercase message, and a detail and hint where they help.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// An error being built: `error(code).message(…).detail(…).hint(…).raise()`.
#[must_use = "an error does nothing until it is raised"]
pub struct Error {
    code: PgSqlErrorCode,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
}

/// Starts an error with SQLSTATE `code`.
pub fn error(code: PgSqlErrorCode) -> Error {
    Error {
        code,
        message: String::new(),
        detail: None,
        hint: None,
    }
}

impl Error {
    /// The primary message: lowercase, naming the cause, no final period.
    pub fn message(mut self, message: impl Into<String>) -> Error {
        self.message = message.into();
        self
    }

    /// A detail: what was seen, in a sentence.
    pub fn detail(mut self, detail: impl Into<String>) -> Error {
        self.detail = Some(detail.into());
        self
    }

    /// A hint: what to do about it, in a sentence.
    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    /// A hint when there is one (a denial's reason has a hint or not).
    pub fn hint_if_any(mut self, hint: Option<impl Into<String>>) -> Error {
        self.hint = hint.map(Into::into);
        self
    }

    /// Raises the error at level ERROR; does not return.
    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.code, self.message, "pg_tenancy");
        if let Some(detail) = self.detail {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint {
            report = report.set_hint(hint);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    }
}

/// Raises 22023 (invalid_parameter_value) with `message`.
pub fn bad_parameter(message: impl Into<String>) -> ! {
    error(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE)
        .message(message)
        .raise()
}

/// Raises XX000 (internal_error) for a step of the extension's own machinery that failed where
/// it cannot, phrased one way everywhere: "pg_tenancy: <what failed>".
pub fn internal(what: impl std::fmt::Display) -> ! {
    error(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR)
        .message(format!("pg_tenancy: {what}"))
        .raise()
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
