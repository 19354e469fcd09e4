//! `pgrollout-agent`: runs inside one network zone, holds that zone's
//! database credentials, dials out to the controller and executes jobs
//! against the zone's databases. See ARCHITECTURE.md.

mod backup;
mod config;
mod jobs;
mod link;
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
        let (outbox, interrupted) = match link::Outbox::open(&journal) {
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
        // Resolved alongside the link: their results wait in the outbox.
        for job in interrupted {
            tokio::spawn(jobs::resolve_interrupted(
                job,
                config.clone(),
                outbox.clone(),
            ));
        }
        let code = tokio::select! {
            terminal = link::run(config, outbox) => {
                tracing::error!(error = %terminal, "agent stopping");
                std::process::ExitCode::from(2)
            }
            _ = shutdown_signal() => {
                tracing::info!("agent stopping on signal");
                std::process::ExitCode::SUCCESS
            }
        };
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        code
    })
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
