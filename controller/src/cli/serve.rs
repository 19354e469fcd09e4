//! `pgrollout serve`: load config, open the store, bind both listeners, run
//! until SIGINT/SIGTERM, then drain (no new rollouts, the jobs in flight
//! allowed to report) and stop.

use std::path::Path;

use pgrollout_shared::exit_code::ExitCode;

use crate::config::ControllerConfig;
use crate::engine::Controller;
use crate::store::leases::singleton;
use crate::store::Store;

pub async fn run(config_path: &Path, dev_plaintext: bool) -> ExitCode {
    // reqwest (notifications) is built without a provider of its own and
    // panics without one (STACK.md pitfall 4); already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match ControllerConfig::load(config_path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("pgrollout serve: {error:#}");
            return ExitCode::ValidationFailed;
        }
    };
    let telemetry = match crate::telemetry::start_controller(&config.telemetry, &config.log) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("pgrollout serve: [telemetry]: {error}");
            return ExitCode::ValidationFailed;
        }
    };
    if let Err(error) = crate::notify::check_channels(&config) {
        eprintln!("pgrollout serve: {error:#}");
        return ExitCode::ValidationFailed;
    }
    let tls = match (&config.tls, dev_plaintext) {
        (_, true) => {
            let non_loopback: Vec<String> = [config.listen.operators, config.listen.agents]
                .iter()
                .filter(|a| !a.ip().is_loopback())
                .map(|a| a.to_string())
                .collect();
            if !non_loopback.is_empty() {
                eprintln!(
                    "pgrollout serve: --dev-plaintext refuses non-loopback listeners ({}); configure [tls] instead",
                    non_loopback.join(", ")
                );
                return ExitCode::ValidationFailed;
            }
            tracing::warn!(
                "DEVELOPMENT MODE: --dev-plaintext: no TLS, identities and zones are taken on trust from what peers claim; \
                 never use this outside a single development machine"
            );
            None
        }
        (Some(files), false) => match crate::engine::tls_state::server_config(files) {
            Ok(server) => Some(crate::engine::tls_state::TlsState::new(server)),
            Err(error) => {
                eprintln!("pgrollout serve: {error:#}");
                return ExitCode::ValidationFailed;
            }
        },
        (None, false) => {
            eprintln!(
                "pgrollout serve: {} has no [tls] section; mutual TLS is required (create a CA with `pgrollout ca init`), \
                 or pass --dev-plaintext for a loopback-only development controller",
                config_path.display()
            );
            return ExitCode::ValidationFailed;
        }
    };
    let store = match Store::open_configured(&config.store, &config.audit_key_path()) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("pgrollout serve: {:#}", anyhow::Error::from(error));
            return ExitCode::DeploymentFailed;
        }
    };
    // Results recorded by a controller that stopped before indexing their
    // routine versions (the index is written after the relay).
    match store.index_left_pending().await {
        Ok(0) => {}
        Ok(results) => tracing::info!(
            results,
            "indexed the routine versions of results recorded before a stop"
        ),
        Err(error) => tracing::warn!(
            error = %pgrollout_shared::errors::error_chain(&error),
            "indexing the routine versions left by a stop failed; retried at the next start"
        ),
    }
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
    let metrics = match &config.metrics {
        Some(metrics) => match bind(metrics.listen).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                eprintln!("pgrollout serve: {error}");
                return ExitCode::DeploymentFailed;
            }
        },
        None => None,
    };
    tracing::info!(
        tls = tls.is_some(),
        exports_spans = telemetry.is_exporting(),
        metrics = ?config.metrics.as_ref().map(|m| m.listen),
        operators = %config.listen.operators,
        agents = %config.listen.agents,
        store = %config.store.describe(),
        environments = ?config.environments.keys().collect::<Vec<_>>(),
        "controller listening"
    );
    let controller = Controller::new(config, config_path.to_owned(), store, tls);
    crate::api::audit_verify::check_at_start(&controller).await;
    crate::engine::reload::report_malformed_revocations(&controller, &controller.policy().revoked)
        .await;
    // Registered before recovery: recovery tells this controller's previous
    // life's jobs from those of other live controllers by it (issue 18).
    if let Err(error) = crate::engine::liveness::register(&controller).await {
        eprintln!("pgrollout serve: {:#}", anyhow::Error::from(error));
        return ExitCode::DeploymentFailed;
    }
    crate::engine::recovery::after_restart(&controller).await;
    tokio::spawn(crate::engine::liveness::keep_alive(controller.clone()));
    // Jobs other controllers recorded for agents connected here (issue 18).
    tokio::spawn(crate::engine::delivery::run(controller.clone()));
    tokio::spawn(crate::engine::reload::watch(controller.clone()));
    // Singleton work runs on the one controller holding its lease (issue
    // 18): one lease task, the singletons started and stopped by it.
    // The scheduler stops itself between requests (`requests/fire.rs`);
    // the others are aborted when their lease is lost and started again,
    // from the store, when it is taken again.
    let leader = crate::engine::leader::Leader::start(controller.clone());
    tokio::spawn(crate::engine::requests::run_scheduler(
        controller.clone(),
        leader.clone(),
    ));
    let c = controller.clone();
    tokio::spawn(
        leader
            .clone()
            .run_while_leading(singleton::WATCHES, move || {
                crate::engine::leader::lead_watches(c.clone())
            }),
    );
    let c = controller.clone();
    tokio::spawn(leader.clone().run_while_leading(singleton::DRIFT, move || {
        crate::engine::drift_schedule::run(c.clone())
    }));
    let c = controller.clone();
    tokio::spawn(
        leader
            .clone()
            .run_while_leading(singleton::RETENTION, move || {
                crate::engine::retention::run(c.clone())
            }),
    );
    tokio::spawn(crate::metrics::keep_current(controller.store.clone()));
    // SIGTERM drains first (engine/drain.rs); the listeners close after.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn({
        let controller = controller.clone();
        let leader = leader.clone();
        async move {
            shutdown_signal().await;
            drain(&controller).await;
            crate::engine::leader::release(&controller, &leader).await;
            let _ = stop_tx.send(true);
        }
    });
    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    if let Some(listener) = metrics {
        let server =
            crate::metrics::http::serve(listener, controller.clone(), stopped(stop_rx.clone()));
        tokio::spawn(server);
    }
    let code = match crate::api::serve(controller, operators, agents, stopped(stop_rx)).await {
        Ok(()) => {
            tracing::info!("controller stopped");
            ExitCode::Success
        }
        Err(error) => {
            tracing::error!(error = %error, "controller failed");
            ExitCode::DeploymentFailed
        }
    };
    crate::telemetry::stop(telemetry).await;
    code
}

/// Stops offering jobs and waits, bounded by `[deployment] drain_timeout`,
/// for those out with agents to report; a second signal cuts the wait short.
async fn drain(controller: &Controller) {
    let limit = controller.config.deployment.drain_timeout;
    let in_flight = controller.drain.begin();
    tracing::info!(
        in_flight,
        drain_timeout = %humantime::format_duration(limit),
        "draining: no new rollouts; waiting for the jobs in flight to report"
    );
    let left = tokio::select! {
        left = controller.drain.settled(limit) => left,
        () = shutdown_signal() => {
            tracing::warn!("second stop signal: not waiting for the jobs in flight");
            controller.drain.settled(std::time::Duration::ZERO).await
        }
    };
    if left == 0 {
        tracing::info!("drained: every job in flight has reported");
    } else {
        tracing::warn!(
            in_flight = left,
            "stopping with jobs in flight: they stay unknown until their agents report to the next controller"
        );
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
