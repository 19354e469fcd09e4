//! The controller's two gRPC listeners: operators (`Control`) and agents
//! (`AgentLink`). Both take a bound listener and a shutdown future, so tests
//! can bind port 0 and stop cleanly.

pub mod agent_link;
pub mod control;

use std::future::Future;
use std::sync::Arc;

use pgrollout_shared::proto::{agent_link_server::AgentLinkServer, control_server::ControlServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::engine::Controller;

/// Largest message either listener accepts: a plan of thousands of routines
/// fits; anything larger is refused by tonic with a clear status.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

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
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let control = ControlServer::new(control::ControlService {
        controller: controller.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let agent_link = AgentLinkServer::new(agent_link::AgentLinkService { controller })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let operators_server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(control)
        .serve_with_incoming_shutdown(TcpListenerStream::new(operators), stopped(stop_rx.clone()));
    let agents_server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .add_service(agent_link)
        .serve_with_incoming_shutdown(TcpListenerStream::new(agents), stopped(stop_rx));
    tokio::try_join!(operators_server, agents_server)?;
    Ok(())
}
