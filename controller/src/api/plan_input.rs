//! A plan as it arrives on the wire, checked at the edge before the engine
//! sees it: within the controller's limit, every routine valid (its smoke,
//! probe and test SQL unable to leave the agent's transaction), its id
//! matching its content. `deploy`, `smoke`, `check` and `perf` share it.
//! What leaves here is the engine's `domain::plan::Plan`, never the wire's.

use pgrollout_shared::proto::DeployRequest;
use pgrollout_shared::routine::Routine;
use tonic::Status;

use crate::domain::plan::Plan;
use crate::plan::plan_id;

/// The request's plan, checked: within the limit, every routine valid (its
/// smoke, probe and test SQL unable to leave the agent's transaction), its
/// id matching its content, and an environment named; with its routines
/// again, for the job to take. The plan is taken out of the request, not
/// copied (issue 15: a thousand routines).
pub(super) fn validate_plan(
    request: &mut DeployRequest,
    max_routines: usize,
) -> Result<(Plan, Vec<Routine>), Status> {
    let plan = request
        .plan
        .take()
        .ok_or_else(|| Status::invalid_argument("the request carries no plan"))?;
    if plan.routines.len() > max_routines {
        return Err(Status::invalid_argument(format!(
            "the plan has {} routines, over this controller's limit of {max_routines} (limits.max_routines_per_plan)",
            plan.routines.len()
        )));
    }
    // Over the routines as sent: the id certifies the wire content.
    let computed = plan_id(&plan.routines);
    let claimed = plan.plan_id.clone();
    let plan = Plan::try_from(plan).map_err(|e| Status::invalid_argument(e.to_string()))?;
    // The CLI refused these already; a hand-made client must not skip it.
    crate::project::hostile_sql::check_routines(&plan.routines)
        .map_err(Status::invalid_argument)?;
    if computed != claimed {
        return Err(Status::invalid_argument(format!(
            "plan id {claimed} does not match its content (computed {computed}); the plan was altered in transit or built by an incompatible client"
        )));
    }
    if request.environment.is_empty() {
        return Err(Status::invalid_argument("no environment given"));
    }
    let routines = plan.routines.clone();
    Ok((plan, routines))
}
