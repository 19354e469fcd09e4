//! `pgrollout-agent`: runs inside one network zone, holds that zone's
//! database credentials, dials out to the controller and executes jobs
//! against the zone's databases. See ARCHITECTURE.md.

mod approvals;
mod backup;
mod config;
mod health;
mod jobs;
mod link;
mod outbox;
mod refusals;
mod secrets;
mod sql;
mod telemetry;

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

#[derive(Parser)]
#[command(name = "pgrollout-agent", version = pgrollout_shared::VERSION, about = "pgrollout's agent for one network zone")]
struct Args {
    /// Path of the agent's TOML config.
    #[arg(long, env = "PGROLLOUT_AGENT_CONFIG")]
    config: PathBuf,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let config = match config::AgentConfig::load(&args.config) {
        Ok(config) => Arc::new(config),
        Err(error) => {
            eprintln!("pgrollout-agent: {error:#}");
            return std::process::ExitCode::from(1);
        }
    };
    // Two workers are plenty for a handful of jobs and keep the agent small.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("pgrollout-agent: cannot start the runtime: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        let journal = config.journal_path();
        let (outbox, interrupted) = match outbox::Outbox::open(&journal) {
            Ok(opened) => opened,
            Err(error) => {
                eprintln!(
                    "pgrollout-agent: cannot open the journal {}: {error}",
                    journal.display()
                );
                return std::process::ExitCode::from(1);
            }
        };
        let outbox = Arc::new(outbox);
        let telemetry = match telemetry::start(&config, &outbox) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("pgrollout-agent: [telemetry]: {error}");
                return std::process::ExitCode::from(1);
            }
        };
        tracing::info!(
            name = %config.name,
            zone = %config.zone,
            controller = %config.controller,
            targets = config.targets.len(),
            exports_spans = telemetry.is_exporting(),
            journal = %journal.display(),
            "agent starting"
        );
        match &config.approval_policy {
            Some(policy) => tracing::info!(
                environment = %policy.config.environment,
                approvers = policy.config.approvers.len(),
                required_approvers = policy.config.required_approvers,
                "signed approvals required: every changing job is verified against [approvals]"
            ),
            None => tracing::warn!(
                "NO [approvals] POLICY: this agent runs every change its controller offers, signed or not; \
                 whoever controls the controller controls this zone's databases (see README, Trust model)"
            ),
        }
        if let Some(health) = &config.health {
            match tokio::net::TcpListener::bind(health.listen).await {
                Ok(listener) => {
                    tokio::spawn(health::serve(listener, config.clone(), outbox.clone()));
                }
                Err(error) => {
                    eprintln!(
                        "pgrollout-agent: cannot listen on {} (health): {error}",
                        health.listen
                    );
                    return std::process::ExitCode::from(1);
                }
            }
        }
        // Resolved alongside the link: their results wait in the outbox.
        for job in interrupted {
            tokio::spawn(jobs::resolve_interrupted(
                job,
                config.clone(),
                outbox.clone(),
            ));
        }
        // The link hands each accepted job here; jobs report through the
        // outbox, so neither imports the other.
        let sink: link::JobSink = {
            let (config, outbox) = (config.clone(), outbox.clone());
            Arc::new(move |job| {
                // Connecting starts now, while the link journals and
                // accepts the job (`jobs/context/early_connection.rs`).
                let early = jobs::EarlyConnection::start(&job, &config);
                Box::pin(jobs::execute(job, 0, config.clone(), outbox.clone(), early))
            })
        };
        let link = link::run(config, outbox.clone(), sink);
        tokio::pin!(link);
        let code = tokio::select! {
            terminal = &mut link => {
                tracing::error!(error = %terminal, "agent stopping");
                std::process::ExitCode::from(2)
            }
            _ = shutdown_signal() => drain(&outbox, link).await,
        };
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        code
    })
}

/// How long a draining agent waits, past its jobs' deadlines, for their
/// results to be acknowledged.
const REPORT_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// On SIGTERM (issue 21): takes no new job and tells the controller, keeps
/// the link up while the running jobs finish (each bounded by its deadline)
/// and their results are acknowledged, then exits. A second signal, or the
/// bound, stops it at once: the journal keeps whatever is unreported.
async fn drain(
    outbox: &outbox::Outbox,
    link: std::pin::Pin<&mut impl std::future::Future<Output = link::SessionError>>,
) -> std::process::ExitCode {
    let running = outbox.begin_drain();
    let limit = outbox.drain_limit(REPORT_GRACE);
    tracing::info!(
        running,
        limit = %humantime::format_duration(std::time::Duration::from_secs(limit.as_secs())),
        "agent draining: finishing its jobs, taking no new ones"
    );
    tokio::select! {
        () = outbox.drained() => {
            tracing::info!("agent stopping: drained, every job finished and reported");
            std::process::ExitCode::SUCCESS
        }
        terminal = link => {
            tracing::error!(error = %terminal, "agent stopping");
            std::process::ExitCode::from(2)
        }
        () = tokio::time::sleep(limit) => {
            tracing::warn!("agent stopping: drain limit reached; the journal keeps what is unreported for the next start");
            std::process::ExitCode::SUCCESS
        }
        () = shutdown_signal() => {
            tracing::warn!("agent stopping: second stop signal; the journal keeps what is unreported for the next start");
            std::process::ExitCode::SUCCESS
        }
    }
}

async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
