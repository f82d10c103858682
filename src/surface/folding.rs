//! The caller's identity folded into plans as constants.
//!
//! Policies read `workspace_id = tenancy.workspace_id()`. While PostgreSQL plans a statement, the
//! support function below replaces each identity call with its value as a constant, so a
//! protected query is planned and run like the same query with a literal `WHERE workspace_id =
//! '…'`: the workspace index is used with the real statistics of that workspace, nothing is
//! evaluated per row, and there is no initPlan to start per statement. Measured in the server on
//! a cached point select of 4.95 µs with a literal (`scripts/bench-rls`, docs/benchmarks.md): the
//! `(SELECT tenancy.workspace_id())` initPlan adds 0.99 µs, `current_setting()` in the policy
//! 0.43 µs, the folded constant 0.12 µs (the per-statement check below).
//!
//! A plan that holds an identity is valid for that identity only. Three things keep it so:
//! - Each plan that folded records a dependency on the support function. When the identity can
//!   have changed (a credential setting changed, including its rollback at transaction end, or an
//!   identity table changed in any backend), `identity_changed` sends a backend-local invalidation
//!   of that dependency: PostgreSQL replans every cached statement that folded (prepared
//!   statements, PL/pgSQL) before its next use. Statements that never folded keep their plans.
//! - `ExecutorStart` checks the identity once per statement, as the call itself would have, after
//!   the hook has taken in pending invalidations for every statement (src/surface/hooks.rs: a
//!   cached plan in an open transaction takes no new lock that would), so an expired token, a
//!   refused session token, a disabled member or a revoked session fails a cached plan from the
//!   next statement too.
//! - Each such plan also carries a fingerprint of the values it folded; `ExecutorStart` refuses
//!   to run it for an identity with other values (a plan that escaped invalidation must fail, not
//!   serve another identity's rows).
//!
//! Folding happens only in the planner proper (`root->parse` set); elsewhere (a domain check, a
//! `COPY` default) the functions run as plain calls.

use crate::identity::{self, Identity};
use crate::plumbing::errors::error;
use crate::plumbing::plan_tags;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{Internal, PgList};
use std::cell::{Cell, RefCell};
use std::collections::hash_map::DefaultHasher;
use std::ffi::{c_int, CStr};
use std::hash::{Hash, Hasher};
use std::ptr;
use std::rc::Rc;

/// `PlanInvalItem.cacheId` of the two items that carry the high and low halves of the
/// fingerprint of the identity a plan folded. No syscache has a negative id, so PostgreSQL never
/// matches them against an invalidation.
const FINGERPRINT_TAGS: [c_int; 2] = [-0x0074_6e63, -0x0074_6e64];

thread_local! {
    /// The identity whose fingerprint was computed last, and that fingerprint (the `Rc` is held
    /// so that its address cannot be reused by another identity).
    static LAST_FINGERPRINT: RefCell<Option<(Rc<Identity>, u64)>> = const { RefCell::new(None) };
    /// Tests only: skip the next invalidation, as a missed one would.
    static SKIP_NEXT_INVALIDATION: Cell<bool> = const { Cell::new(false) };
    /// Whether this backend ever folded an identity into a plan (none to invalidate otherwise).
    /// Never reset: an invalidation taken in while a plan is being built must not make the next
    /// identity change skip that plan.
    static EVER_FOLDED: Cell<bool> = const { Cell::new(false) };
    /// Syscache hash of the support function's OID: the dependency folded plans record.
    static MARKER: Cell<u32> = const { Cell::new(0) };
    /// What the planning in progress folded: the support function's syscache hash and the
    /// identity's fingerprint (see `carry_into`).
    static FOLDED_IN_PLANNING: Cell<Option<(u32, u64)>> = const { Cell::new(None) };
}

/// At the planner hook's entry: starts recording what this planning folds; returns what an
/// enclosing planning had recorded so far (an identity lookup plans its own queries).
pub fn begin_planning() -> Option<(u32, u64)> {
    FOLDED_IN_PLANNING.take()
}

/// At the planner hook's exit: makes sure the finished plan carries what this planning folded
/// (the support function's dependency and the identity's fingerprint), then restores the
/// enclosing planning's record. A planner that builds its own `PlannedStmt` from the plan
/// PostgreSQL made drops those items: Citus's distributed plans did, so a prepared statement
/// kept the identity it was planned for (the adversarial pass: executed with another token or
/// none, it returned the previous caller's `tenancy.workspace_id()` and routed to the previous
/// caller's shard), where plain PostgreSQL plans are invalidated and checked.
///
/// # Safety
/// `stmt` must be the planner's result, in the current memory context's lifetime.
pub unsafe fn carry_into(stmt: *mut pg_sys::PlannedStmt, outer: Option<(u32, u64)>) {
    let folded = FOLDED_IN_PLANNING.replace(outer);
    let Some((hash, fingerprint)) = folded else {
        return;
    };
    unsafe {
        if stmt.is_null() {
            return;
        }
        let items = (*stmt).invalItems;
        let has_dependency = plan_tags::cells(items).any(|item| {
            let item = item.cast::<pg_sys::PlanInvalItem>();
            (*item).cacheId == pg_sys::SysCacheIdentifier::PROCOID as c_int && (*item).hashValue == hash
        });
        if !has_dependency {
            let item = pg_sys::palloc0(size_of::<pg_sys::PlanInvalItem>()).cast::<pg_sys::PlanInvalItem>();
            (*item).type_ = pg_sys::NodeTag::T_PlanInvalItem;
            (*item).cacheId = pg_sys::SysCacheIdentifier::PROCOID as c_int;
            (*item).hashValue = hash;
            (*stmt).invalItems = pg_sys::lappend((*stmt).invalItems, item.cast());
        }
        if folded_fingerprint((*stmt).invalItems).is_none() {
            for (tag, half) in FINGERPRINT_TAGS
                .into_iter()
                .zip([(fingerprint >> 32) as u32, fingerprint as u32])
            {
                (*stmt).invalItems = plan_tags::append((*stmt).invalItems, tag, half);
            }
        }
    }
}

/// Forgets a planning's record that an error interrupted (transaction or subtransaction abort).
pub fn forget_planning() {
    FOLDED_IN_PLANNING.set(None);
}

/// Invalidates every cached plan that folded an identity. Called when the identity may have
/// changed; costs nothing in a backend that never folded (a pooled one, whose identities are SET
/// LOCAL). Only flips flags, so it is safe in a GUC assign hook and in an invalidation callback.
pub fn identity_changed() {
    if !EVER_FOLDED.get() || SKIP_NEXT_INVALIDATION.replace(false) {
        return;
    }
    unsafe { pg_sys::CallSyscacheCallbacks(pg_sys::SysCacheIdentifier::PROCOID as c_int, MARKER.get()) };
}

/// Tests only: the next identity change leaves folded plans valid, as a missed invalidation would.
#[cfg(any(test, feature = "pg_test"))]
pub fn skip_next_invalidation() {
    SKIP_NEXT_INVALIDATION.set(true);
}

/// Planner support function of `tenancy.workspace_id()`, `user_id()` and `has_permission(text)`,
/// answering `SupportRequestSimplify`. When the credential outlives the transaction (a startup
/// option or a session-level `SET`), or Citus is loaded (`under_citus`), the call becomes its
/// value as a constant. When it does not
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
        if !reads_rows((*root).parse) {
            return keep_call();
        }
        let Some(asked) = what_is_asked(call) else {
            return keep_call();
        };
        let replacement = if crate::state::credentials::outlives_transaction() || under_citus() {
            let identity = identity::require();
            let constant = asked.constant(call, &identity);
            record_fold(root, (*call).funcid, fingerprint(&identity));
            constant.cast::<pg_sys::Node>()
        } else {
            once_per_statement(root, call)
        };
        Internal::from(Some(pg_sys::Datum::from(replacement)))
    }
}

/// Whether Citus is loaded (its settings exist): a per-transaction identity is then folded as a
/// constant too, so that Citus's planner can prune a protected query to the workspace's shard
/// (with the `(SELECT …)` initPlan it asked all 32 shards: `Task Count: 32`; row-level security
/// predicates alone prune nothing, citusdata/citus#7415). The price is the one measured without
/// Citus for pooled switches of identity: the statements that folded are planned again at each
/// switch (0.72× instead of 0.84× on pooled point selects), where Citus plans its router
/// queries anyway. The shards' own policies check the identity again on the workers.
fn under_citus() -> bool {
    crate::plumbing::citus::loaded()
}

/// The answer "no simplification": a null pointer, which must not be an SQL NULL (PostgreSQL
/// calls support functions with `OidFunctionCall1`, which refuses NULL results).
fn keep_call() -> Internal {
    Internal::from(Some(pg_sys::Datum::from(0_usize)))
}

/// Name of the output column of the subquery `once_per_statement` builds.
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

/// Whether `query` reads a table, a view, a subquery, a function or VALUES: something that can
/// produce many rows, over which a plain call could run once per row. A query that does not
/// (`SELECT call`) evaluates the call once anyway, so the call is left as it is: such queries
/// include PL/pgSQL's simple expressions, which never pass through `ExecutorStart` (a folded
/// identity there would escape its per-statement check) and must not gain a subplan, and the
/// subquery `once_per_statement` builds.
unsafe fn reads_rows(query: *mut pg_sys::Query) -> bool {
    let entries = unsafe { PgList::<pg_sys::RangeTblEntry>::from_pg((*query).rtable) };
    let reads = entries
        .iter_ptr()
        .any(|entry| unsafe { (*entry).rtekind } != pg_sys::RTEKind::RTE_RESULT);
    reads
}

/// What an identity call asks for.
enum Asked {
    Workspace,
    User,
    Permission(String),
}

/// What `call` asks for, or `None` when it cannot be answered once per statement (an unknown
/// function, or `has_permission` of anything but a constant, which may differ from row to row).
unsafe fn what_is_asked(call: *mut pg_sys::FuncExpr) -> Option<Asked> {
    let name = unsafe { pg_sys::get_func_name((*call).funcid) };
    if name.is_null() {
        return None;
    }
    match unsafe { CStr::from_ptr(name) }.to_bytes() {
        b"workspace_id" => Some(Asked::Workspace),
        b"user_id" => Some(Asked::User),
        b"has_permission" => unsafe { constant_text_argument(call) }.map(Asked::Permission),
        _ => None,
    }
}

impl Asked {
    /// The answer for `identity` as a constant of `call`'s result type and collation.
    unsafe fn constant(&self, call: *mut pg_sys::FuncExpr, identity: &Identity) -> *mut pg_sys::Const {
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
        match self {
            Asked::Workspace => text(crate::identity::workspace_of(identity)),
            Asked::User => text(identity.user_id.clone()),
            Asked::Permission(permission) => {
                let granted = identity.permissions.contains(permission);
                unsafe { pg_sys::makeConst(pg_sys::BOOLOID, -1, pg_sys::InvalidOid, 1, granted.into(), false, true) }
            }
        }
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

/// What folding can read from an identity (workspace, user, permissions), hashed. Cached for the
/// last identity: `ExecutorStart` asks for it on every statement that runs a folded plan.
fn fingerprint(identity: &Rc<Identity>) -> u64 {
    if let Some(known) =
        LAST_FINGERPRINT.with_borrow(|last| last.as_ref().filter(|(i, _)| Rc::ptr_eq(i, identity)).map(|(_, f)| *f))
    {
        return known;
    }
    let mut hasher = DefaultHasher::new();
    (&identity.workspace_id, &identity.user_id, &identity.permissions).hash(&mut hasher);
    let computed = hasher.finish();
    LAST_FINGERPRINT.with_borrow_mut(|last| *last = Some((Rc::clone(identity), computed)));
    computed
}

/// Records in the plan being built that it folded: a dependency on the support function (what
/// `identity_changed` invalidates) and, once per plan, the fingerprint of the identity.
unsafe fn record_fold(root: *mut pg_sys::PlannerInfo, function: pg_sys::Oid, fingerprint: u64) {
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
        FOLDED_IN_PLANNING.set(Some((hash, fingerprint)));
        let glob = (*root).glob;
        if folded_fingerprint((*glob).invalItems).is_none() {
            for (tag, half) in FINGERPRINT_TAGS
                .into_iter()
                .zip([(fingerprint >> 32) as u32, fingerprint as u32])
            {
                (*glob).invalItems = plan_tags::append((*glob).invalItems, tag, half);
            }
        }
    }
    EVER_FOLDED.set(true);
}

/// The fingerprint a plan's dependency list carries, when the plan folded an identity. Reads the
/// list in place: this runs for every statement executed.
unsafe fn folded_fingerprint(items: *mut pg_sys::List) -> Option<u64> {
    let half =
        |tag: c_int| unsafe { plan_tags::read(items) }.find_map(|(t, value)| (t == tag).then_some(u64::from(value)));
    Some((half(FINGERPRINT_TAGS[0])? << 32) | half(FINGERPRINT_TAGS[1])?)
}

/// The check `ExecutorStart` runs (src/surface/hooks.rs): a plan that folded an identity runs only while
/// that identity is valid, and only for it.
///
/// # Safety
/// `query_desc` must be the query about to start.
pub(crate) unsafe fn check_plan(query_desc: *mut pg_sys::QueryDesc) {
    unsafe {
        if let Some(folded) = folded_fingerprint((*(*query_desc).plannedstmt).invalItems) {
            if fingerprint(&identity::require()) != folded {
                error(PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION)
                    .message("statement was planned for another identity")
                    .hint("Run the statement again.")
                    .raise();
            }
        }
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{register_test_members, sqlstate_of, test_token};
    use pgrx::prelude::*;

    /// Makes the next identity change leave folded plans valid (see `folding::skip_next_invalidation`).
    #[pg_extern]
    fn skip_next_plan_invalidation() {
        super::skip_next_invalidation();
    }

    #[pg_test]
    fn a_plan_that_escaped_invalidation_is_refused() {
        register_test_members();
        Spi::run(&format!(
            "SET tenancy.token = {};
             SET plan_cache_mode = force_generic_plan;
             PREPARE folded AS SELECT tenancy.workspace_id() FROM (VALUES (1)) v",
            pgrx::spi::quote_literal(test_token("user_a", "org_a"))
        ))
        .unwrap();
        Spi::run("EXECUTE folded").unwrap();
        Spi::run(&format!(
            "SELECT tests.skip_next_plan_invalidation(); SET tenancy.token = {}",
            pgrx::spi::quote_literal(test_token("user_b", "org_b"))
        ))
        .unwrap();
        assert_eq!(sqlstate_of("EXECUTE folded").as_deref(), Some("28000"));
        assert_eq!(
            Spi::get_one::<String>("SELECT tenancy.workspace_id() FROM (VALUES (1)) v")
                .unwrap()
                .as_deref(),
            Some("ws_b"),
            "a new plan folds the current identity"
        );
    }
}
