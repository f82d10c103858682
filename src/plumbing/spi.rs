//! Small helpers around PostgreSQL's server programming interface (SPI), shared by the lookups
//! that must see the latest state (`fresh.rs`) and by vector search: argument datums and flags,
//! and a result read back as text.

use pgrx::pg_sys;
use std::ffi::{CStr, CString};

/// Connects to SPI (an error when it cannot: SPI is usable in any transaction).
pub fn connect() {
    if unsafe { pg_sys::SPI_connect() } != pg_sys::SPI_OK_CONNECT as i32 {
        super::errors::internal("connecting to SPI failed");
    }
}

/// Ends the SPI connection `connect` opened.
pub fn finish() {
    unsafe { pg_sys::SPI_finish() };
}

/// SPI's null flag for an argument: ' ' present, 'n' NULL.
pub fn null_flag(present: bool) -> std::ffi::c_char {
    (if present { b' ' } else { b'n' }) as std::ffi::c_char
}

/// A text datum of `value` (palloc'd in the current memory context); a value with a NUL byte,
/// which no text can hold, becomes the empty text.
pub fn text_datum(value: &str) -> pg_sys::Datum {
    let c = CString::new(value).unwrap_or_default();
    pg_sys::Datum::from(unsafe { pg_sys::cstring_to_text(c.as_ptr()) })
}

/// Every row of the last SPI result, each column as PostgreSQL prints it (None for NULL).
///
/// # Safety
/// Call after a successful SPI execution, before `SPI_finish`.
pub unsafe fn result_as_text() -> Vec<Vec<Option<String>>> {
    unsafe {
        let table = &*pg_sys::SPI_tuptable;
        let columns = (*table.tupdesc).natts;
        (0..pg_sys::SPI_processed as usize)
            .map(|r| {
                let tuple = *table.vals.add(r);
                (1..=columns)
                    .map(|c| {
                        let text = pg_sys::SPI_getvalue(tuple, table.tupdesc, c);
                        (!text.is_null()).then(|| CStr::from_ptr(text).to_string_lossy().into_owned())
                    })
                    .collect()
            })
            .collect()
    }
}

/// The first column of the first row of the last SPI result, and whether it is NULL.
///
/// # Safety
/// Call after a successful SPI execution that returned at least one row, before `SPI_finish`.
pub unsafe fn first_value() -> (pg_sys::Datum, bool) {
    unsafe {
        let table = pg_sys::SPI_tuptable;
        let mut isnull = false;
        let value = pg_sys::SPI_getbinval(*(*table).vals, (*table).tupdesc, 1, &mut isnull);
        (value, isnull)
    }
}

/// `sql` run read-only with `args` (type, value or NULL) inside an open SPI connection; every
/// row's columns as text. `what` names the query in the error when it fails.
///
/// # Safety
/// Call between `connect` and `finish`, with datums valid for their types.
pub unsafe fn texts(sql: &str, args: &[(pg_sys::Oid, Option<pg_sys::Datum>)], what: &str) -> Vec<Vec<Option<String>>> {
    let text = CString::new(sql).expect("no NUL in SQL");
    let mut types: Vec<pg_sys::Oid> = args.iter().map(|a| a.0).collect();
    let mut values: Vec<pg_sys::Datum> = args.iter().map(|a| a.1.unwrap_or(pg_sys::Datum::from(0))).collect();
    let nulls: Vec<std::ffi::c_char> = args.iter().map(|a| null_flag(a.1.is_some())).collect();
    unsafe {
        let status = pg_sys::SPI_execute_with_args(
            text.as_ptr(),
            args.len() as i32,
            types.as_mut_ptr(),
            values.as_mut_ptr(),
            nulls.as_ptr(),
            true,
            0,
        );
        if status != pg_sys::SPI_OK_SELECT as i32 {
            super::errors::internal(format!("{what} failed (SPI result {status})"));
        }
        result_as_text()
    }
}
