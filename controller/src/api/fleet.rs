//! Issue 24, the operator calls on fleet rollouts (`f-…`): `resume`, the
//! fleet's part of `rollback --rollout` and of `status`.

use std::time::Duration;

use pgrollout_shared::proto::{ResumeFleetRequest, RolloutStatus};
use tonic::{Request, Response, Status};

use super::operator::ControlService;
use super::status::update_stream;
use super::UpdateStream;
use crate::config::OperatorRole;
use crate::engine::fleet;

/// Whether an id names a fleet rollout rather than a one-target one.
pub fn is_fleet_id(id: &str) -> bool {
    id.starts_with("f-")
}

impl ControlService {
    pub(super) async fn start_resume_fleet(
        &self,
        request: Request<ResumeFleetRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        let caller = self
            .authorize(&request, OperatorRole::Deployer, "resume a fleet rollout")
            .await?;
        let request = request.into_inner();
        let wait = Duration::from_millis(request.agent_wait_ms);
        let updates = fleet::resume(
            self.controller.clone(),
            &request.fleet_id,
            &caller.actor(),
            wait,
            request.signatures,
        )
        .await?;
        Ok(Response::new(update_stream(updates)))
    }

    /// `rollback --rollout f-…`: every target the fleet changed.
    pub(super) async fn start_fleet_rollback(
        &self,
        fleet_id: &str,
        actor: &str,
        agent_wait_ms: u64,
        approvals: pgrollout_shared::job::SignedApprovals,
    ) -> Result<Response<UpdateStream>, Status> {
        let updates = fleet::rollback(
            self.controller.clone(),
            fleet_id,
            actor,
            Duration::from_millis(agent_wait_ms),
            approvals,
        )
        .await?;
        Ok(Response::new(update_stream(updates)))
    }

    /// `status f-…`: the fleet and every target's state.
    pub(super) async fn fleet_status(&self, fleet_id: &str) -> Result<RolloutStatus, Status> {
        let report = fleet::drive::report(&self.controller, fleet_id)
            .await
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no fleet rollout {fleet_id:?}; `pgrollout rollouts` lists recent ones"
                ))
            })?;
        Ok(RolloutStatus {
            rollout_id: report.fleet_id.clone(),
            kind: "fleet".into(),
            environment: report.environment.clone(),
            state: report.state.clone(),
            exit_code: report.exit_code,
            finished: report.state != crate::store::fleet_state::RUNNING,
            message: fleet::drive::summary_line(&report),
            plan_id: report.plan_id.clone(),
            fleet: Some(report),
            ..Default::default()
        })
    }
}
