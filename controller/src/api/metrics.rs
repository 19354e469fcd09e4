//! `GetMetrics`: SEED.md's deployment metrics for `pgrollout metrics`,
//! computed from the store (definitions in `crate::metrics`). Viewers may
//! read them.

use pgrollout_shared::proto::{MetricsRequest, MetricsResponse, ProcedureMetrics};
use tonic::{Request, Response, Status};

use super::operator::ControlService;
use crate::config::OperatorRole;
use crate::metrics::{figures, ProcedureFigures};

impl ControlService {
    pub(super) async fn metrics(
        &self,
        request: Request<MetricsRequest>,
    ) -> Result<Response<MetricsResponse>, Status> {
        self.authorize(&request, OperatorRole::Viewer, "read metrics")
            .await?;
        let query = request.into_inner();
        let figures = figures(&self.controller.store, &query.procedure, &query.environment)
            .await
            .map_err(|error| {
                tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), "reading metrics failed");
                Status::internal("the controller could not read its store; see its log")
            })?;
        Ok(Response::new(MetricsResponse {
            procedures: figures.into_iter().map(to_wire).collect(),
        }))
    }
}

fn to_wire(figures: ProcedureFigures) -> ProcedureMetrics {
    ProcedureMetrics {
        procedure: figures.procedure,
        environment: figures.environment,
        deployments: figures.deployments,
        successes: figures.successes,
        average_duration_ms: figures.average_duration_ms.unwrap_or_default(),
        rollbacks: figures.rollbacks,
        mttr_ms: figures.mttr_ms.unwrap_or_default(),
        mttr_samples: figures.mttr_samples,
    }
}
