//! The `AgentLink` service: one long-lived stream per agent. Receives Hello,
//! registers the agent under its zone, then records and routes everything the
//! agent streams back, acknowledging each (job, seq) once stored.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::{
    agent_link_server::AgentLink, agent_message::Body, controller_message, Ack, AgentMessage,
    ControllerMessage, Heartbeat, Welcome,
};
use pgrollout_shared::text::escape_message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{authenticate_agent, peer_certificate};
use crate::domain::agent_report::{AgentHello, AgentReport};
use crate::engine::error::EngineError;
use crate::engine::registry::AgentHandle;
use crate::engine::router::JobUpdate;
use crate::engine::watch::Intercepted;
use crate::engine::Controller;
use crate::store::AuditEntry;

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AgentLinkService {
    pub controller: Arc<Controller>,
}

type ControllerStream = Pin<Box<dyn Stream<Item = Result<ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentLink for AgentLinkService {
    type ConnectStream = ControllerStream;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        // Read the certificate before the stream is taken apart; it is checked
        // against the Hello below.
        let certificate = peer_certificate(&request);
        let certified_as = match &certificate {
            Ok(Some(peer)) => peer.id.display_name(),
            _ => "an agent without a usable certificate".to_owned(),
        };
        let policy = self.controller.policy();
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(AgentMessage {
                body: Some(Body::Hello(hello)),
            }))) => hello,
            Ok(Ok(_)) => {
                return Err(Status::invalid_argument(
                    "the first message on the link must be Hello",
                ))
            }
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 10s")),
        };
        let hello = match AgentHello::try_from(hello) {
            Ok(hello) => hello,
            Err(malformed) => {
                tracing::warn!(peer = %peer, reason = %malformed, "agent rejected: malformed Hello");
                self.controller
                    .audit(AuditEntry {
                        actor: certified_as.clone(),
                        action: "agent.rejected".into(),
                        outcome: "refused".into(),
                        details: format!("{malformed}; peer {peer}"),
                        ..Default::default()
                    })
                    .await;
                return Err(Status::invalid_argument(malformed.to_string()));
            }
        };
        let identity = match authenticate_agent(
            certificate,
            &policy,
            &hello.claimed_zone,
            &hello.name,
        ) {
            Ok(identity) => identity,
            Err(rejection) => {
                tracing::warn!(peer = %peer, claimed_zone = %hello.claimed_zone, claimed_name = %hello.name, reason = %rejection.reason, "agent rejected");
                self.controller
                    .audit(AuditEntry {
                        actor: certified_as.clone(),
                        action: "agent.rejected".into(),
                        outcome: "refused".into(),
                        details: format!(
                            "{}; claimed zone {} name {}; peer {peer}",
                            rejection.reason, hello.claimed_zone, hello.name
                        ),
                        ..Default::default()
                    })
                    .await;
                return Err(rejection.status);
            }
        };
        let (name, zone) = (identity.name.clone(), identity.zone.clone());
        let controller = self.controller.clone();
        let (sender, receiver) = mpsc::channel(1024);
        let handle = Arc::new(AgentHandle {
            session: controller.registry.next_session(),
            name: name.clone(),
            zone: zone.clone(),
            version: hello.version.clone(),
            targets: hello.targets.clone(),
            connected_at: now_unix_ms(),
            last_heartbeat: now_unix_ms().into(),
            draining: hello.draining.into(),
            certificate: identity.certificate.clone(),
            sender: sender.clone(),
        });
        let welcome = Welcome {
            controller_version: pgrollout_shared::VERSION.to_owned(),
            heartbeat_interval_ms: millis(controller.config.deployment.heartbeat_interval),
            zone: zone.clone(),
            agent_name: name.clone(),
            forwards_spans: controller.span_relay.forwards(),
            // ReportedResult::try_from puts them back before anything reads them.
            expands_existence_only: true,
        };
        let _ = sender
            .send(Ok(message(controller_message::Body::Welcome(welcome))))
            .await;
        tracing::info!(
            agent = %name,
            zone = %zone,
            peer = %peer,
            version = %hello.version,
            in_flight = hello.in_flight.len(),
            "agent connected"
        );
        for job in &hello.in_flight {
            tracing::info!(agent = %name, job_id = %job.job.id, finished = job.finished, "agent reports job in flight");
        }
        // Square the agent's jobs with the store before it gets new work.
        super::reconcile::reconcile(&controller, &handle, &hello.in_flight).await;
        controller.registry.register(handle.clone());
        // Other controllers find the agent through the store (issue 18).
        let stream_epoch = crate::engine::delivery::stream_opened(&controller, &handle).await;
        controller
            .audit(AuditEntry {
                actor: format!("agent {zone}/{name}"),
                action: "agent.connected".into(),
                outcome: "ok".into(),
                details: format!(
                    "peer {peer}, version {}, {} job(s) in flight",
                    hello.version,
                    hello.in_flight.len()
                ),
                ..Default::default()
            })
            .await;
        tokio::spawn(heartbeats(
            sender,
            controller.config.deployment.heartbeat_interval,
        ));
        tokio::spawn(receive(controller, handle, inbound, stream_epoch));
        // A disconnect (`AgentHandle::disconnect`) ends the stream with
        // its status: permission denied is final for the agent.
        let outbound = ReceiverStream::new(receiver).map(|message| message.map_err(Status::from));
        Ok(Response::new(Box::pin(outbound)))
    }
}

async fn receive(
    controller: Arc<Controller>,
    agent: Arc<AgentHandle>,
    mut inbound: Streaming<AgentMessage>,
    stream_epoch: Option<i64>,
) {
    let reason = loop {
        match inbound.message().await {
            Ok(Some(message)) => handle(&controller, &agent, message).await,
            Ok(None) => break "stream closed by the agent".to_owned(),
            Err(status) => break format!("stream error: {}", status.message()),
        }
    };
    crate::engine::delivery::stream_closed(&controller, &agent, stream_epoch).await;
    if controller.registry.unregister(agent.session) {
        // The connection ends at the certificate's notAfter
        // (api/expiring_stream.rs): say so rather than "stream error".
        let (action, reason) = match agent.certificate.as_ref().filter(|c| c.expired()) {
            Some(certificate) => (
                "agent.expired",
                format!(
                    "the certificate of agent {}/{} (serial {}) expired at {}; disconnected, no job offered since",
                    agent.zone,
                    agent.name,
                    certificate.serial,
                    humantime::format_rfc3339_seconds(certificate.not_after)
                ),
            ),
            None => ("agent.disconnected", reason),
        };
        tracing::warn!(agent = %agent.name, zone = %agent.zone, reason = %reason, "agent disconnected");
        controller
            .audit(AuditEntry {
                actor: format!("agent {}/{}", agent.zone, agent.name),
                action: action.into(),
                outcome: if action == "agent.expired" {
                    "disconnected"
                } else {
                    "ok"
                }
                .into(),
                details: reason,
                ..Default::default()
            })
            .await;
    }
    for job_id in controller.router.session_lost(agent.session, &agent.name) {
        tracing::warn!(agent = %agent.name, job_id = %job_id, "job in flight on a lost agent");
    }
}

async fn handle(controller: &Controller, agent: &AgentHandle, mut message: AgentMessage) {
    // A target's errors, RAISE messages and names are data (issue 13): what
    // the controller stores, relays and logs has its control characters
    // written out, every field of the report at once.
    if matches!(
        message.body,
        Some(Body::Event(_) | Body::Result(_) | Body::Decline(_))
    ) {
        escape_message(&mut message, "pgrollout.v1.AgentMessage");
    }
    let now = now_unix_ms();
    agent.last_heartbeat.store(now, Ordering::Relaxed);
    if let Some(Body::RefusedJob(refused)) = &message.body {
        return super::agent_refusals::record(controller, agent, refused).await;
    }
    // Checked once, here: past this point only domain types.
    let report = match AgentReport::try_from(message) {
        Ok(report) => report,
        Err(malformed) => {
            let key = malformed.outbox_key.clone();
            crate::engine::malformed_report::settle(controller, agent, malformed).await;
            // Acknowledged all the same, as sent: unacknowledged, the agent
            // would replay it from its outbox on every reconnect.
            if let Some(key) = key {
                ack(agent, &key.job_id, key.attempt, key.seq).await;
            }
            return;
        }
    };
    // A post-deploy watch's sample is not a rollout: its answer goes there.
    match controller
        .watches
        .intercept(&agent.zone, &agent.name, &report)
    {
        Intercepted::NotASample => {}
        Intercepted::Acknowledge {
            job_id,
            attempt,
            seq,
        } => return ack(agent, &job_id, attempt, seq).await,
        Intercepted::Taken => return,
    }
    match report {
        AgentReport::Accepted(job) => {
            match stored(agent, "a claim", || {
                controller
                    .store
                    .claim_job(&job.id, job.attempt, &agent.name, &agent.zone, now)
            })
            .await
            {
                Ok(true) => {
                    controller.router.publish(&job.id, JobUpdate::Accepted);
                }
                Ok(false) => {
                    tracing::warn!(agent = %agent.name, job_id = %job.id, "claim refused: job not offered to this zone or already claimed")
                }
                // Logged by `stored`; the agent's Accept is not replayed,
                // the rollout's accept timeout settles the job.
                Err(()) => {}
            }
        }
        AgentReport::Declined { job, reason } => {
            let followed_here = controller.router.publish(
                &job.id,
                JobUpdate::Declined {
                    reason: reason.clone(),
                },
            );
            // A job delivered for another controller: its rollout reads
            // the decline in the store.
            if !followed_here {
                if let Err(error) = controller
                    .store
                    .record_delivery_declined(&job.id, job.attempt, &reason)
                    .await
                {
                    tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), "recording a decline failed");
                }
            }
        }
        AgentReport::Event(event) => {
            let (job, seq) = (event.job.clone(), event.seq);
            match stored(agent, "an event", || controller.store.record_event(&event)).await {
                Ok(true) => {
                    controller.router.publish(&job.id, JobUpdate::Event(event));
                }
                Ok(false) => tracing::debug!(job_id = %job.id, seq, "duplicate event dropped"),
                // Not acknowledged: the agent keeps it and replays it.
                Err(()) => return,
            }
            ack(agent, &job.id, job.attempt, seq).await;
        }
        AgentReport::Result(result) => {
            let (job, seq) = (result.job.clone(), result.seq);
            let exit_code = result.outcome.exit_code();
            match stored(agent, "a result", || {
                controller.store.record_result(&result, now)
            })
            .await
            {
                Ok(true) => {
                    tracing::info!(agent = %agent.name, job_id = %job.id, outcome = ?result.outcome, "job result recorded");
                    // The entry names the rollout, so `audit --rollout` finds it.
                    let rollout = controller.store.job_rollout(&job.id).await.ok().flatten();
                    let payload = &result.payload;
                    controller
                        .audit(AuditEntry {
                            rollout_id: rollout.as_ref().map(|r| r.rollout_id.clone()),
                            environment: rollout.as_ref().map(|r| r.environment.clone()),
                            procedure: rollout.as_ref().map(|r| r.label.clone()),
                            trace_id: rollout.as_ref().map(|r| r.trace_id.clone()),
                            actor: format!("agent {}/{}", agent.zone, agent.name),
                            action: "job.finished".into(),
                            outcome: result.outcome.name().into(),
                            details: format!(
                                "job {} exit {}: {}; backup {}; ledger {:?}",
                                job.id,
                                exit_code.code(),
                                payload.message,
                                payload.backup.as_ref().map_or("", |b| b.path.as_str()),
                                payload.ledger_ids
                            ),
                        })
                        .await;
                    if let Some(rollout) = &rollout {
                        crate::engine::operations::mark_undone(controller, rollout, result.wire())
                            .await;
                    }
                    crate::engine::after_deploy::record_probes(controller, &job.id, payload).await;
                    // The versions' index after the operator has the result:
                    // derived data, and on a large batch the slowest write.
                    // Should it fail (or this controller die first), the mark
                    // it leaves is indexed at the next start.
                    let versions = crate::store::IndexedResult::has_versions(&result)
                        .then(|| crate::store::IndexedResult::of(&result));
                    controller
                        .router
                        .publish(&job.id, JobUpdate::Finished(result));
                    controller.notifier.rollout_finished(&job.id);
                    if let Some(versions) = versions {
                        if let Err(error) = controller.store.index_versions_of(versions).await {
                            tracing::error!(job_id = %job.id, error = %pgrollout_shared::errors::error_chain(&error),
                                "indexing the result's routine versions failed; retried at the next start");
                        }
                    }
                }
                Ok(false) => tracing::debug!(job_id = %job.id, "duplicate result dropped"),
                // Not acknowledged: the agent keeps it and replays it.
                Err(()) => return,
            }
            ack(agent, &job.id, job.attempt, seq).await;
        }
        AgentReport::Spans(batch) => controller.span_relay.accept(agent.into(), batch),
        AgentReport::Draining { running } => {
            agent.draining.store(true, Ordering::Relaxed);
            tracing::info!(agent = %agent.name, zone = %agent.zone, running, "agent draining: no new jobs offered to it");
            controller
                .audit(AuditEntry {
                    actor: format!("agent {}/{}", agent.zone, agent.name),
                    action: "agent.draining".into(),
                    outcome: "ok".into(),
                    details: format!(
                        "stopping; finishing {running} running job(s), offered no new one"
                    ),
                    ..Default::default()
                })
                .await;
        }
        AgentReport::Heartbeat | AgentReport::Empty => {}
        AgentReport::Hello => {
            tracing::warn!(agent = %agent.name, "ignoring a second Hello on one stream")
        }
    }
}

/// How long a report waits for an unreachable store (restarting, failing
/// over) before the link gives up on it.
const STORE_RETRY: Duration = Duration::from_secs(60);

/// Stores an agent's report, trying again while the store is unreachable:
/// the report stays unacknowledged and the stream's later messages wait
/// behind it, in order — the agent sends each report once per stream, so one
/// dropped here would wait for its next reconnect. Past `STORE_RETRY` the
/// link is ended, so the agent reconnects (to any controller) and replays
/// its journal.
async fn stored<T, F, Fut>(agent: &AgentHandle, what: &str, mut store: F) -> Result<T, ()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::store::StoreError>>,
{
    let deadline = tokio::time::Instant::now() + STORE_RETRY;
    let mut pause = Duration::from_millis(50);
    loop {
        match store().await {
            Ok(value) => return Ok(value),
            Err(error) if tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(agent = %agent.name, error = %pgrollout_shared::errors::error_chain(&error), "recording {what} failed; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(error) => {
                tracing::error!(agent = %agent.name, error = %pgrollout_shared::errors::error_chain(&error), "recording {what} failed; ending the link so the agent replays it");
                agent.disconnect(EngineError::Unavailable(format!(
                    "the controller cannot record {what} in its store; reconnect and replay"
                )));
                return Err(());
            }
        }
    }
}

async fn ack(agent: &AgentHandle, job_id: &str, attempt: u32, seq: u64) {
    let ack = Ack {
        job_id: job_id.to_owned(),
        seq,
        attempt,
    };
    let _ = agent
        .sender
        .send(Ok(message(controller_message::Body::Ack(ack))))
        .await;
}

async fn heartbeats(
    sender: mpsc::Sender<Result<ControllerMessage, EngineError>>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        let beat = Heartbeat {
            sent_at_unix_ms: now_unix_ms(),
        };
        if sender
            .send(Ok(message(controller_message::Body::Heartbeat(beat))))
            .await
            .is_err()
        {
            return;
        }
    }
}

fn message(body: controller_message::Body) -> ControllerMessage {
    ControllerMessage { body: Some(body) }
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}
