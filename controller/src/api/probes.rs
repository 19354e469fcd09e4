//! `pgrollout check` and `pgrollout perf`: the dry-run check and the
//! performance probes on demand. Both change nothing on the target (their
//! transactions are always rolled back), so no gate stands before them; the
//! deployer role is needed, as for smoke tests. They run a working copy's
//! SQL, so an environment that requires approval refuses them
//! (`engine/approved_sql.rs`). The perf probe's medians are
//! recorded for the performance gate like those of a deploy that ran them.

use std::time::Duration;

use pgrollout_shared::job::JobKind;
use pgrollout_shared::proto::DeployRequest;
use pgrollout_shared::traceparent::TraceParent;
use tonic::{Request, Response, Status};

use super::operator::ControlService;
use super::plan_input::validate_plan;
use super::status::update_stream;
use super::UpdateStream;
use crate::config::OperatorRole;
use crate::engine::approved_sql;
use crate::engine::rollout::{self, RolloutRequest};
use crate::plan::deploy_order;

/// Which on-demand job.
#[derive(Clone, Copy)]
pub enum ProbeKind {
    Check,
    Perf,
}

impl ControlService {
    pub(super) async fn start_probe(
        &self,
        request: Request<DeployRequest>,
        probe: ProbeKind,
    ) -> Result<Response<UpdateStream>, Status> {
        let verb = match probe {
            ProbeKind::Check => "run dry-run checks",
            ProbeKind::Perf => "run performance probes",
        };
        let actor = self
            .authorize(&request, OperatorRole::Deployer, verb)
            .await?
            .actor();
        let mut request = request.into_inner();
        let (plan, routines) = validate_plan(
            &mut request,
            self.controller.config.limits.max_routines_per_plan,
        )?;
        if approved_sql::requires_approval(&self.controller.config, &request.environment) {
            let (command, action, steps) = match probe {
                ProbeKind::Check => ("check", "check.refused", "its syntax gate"),
                ProbeKind::Perf => (
                    "perf",
                    "perf.refused",
                    "its after-deploy probes (run_perf_probe)",
                ),
            };
            let environment = &request.environment;
            let message = format!(
                "`pgrollout {command}` runs SQL from your working copy (the plan's CREATE statements and calls), \
                 and {environment} requires approval: there it runs only as part of a deploy, in {steps}, after \
                 the deploy's gates and approvals. Run it in an environment that needs no approval, or deploy"
            );
            return Err(approved_sql::refuse(
                &self.controller,
                &actor,
                action,
                environment,
                &plan.label,
                message,
            )
            .await
            .into());
        }
        if matches!(probe, ProbeKind::Perf) && routines.iter().all(|r| r.perf_probe.is_none()) {
            return Err(Status::invalid_argument(format!(
                "no routine of {} declares a performance probe: add a [perf] table to its sidecar, e.g. \
                 call = \"SELECT ...\" and runs = 7",
                plan.label
            )));
        }
        // Applied in deploy order, as the deploy will apply them.
        let order = deploy_order(routines).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let kind = match probe {
            ProbeKind::Check => JobKind::Check {
                routines: order.routines,
            },
            // The targets are filled in with the environment's steps.
            ProbeKind::Perf => JobKind::PerfProbe {
                routines: order.routines,
                targets: Vec::new(),
            },
        };
        let rollout = RolloutRequest {
            environment: request.environment,
            plan,
            kind,
            actor,
            trace: TraceParent::parse(&request.traceparent).unwrap_or_else(TraceParent::new_root),
            agent_wait: Duration::from_millis(request.agent_wait_ms),
            gates: Vec::new(),
            order: None,
            approvals: Default::default(),
            fleet_policy: Default::default(),
        };
        let receiver = rollout::start(self.controller.clone(), rollout).await?;
        Ok(Response::new(update_stream(receiver)))
    }
}
