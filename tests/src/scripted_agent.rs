//! An agent written here, speaking the real protocol with a real agent
//! certificate to the real controller: tests use it to send what a real
//! agent never would on its own (duplicate events and results), and the
//! scale benchmark runs a thousand of them in one process.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pgrollout_shared::proto::{
    agent_link_client::AgentLinkClient, agent_message::Body, controller_message, AgentMessage,
    ControllerMessage, Hello, TargetInfo,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// One connected scripted agent.
pub struct ScriptedAgent {
    outbound: mpsc::UnboundedSender<AgentMessage>,
    inbound: tonic::Streaming<ControllerMessage>,
}

/// The mutual-TLS channel to the controller's agent listener.
pub async fn channel(address: &str, ca: &Path, cert: &Path, key: &Path) -> Result<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca)?))
        .identity(Identity::from_pem(
            std::fs::read(cert)?,
            std::fs::read(key)?,
        ))
        .domain_name("127.0.0.1");
    Endpoint::from_shared(address.to_owned())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("connecting to {address}"))
}

impl ScriptedAgent {
    /// Opens the link on `channel`, says Hello as `name` of `zone` serving
    /// target `main`, and waits for the Welcome.
    pub async fn connect(channel: Channel, name: &str, zone: &str) -> Result<ScriptedAgent> {
        let (outbound, rx) = mpsc::unbounded_channel();
        let hello = Hello {
            agent_name: name.to_owned(),
            agent_version: "scripted".into(),
            claimed_zone: zone.to_owned(),
            targets: vec![TargetInfo {
                name: "main".into(),
                dbname: "scripted".into(),
                ..Default::default()
            }],
            in_flight: Vec::new(),
            draining: false,
        };
        outbound.send(AgentMessage {
            body: Some(Body::Hello(hello)),
        })?;
        let mut inbound = AgentLinkClient::new(channel)
            .connect(UnboundedReceiverStream::new(rx))
            .await
            .context("opening the agent link")?
            .into_inner();
        match inbound.message().await? {
            Some(ControllerMessage {
                body: Some(controller_message::Body::Welcome(_)),
            }) => {}
            other => bail!("expected Welcome, got {other:?}"),
        }
        Ok(ScriptedAgent { outbound, inbound })
    }

    pub fn send(&self, body: Body) -> Result<()> {
        self.outbound
            .send(AgentMessage { body: Some(body) })
            .context("the link is closed")
    }

    /// The next message from the controller other than a heartbeat.
    pub async fn next(&mut self, timeout: Duration) -> Result<controller_message::Body> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.inbound.message())
                .await
                .context("nothing from the controller in time")??
                .context("the controller closed the link")?;
            match message.body {
                Some(controller_message::Body::Heartbeat(_)) | None => continue,
                Some(body) => return Ok(body),
            }
        }
    }

    /// Splits into the sending half and the receiving stream, for a task
    /// that answers offers while another sends heartbeats.
    pub fn split(
        self,
    ) -> (
        mpsc::UnboundedSender<AgentMessage>,
        tonic::Streaming<ControllerMessage>,
    ) {
        (self.outbound, self.inbound)
    }
}
