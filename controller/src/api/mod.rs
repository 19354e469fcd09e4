//! The controller's two gRPC listeners: operators (`Control`, `Watches`) and agents
//! (`AgentLink`), both mutual TLS unless the controller runs with
//! `--dev-plaintext`. They take bound listeners and a shutdown future, so
//! tests can bind port 0 and stop cleanly.

pub mod agent_link;
mod agent_refusals;
pub mod audit_verify;
mod control;
mod drift;
mod expiring_stream;
mod faults;
mod fleet;
mod follow_rollout;
mod health;
mod metrics;
pub mod operations;
mod operator;
mod plan_input;
mod probes;
mod reconcile;
mod requests;
mod status;
mod tls;
mod watches;

pub(crate) use status::UpdateStream;

use std::future::Future;
use std::sync::Arc;

use futures_util::Stream;
use pgrollout_shared::proto::{
    agent_link_server::AgentLinkServer, control_server::ControlServer,
    watches_server::WatchesServer,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::Connected;

use crate::engine::Controller;

/// Serves both listeners until `shutdown` resolves.
pub async fn serve(
    controller: Arc<Controller>,
    operators: TcpListener,
    agents: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    match controller.tls.clone() {
        Some(state) => {
            let operators = tls::incoming(operators, state.clone(), "operators");
            let agents = tls::incoming(agents, state, "agents");
            serve_both(controller, operators, agents, stop_rx).await
        }
        None => {
            serve_both(
                controller,
                TcpListenerStream::new(operators),
                TcpListenerStream::new(agents),
                stop_rx,
            )
            .await
        }
    }
}

async fn serve_both<IO, Operators, Agents>(
    controller: Arc<Controller>,
    operators: Operators,
    agents: Agents,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()>
where
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    Operators: Stream<Item = Result<IO, std::io::Error>> + Send + 'static,
    Agents: Stream<Item = Result<IO, std::io::Error>> + Send + 'static,
{
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let stop_for_grace = stop.clone();
    let max = controller.config.limits.max_message_bytes;
    let control = ControlServer::new(operator::ControlService {
        controller: controller.clone(),
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let watches = WatchesServer::new(watches::WatchService {
        controller: controller.clone(),
    })
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let health = health::service(&controller).await;
    let serving = controller.clone();
    let agent_link = AgentLinkServer::new(agent_link::AgentLinkService { controller })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let operators_server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(control)
        .add_service(watches)
        .add_service(health.clone())
        .serve_with_incoming_shutdown(operators, stopped(stop.clone()));
    let agents_server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .add_service(agent_link)
        .add_service(health)
        .serve_with_incoming_shutdown(agents, stopped(stop));
    // `/readyz` says the listeners serve from here until the stop signal.
    serving
        .serving
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let stopped_serving = serving.clone();
    let mut stop_seen = stop_for_grace.clone();
    tokio::spawn(async move {
        let _ = stop_seen.wait_for(|stop| *stop).await;
        stopped_serving
            .serving
            .store(false, std::sync::atomic::Ordering::Relaxed);
    });
    // Agents' streams never end by themselves: after the stop signal,
    // in-flight operator calls get a bounded grace, then the links are cut
    // (agents reconnect to the next controller; their journals keep results).
    let grace = async move {
        stopped(stop_for_grace).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        tracing::info!(
            grace_s = SHUTDOWN_GRACE.as_secs(),
            "closing the remaining agent links"
        );
    };
    tokio::select! {
        served = async { tokio::try_join!(operators_server, agents_server) } => { served?; }
        () = grace => {}
    }
    Ok(())
}

/// How long a stopping controller waits for open calls before it exits.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);
