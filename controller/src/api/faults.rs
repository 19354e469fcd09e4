//! Operator calls for rollouts in doubt: `retry` (a new attempt of the same
//! job) and `resolve` (an operator's verdict, with the reason, audited).

use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::{ResolveRequest, ResolveResponse, RetryRequest};
use tonic::{Request, Response, Status};

use super::operator::ControlService;
use super::status::update_stream;
use super::UpdateStream;
use crate::config::OperatorRole;
use crate::engine::retry;
use crate::store::{state, AuditEntry};

impl ControlService {
    pub(super) async fn start_retry(
        &self,
        request: Request<RetryRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        let caller = self
            .authorize(&request, OperatorRole::Deployer, "retry a rollout")
            .await?;
        let rollout_id = request.into_inner().rollout_id;
        let updates = retry::retry(self.controller.clone(), &rollout_id, &caller.actor()).await?;
        Ok(Response::new(update_stream(updates)))
    }

    pub(super) async fn resolve_rollout(
        &self,
        request: Request<ResolveRequest>,
    ) -> Result<Response<ResolveResponse>, Status> {
        let caller = self
            .authorize(&request, OperatorRole::Deployer, "resolve a rollout")
            .await?;
        let request = request.into_inner();
        let verdict = match request.verdict.as_str() {
            "succeeded" => state::SUCCEEDED,
            "failed" => state::FAILED,
            other => {
                return Err(Status::invalid_argument(format!(
                    "verdict {other:?}: say --succeeded or --failed"
                )))
            }
        };
        let reason = request.reason.trim();
        if reason.is_empty() {
            return Err(Status::invalid_argument(
                "--reason is required: say what you checked (e.g. the target's ledger for the job id)",
            ));
        }
        let message = format!("resolved {verdict} by {}: {reason}", caller.actor());
        let resolved = self
            .controller
            .store
            .resolve_rollout(&request.rollout_id, verdict, &message, now_unix_ms())
            .await
            .map_err(|e| {
                tracing::error!(error = %pgrollout_shared::errors::error_chain(&e), "resolving a rollout failed");
                Status::internal("the controller could not record the resolution; see its log")
            })?;
        if !resolved {
            return Err(Status::failed_precondition(format!(
                "rollout {} is not unknown (see `pgrollout status {}`): only a rollout in doubt is resolved",
                request.rollout_id, request.rollout_id
            )));
        }
        self.controller
            .audit(AuditEntry {
                actor: caller.actor(),
                action: "rollout.resolved".into(),
                outcome: verdict.into(),
                rollout_id: Some(request.rollout_id.clone()),
                details: reason.to_owned(),
                ..Default::default()
            })
            .await;
        Ok(Response::new(ResolveResponse {
            state: verdict.into(),
            message,
        }))
    }
}
