//! `grpc.health.v1` on both gRPC listeners (issue 21): the overall status
//! (`""`) and each service's, SERVING while the controller takes rollouts,
//! NOT_SERVING from the moment it drains (engine/drain.rs), so a load
//! balancer stops sending operators here before the listeners close.

use std::sync::Arc;

use pgrollout_shared::proto::{
    agent_link_server::AgentLinkServer, control_server::ControlServer,
    watches_server::WatchesServer,
};
use tonic::server::NamedService;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::ServingStatus;

use super::{agent_link::AgentLinkService, operator::ControlService, watches::WatchService};
use crate::engine::Controller;

/// The health service both listeners add; its statuses follow the drain.
pub async fn service(controller: &Arc<Controller>) -> HealthServer<impl Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    let names = [
        "",
        <ControlServer<ControlService> as NamedService>::NAME,
        <WatchesServer<WatchService> as NamedService>::NAME,
        <AgentLinkServer<AgentLinkService> as NamedService>::NAME,
    ];
    for name in names {
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let controller = controller.clone();
    tokio::spawn(async move {
        controller.drain.started().await;
        for name in names {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    });
    service
}
