//! The agent's health listener (issue 21): `GET /healthz` (the process
//! answers), `GET /readyz` (the controller link is up, the agent is not
//! draining, and every target accepts a connection and `SELECT 1`), plain
//! HTTP for an orchestrator's probes, and `GET /metrics` for Prometheus
//! (`telemetry::render_metrics`: step durations, jobs, which controller the
//! link is on, dropped spans, build and process).
//!
//! ```toml
//! [health]
//! listen = "127.0.0.1:9465"
//! ```
//!
//! Without the table there is no listener. Like the controller's metrics
//! endpoint it is unauthenticated, so it stays on loopback unless
//! `allow_non_loopback = true` says a firewall guards it. Answers name
//! targets and reasons, never hosts' credentials.

use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use pgrollout_shared::http_server::{self, HttpResponse};

use crate::config::{AgentConfig, TargetConfig, Timeouts};
use crate::outbox::Outbox;

/// The longest a readiness probe waits for one target.
const TARGET_CHECK: Duration = Duration::from_secs(3);

/// Serves until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Arc<AgentConfig>,
    outbox: Arc<Outbox>,
) {
    let respond = move |request: hyper::Request<hyper::body::Incoming>| {
        let (config, outbox) = (config.clone(), outbox.clone());
        async move {
            if let Some(refusal) = http_server::only_get(&request) {
                return refusal;
            }
            match request.uri().path() {
                "/healthz" => http_server::alive(),
                "/readyz" => readiness(&config, &outbox).await,
                "/metrics" => http_server::prometheus(crate::telemetry::render_metrics(&outbox)),
                _ => http_server::plain(
                    StatusCode::NOT_FOUND,
                    "not found; try GET /healthz, /readyz or /metrics\n".into(),
                ),
            }
        }
    };
    http_server::serve(listener, "health", respond, std::future::pending()).await;
}

async fn readiness(config: &AgentConfig, outbox: &Outbox) -> HttpResponse {
    let mut failures = Vec::new();
    if !outbox.is_connected() {
        failures.push(format!("controller link down ({})", config.controller));
    }
    if outbox.is_draining() {
        failures.push("draining: stopping, takes no new job".to_owned());
    }
    let timeouts = Timeouts {
        connect: config.timeouts.connect.min(TARGET_CHECK),
        statement: TARGET_CHECK,
        ..config.timeouts.clone()
    };
    let checks = config
        .targets
        .iter()
        .map(|target| check_target(target, &timeouts));
    for (target, problem) in config
        .targets
        .iter()
        .zip(futures_util::future::join_all(checks).await)
    {
        if let Some(problem) = problem {
            failures.push(format!("target {}: {problem}", target.name));
        }
    }
    http_server::readiness(&failures)
}

/// `None` when the target accepts a connection and answers `SELECT 1`.
async fn check_target(target: &TargetConfig, timeouts: &Timeouts) -> Option<String> {
    let connection = match crate::sql::connect(target, timeouts).await {
        Ok(connection) => connection,
        Err(error) => return Some(error.to_string()),
    };
    match tokio::time::timeout(TARGET_CHECK, connection.client.simple_query("SELECT 1")).await {
        Ok(Ok(_)) => None,
        Ok(Err(error)) => Some(crate::sql::describe_error(&error, None)),
        Err(_) => Some(format!("SELECT 1 did not answer within {TARGET_CHECK:?}")),
    }
}
