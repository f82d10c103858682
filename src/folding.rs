//! The caller's identity folded into plans as constants.
//!
//! Policies read `workspace_id = tenancy.workspace_id()`. While PostgreSQL plans a statement, the
//! support function below replaces each identity call with its value as a constant, so a
//! protected query is planned and run like the same query with a literal `WHERE workspace_id =
//! '…'`: the workspace index is used with the real statistics of that workspace, nothing is
//! evaluated per row, and there is no initPlan to start per statement. Measured on a point
//! select (plan cached, server side): the `(SELECT tenancy.workspace_id())` initPlan cost 1.2 µs
//! over the literal query's 5.0 µs, a plain call in the policy 0.6 µs, the folded constant
//! nothing (docs/benchmarks.md).
//!
//! A plan that holds an identity is valid for that identity only. Three things keep it so:
//! - Each plan that folded records a dependency on the support function. When the identity can
//!   have changed (a credential setting changed, including its rollback at transaction end, or an
//!   identity table changed in any backend), `identity_changed` sends a backend-local invalidation
//!   of that dependency: PostgreSQL replans every cached statement that folded (prepared
//!   statements, PL/pgSQL) before its next use. Statements that never folded keep their plans.
//! - Each such plan also carries the fold version it was made in; `ExecutorStart` refuses to run
//!   one of an older version (a plan that escaped invalidation must fail, not serve another
//!   identity's rows).
//! - `ExecutorStart` checks the identity once per statement, as the call itself would have: an
//!   expired token or a refused session token fails a cached plan too.
//!
//! Folding happens only in the planner proper (`root->parse` set); elsewhere (a domain check, a
//! `COPY` default) the functions run as plain calls.

use crate::identity;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{Internal, PgList};
use std::cell::Cell;
use std::ffi::{c_int, CStr};
use std::ptr;

/// `PlanInvalItem.cacheId` of the item that carries a plan's fold version. No syscache has a
/// negative id, so PostgreSQL never matches it against an invalidation.
const VERSION_TAG: c_int = -0x746e_63;

thread_local! {
    /// Bumped each time plans that folded are invalidated.
    static VERSION: Cell<u32> = const { Cell::new(1) };
    /// Whether a plan folded since the last invalidation (none to invalidate otherwise).
    static FOLDED: Cell<bool> = const { Cell::new(false) };
    /// Syscache hash of the support function's OID: the dependency folded plans record.
    static MARKER: Cell<u32> = const { Cell::new(0) };
}

static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;

/// Installs the `ExecutorStart` check, chained to the hook installed before it.
pub fn init() {
    unsafe {
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
    }
}

/// Invalidates every cached plan that folded an identity. Called when the identity may have
/// changed; costs nothing when no plan folded since the last call. Only flips flags, so it is safe
/// in a GUC assign hook and in an invalidation callback.
pub fn identity_changed() {
    if !FOLDED.replace(false) {
        return;
    }
    VERSION.set(VERSION.get().wrapping_add(1));
    unsafe { pg_sys::CallSyscacheCallbacks(pg_sys::SysCacheIdentifier::PROCOID as c_int, MARKER.get()) };
}

/// Tests only: moves to the next fold version without invalidating plans, as a missed
/// invalidation would.
#[cfg(any(test, feature = "pg_test"))]
pub fn skip_invalidation() {
    VERSION.set(VERSION.get().wrapping_add(1));
}

/// Planner support function of `tenancy.workspace_id()`, `user_id()` and `has_permission(text)`,
/// answering `SupportRequestSimplify`. When the credential outlives the transaction (a startup
/// option or a session-level `SET`), the call becomes its value as a constant. When it does not
/// (`SET LOCAL` per transaction behind a pooler), the call becomes `(SELECT call)`, an initPlan
/// evaluated once per statement: a cached plan then serves every identity, where a constant
/// would be replanned at every identity switch (measured: 0.72× instead of 0.84× on pooled point
/// selects). Raises the usual SQLSTATE 28000 when a constant is asked for and there is no valid
/// identity: the statement fails while it is planned.
#[pg_extern(immutable, parallel_safe)]
pub fn _identity_support(request: Internal) -> Internal {
    let Some(node) = request.unwrap().map(|d| d.cast_mut_ptr::<pg_sys::Node>()) else {
        return keep_call();
    };
    unsafe {
        if (*node).type_ != pg_sys::NodeTag::T_SupportRequestSimplify {
            return keep_call();
        }
        let simplify = node.cast::<pg_sys::SupportRequestSimplify>();
        let (root, call) = ((*simplify).root, (*simplify).fcall);
        if root.is_null() || (*root).glob.is_null() || (*root).parse.is_null() || call.is_null() {
            return keep_call();
        }
        if is_once_per_statement_query((*root).parse, (*call).funcid) {
            return keep_call();
        }
        let replacement = if crate::credentials::outlives_transaction() {
            match fold(call) {
                Some(constant) => {
                    record_fold(root, (*call).funcid);
                    constant.cast::<pg_sys::Node>()
                }
                None => return keep_call(),
            }
        } else {
            once_per_statement(root, call)
        };
        Internal::from(Some(pg_sys::Datum::from(replacement)))
    }
}

/// The answer "no simplification": a null pointer, which must not be an SQL NULL (PostgreSQL
/// calls support functions with `OidFunctionCall1`, which refuses NULL results).
fn keep_call() -> Internal {
    Internal::from(Some(pg_sys::Datum::from(0_usize)))
}

/// Name of the output column of the subquery `once_per_statement` builds, by which the support
/// function recognises that subquery and leaves the call in it alone.
const ONCE_PER_STATEMENT: &CStr = c"tenancy_identity";

/// `(SELECT call)`: a scalar subquery without references to the outer query, which the planner
/// turns into an initPlan, run once per execution. The query is built as the parser would have.
unsafe fn once_per_statement(root: *mut pg_sys::PlannerInfo, call: *mut pg_sys::FuncExpr) -> *mut pg_sys::Node {
    unsafe {
        let target = pg_sys::makeTargetEntry(
            pg_sys::copyObjectImpl(call.cast()).cast(),
            1,
            pg_sys::pstrdup(ONCE_PER_STATEMENT.as_ptr()),
            false,
        );
        let query = pg_sys::palloc0(size_of::<pg_sys::Query>()).cast::<pg_sys::Query>();
        (*query).type_ = pg_sys::NodeTag::T_Query;
        (*query).commandType = pg_sys::CmdType::CMD_SELECT;
        (*query).querySource = pg_sys::QuerySource::QSRC_ORIGINAL;
        (*query).canSetTag = true;
        (*query).jointree = pg_sys::makeFromExpr(ptr::null_mut(), ptr::null_mut());
        (*query).targetList = pg_sys::lappend(ptr::null_mut(), target.cast());
        (*query).stmt_location = -1;
        let sublink = pg_sys::palloc0(size_of::<pg_sys::SubLink>()).cast::<pg_sys::SubLink>();
        (*sublink).xpr.type_ = pg_sys::NodeTag::T_SubLink;
        (*sublink).subLinkType = pg_sys::SubLinkType::EXPR_SUBLINK;
        (*sublink).subselect = query.cast();
        (*sublink).location = -1;
        // The planner expands sublinks only in queries flagged as having some.
        (*(*root).parse).hasSubLinks = true;
        sublink.cast()
    }
}

/// Whether `query` is a subquery built by `once_per_statement` around a call of `function`: one
/// output column of that name whose expression calls it. (The planner adds an RTE for the empty
/// FROM clause, so the range table is not looked at.)
unsafe fn is_once_per_statement_query(query: *mut pg_sys::Query, function: pg_sys::Oid) -> bool {
    unsafe {
        let targets = PgList::<pg_sys::TargetEntry>::from_pg((*query).targetList);
        let Some(target) = targets.get_ptr(0) else {
            return false;
        };
        let expr = (*target).expr.cast::<pg_sys::Node>();
        targets.len() == 1
            && !(*target).resname.is_null()
            && CStr::from_ptr((*target).resname) == ONCE_PER_STATEMENT
            && !expr.is_null()
            && (*expr).type_ == pg_sys::NodeTag::T_FuncExpr
            && (*expr.cast::<pg_sys::FuncExpr>()).funcid == function
    }
}

/// The constant that replaces `call`, or `None` to keep the call.
unsafe fn fold(call: *mut pg_sys::FuncExpr) -> Option<*mut pg_sys::Const> {
    let name = unsafe { pg_sys::get_func_name((*call).funcid) };
    if name.is_null() {
        return None;
    }
    let text = |value: String| unsafe {
        pg_sys::makeConst(
            pg_sys::TEXTOID,
            -1,
            (*call).funccollid,
            -1,
            value.into_datum().expect("text datum"),
            false,
            false,
        )
    };
    match unsafe { CStr::from_ptr(name) }.to_bytes() {
        b"workspace_id" => Some(text(crate::functions::workspace_of(&identity::require()))),
        b"user_id" => Some(text(identity::require().user_id.clone())),
        b"has_permission" => {
            let permission = unsafe { constant_text_argument(call) }?;
            let granted = identity::require().permissions.iter().any(|p| *p == permission);
            Some(unsafe { pg_sys::makeConst(pg_sys::BOOLOID, -1, pg_sys::InvalidOid, 1, granted.into(), false, true) })
        }
        _ => None,
    }
}

/// The only argument of `call` when it is a non-null text constant.
unsafe fn constant_text_argument(call: *mut pg_sys::FuncExpr) -> Option<String> {
    let args = unsafe { PgList::<pg_sys::Node>::from_pg((*call).args) };
    let arg = args.get_ptr(0)?;
    unsafe {
        if args.len() != 1 || (*arg).type_ != pg_sys::NodeTag::T_Const {
            return None;
        }
        let constant = arg.cast::<pg_sys::Const>();
        if (*constant).constisnull || (*constant).consttype != pg_sys::TEXTOID {
            return None;
        }
        String::from_datum((*constant).constvalue, false)
    }
}

/// Records in the plan being built that it folded: a dependency on the support function (what
/// `identity_changed` invalidates) and the current fold version.
unsafe fn record_fold(root: *mut pg_sys::PlannerInfo, function: pg_sys::Oid) {
    unsafe {
        let support = pg_sys::get_func_support(function);
        pg_sys::record_plan_function_dependency(root, support);
        let hash = pg_sys::GetSysCacheHashValue(
            pg_sys::SysCacheIdentifier::PROCOID as c_int,
            pg_sys::Datum::from(support),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
        );
        MARKER.set(hash);
        let tag = pg_sys::palloc0(size_of::<pg_sys::PlanInvalItem>()).cast::<pg_sys::PlanInvalItem>();
        (*tag).type_ = pg_sys::NodeTag::T_PlanInvalItem;
        (*tag).cacheId = VERSION_TAG;
        (*tag).hashValue = VERSION.get();
        let glob = (*root).glob;
        (*glob).invalItems = pg_sys::lappend((*glob).invalItems, tag.cast());
    }
    FOLDED.set(true);
}

/// The fold version a plan was made in, when it folded an identity.
unsafe fn fold_version(stmt: *mut pg_sys::PlannedStmt) -> Option<u32> {
    let items = unsafe { PgList::<pg_sys::PlanInvalItem>::from_pg((*stmt).invalItems) };
    let version = items
        .iter_ptr()
        .find(|item| unsafe { (**item).cacheId } == VERSION_TAG)
        .map(|item| unsafe { (*item).hashValue });
    version
}

/// `ExecutorStart`: a plan that folded an identity runs only in the fold version it was made in
/// and while the identity is still valid.
#[pg_guard]
unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: c_int) {
    unsafe {
        if let Some(version) = fold_version((*query_desc).plannedstmt) {
            if version != VERSION.get() {
                crate::errors::raise(
                    PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                    "statement was planned for another identity",
                    None,
                    Some("Run the statement again."),
                );
            }
            identity::require();
        }
        match PREV_EXECUTOR_START {
            Some(prev) => prev(query_desc, eflags),
            None => pg_sys::standard_ExecutorStart(query_desc, eflags),
        }
    }
}
