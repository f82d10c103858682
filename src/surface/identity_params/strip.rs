//! The planner's side of identity parameters: the identity initPlans of a finished plan taken out
//! and their parameters recorded (see the module above).

use super::{kind_of, Kind, FUNCTION_TAG, IDENTITY_PARAMETERS, PARAMETER_TAG};
use crate::plumbing::plan_tags::{self, cells};
use pgrx::pg_sys;
use std::collections::HashSet;
use std::ptr;

/// The identity function an initPlan's plan runs, when the plan is exactly one: a `Result` with
/// no child, qual or initPlan of its own, one output column that is a plain call of a genuine
/// identity function, and not parallel safe.
unsafe fn identity_plan(plan: *mut pg_sys::Plan) -> Option<(Kind, pg_sys::Oid)> {
    unsafe {
        let plan = plan.as_ref()?;
        if plan.type_ != pg_sys::NodeTag::T_Result
            || !plan.lefttree.is_null()
            || !plan.righttree.is_null()
            || !plan.qual.is_null()
            || !plan.initPlan.is_null()
            || plan.parallel_safe
            || !(*(plan as *const pg_sys::Plan).cast::<pg_sys::Result>())
                .resconstantqual
                .is_null()
            || pg_sys::list_length(plan.targetlist) != 1
        {
            return None;
        }
        let entry = pg_sys::list_nth(plan.targetlist, 0).cast::<pg_sys::TargetEntry>();
        let call = (*entry).expr.cast::<pg_sys::FuncExpr>();
        if (*entry).resjunk
            || call.is_null()
            || (*call).xpr.type_ != pg_sys::NodeTag::T_FuncExpr
            || (*call).funcretset
            || !(*call).args.is_null()
        {
            return None;
        }
        kind_of((*call).funcid).map(|kind| (kind, (*call).funcid))
    }
}

/// A reference to a candidate initPlan found in a plan node's `initPlan` list.
struct Found {
    node: *mut pg_sys::Plan,
    subplan: *mut pg_sys::SubPlan,
    below_gather: bool,
}

/// Every `(node, SubPlan)` of the plan tree under `plan` whose SubPlan runs one of the plans
/// `wanted` marks (by `plan_id - 1`).
unsafe fn collect(plan: *mut pg_sys::Plan, below_gather: bool, wanted: &[bool], found: &mut Vec<Found>) {
    let Some(node) = (unsafe { plan.as_ref() }) else { return };
    unsafe { pg_sys::check_stack_depth() };
    pgrx::check_for_interrupts!();
    unsafe {
        for cell in cells(node.initPlan) {
            let subplan = cell.cast::<pg_sys::SubPlan>();
            if (*subplan).xpr.type_ != pg_sys::NodeTag::T_SubPlan {
                continue;
            }
            let index = usize::try_from((*subplan).plan_id - 1).ok();
            if index.is_some_and(|i| wanted.get(i) == Some(&true)) {
                found.push(Found {
                    node: plan,
                    subplan,
                    below_gather,
                });
            }
        }
        let below = below_gather || matches!(node.type_, pg_sys::NodeTag::T_Gather | pg_sys::NodeTag::T_GatherMerge);
        collect(node.lefttree, below, wanted, found);
        collect(node.righttree, below, wanted, found);
        let children = match node.type_ {
            pg_sys::NodeTag::T_Append => (*plan.cast::<pg_sys::Append>()).appendplans,
            pg_sys::NodeTag::T_MergeAppend => (*plan.cast::<pg_sys::MergeAppend>()).mergeplans,
            pg_sys::NodeTag::T_BitmapAnd => (*plan.cast::<pg_sys::BitmapAnd>()).bitmapplans,
            pg_sys::NodeTag::T_BitmapOr => (*plan.cast::<pg_sys::BitmapOr>()).bitmapplans,
            pg_sys::NodeTag::T_CustomScan => (*plan.cast::<pg_sys::CustomScan>()).custom_plans,
            pg_sys::NodeTag::T_SubqueryScan => {
                collect((*plan.cast::<pg_sys::SubqueryScan>()).subplan, below, wanted, found);
                ptr::null_mut()
            }
            _ => ptr::null_mut(),
        };
        for child in cells(children) {
            collect(child.cast(), below, wanted, found);
        }
    }
}

/// After planning (src/surface/hooks.rs): takes each identity initPlan out of `stmt` and records
/// its parameter, as the module comment describes. Leaves the plan as it is whenever any check
/// fails.
///
/// # Safety
/// `stmt` must be the plan the planner just returned, not yet used.
pub unsafe fn strip(stmt: *mut pg_sys::PlannedStmt) {
    unsafe {
        let Some(planned) = stmt.as_mut() else { return };
        if planned.subplans.is_null()
            || !IDENTITY_PARAMETERS.get()
            || planned.commandType != pg_sys::CmdType::CMD_SELECT
            || !planned.rowMarks.is_null()
            || planned.hasModifyingCTE
            || planned.planTree.is_null()
        {
            return;
        }
        let plans: Vec<*mut pg_sys::Plan> = cells(planned.subplans).map(|p| p.cast()).collect();
        let identities: Vec<Option<(Kind, pg_sys::Oid)>> = plans.iter().map(|&p| identity_plan(p)).collect();
        if identities.iter().all(Option::is_none) {
            return;
        }
        let wanted: Vec<bool> = identities.iter().map(Option::is_some).collect();
        let mut found = Vec::new();
        collect(planned.planTree, false, &wanted, &mut found);
        for &plan in &plans {
            collect(plan, false, &wanted, &mut found);
        }
        // The references to each candidate, in one pass (the adversarial pass planned 30,000
        // hand-written identity sublinks: a search per candidate doubled the planning time).
        let mut references: Vec<Vec<usize>> = vec![Vec::new(); plans.len()];
        for (at, reference) in found.iter().enumerate() {
            if let Some(slot) = usize::try_from((*reference.subplan).plan_id - 1)
                .ok()
                .and_then(|index| references.get_mut(index))
            {
                slot.push(at);
            }
        }
        let mut stripped: Vec<*mut pg_sys::SubPlan> = Vec::new();
        let mut nodes: HashSet<*mut pg_sys::Plan> = HashSet::new();
        for (index, identity) in identities.iter().enumerate() {
            let Some((kind, function)) = *identity else { continue };
            let [at] = references[index][..] else { continue };
            let reference = &found[at];
            let subplan = reference.subplan;
            if reference.below_gather
                || (*subplan).subLinkType != pg_sys::SubLinkType::EXPR_SUBLINK
                || pg_sys::list_length((*subplan).setParam) != 1
                || !(*subplan).parParam.is_null()
                || !(*subplan).args.is_null()
            {
                continue;
            }
            let parameter = pg_sys::list_nth_int((*subplan).setParam, 0);
            let Ok(parameter) = u32::try_from(parameter) else {
                continue;
            };
            if parameter >= (u32::MAX >> 1) {
                continue;
            }
            stripped.push(subplan);
            nodes.insert(reference.node);
            let cell = (*planned.subplans).elements.add(index);
            (*cell).ptr_value = ptr::null_mut();
            let code = parameter * 2 + u32::from(kind == Kind::User);
            for (tag, value) in [(PARAMETER_TAG, code), (FUNCTION_TAG, u32::from(function))] {
                planned.invalItems = plan_tags::append(planned.invalItems, tag, value);
            }
        }
        // Each node's initPlan list rebuilt once, without the stripped SubPlans.
        stripped.sort_unstable();
        for node in nodes {
            pgrx::check_for_interrupts!();
            let mut kept: *mut pg_sys::List = ptr::null_mut();
            for subplan in cells((*node).initPlan) {
                if stripped.binary_search(&subplan.cast()).is_err() {
                    kept = pg_sys::lappend(kept, subplan);
                }
            }
            (*node).initPlan = kept;
        }
    }
}
