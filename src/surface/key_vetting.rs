//! What the administration functions of `sql/admin.sql` and `sql/api_keys.sql` call in Rust: key
//! vetting, and the refusal of a caller that may not manage a workspace's keys.

use crate::plumbing::errors::bad_parameter;
use crate::verify::{Algorithm, KeySet};
use pgrx::prelude::*;
use pgrx::JsonB;
use pgrx::PgTryBuilder;

/// Vets a JWKS under the key policy and returns its key ids; raises 22023 naming the bad key.
#[pg_extern(immutable, parallel_safe)]
fn _vet_jwks(jwks: JsonB, algorithms: Vec<String>) -> Vec<String> {
    let allowed = Algorithm::parse_list(&algorithms).unwrap_or_else(|e| bad_parameter(e));
    let document = jwks.0.to_string();
    match KeySet::parse(document.as_bytes(), &allowed) {
        Ok(keys) => keys.keys().iter().map(|k| k.kid.clone()).collect(),
        Err(e) => bad_parameter(format!("jwks refused: {e}")),
    }
}

/// Refuses the caller of an API-key function (not a manager of the workspace, or a key beyond the
/// manager's rights): records an `admin_refused` denial and raises 42501 with `message` and
/// `hint`. The denial is recorded here, by its origin, not recognised afterwards by its text: any
/// role can raise an error with the same words and SQLSTATE (`RAISE EXCEPTION`), and such an error
/// is not a denial. Only the extension's SECURITY DEFINER functions may call it (EXECUTE is revoked
/// from PUBLIC in sql/api_keys.sql).
#[pg_extern(volatile, parallel_restricted)]
fn _deny_admin(message: &str, hint: Option<&str>) {
    let denial = crate::verify::Denial::new(crate::verify::Reason::AdminRefused, message);
    crate::audit::record(&denial);
    crate::plumbing::errors::error(pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE)
        .message(message)
        .hint_if_any(hint)
        .raise()
}

/// Records that the key set of trusted issuer `issuer` changed through `via`: the key ids added,
/// removed and given new key material (`+k2,-k1,~k3`, in the record's `kid`, which alert delivery
/// reads), by the session user.
/// A critical record: whoever can add a key to a trusted issuer can sign a token for any user of
/// any workspace, so a stolen companion login adding its own key must not go unseen. Recorded when
/// called (the ring is not transactional): a change rolled back afterwards is still reported as
/// attempted. Only the extension's SECURITY DEFINER functions may call it.
#[pg_extern(volatile, parallel_restricted)]
fn _note_issuer_keys_changed(issuer: &str, added: Vec<String>, removed: Vec<String>, replaced: Vec<String>, via: &str) {
    let kids: Vec<String> = added
        .iter()
        .map(|k| format!("+{k}"))
        .chain(removed.iter().map(|k| format!("-{k}")))
        .chain(replaced.iter().map(|k| format!("~{k}")))
        .collect();
    let seen = crate::verify::SeenClaims {
        iss: Some(crate::verify::json::printable(issuer)),
        kid: Some(crate::verify::json::printable(&kids.join(","))),
        ..Default::default()
    };
    let detail = format!(
        "key set replaced through {via}: key ids added [{}], removed [{}], given new key material [{}]",
        added.join(", "),
        removed.join(", "),
        replaced.join(", ")
    );
    crate::audit::record(
        &crate::verify::Denial::new(crate::verify::Reason::IssuerKeysChanged, detail).with_seen(&seen),
    );
}

/// Whether `text` is one SQL expression and nothing else: `SELECT (<text>)` parses to a single
/// statement that selects one value from nothing. `tenancy.unprotect` restores a column default
/// remembered as text in the registry, which the table's owner can write; run as it was, a text
/// like `NULL; RESET ROLE; ALTER ROLE … SUPERUSER; SELECT NULL` made the owner a superuser
/// through a superuser's `unprotect`. Only parsed here, never run: a parse error is `false`.
#[pg_extern(immutable, strict, parallel_safe)]
fn _is_one_expression(text: &str) -> bool {
    let Ok(sql) = std::ffi::CString::new(format!("SELECT ({text})")) else {
        return false;
    };
    PgTryBuilder::new(|| unsafe { parses_to_one_value(&sql) })
        .catch_others(|_| false)
        .execute()
}

/// The check of `_is_one_expression` on the parser's raw tree.
///
/// # Safety
/// Calls the parser: inside a transaction, under a try block.
unsafe fn parses_to_one_value(sql: &std::ffi::CStr) -> bool {
    unsafe {
        let statements = pg_sys::raw_parser(sql.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
        let statements = pgrx::PgList::<pg_sys::RawStmt>::from_pg(statements);
        if statements.len() != 1 {
            return false;
        }
        let Some(raw) = statements.get_ptr(0) else { return false };
        let node = (*raw).stmt;
        if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_SelectStmt {
            return false;
        }
        let select = node.cast::<pg_sys::SelectStmt>();
        let s = &*select;
        pgrx::PgList::<pg_sys::ResTarget>::from_pg(s.targetList).len() == 1
            && s.op == pg_sys::SetOperation::SETOP_NONE
            && s.fromClause.is_null()
            && s.whereClause.is_null()
            && s.withClause.is_null()
            && s.intoClause.is_null()
            && s.groupClause.is_null()
            && s.havingClause.is_null()
            && s.windowClause.is_null()
            && s.valuesLists.is_null()
            && s.sortClause.is_null()
            && s.limitCount.is_null()
            && s.limitOffset.is_null()
            && s.lockingClause.is_null()
            && s.distinctClause.is_null()
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn the_real_workos_jwks_passes_the_key_policy() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/workos/real-jwks.json");
        let jwks = std::fs::read_to_string(path).expect("shared test data beside the repository");
        let kids = Spi::get_one::<Vec<String>>(&format!(
            "SELECT tenancy._vet_jwks({}::jsonb, '{{RS256}}')",
            pgrx::spi::quote_literal(&jwks)
        ))
        .unwrap()
        .unwrap();
        assert_eq!(kids, vec!["sso_oidc_key_pair_01JXWR786PFV2T6FAANMCKF8TT"]);
    }
}
