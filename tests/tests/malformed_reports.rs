//! An agent that sends what no sound agent would — a step status or an
//! outcome that does not exist — wedges neither its link nor the rollout
//! (issue 14): the controller acknowledges each report, so the agent's
//! outbox lets it go, drops a malformed event, makes the rollout of a
//! malformed result `unknown` with the agent and the field named, audits
//! both as `agent.malformed_report`, and keeps offering the agent work.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use pgrollout_shared::proto::{
    agent_message::Body, controller_message, Accept, Decline, JobEvent, JobOffer, JobResult,
    StepStatus,
};
use pgrollout_tests::scripted_agent::{channel, ScriptedAgent};
use pgrollout_tests::stall::{rollout_id, state_of};
use pgrollout_tests::{Stack, StackOptions};

const WAIT: Duration = Duration::from_secs(30);

async fn next_offer(agent: &mut ScriptedAgent) -> Result<JobOffer> {
    match agent.next(WAIT).await? {
        controller_message::Body::Offer(offer) => Ok(offer),
        other => bail!("expected an offer, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_reports_are_acknowledged_audited_and_leave_the_rollout_unknown() -> Result<()> {
    let stack = Stack::start_with(StackOptions {
        start_agents: false,
        ..StackOptions::default()
    })
    .await?;
    let ca = &stack.ca_dir;
    let link = channel(
        &stack.agents_address,
        &ca.join("ca.pem"),
        &ca.join("agent-dev-dev-1.pem"),
        &ca.join("agent-dev-dev-1.key"),
    )
    .await?;
    let mut agent = ScriptedAgent::connect(link, "dev-1", "dev").await?;
    let mut cli = stack
        .spawn_cli(&["deploy", "addarc", "dev"], "deploy")
        .await?;
    let offer = next_offer(&mut agent).await?;
    let (job_id, attempt) = (offer.job_id.clone(), offer.attempt);
    agent.send(Body::Accept(Accept {
        job_id: job_id.clone(),
        attempt,
    }))?;
    let event = |seq, status| JobEvent {
        job_id: job_id.clone(),
        attempt,
        seq,
        step: "connect".into(),
        status,
        message: "scripted".into(),
        ..Default::default()
    };
    // No such step status, then a sound event, then no such outcome.
    agent.send(Body::Event(event(1, 42)))?;
    agent.send(Body::Event(event(2, StepStatus::Succeeded as i32)))?;
    agent.send(Body::Result(JobResult {
        job_id: job_id.clone(),
        attempt,
        seq: 3,
        outcome: 42,
        message: "scripted result".into(),
        ..Default::default()
    }))?;
    let mut acks = Vec::new();
    while acks.len() < 3 {
        match agent.next(WAIT).await? {
            controller_message::Body::Ack(ack) => acks.push(ack.seq),
            other => bail!("expected acks, got {other:?}"),
        }
    }
    assert_eq!(
        acks,
        vec![1, 2, 3],
        "every report is acknowledged, malformed or not"
    );

    let status = cli.wait_for_exit(WAIT).await?;
    // The exit can be seen before the last lines are read from the pipe:
    // wait for each line rather than read what has arrived so far.
    cli.wait_for_line(
        "agent dev/dev-1 sent a malformed result (field outcome: 42 is not an outcome)",
        WAIT,
    )
    .await?;
    cli.wait_for_line(
        "malformed event (field status: 42 is not a step status)",
        WAIT,
    )
    .await
    .context("the operator following the job is told of the dropped event")?;
    assert_eq!(status.code(), Some(2), "{}", cli.output_so_far());
    let rollout = rollout_id(&cli).await?;
    assert_eq!(state_of(&stack, &rollout).await?, "unknown");
    let shown = stack.cli(&["status", &rollout]).await?;
    assert!(shown.stdout.contains("field outcome"), "{shown}");

    let audit = stack.cli(&["audit", "--rollout", &rollout]).await?;
    assert_eq!(
        audit.stdout.matches("agent.malformed_report").count(),
        2,
        "the event and the result, each under the rollout:\n{audit}"
    );
    assert_eq!(audit.stdout.matches("job.finished").count(), 0, "{audit}");
    let store = rusqlite::Connection::open(stack.dir.path().join("controller.sqlite"))?;
    let events: Vec<i64> = store
        .prepare("SELECT seq FROM job_events WHERE job_id = ?1 ORDER BY seq")?
        .query_map([&job_id], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    assert_eq!(events, vec![2], "only the sound event is stored");

    // The link still carries work: the next deploy is offered to the agent.
    let mut second = stack
        .spawn_cli(&["deploy", "addarc", "dev"], "second deploy")
        .await?;
    let offer = next_offer(&mut agent).await?;
    agent.send(Body::Decline(Decline {
        job_id: offer.job_id,
        attempt: offer.attempt,
        reason: "scripted decline".into(),
    }))?;
    let status = second.wait_for_exit(WAIT).await?;
    assert!(
        second.output_so_far().contains("scripted decline"),
        "{}",
        second.output_so_far()
    );
    assert_ne!(status.code(), Some(0));
    Ok(())
}
