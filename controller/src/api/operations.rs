//! The `Control` calls that reverse or inspect changes: rollback, disable,
//! enable, history. Each is authorised and validated here, at the edge
//! (a refusal is `invalid_argument`/`failed_precondition`: the CLI exits 1,
//! nothing changed), then started as a plan-less rollout.
//!
//! Roles: rollback, disable and enable need `deployer` (admin holds every
//! role); history needs `viewer`; adopting drift (issue 20) needs `approver`
//! and a reason, because it makes a hand change the version of record. None of them waits for an environment's
//! approvals (they undo or inspect a change); an emergency rollback skips
//! nothing but the smoke tests — it is audited with its reason.

use std::time::Duration;

use pgrollout_shared::job::{AdoptSpec, JobKind, SignedApprovals, MAX_ADOPT_SELECTORS};
use pgrollout_shared::operations::{
    is_plan_id_prefix, DisableSpec, RollbackScope, RollbackSpec, RollbackTarget, RoutineSelector,
    MAX_REASON_BYTES,
};
use pgrollout_shared::proto::{AdoptRequest, Plan, RollbackRequest, RoutineRequest};
use prost::Message;
use tonic::{Request, Response, Status};

use super::operator::ControlService;
use super::status::{store_failure, update_stream};
use super::UpdateStream;
use crate::config::OperatorRole;
use crate::engine::operations::{self, OperationRequest};
use crate::engine::rollback_sources::{known_versions, Wanted};
use crate::project::routine_name::RoutineName;

/// Which of the routine-level operations a `RoutineRequest` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoutineOperation {
    Disable,
    Enable,
    History,
}

impl ControlService {
    pub(super) async fn start_rollback(
        &self,
        request: Request<RollbackRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        // Issue 17: the controller's own time before the job is offered is
        // logged, so that it can be watched not to grow with the store.
        let received = std::time::Instant::now();
        let actor = self
            .authorize(&request, OperatorRole::Deployer, "roll back")
            .await?
            .actor();
        let request = request.into_inner();
        let emergency = match (request.emergency, request.reason.trim()) {
            (false, _) => None,
            (true, "") => {
                return Err(Status::invalid_argument(
                    "an emergency rollback needs --reason: say why, it goes into the audit log",
                ))
            }
            (true, reason) if reason.len() > MAX_REASON_BYTES => {
                return Err(Status::invalid_argument(format!(
                    "--reason is over {MAX_REASON_BYTES} bytes"
                )))
            }
            (true, reason) => Some(reason.to_owned()),
        };
        if super::fleet::is_fleet_id(&request.rollout_id) {
            if emergency.is_some() || !request.procedure.is_empty() || !request.to.is_empty() {
                return Err(Status::invalid_argument(
                    "--rollout f-… undoes every target of a fleet rollout: give no procedure, --to or --emergency",
                ));
            }
            let approvals = signed(request.signed_request_id, request.signatures)?;
            return self
                .start_fleet_rollback(
                    &request.rollout_id,
                    &actor,
                    request.agent_wait_ms,
                    approvals,
                )
                .await;
        }
        let controller = &self.controller;
        let (environment, label, scope, wanted) = if request.rollout_id.is_empty() {
            let selector = selector(&request.procedure)?;
            let environment = known_environment(self, &request.environment)?;
            let wanted = Wanted {
                names: vec![(selector.schema.clone(), selector.name.clone())],
            };
            (
                environment,
                request.procedure.clone(),
                RollbackScope::Routines(selector),
                wanted,
            )
        } else {
            if !request.procedure.is_empty() || !request.to.is_empty() {
                return Err(Status::invalid_argument(
                    "--rollout undoes a whole rollout: give no procedure and no --to with it",
                ));
            }
            let summary = controller
                .store
                .rollout_summary(&request.rollout_id)
                .await
                .map_err(store_failure("read its store"))?
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "no rollout {} on this controller; `pgrollout audit` lists them",
                        request.rollout_id
                    ))
                })?;
            if !request.environment.is_empty() && request.environment != summary.environment {
                return Err(Status::invalid_argument(format!(
                    "rollout {} ran in {}, not {}",
                    request.rollout_id, summary.environment, request.environment
                )));
            }
            if summary.kind != "deploy" {
                return Err(Status::failed_precondition(format!(
                    "rollout {} is a {}, which changed nothing to roll back",
                    request.rollout_id, summary.kind
                )));
            }
            if summary.state == "running" || summary.state == "unknown" {
                return Err(Status::failed_precondition(format!(
                    "rollout {} is {}; wait until its agent reports, then roll it back",
                    request.rollout_id, summary.state
                )));
            }
            let plan = Plan::decode(summary.plan.as_slice()).map_err(|_| {
                Status::internal("the rollout's plan is unreadable; see the controller's log")
            })?;
            let wanted = Wanted {
                names: plan
                    .routines
                    .iter()
                    .map(|r| (Some(r.schema.clone()), r.name.clone()))
                    .collect(),
            };
            (
                summary.environment,
                summary.label,
                RollbackScope::Rollout(request.rollout_id.clone()),
                wanted,
            )
        };
        let target = rollback_target(&request.to)?;
        let known_versions = known_versions(&controller.store, &environment, &wanted)
            .await
            .map_err(store_failure("read its store"))?;
        let sources_ready = received.elapsed();
        let version_count = known_versions.len();
        let description = format!(
            "{environment}\n{label}\n{}\n{}\n{}\n{}",
            request.rollout_id,
            request.to,
            emergency.is_some(),
            emergency.as_deref().unwrap_or_default()
        );
        let kind = JobKind::Rollback(RollbackSpec {
            scope,
            target,
            emergency,
            known_versions,
        });
        let approvals = signed(request.signed_request_id, request.signatures)?;
        let started = self
            .start_operation(OperationRequest {
                environment,
                label,
                kind,
                actor,
                trace: crate::telemetry::spans::request_trace(&request.traceparent),
                agent_wait: Duration::from_millis(request.agent_wait_ms),
                description,
                approvals,
            })
            .await?;
        tracing::info!(
            before_dispatch_us = received.elapsed().as_micros() as u64,
            known_versions_us = sources_ready.as_micros() as u64,
            known_versions = version_count,
            "rollback dispatched"
        );
        Ok(started)
    }

    pub(super) async fn start_routine_operation(
        &self,
        request: Request<RoutineRequest>,
        operation: RoutineOperation,
    ) -> Result<Response<UpdateStream>, Status> {
        let (role, verb) = match operation {
            RoutineOperation::Disable => (OperatorRole::Deployer, "disable routines"),
            RoutineOperation::Enable => (OperatorRole::Deployer, "enable routines"),
            RoutineOperation::History => (OperatorRole::Viewer, "read routine history"),
        };
        let actor = self.authorize(&request, role, verb).await?.actor();
        let request = request.into_inner();
        let selector = selector(&request.procedure)?;
        let environment = known_environment(self, &request.environment)?;
        if request.revoke && operation != RoutineOperation::Disable {
            return Err(Status::invalid_argument(
                "--revoke is an option of disable only",
            ));
        }
        let kind = match operation {
            RoutineOperation::Disable => JobKind::Disable(DisableSpec {
                routines: selector,
                revoke: request.revoke,
            }),
            RoutineOperation::Enable => JobKind::Enable(selector),
            RoutineOperation::History => JobKind::History(selector),
        };
        let description = format!("{environment}\n{}\n{}", request.procedure, request.revoke);
        let approvals = signed(request.signed_request_id, request.signatures)?;
        self.start_operation(OperationRequest {
            environment,
            label: request.procedure,
            kind,
            actor,
            trace: crate::telemetry::spans::request_trace(&request.traceparent),
            agent_wait: Duration::from_millis(request.agent_wait_ms),
            description,
            approvals,
        })
        .await
    }

    /// `pgrollout adopt` and `deploy --adopt-drift` (issue 20): approver or
    /// admin, a reason, known routine names — all checked here, so a refusal
    /// changes nothing (exit 1).
    pub(super) async fn start_adopt(
        &self,
        request: Request<AdoptRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        let actor = self
            .authorize(&request, OperatorRole::Approver, "adopt drift")
            .await?
            .actor();
        let request = request.into_inner();
        let reason = match request.reason.trim() {
            "" => {
                return Err(Status::invalid_argument(
                    "adopting drift needs --reason: say why the hand change is kept, it goes into the audit log \
                     and the ledger",
                ))
            }
            reason if reason.len() > MAX_REASON_BYTES => {
                return Err(Status::invalid_argument(format!(
                    "--reason is over {MAX_REASON_BYTES} bytes"
                )))
            }
            reason => reason.to_owned(),
        };
        if request.procedures.is_empty() {
            return Err(Status::invalid_argument(
                "name the routines to adopt; `pgrollout drift <environment>` lists the ones that drifted",
            ));
        }
        if request.procedures.len() > MAX_ADOPT_SELECTORS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_ADOPT_SELECTORS} routines can be adopted at once"
            )));
        }
        let routines = request
            .procedures
            .iter()
            .map(|procedure| selector(procedure))
            .collect::<Result<Vec<_>, _>>()?;
        let environment = known_environment(self, &request.environment)?;
        let label = request.procedures.join(" ");
        let approvals = signed(request.signed_request_id, request.signatures)?;
        let description = format!(
            "{environment}\n{}\n{}\n{reason}",
            request.procedures.join("\n"),
            request.only_drifted
        );
        let receiver = crate::engine::adopt::start(
            self.controller.clone(),
            OperationRequest {
                environment,
                label,
                kind: JobKind::Adopt(AdoptSpec {
                    routines,
                    reason: reason.clone(),
                    only_drifted: request.only_drifted,
                }),
                actor,
                trace: crate::telemetry::spans::request_trace(&request.traceparent),
                agent_wait: Duration::from_millis(request.agent_wait_ms),
                description,
                approvals,
            },
            reason,
        )
        .await?;
        Ok(Response::new(update_stream(receiver)))
    }

    async fn start_operation(
        &self,
        request: OperationRequest,
    ) -> Result<Response<UpdateStream>, Status> {
        let receiver = operations::start(self.controller.clone(), request).await?;
        Ok(Response::new(update_stream(receiver)))
    }
}

/// What the operator signed for an operation (issue 19): kept verbatim and
/// sent with the job; only an agent with `[approvals]` reads it.
fn signed(
    request_id: String,
    signatures: Vec<pgrollout_shared::proto::SignedStatement>,
) -> Result<SignedApprovals, Status> {
    Ok(SignedApprovals {
        request_id: signed_request_id(request_id)?,
        signatures,
        ..Default::default()
    })
}

/// The operator's `<procedure>`, read with PostgreSQL's parser.
pub fn selector(procedure: &str) -> Result<RoutineSelector, Status> {
    let name = RoutineName::parse(procedure).map_err(|reason| {
        Status::invalid_argument(format!("invalid procedure name {procedure:?}: {reason}"))
    })?;
    Ok(RoutineSelector {
        schema: name.schema,
        name: name.name,
        arg_types: name.arg_types,
    })
}

fn known_environment(service: &ControlService, environment: &str) -> Result<String, Status> {
    if environment.is_empty() {
        return Err(Status::invalid_argument("no environment given"));
    }
    if !service
        .controller
        .config
        .environments
        .contains_key(environment)
    {
        let known: Vec<&str> = service
            .controller
            .config
            .environments
            .keys()
            .map(String::as_str)
            .collect();
        return Err(Status::invalid_argument(format!(
            "unknown environment {environment:?}; known environments: {}",
            known.join(", ")
        )));
    }
    Ok(environment.to_owned())
}

/// `--to`: a ledger id (`12`, `ledger:12`) or a plan id (`3f2a9c0d…`,
/// `plan:…`; 8 to 64 hex digits). All digits means a ledger id; write
/// `plan:` for a plan prefix that happens to be all digits.
pub fn rollback_target(to: &str) -> Result<RollbackTarget, Status> {
    let to = to.trim();
    if to.is_empty() {
        return Ok(RollbackTarget::Previous);
    }
    let invalid = || {
        Status::invalid_argument(format!(
            "--to {to:?}: expected a ledger id (see `pgrollout history`) or a plan id of 8 to 64 hex digits"
        ))
    };
    if let Some(plan) = to.strip_prefix("plan:") {
        return is_plan_id_prefix(plan)
            .then(|| RollbackTarget::PlanId(plan.to_ascii_lowercase()))
            .ok_or_else(invalid);
    }
    let ledger = to.strip_prefix("ledger:").unwrap_or(to);
    if let Ok(id) = ledger.parse::<i64>() {
        return (id > 0)
            .then_some(RollbackTarget::LedgerId(id))
            .ok_or_else(invalid);
    }
    if is_plan_id_prefix(to) {
        return Ok(RollbackTarget::PlanId(to.to_ascii_lowercase()));
    }
    Err(invalid())
}

/// The id a requester's CLI chose and signed (issue 19): it names the request
/// if it waits, so it must be one the controller would make.
pub(super) fn signed_request_id(id: String) -> Result<String, Status> {
    let well_formed = id.is_empty()
        || (id.len() <= 64
            && id.starts_with("p-")
            && id[2..].bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
    if well_formed {
        Ok(id)
    } else {
        Err(Status::invalid_argument(format!(
            "signed_request_id {id:?}: expected p- and up to 62 hex digits or dashes"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_reads_ledger_ids_and_plan_ids() {
        assert_eq!(rollback_target("").ok(), Some(RollbackTarget::Previous));
        assert_eq!(
            rollback_target("12").ok(),
            Some(RollbackTarget::LedgerId(12))
        );
        assert_eq!(
            rollback_target("ledger:7").ok(),
            Some(RollbackTarget::LedgerId(7))
        );
        assert_eq!(
            rollback_target("3F2A9C0D").ok(),
            Some(RollbackTarget::PlanId("3f2a9c0d".into()))
        );
        assert_eq!(
            rollback_target("plan:12345678").ok(),
            Some(RollbackTarget::PlanId("12345678".into()))
        );
        for bad in ["0", "-3", "abc", "plan:12", "ledger:x", "3f2a9c0z"] {
            assert!(rollback_target(bad).is_err(), "{bad}");
        }
    }
}
