//! `GET /metrics` in Prometheus text format, and the health checks
//! `GET /healthz` (the process answers) and `GET /readyz` (the store
//! answers, the gRPC listeners serve, the controller is not draining), on
//! the `[metrics]` listener (`pgrollout_shared::http_server`: hyper, bounded
//! requests and connections). A busy controller answers the scrape from the
//! store like any reader.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use pgrollout_shared::http_server::{self, HttpResponse};
use tokio::net::TcpListener;

use super::prometheus::{self, Scrape};
use crate::engine::Controller;
use crate::store::StoreError;

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    controller: Arc<Controller>,
    shutdown: impl Future<Output = ()>,
) {
    let respond = move |request| respond(controller.clone(), request);
    http_server::serve(listener, "metrics", respond, shutdown).await;
}

async fn respond(controller: Arc<Controller>, request: Request<Incoming>) -> HttpResponse {
    if let Some(refusal) = http_server::only_get(&request) {
        return refusal;
    }
    match request.uri().path() {
        "/metrics" => metrics(&controller).await,
        "/healthz" => http_server::alive(),
        "/readyz" => readiness(&controller).await,
        _ => http_server::plain(
            StatusCode::NOT_FOUND,
            "not found; try GET /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

async fn metrics(controller: &Controller) -> HttpResponse {
    match scrape(controller).await {
        Ok(text) => http_server::prometheus(text),
        Err(error) => {
            tracing::error!(error = %anyhow::Error::from(error), "metrics: reading the store failed");
            http_server::plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the controller could not read its store; see its log\n".into(),
            )
        }
    }
}

/// Ready to take rollouts: what a load balancer or orchestrator asks before
/// sending operators here.
async fn readiness(controller: &Controller) -> HttpResponse {
    let mut failures = Vec::new();
    if let Err(error) = controller.store.ping().await {
        tracing::error!(error = %anyhow::Error::from(error), "readyz: the store did not answer");
        failures.push("store: not answering; see the controller's log".to_owned());
    }
    if !controller.serving.load(Ordering::Relaxed) {
        failures.push("gRPC listeners: not serving".to_owned());
    }
    if controller.drain.is_draining() {
        failures.push("draining: shutting down, takes no new rollouts".to_owned());
    }
    http_server::readiness(&failures)
}

/// The whole exposition: figures and durations from the store's summary
/// (`super::summary`: what changed since the last scrape is read, not the
/// history), agents from the registry, the process's own counters.
pub async fn scrape(controller: &Controller) -> Result<String, StoreError> {
    let (figures, batch_figures, deploy_durations, rollback_durations) =
        super::summary::with_summary(&controller.store, |summary| {
            (
                summary.routine_figures(),
                summary.batch_figures(),
                summary.deploy_durations.clone(),
                summary.rollback_durations.clone(),
            )
        })
        .await?;
    let rollouts = controller.store.rollouts_by_state().await?;
    let drift = controller.store.drift_gauges().await?;
    let mut agents_by_zone: BTreeMap<String, u64> = controller
        .config
        .environments
        .keys()
        .filter_map(|environment| controller.config.zone_of(environment))
        .map(|zone| (zone, 0))
        .collect();
    for agent in controller.registry.all() {
        *agents_by_zone.entry(agent.zone.clone()).or_default() += 1;
    }
    Ok(prometheus::render(&Scrape {
        figures: &figures,
        batch_figures: &batch_figures,
        deploy_durations,
        rollback_durations,
        agents_by_zone: &agents_by_zone,
        rollouts: &rollouts,
        drift: &drift,
    }))
}
