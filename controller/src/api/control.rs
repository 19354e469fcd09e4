//! The `Control` service: what operators' CLIs call. Every request is
//! validated here, at the edge, before the engine sees it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use pgrollout_shared::job::{BatchOptions, JobKind};
use pgrollout_shared::proto::{
    control_server::Control, ApproveRequest, ApproveResponse, AuditRecord, AuditRequest,
    AuditResponse, CancelRequest, CancelResponse, DeployRequest, EvaluatePlanRequest,
    EvaluatePlanResponse, FollowRequestRequest, GetRolloutRequest, ListAgentsRequest,
    ListAgentsResponse, ListRolloutsRequest, ListRolloutsResponse, RollbackRequest, RolloutStatus,
    RolloutUpdate, RoutineRequest,
};
use pgrollout_shared::routine::routines_from_wire;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::operations::RoutineOperation;
use super::{approvals, gates, requests};
use crate::auth::{authenticate_operator, peer_certificate, Caller};
use crate::config::OperatorRole;
use crate::engine::rollout::{self, RolloutRequest};
use crate::engine::Controller;
use crate::plan::{deploy_order, plan_id};
use crate::store::{state, AuditEntry};
use crate::telemetry::spans::{in_span, RolloutRequestSpan};

pub struct ControlService {
    pub controller: Arc<Controller>,
}

pub(crate) type UpdateStream = Pin<Box<dyn Stream<Item = Result<RolloutUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlService {
    type DeployStream = UpdateStream;
    type SmokeStream = UpdateStream;
    type RollbackStream = UpdateStream;
    type DisableStream = UpdateStream;
    type EnableStream = UpdateStream;
    type HistoryStream = UpdateStream;
    type RetryStream = UpdateStream;

    async fn retry(
        &self,
        request: Request<pgrollout_shared::proto::RetryRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        self.start_retry(request).await
    }

    async fn resolve(
        &self,
        request: Request<pgrollout_shared::proto::ResolveRequest>,
    ) -> Result<Response<pgrollout_shared::proto::ResolveResponse>, Status> {
        self.resolve_rollout(request).await
    }

    type FollowRequestStream = UpdateStream;

    async fn follow_request(
        &self,
        request: Request<FollowRequestRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        // Whoever may act on requests (deployers, approvers, stakeholders)
        // may follow them, as viewers may.
        let caller = authenticate_operator(&request, &self.controller.policy())?;
        if caller.roles.is_empty() {
            self.authorize(&request, OperatorRole::Viewer, "follow requests")
                .await?;
        }
        let id = request.into_inner().request_id;
        let stream = requests::follow(self.controller.clone(), &id).await?;
        Ok(Response::new(stream))
    }

    async fn cancel(
        &self,
        request: Request<CancelRequest>,
    ) -> Result<Response<CancelResponse>, Status> {
        // Who may cancel depends on whose request it is: decided there.
        let caller = authenticate_operator(&request, &self.controller.policy())?;
        let request = request.into_inner();
        let response = requests::cancel(
            &self.controller,
            &caller,
            &request.request_id,
            &request.reason,
        )
        .await?;
        Ok(Response::new(response))
    }

    type CheckStream = UpdateStream;
    type PerfStream = UpdateStream;

    async fn check(
        &self,
        request: Request<DeployRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        self.start_probe(request, super::probes::ProbeKind::Check)
            .await
    }

    async fn perf(
        &self,
        request: Request<DeployRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        self.start_probe(request, super::probes::ProbeKind::Perf)
            .await
    }

    async fn rollback(
        &self,
        request: Request<RollbackRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        let span = request.get_ref().rollout_span("rollback");
        in_span(span, self.start_rollback(request)).await
    }

    async fn disable(
        &self,
        request: Request<RoutineRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        let span = request.get_ref().rollout_span("disable");
        in_span(
            span,
            self.start_routine_operation(request, RoutineOperation::Disable),
        )
        .await
    }

    async fn enable(
        &self,
        request: Request<RoutineRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        let span = request.get_ref().rollout_span("enable");
        in_span(
            span,
            self.start_routine_operation(request, RoutineOperation::Enable),
        )
        .await
    }

    async fn history(
        &self,
        request: Request<RoutineRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        let span = request.get_ref().rollout_span("history");
        in_span(
            span,
            self.start_routine_operation(request, RoutineOperation::History),
        )
        .await
    }

    async fn get_metrics(
        &self,
        request: Request<pgrollout_shared::proto::MetricsRequest>,
    ) -> Result<Response<pgrollout_shared::proto::MetricsResponse>, Status> {
        self.metrics(request).await
    }

    async fn deploy(
        &self,
        request: Request<DeployRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        let span = request.get_ref().rollout_span("deploy");
        in_span(span, self.start(request, false)).await
    }

    async fn smoke(
        &self,
        request: Request<DeployRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        let span = request.get_ref().rollout_span("smoke");
        in_span(span, self.start(request, true)).await
    }

    async fn audit(
        &self,
        request: Request<AuditRequest>,
    ) -> Result<Response<AuditResponse>, Status> {
        let caller = self
            .authorize(&request, OperatorRole::Viewer, "read the audit log")
            .await?;
        let query = request.into_inner();
        let unreadable = |e: crate::store::StoreError| {
            tracing::error!(error = %anyhow::Error::from(e), "reading the audit log failed");
            Status::internal("the controller could not read its audit log; see its log")
        };
        let mut response = AuditResponse::default();
        if query.verify {
            // The verdict only: the log is checked as it is read, never held.
            super::audit_verify::verify(&self.controller, &caller.actor(), &mut response)
                .await
                .map_err(unreadable)?;
            return Ok(Response::new(response));
        }
        let entries = self
            .controller
            .store
            .audit_entries_matching(query.since_unix_ms, &query.rollout_id, &query.procedure)
            .await
            .map_err(unreadable)?;
        response.entries_checked = entries.len() as i64;
        response.entries = entries
            .into_iter()
            .map(|e| AuditRecord {
                seq: e.seq,
                at_unix_ms: e.at,
                actor: e.entry.actor,
                action: e.entry.action,
                outcome: e.entry.outcome,
                rollout_id: e.entry.rollout_id.unwrap_or_default(),
                environment: e.entry.environment.unwrap_or_default(),
                procedure: e.entry.procedure.unwrap_or_default(),
                trace_id: e.entry.trace_id.unwrap_or_default(),
                details: e.entry.details,
                hash: e.hash,
            })
            .collect();
        Ok(Response::new(response))
    }

    async fn get_rollout(
        &self,
        request: Request<GetRolloutRequest>,
    ) -> Result<Response<RolloutStatus>, Status> {
        self.authorize(&request, OperatorRole::Viewer, "read rollouts")
            .await?;
        let id = request.into_inner().rollout_id;
        if let Some(parked) = requests::request_status(&self.controller, &id).await? {
            return Ok(Response::new(parked));
        }
        match self.controller.store.rollout_status(&id).await {
            Ok(Some(status)) => Ok(Response::new(status)),
            Ok(None) => Err(Status::not_found(format!(
                "no rollout {id:?}; `pgrollout rollouts` lists recent ones"
            ))),
            Err(error) => Err(store_failure(error)),
        }
    }

    async fn list_rollouts(
        &self,
        request: Request<ListRolloutsRequest>,
    ) -> Result<Response<ListRolloutsResponse>, Status> {
        self.authorize(&request, OperatorRole::Viewer, "read rollouts")
            .await?;
        let query = request.into_inner();
        if !query.state.is_empty() && !state::LISTABLE.contains(&query.state.as_str()) {
            return Err(Status::invalid_argument(format!(
                "--state {:?} is not a state; use one of: {}",
                query.state,
                state::LISTABLE.join(", ")
            )));
        }
        let limit = if query.limit == 0 {
            20
        } else {
            query.limit.min(1000)
        };
        let rollouts = self
            .controller
            .store
            .list_rollouts(&query.environment, &query.state, limit)
            .await
            .map_err(store_failure)?;
        let rollouts = requests::list_with_requests(
            &self.controller,
            rollouts,
            &query.environment,
            &query.state,
            limit,
        )
        .await?;
        Ok(Response::new(ListRolloutsResponse { rollouts }))
    }

    async fn approve(
        &self,
        request: Request<ApproveRequest>,
    ) -> Result<Response<ApproveResponse>, Status> {
        let role = match request.get_ref().role.as_str() {
            "" | "approver" => OperatorRole::Approver,
            "stakeholder" => OperatorRole::Stakeholder,
            other => {
                return Err(Status::invalid_argument(format!(
                    "--as {other:?}: approve as approver or stakeholder"
                )))
            }
        };
        let verb = if request.get_ref().reject {
            "reject requests"
        } else {
            "approve requests"
        };
        let caller = self.authorize(&request, role, verb).await?;
        let request = request.into_inner();
        let response = approvals::decide(
            self.controller.clone(),
            &caller,
            &request.request_id,
            request.reject,
            &request.reason,
            role,
        )
        .await?;
        Ok(Response::new(response))
    }

    async fn evaluate_plan(
        &self,
        request: Request<EvaluatePlanRequest>,
    ) -> Result<Response<EvaluatePlanResponse>, Status> {
        self.authorize(&request, OperatorRole::Viewer, "evaluate a plan")
            .await?;
        let request = request.into_inner();
        let plan = request
            .plan
            .ok_or_else(|| Status::invalid_argument("the request carries no plan"))?;
        routines_from_wire(plan.routines.clone())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let computed = plan_id(&plan.routines);
        let attachments =
            gates::attachments(&request.ticket, &request.runbook, &request.rollback_plan);
        let environments =
            gates::evaluate_everywhere(&self.controller, &computed, &plan, &attachments).await?;
        Ok(Response::new(EvaluatePlanResponse {
            plan_id: computed,
            environments,
        }))
    }

    async fn list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        self.authorize(&request, OperatorRole::Viewer, "list agents")
            .await?;
        Ok(Response::new(ListAgentsResponse {
            agents: self.controller.registry.list(),
        }))
    }
}

impl ControlService {
    /// Authenticates the caller and checks the role, auditing a refusal.
    pub(super) async fn authorize<T>(
        &self,
        request: &Request<T>,
        role: OperatorRole,
        to: &str,
    ) -> Result<Caller, Status> {
        let result = authenticate_operator(request, &self.controller.policy())
            .and_then(|caller| caller.require(role, to).map(|()| caller));
        if let Err(status) = &result {
            let actor = peer_certificate(request)
                .ok()
                .flatten()
                .map(|p| p.id.display_name())
                .unwrap_or_else(|| "unauthenticated".into());
            self.controller
                .audit(AuditEntry {
                    actor,
                    action: "auth.denied".into(),
                    outcome: "refused".into(),
                    details: format!("{to}: {}", status.message()),
                    ..Default::default()
                })
                .await;
        }
        result
    }

    async fn start(
        &self,
        request: Request<DeployRequest>,
        smoke_only: bool,
    ) -> Result<Response<UpdateStream>, Status> {
        let verb = if smoke_only {
            "run smoke tests"
        } else {
            "deploy"
        };
        let actor = self
            .authorize(&request, OperatorRole::Deployer, verb)
            .await?
            .actor();
        let request = request.into_inner();
        let attachments =
            gates::attachments(&request.ticket, &request.runbook, &request.rollback_plan);
        let (no_wait, follow) = (request.no_wait, request.follow);
        let parked = approvals::Parked {
            continue_on_error: request.continue_on_error,
            ticket: request.ticket.clone(),
            runbook: request.runbook.clone(),
            rollback_plan: request.rollback_plan.clone(),
        };
        let validated = validate(
            request,
            actor,
            smoke_only,
            self.controller.config.limits.max_routines_per_plan,
        )?;
        let mut validated = validated;
        if smoke_only {
            crate::engine::approved_sql::restrict_smoke(&self.controller, &mut validated).await?;
        }
        // Gates guard changes: a smoke test changes nothing.
        validated.gates = if smoke_only {
            Vec::new()
        } else {
            let check = gates::GateCheck {
                environment: &validated.environment,
                plan_id: &validated.plan.plan_id,
                label: &validated.plan.label,
                actor: &validated.actor,
                attachments,
                approvals: &[],
                plan: &validated.plan,
                dry_run: Some(gates::DryRunContext {
                    trace: &validated.trace,
                    agent_wait: validated.agent_wait,
                }),
            };
            let options = requests::ParkOptions { no_wait, follow };
            match requests::gate(&self.controller, &validated, check, parked, options).await? {
                requests::Gated::Passed(passed) => passed,
                requests::Gated::Parked(stream) => return Ok(Response::new(stream)),
            }
        };
        let receiver = rollout::start(self.controller.clone(), validated).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// Turns the wire request into a rollout request, or says exactly what is
/// wrong with it (`invalid_argument`: the CLI exits 1, nothing changed).
fn validate(
    request: DeployRequest,
    actor: String,
    smoke_only: bool,
    max_routines: usize,
) -> Result<RolloutRequest, Status> {
    let (plan, routines) = validate_plan(&request, max_routines)?;
    let mut view = None;
    let kind = if smoke_only {
        JobKind::Smoke { routines }
    } else {
        // The controller orders the routines itself, from the plan's content:
        // the client's order is not trusted.
        let order = deploy_order(routines).map_err(|e| Status::invalid_argument(e.to_string()))?;
        view = Some(order.view());
        JobKind::Deploy {
            routines: order.routines,
            batch: BatchOptions {
                continue_on_error: request.continue_on_error,
                dependencies: order.dependencies,
                ..Default::default()
            },
        }
    };
    let trace = crate::telemetry::spans::request_trace(&request.traceparent);
    Ok(RolloutRequest {
        environment: request.environment,
        plan,
        kind,
        actor,
        trace,
        agent_wait: Duration::from_millis(request.agent_wait_ms),
        gates: Vec::new(),
        order: view,
    })
}

/// The request's plan, checked: within the limit, every routine valid (its
/// smoke, probe and test SQL unable to leave the agent's transaction), its
/// id matching its content, and an environment named.
pub(super) fn validate_plan(
    request: &DeployRequest,
    max_routines: usize,
) -> Result<
    (
        pgrollout_shared::proto::Plan,
        Vec<pgrollout_shared::routine::Routine>,
    ),
    Status,
> {
    let plan = request
        .plan
        .clone()
        .ok_or_else(|| Status::invalid_argument("the request carries no plan"))?;
    if plan.routines.len() > max_routines {
        return Err(Status::invalid_argument(format!(
            "the plan has {} routines, over this controller's limit of {max_routines} (limits.max_routines_per_plan)",
            plan.routines.len()
        )));
    }
    let routines = routines_from_wire(plan.routines.clone())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    // The CLI refused these already; a hand-made client must not skip it.
    crate::project::hostile_sql::check_routines(&routines).map_err(Status::invalid_argument)?;
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
    Ok((plan, routines))
}

/// A store failure as the operator sees it; the details go to the log.
fn store_failure(error: crate::store::StoreError) -> Status {
    tracing::error!(error = %anyhow::Error::from(error), "store read failed");
    Status::internal("the controller could not read its store; see its log")
}
