//! The `Control` service: what operators' CLIs call. Every request is
//! validated here, at the edge, before the engine sees it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use pgrollout_shared::proto::{
    control_server::Control, DeployRequest, ListAgentsRequest, ListAgentsResponse, RolloutUpdate,
};
use pgrollout_shared::routine::routines_from_wire;
use pgrollout_shared::traceparent::TraceParent;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::engine::rollout::{self, RolloutRequest};
use crate::engine::Controller;
use crate::plan::plan_id;

/// Metadata key the CLI uses to say who the operator is. Until operator
/// certificates exist it is recorded as claimed, not verified.
pub const ACTOR_HEADER: &str = "pgrollout-actor";

pub struct ControlService {
    pub controller: Arc<Controller>,
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<RolloutUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlService {
    type DeployStream = UpdateStream;
    type SmokeStream = UpdateStream;

    async fn deploy(
        &self,
        request: Request<DeployRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        self.start(request, false).await
    }

    async fn smoke(
        &self,
        request: Request<DeployRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        self.start(request, true).await
    }

    async fn list_agents(
        &self,
        _: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        Ok(Response::new(ListAgentsResponse {
            agents: self.controller.registry.list(),
        }))
    }
}

impl ControlService {
    async fn start(
        &self,
        request: Request<DeployRequest>,
        smoke_only: bool,
    ) -> Result<Response<UpdateStream>, Status> {
        let actor = actor_of(&request);
        let request = request.into_inner();
        let validated = validate(request, actor, smoke_only)?;
        let receiver = rollout::start(self.controller.clone(), validated).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

fn actor_of<T>(request: &Request<T>) -> String {
    let claimed = request
        .metadata()
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| !c.is_control()))
        .unwrap_or("anonymous");
    format!("{claimed} (unverified)")
}

/// Turns the wire request into a rollout request, or says exactly what is
/// wrong with it (`invalid_argument`: the CLI exits 1, nothing changed).
fn validate(
    request: DeployRequest,
    actor: String,
    smoke_only: bool,
) -> Result<RolloutRequest, Status> {
    let plan = request
        .plan
        .ok_or_else(|| Status::invalid_argument("the request carries no plan"))?;
    let routines = routines_from_wire(plan.routines.clone())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let computed = plan_id(&plan.routines);
    if computed != plan.plan_id {
        return Err(Status::invalid_argument(format!(
            "plan id {} does not match its content (computed {computed}); the plan was altered in transit or built by an incompatible client",
            plan.plan_id
        )));
    }
    if request.environment.is_empty() {
        return Err(Status::invalid_argument("no environment given"));
    }
    let trace = TraceParent::parse(&request.traceparent).unwrap_or_else(TraceParent::new_root);
    Ok(RolloutRequest {
        environment: request.environment,
        plan,
        routines,
        smoke_only,
        actor,
        trace,
        agent_wait: Duration::from_millis(request.agent_wait_ms),
    })
}
