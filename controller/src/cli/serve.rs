//! `pgrollout serve`: load config, open the store, bind both listeners, run
//! until SIGINT/SIGTERM.

use std::path::Path;

use pgrollout_shared::exit_code::ExitCode;

use crate::config::ControllerConfig;
use crate::engine::Controller;
use crate::store::Store;

pub async fn run(config_path: &Path) -> ExitCode {
    crate::telemetry::init_logging();
    let config = match ControllerConfig::load(config_path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("pgrollout serve: {error:#}");
            return ExitCode::ValidationFailed;
        }
    };
    let store = match Store::open(&config.store.path) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("pgrollout serve: {:#}", anyhow::Error::from(error));
            return ExitCode::DeploymentFailed;
        }
    };
    let bind = |address| async move {
        tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| format!("cannot listen on {address}: {e}"))
    };
    let (operators, agents) = match (
        bind(config.listen.operators).await,
        bind(config.listen.agents).await,
    ) {
        (Ok(operators), Ok(agents)) => (operators, agents),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("pgrollout serve: {error}");
            return ExitCode::DeploymentFailed;
        }
    };
    tracing::info!(
        operators = %config.listen.operators,
        agents = %config.listen.agents,
        store = %config.store.path.display(),
        environments = ?config.environments.keys().collect::<Vec<_>>(),
        "controller listening"
    );
    let controller = Controller::new(config, store);
    match crate::api::serve(controller, operators, agents, shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("controller stopped");
            ExitCode::Success
        }
        Err(error) => {
            tracing::error!(error = %error, "controller failed");
            ExitCode::DeploymentFailed
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
