//! Health checks as an orchestrator sees them (issue 21, item 1), asked with
//! real clients: reqwest for `/healthz` and `/readyz`, tonic-health's client
//! for `grpc.health.v1` on both of the controller's gRPC listeners.

use std::time::Duration;

use anyhow::Result;
use pgrollout_tests::stall::{agent_blocked, hold_routine_lock, prepare, AGENT_LOCK_TIMEOUT};
use pgrollout_tests::{free_port, scripted_agent, Stack, StackOptions};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

const WAIT: Duration = Duration::from_secs(30);

async fn get(url: &str) -> Result<(u16, String)> {
    let response = reqwest::Client::new().get(url).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// The grpc.health.v1 status of `service` on `address`, over mutual TLS
/// with the dev agent's certificate (health checks need no role).
async fn grpc_status(stack: &Stack, address: &str, service: &str) -> Result<ServingStatus> {
    let ca = &stack.ca_dir;
    let channel = scripted_agent::channel(
        address,
        &ca.join("ca.pem"),
        &ca.join("agent-dev-dev-1.pem"),
        &ca.join("agent-dev-dev-1.key"),
    )
    .await?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status())
}

#[tokio::test]
async fn the_controller_is_live_and_ready_until_it_drains() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = free_port();
    let mut stack = Stack::start_with(StackOptions {
        agent_timeouts: AGENT_LOCK_TIMEOUT.into(),
        controller_extra: format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
        ..StackOptions::default()
    })
    .await?;
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(get(&format!("{base}/healthz")).await?, (200, "ok\n".into()));
    assert_eq!(
        get(&format!("{base}/readyz")).await?,
        (200, "ready\n".into())
    );
    for address in [&stack.operators, &stack.agents_address] {
        for service in ["", "pgrollout.v1.Control", "pgrollout.v1.AgentLink"] {
            assert_eq!(
                grpc_status(&stack, address, service).await?,
                ServingStatus::Serving,
                "{service:?} on {address}"
            );
        }
    }

    // Draining (a job in flight keeps it so): not ready, still alive.
    prepare(&stack).await?;
    let pg = &stack.zone("dev").pg;
    let lock = hold_routine_lock(pg).await?;
    let mut cli = stack
        .spawn_cli(&["deploy", "stall", "dev"], "deploy")
        .await?;
    agent_blocked(pg).await?;
    stack.controller.sigterm().await?;
    stack
        .controller
        .wait_for_line("draining: no new rollouts", WAIT)
        .await?;
    let (status, body) = get(&format!("{base}/readyz")).await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("draining"), "{body}");
    assert_eq!(get(&format!("{base}/healthz")).await?.0, 200);
    assert_eq!(
        grpc_status(&stack, &stack.operators, "").await?,
        ServingStatus::NotServing
    );
    lock.batch_execute("ROLLBACK").await?;
    assert_eq!(cli.wait_for_exit(WAIT).await?.code(), Some(0));
    assert!(stack.controller.wait_for_exit(WAIT).await?.success());
    Ok(())
}

#[tokio::test]
async fn an_agent_is_ready_only_with_its_controller_link_and_every_target() -> Result<()> {
    let port = free_port();
    let mut stack = Stack::start(&["dev"]).await?;
    stack.kill_agent("dev").await?;
    let config = &stack.zone("dev").agent_config;
    let text = std::fs::read_to_string(config)?;
    std::fs::write(
        config,
        format!("{text}[health]\nlisten = \"127.0.0.1:{port}\"\n"),
    )?;
    stack.start_agent("dev").await?;
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(get(&format!("{base}/healthz")).await?, (200, "ok\n".into()));
    assert_eq!(
        get(&format!("{base}/readyz")).await?,
        (200, "ready\n".into())
    );

    stack.zone("dev").pg.stop().await?;
    let (status, body) = get(&format!("{base}/readyz")).await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("target main:"), "{body}");
    assert!(!body.contains(stack.zone("dev").pg.password()), "{body}");

    let mark = stack.zone("dev").agent.as_ref().expect("agent runs").mark();
    stack.controller.kill_9()?;
    let agent = stack.zone("dev").agent.as_ref().expect("agent runs");
    agent
        .wait_for_line_after(mark, "link to controller lost", WAIT)
        .await?;
    let (status, body) = get(&format!("{base}/readyz")).await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("controller link down"), "{body}");
    assert_eq!(get(&format!("{base}/healthz")).await?.0, 200);
    Ok(())
}
