//! The agent's one connection to a controller: dial out, say Hello, take
//! offers, stream events, heartbeat; on any network error reconnect with
//! jittered exponential backoff, to the next of the configured controllers
//! (`rotation.rs`, issue 18). Jobs run independently of the connection,
//! so a lost link does not abort work already under way; a new session,
//! with whichever controller, replays everything not yet acknowledged.

pub mod capabilities;
mod rotation;
pub mod span_relay;

use std::sync::Arc;
use std::time::Duration;

use pgrollout_shared::job::{now_unix_ms, Job};
use pgrollout_shared::proto::{
    agent_link_client::AgentLinkClient, agent_message, controller_message, Accept, AgentMessage,
    ControllerMessage, Decline, Heartbeat, Hello, JobOffer, TargetInfo,
};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::config::AgentConfig;
use crate::outbox::Outbox;
use pgrollout_shared::errors::error_chain;

/// Where the link hands an accepted job (its start already journaled): a
/// future that runs it to its result, which it leaves in the outbox.
/// `main.rs` passes `jobs::execute`; the link knows nothing of job kinds.
pub type JobSink = Arc<
    dyn Fn(Job) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync,
>;

/// Largest message either side accepts: a plan of thousands of routines fits.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Worth retrying: the network, the controller restarting.
    #[error("{0}")]
    Retryable(String),
    /// Retrying this controller cannot help (refused identity, wrong zone):
    /// the agent stops once every controller it lists refused it.
    #[error("{0}")]
    Terminal(String),
}

/// Runs sessions until every controller refused the agent; never returns
/// otherwise.
pub async fn run(config: Arc<AgentConfig>, outbox: Arc<Outbox>, sink: JobSink) -> SessionError {
    use rotation::{Ended, Next};
    let addresses = &config.controller;
    let mut rotation = rotation::Rotation::new(addresses.len(), config.timeouts.reconnect_max);
    loop {
        let address = addresses.at(rotation.cursor()).to_owned();
        let mut welcomed = false;
        // A session ends only with an error; an `Ok` is treated as a drop,
        // never as a reason to redial without a delay.
        let error = session(&config, &address, &outbox, &sink, &mut welcomed)
            .await
            .err()
            .unwrap_or_else(|| SessionError::Retryable("the session ended".into()));
        let ended = match (&error, welcomed) {
            (SessionError::Terminal(_), _) => Ended::Refused,
            (SessionError::Retryable(_), true) => Ended::Dropped,
            (SessionError::Retryable(_), false) => Ended::Unreachable,
        };
        let delay = match rotation.after_session(ended) {
            Next::GiveUp => return error,
            Next::Now => Duration::ZERO,
            Next::After(bound) => rotation::jittered(bound),
        };
        tracing::warn!(
            controller = %address,
            reason = %error,
            next = %addresses.at(rotation.cursor()),
            retry_in_ms = delay.as_millis() as u64,
            "link to controller lost"
        );
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

async fn session(
    config: &Arc<AgentConfig>,
    address: &str,
    outbox: &Arc<Outbox>,
    sink: &JobSink,
    welcomed: &mut bool,
) -> Result<(), SessionError> {
    let retry =
        |what: &str, e: &dyn std::fmt::Display| SessionError::Retryable(format!("{what}: {e}"));
    let mut endpoint = Endpoint::from_shared(address.to_owned())
        .map_err(|e| SessionError::Terminal(format!("invalid controller address: {e}")))?;
    let tls_files = config
        .tls
        .as_ref()
        .filter(|_| address.starts_with("https://"));
    if let Some(files) = tls_files {
        let host = endpoint
            .uri()
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_owned();
        endpoint = endpoint
            .tls_config(client_tls(files, &host)?)
            .map_err(|e| SessionError::Terminal(format!("invalid TLS settings: {e}")))?;
    }
    let certificate_stamp = tls_files.map(|files| file_stamp(&files.cert));
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(config.timeouts.heartbeat)
        .keep_alive_timeout(config.timeouts.heartbeat * 2)
        .connect()
        .await
        .map_err(|e| retry("cannot reach the controller", &error_chain(&e)))?;
    let mut client = AgentLinkClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let hello = Hello {
        agent_name: config.name.clone(),
        agent_version: pgrollout_shared::VERSION.to_owned(),
        claimed_zone: config.zone.clone(),
        targets: config
            .targets
            .iter()
            .map(|t| TargetInfo {
                name: t.name.clone(),
                dbname: t.dbname.clone(),
                labels: t.labels.clone().into_iter().collect(),
            })
            .collect(),
        in_flight: outbox.in_flight(),
        draining: outbox.is_draining(),
    };
    let _ = tx.send(message(agent_message::Body::Hello(hello)));
    let response = client
        .connect(UnboundedReceiverStream::new(rx))
        .await
        .map_err(|status| classify(&status))?;
    let mut inbound = response.into_inner();
    let silence_limit = config.timeouts.heartbeat * 3;
    let welcome = tokio::time::timeout(silence_limit, inbound.message())
        .await
        .map_err(|_| retry("no Welcome from the controller", &"timed out"))?
        .map_err(|status| classify(&status))?;
    match welcome.and_then(|m| m.body) {
        Some(controller_message::Body::Welcome(welcome)) => {
            *welcomed = true;
            span_relay::controller_forwards(welcome.forwards_spans);
            capabilities::welcomed(&welcome);
            tracing::info!(
                controller = %address,
                zone = %welcome.zone,
                agent = %welcome.agent_name,
                "connected to controller"
            )
        }
        _ => {
            return Err(SessionError::Retryable(
                "controller did not answer with Welcome".into(),
            ))
        }
    }

    for pending in outbox.attach(tx.clone(), address) {
        let _ = tx.send(pending);
    }
    // Issue 19: every refusal kept, to every controller (it records each once).
    for refused in crate::refusals::read(&crate::refusals::path_for(&config.journal_path())) {
        let _ = tx.send(message(agent_message::Body::RefusedJob(refused)));
    }
    let heartbeat = tokio::spawn(heartbeats(outbox.clone(), config.timeouts.heartbeat));
    let renewed = certificate_renewed(tls_files.map(|f| f.cert.clone()), certificate_stamp);
    let result = tokio::select! {
        result = serve(config, outbox, sink, &mut inbound, silence_limit) => result,
        () = renewed => Err(SessionError::Retryable("certificate file changed; reconnecting with the renewed certificate".into())),
    };
    heartbeat.abort();
    outbox.detach();
    result
}

async fn serve(
    config: &Arc<AgentConfig>,
    outbox: &Arc<Outbox>,
    sink: &JobSink,
    inbound: &mut tonic::Streaming<ControllerMessage>,
    silence_limit: Duration,
) -> Result<(), SessionError> {
    loop {
        let next = tokio::time::timeout(silence_limit, inbound.message())
            .await
            .map_err(|_| {
                SessionError::Retryable(format!("controller silent for {silence_limit:?}"))
            })?
            .map_err(|status| classify(&status))?;
        let Some(message) = next else {
            return Err(SessionError::Retryable(
                "controller closed the stream".into(),
            ));
        };
        // Anything from the controller proves the link alive: jobs' leases
        // count from here.
        outbox.touch();
        match message.body {
            Some(controller_message::Body::Offer(offer)) => {
                handle_offer(config, outbox, sink, offer)
            }
            Some(controller_message::Body::Ack(ack)) => outbox.acknowledge(ack),
            Some(controller_message::Body::Heartbeat(_))
            | Some(controller_message::Body::Welcome(_))
            | None => {}
        }
    }
}

/// Validates an offer at the edge, then accepts it and runs it, or declines
/// with the reason. A duplicate offer of a running job is re-accepted but not
/// run twice; of a finished one, answered with its result again.
fn handle_offer(config: &Arc<AgentConfig>, outbox: &Arc<Outbox>, sink: &JobSink, offer: JobOffer) {
    let (job_id, attempt) = (offer.job_id.clone(), offer.attempt);
    let decline = |reason: String| {
        tracing::warn!(job_id = %job_id, reason = %reason, "job declined");
        outbox.send_now(message(agent_message::Body::Decline(Decline {
            job_id: job_id.clone(),
            attempt,
            reason,
        })));
    };
    let journaled = offer.clone();
    let job = match Job::try_from(offer) {
        Ok(job) => job,
        Err(invalid) => return decline(format!("invalid job offer: {invalid}")),
    };
    if config.target(&job.target).is_none() {
        return decline(format!(
            "this agent serves no target named {:?}",
            job.target
        ));
    }
    if outbox.is_draining() && !outbox.is_running(&job.id, attempt) {
        return decline("this agent is stopping (draining) and takes no new job".into());
    }
    let accept = message(agent_message::Body::Accept(Accept {
        job_id: job.id.clone(),
        attempt,
    }));
    if let Some(result) = outbox.pending_result(&job.id, attempt) {
        outbox.send_now(accept);
        outbox.send_now(result);
        return;
    }
    // A duplicate offer of a running job: accepted again, not run twice.
    if outbox.is_running(&job.id, attempt) {
        outbox.send_now(accept);
        return;
    }
    // The job is valid and new: its connection starts opening now (on an
    // agent without `[approvals]`), while the journal record of its start
    // is encoded here (half a millisecond for a thousand routines) and
    // made durable.
    let run_job = sink(job);
    let Some(durable) = outbox.begin_job(&journaled) else {
        // `begin_job` refuses only a running job, answered just above;
        // should it still refuse, dropping `run_job` abandons its
        // connection.
        outbox.send_now(accept);
        return;
    };
    let outbox = outbox.clone();
    tokio::spawn(async move {
        // Accept only once the start is on disk: after a crash the journal
        // must know every job the controller believes is running here.
        if durable.await.is_err() {
            return;
        }
        outbox.send_now(accept);
        run_job.await;
    });
}

async fn heartbeats(outbox: Arc<Outbox>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        outbox.send_now(message(agent_message::Body::Heartbeat(Heartbeat {
            sent_at_unix_ms: now_unix_ms(),
        })));
    }
}

/// The TLS settings for one connection, read from disk now so renewed files
/// take effect. Our own certificate is checked first: an expired one is
/// reported with its dates (and retried, in case it is renewed on disk).
fn client_tls(
    files: &crate::config::AgentTls,
    host: &str,
) -> Result<ClientTlsConfig, SessionError> {
    use pgrollout_shared::tls;
    let problem = |e: &dyn std::fmt::Display| SessionError::Retryable(e.to_string());
    let certs = tls::load_certs(&files.cert).map_err(|e| problem(&e))?;
    if let Some(leaf) = certs.first() {
        let info = tls::inspect(leaf).map_err(|e| problem(&e))?;
        tls::check_validity(&files.cert, &info, std::time::SystemTime::now())
            .map_err(|e| problem(&e))?;
    }
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| SessionError::Retryable(format!("cannot read {}: {e}", path.display())))
    };
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&files.ca)?))
        .identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?))
        .domain_name(host.to_owned()))
}

type FileStamp = Option<(std::time::SystemTime, u64)>;

fn file_stamp(path: &std::path::Path) -> FileStamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// Resolves when the certificate file differs from `stamp` (checked every
/// few seconds); never, without TLS.
async fn certificate_renewed(path: Option<std::path::PathBuf>, stamp: Option<FileStamp>) {
    let (Some(path), Some(stamp)) = (path, stamp) else {
        return std::future::pending().await;
    };
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    loop {
        ticker.tick().await;
        if file_stamp(&path) != stamp {
            return;
        }
    }
}

/// Refusals of identity or zone are final; everything else is retried.
fn classify(status: &tonic::Status) -> SessionError {
    match status.code() {
        tonic::Code::PermissionDenied
        | tonic::Code::Unauthenticated
        | tonic::Code::InvalidArgument => SessionError::Terminal(format!(
            "controller refused this agent: {}",
            status.message()
        )),
        _ => SessionError::Retryable(format!("{}: {}", status.code(), status.message())),
    }
}

fn message(body: agent_message::Body) -> AgentMessage {
    AgentMessage { body: Some(body) }
}
