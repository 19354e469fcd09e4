//! The `Control` service: what operators' CLIs call. Each method
//! authenticates and authorises the caller, turns the wire request into the
//! engine's (`plan_input.rs` checks plans), calls the engine, and maps its
//! errors to statuses in one place (`status.rs`).

use std::time::Duration;

use pgrollout_shared::job::{BatchOptions, JobKind};
use pgrollout_shared::proto::{
    control_server::Control, ApproveRequest, ApproveResponse, AuditRecord, AuditRequest,
    AuditResponse, CancelRequest, CancelResponse, DeployRequest, DriftRequest, DriftResponse,
    EvaluatePlanRequest, EvaluatePlanResponse, FollowRequestRequest, GetRolloutRequest,
    ListAgentsRequest, ListAgentsResponse, ListRolloutsRequest, ListRolloutsResponse,
    RollbackRequest, RolloutStatus, RoutineRequest,
};
use tonic::{Request, Response, Status};

use super::operations::{signed_request_id, RoutineOperation};
use super::operator::ControlService;
use super::plan_input::validate_plan;
use super::requests;
use super::status::{request_stream, store_failure, update_stream};
use super::UpdateStream;
use crate::auth::authenticate_operator;
use crate::config::OperatorRole;
use crate::engine::requests as lifecycle;
use crate::engine::rollout::RolloutRequest;
use crate::plan::{deploy_order, plan_id};
use crate::store::state;
use crate::telemetry::spans::{in_span, RolloutRequestSpan};

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

    type ResumeFleetStream = UpdateStream;

    async fn resume_fleet(
        &self,
        request: Request<pgrollout_shared::proto::ResumeFleetRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        self.start_resume_fleet(request).await
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
        let response = lifecycle::cancel(
            &self.controller,
            &caller,
            &request.request_id,
            &request.reason,
        )
        .await?;
        Ok(Response::new(response))
    }

    type FollowRolloutStream = UpdateStream;

    async fn follow_rollout(
        &self,
        request: Request<pgrollout_shared::proto::FollowRolloutRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        // A deployer whose CLI lost its controller follows the rollout it
        // asked for, viewer or not: any role will do, as for requests.
        let caller = authenticate_operator(&request, &self.controller.policy())?;
        if caller.roles.is_empty() {
            self.authorize(&request, OperatorRole::Viewer, "follow rollouts")
                .await?;
        }
        let request = request.into_inner();
        let stream = super::follow_rollout::follow(
            self.controller.clone(),
            &request.rollout_id,
            request.after_seq,
        )
        .await?;
        Ok(Response::new(stream))
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
        let unreadable = store_failure("read its audit log");
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
        if super::fleet::is_fleet_id(&id) {
            return Ok(Response::new(self.fleet_status(&id).await?));
        }
        if let Some(parked) = requests::request_status(&self.controller, &id).await? {
            return Ok(Response::new(parked));
        }
        match self.controller.store.rollout_status(&id).await {
            Ok(Some(status)) => Ok(Response::new(status)),
            Ok(None) => Err(Status::not_found(format!(
                "no rollout {id:?}; `pgrollout rollouts` lists recent ones"
            ))),
            Err(error) => Err(store_failure("read its store")(error)),
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
            .map_err(store_failure("read its store"))?;
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
        // The approver's signed statement (issue 19) is kept before the
        // decision, which may start the rollout that forwards it.
        if let (Some(signature), false) = (request.signature.clone(), request.reject) {
            self.controller
                .store
                .add_signed_statements(
                    &request.request_id,
                    vec![signature],
                    pgrollout_shared::job::now_unix_ms(),
                )
                .await
                .map_err(store_failure("record the approval's signature"))?;
        }
        let response = lifecycle::decide(
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

    async fn signing_context(
        &self,
        request: Request<pgrollout_shared::proto::SigningContextRequest>,
    ) -> Result<Response<pgrollout_shared::proto::SigningContextResponse>, Status> {
        self.authorize(&request, OperatorRole::Viewer, "read an environment")
            .await?;
        let request = request.into_inner();
        let environment = request.environment;
        let config = &self.controller.config;
        let Some(settings) = config.environments.get(&environment) else {
            // Worded as a deploy's own refusal: this call comes first.
            let known: Vec<&str> = config.environments.keys().map(String::as_str).collect();
            return Err(Status::invalid_argument(format!(
                "unknown environment {environment:?}; known environments: {}",
                known.join(", ")
            )));
        };
        if settings.is_fleet() {
            // Issue 19 with 24: a fleet's statements sign its members.
            let (fleet_members, plan_id) = crate::engine::fleet::members::for_signing(
                &self.controller,
                &environment,
                &request.fleet_rollout,
            )
            .await?;
            return Ok(Response::new(
                pgrollout_shared::proto::SigningContextResponse {
                    zone: pgrollout_shared::signing::fleet::ZONE.into(),
                    target: pgrollout_shared::signing::fleet::target_of(&fleet_members),
                    environment,
                    fleet_members,
                    plan_id,
                },
            ));
        }
        Ok(Response::new(
            pgrollout_shared::proto::SigningContextResponse {
                zone: config.zone_of(&environment).unwrap_or_default(),
                target: settings.target.clone(),
                environment,
                ..Default::default()
            },
        ))
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
        let computed = plan_id(&plan.routines);
        let plan = crate::domain::plan::Plan::try_from(plan)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let attachments =
            lifecycle::attachments(&request.ticket, &request.runbook, &request.rollback_plan);
        let environments =
            lifecycle::evaluate_everywhere(&self.controller, &computed, &plan, &attachments)
                .await?;
        Ok(Response::new(EvaluatePlanResponse {
            plan_id: computed,
            environments,
        }))
    }

    async fn drift(
        &self,
        request: Request<DriftRequest>,
    ) -> Result<Response<DriftResponse>, Status> {
        self.drift_scan(request).await
    }

    type AdoptStream = UpdateStream;

    async fn adopt(
        &self,
        request: Request<pgrollout_shared::proto::AdoptRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        let body = request.get_ref();
        let span = crate::telemetry::spans::rollout_span(
            "adopt",
            &body.environment,
            &body.procedures.join(" "),
            &body.traceparent,
        );
        in_span(span, self.start_adopt(request)).await
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
            lifecycle::attachments(&request.ticket, &request.runbook, &request.rollback_plan);
        let (no_wait, follow) = (request.no_wait, request.follow);
        let compact = request.expands_existence_only;
        let parked = lifecycle::Parked {
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
            let check = lifecycle::GateCheck {
                environment: &validated.environment,
                plan_id: &validated.plan.plan_id,
                label: &validated.plan.label,
                actor: &validated.actor,
                attachments,
                approvals: &[],
                plan: &validated.plan,
                dry_run: Some(lifecycle::DryRunContext {
                    trace: &validated.trace,
                    agent_wait: validated.agent_wait,
                    approvals: validated.approvals.clone(),
                }),
            };
            let options = lifecycle::ParkOptions { no_wait, follow };
            match lifecycle::gate(&self.controller, &validated, check, parked, options).await? {
                lifecycle::Gated::Passed(passed) => passed,
                lifecycle::Gated::Parked(updates) => {
                    return Ok(Response::new(compacted(request_stream(updates), compact)))
                }
            }
        };
        // A fleet environment's deploy goes over its targets (issue 24).
        let receiver = crate::engine::launch::start(self.controller.clone(), validated).await?;
        Ok(Response::new(compacted(update_stream(receiver), compact)))
    }
}

/// The requester's stream, its results compact when it expands them itself.
fn compacted(stream: UpdateStream, compact: bool) -> UpdateStream {
    if compact {
        super::status::compact_results(stream)
    } else {
        stream
    }
}

/// Turns the wire request into a rollout request, or says exactly what is
/// wrong with it (`invalid_argument`: the CLI exits 1, nothing changed).
fn validate(
    mut request: DeployRequest,
    actor: String,
    smoke_only: bool,
    max_routines: usize,
) -> Result<RolloutRequest, Status> {
    let (plan, routines) = validate_plan(&mut request, max_routines)?;
    let mut view = None;
    let kind = if smoke_only {
        JobKind::Smoke {
            routines,
            sources: Vec::new(),
        }
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
        approvals: pgrollout_shared::job::SignedApprovals {
            request_id: signed_request_id(request.signed_request_id)?,
            signatures: request.signatures,
            ..Default::default()
        },
        fleet_policy: crate::engine::fleet::Policy::from_flags(
            request.fleet_continue_on_error,
            request.fleet_rollback_on_failure,
        )
        .map_err(Status::invalid_argument)?,
    })
}
