//! A hostile controller (issue 19): it holds a valid controller certificate
//! of the agents' CA, so the real agent dials it and takes its offers as a
//! controller's, and then it sends whatever a test scripts — forged, replayed,
//! stripped or altered approvals. What a compromised controller process or
//! store could send, without any operator's key.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pgrollout_shared::proto::{
    self,
    agent_link_server::{AgentLink, AgentLinkServer},
    agent_message::Body,
    controller_message, AgentMessage, ControllerMessage,
};
use tokio::sync::{mpsc, Mutex};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(30);

struct Link {
    from_agent: mpsc::UnboundedSender<AgentMessage>,
    to_agent: Mutex<Option<mpsc::Sender<Result<ControllerMessage, Status>>>>,
}

#[tonic::async_trait]
impl AgentLink for Link {
    type ConnectStream = ReceiverStream<Result<ControllerMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await {
            Ok(Some(AgentMessage {
                body: Some(Body::Hello(hello)),
            })) => hello,
            _ => return Err(Status::invalid_argument("Hello first")),
        };
        let from_agent = self.from_agent.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                let _ = from_agent.send(message);
            }
        });
        let (tx, rx) = mpsc::channel(64);
        let welcome = proto::Welcome {
            zone: hello.claimed_zone.clone(),
            agent_name: hello.agent_name.clone(),
            heartbeat_interval_ms: 1000,
            ..Default::default()
        };
        let _ = tx
            .send(Ok(ControllerMessage {
                body: Some(controller_message::Body::Welcome(welcome)),
            }))
            .await;
        *self.to_agent.lock().await = Some(tx);
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The hostile controller's agent listener and what the agent says to it.
pub struct HostileController {
    pub port: u16,
    link: Arc<Link>,
    inbox: mpsc::UnboundedReceiver<AgentMessage>,
}

impl HostileController {
    /// Listens on a free port with `<ca_dir>/controller-main.pem` (as
    /// `pgrollout ca issue controller --name main` wrote it), requiring
    /// client certificates of `<ca_dir>/ca.pem`, as the real one does.
    pub async fn start(ca_dir: &Path) -> Result<HostileController> {
        let read = |file: &str| {
            std::fs::read(ca_dir.join(file)).with_context(|| format!("reading {file}"))
        };
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                read("controller-main.pem")?,
                read("controller-main.key")?,
            ))
            .client_ca_root(Certificate::from_pem(read("ca.pem")?));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (from_agent, inbox) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            from_agent,
            to_agent: Mutex::new(None),
        });
        let server = Server::builder()
            .tls_config(tls)?
            .add_service(AgentLinkServer::from_arc(link.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener));
        tokio::spawn(server);
        Ok(HostileController { port, link, inbox })
    }

    /// Offers a job to the connected agent.
    pub async fn offer(&self, offer: proto::JobOffer) -> Result<()> {
        self.send(controller_message::Body::Offer(offer)).await
    }

    async fn send(&self, body: controller_message::Body) -> Result<()> {
        let sender = self
            .link
            .to_agent
            .lock()
            .await
            .clone()
            .context("no agent connected")?;
        sender
            .send(Ok(ControllerMessage { body: Some(body) }))
            .await
            .context("agent stream closed")
    }

    /// Waits for the job's result, acknowledging its events and result as a
    /// controller does; returns the result and the events' step lines.
    pub async fn result_of(&mut self, job_id: &str) -> Result<(proto::JobResult, Vec<String>)> {
        let mut steps = Vec::new();
        loop {
            let message = tokio::time::timeout(WAIT, self.inbox.recv())
                .await
                .with_context(|| format!("no result for {job_id}"))?
                .context("the agent hung up")?;
            match message.body {
                Some(Body::Event(event)) => {
                    self.ack(&event.job_id, event.attempt, event.seq).await?;
                    if event.job_id == job_id {
                        steps.push(format!("{}: {}", event.step, event.message));
                    }
                }
                Some(Body::Result(result)) => {
                    self.ack(&result.job_id, result.attempt, result.seq).await?;
                    if result.job_id == job_id {
                        return Ok((result, steps));
                    }
                }
                Some(Body::Decline(decline)) if decline.job_id == job_id => {
                    bail!("the agent declined {job_id}: {}", decline.reason)
                }
                _ => {}
            }
        }
    }

    async fn ack(&self, job_id: &str, attempt: u32, seq: u64) -> Result<()> {
        self.send(controller_message::Body::Ack(proto::Ack {
            job_id: job_id.into(),
            seq,
            attempt,
        }))
        .await
    }
}
