//! Scheduling by window, cancelling, following requests, and the change
//! ticket looked up over HTTP — on real clusters with the real binaries.
//! Firing at the exact opening minute is covered with an injected clock at
//! the engine level (controller `api::requests::tests`); here the window is
//! opened by changing the config across a `kill -9` restart, which is also
//! what an operator does to move a window.

use anyhow::{Context, Result};
use pgrollout_tests::{window_from_now, CommandOutput, Stack, StackOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

fn line<'a>(out: &'a CommandOutput, prefix: &str) -> &'a str {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_default()
}

async fn deployed(stack: &Stack, zone: &str) -> Result<bool> {
    let client = stack.zone(zone).pg.connect().await?;
    let row = client
        .query_one(
            "SELECT to_regprocedure('public.reconcilemupstream(text)') IS NOT NULL",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::test]
async fn a_rollout_outside_its_window_is_scheduled_survives_kill_9_and_runs_when_its_window_opens(
) -> Result<()> {
    let closed = window_from_now(12 * 60, 1)?;
    let mut stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into()],
        environment_extra: vec![("dev".into(), format!("maintenance_window = \"{closed}\""))],
        ..StackOptions::default()
    })
    .await?;

    // --no-wait: refused at once, exit 1, the gate and its reason named.
    let out = stack
        .cli(&["deploy", "reconcilemupstream", "dev", "--no-wait"])
        .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "gate maintenance_window refused: outside {closed}; it next opens at "
        )),
        "{out}"
    );
    assert!(out.stderr.contains("--no-wait"), "{out}");

    // Without it: scheduled for the window, recorded, exit 0.
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let id = out.request_id()?;
    let scheduled = format!("scheduled: request {id} runs at ");
    assert!(out.stdout.contains(&scheduled), "{out}");
    assert!(
        out.stdout
            .contains(&format!(" UTC (window maintenance_window {closed})")),
        "{out}"
    );
    assert!(!deployed(&stack, "dev").await?, "nothing ran yet");

    let status = stack.cli(&["status", &id]).await?;
    assert_eq!(status.code, 0, "{status}");
    assert_eq!(line(&status, "State: "), "scheduled", "{status}");
    let runs_at = line(&status, "Runs At: ").to_owned();
    assert!(
        runs_at.ends_with(&format!("UTC (window maintenance_window {closed})")),
        "{status}"
    );
    assert!(
        status.stdout.contains(&format!(
            "Gate [closed] maintenance_window: outside {closed}; it next opens at "
        )),
        "{status}"
    );
    assert_eq!(
        line(&status, "Waiting For: "),
        "maintenance_window",
        "{status}"
    );

    // A second request, cancelled: by a viewer no, by its requester yes.
    let other = stack.cli(&["deploy", "addarc", "dev"]).await?;
    assert_eq!(other.code, 0, "{other}");
    let other_id = other.request_id()?;
    let refused = stack.cli_as("looker", &["cancel", &other_id]).await?;
    assert_eq!(refused.code, 1, "{refused}");
    assert!(
        refused.stderr.contains("lacks the approver role"),
        "{refused}"
    );
    let cancelled = stack
        .cli(&["cancel", &other_id, "--reason", "not tonight"])
        .await?;
    assert_eq!(cancelled.code, 0, "{cancelled}");
    assert!(
        cancelled
            .stdout
            .contains("cancelled by test-operator: not tonight; nothing ran"),
        "{cancelled}"
    );
    let status = stack.cli(&["status", &other_id]).await?;
    assert_eq!(line(&status, "State: "), "cancelled", "{status}");
    let again = stack.cli(&["cancel", &other_id]).await?;
    assert_eq!(again.code, 1, "{again}");
    assert!(again.stderr.contains("is already cancelled"), "{again}");

    // kill -9 and restart: the request is still scheduled, for the same time.
    stack.kill_9_and_restart_controller(|config| config).await?;
    let listed = stack.cli(&["rollouts", "--state", "scheduled"]).await?;
    assert_eq!(listed.code, 0, "{listed}");
    let row = listed
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .with_context(|| format!("{id} not listed:\n{listed}"))?;
    assert!(row.contains(" scheduled "), "{row}");
    assert!(row.contains("  runs at "), "{row}");
    assert!(
        !listed.stdout.contains(&other_id),
        "cancelled is not scheduled"
    );
    let status = stack.cli(&["status", &id]).await?;
    assert_eq!(line(&status, "State: "), "scheduled", "{status}");
    assert_eq!(
        line(&status, "Runs At: "),
        runs_at,
        "same time after the restart"
    );

    // The window is moved to now (config, restart): the scheduler runs the
    // request; following it shows the rollout to its result.
    let open = window_from_now(-60, 120)?;
    stack
        .kill_9_and_restart_controller(|config| config.replace(&closed, &open))
        .await?;
    let followed = stack.cli(&["status", &id, "--follow"]).await?;
    assert_eq!(followed.code, 0, "{followed}");
    assert!(followed.stdout.contains("rollout r-"), "{followed}");
    assert!(followed.stdout.contains("DEPLOYMENT LOG"), "{followed}");
    assert!(
        followed.stdout.contains("Status: [ok] SUCCESS"),
        "{followed}"
    );
    assert!(
        deployed(&stack, "dev").await?,
        "applied when the window opened"
    );
    let status = stack.cli(&["status", &id]).await?;
    assert_eq!(line(&status, "State: "), "started", "{status}");
    assert!(line(&status, "Rollout: ").starts_with("r-"), "{status}");

    let audit = stack.cli(&["audit", "--output", "json"]).await?;
    for action in ["rollout.scheduled", "rollout.cancelled", "rollout.fired"] {
        assert!(audit.stdout.contains(action), "{action} missing:\n{audit}");
    }
    Ok(())
}

/// A change-control system: 200 for the known ticket, 404 for others; it
/// reports each request path it receives.
async fn change_control(known: &'static str) -> Result<(String, mpsc::UnboundedReceiver<String>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (sender, paths) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let sender = sender.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 2048];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let path = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let status = if path.ends_with(&format!("/{known}")) {
                    "200 OK"
                } else {
                    "404 Not Found"
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = sender.send(path);
            });
        }
    });
    Ok((url, paths))
}

#[tokio::test]
async fn approvals_come_first_then_the_window_and_the_ticket_is_checked_with_the_change_system(
) -> Result<()> {
    let (url, mut paths) = change_control("CHG-1042").await?;
    let closed = window_from_now(12 * 60, 1)?;
    let stack = Stack::start_with(StackOptions {
        zones: vec!["qa".into()],
        environment_extra: vec![(
            "qa".into(),
            format!(
                "require_approval = true\nbusiness_hours = \"{closed}\"\ngates = [\"business_hours\", \"change_ticket\"]"
            ),
        )],
        controller_extra: format!(
            "[change_control]\nticket_url = \"{url}/rest/api/2/issue/{{ticket}}\"\ntimeout = \"5s\"\n"
        ),
        ..StackOptions::default()
    })
    .await?;

    // An unknown ticket: the change system says 404, the gate says so.
    let out = stack
        .cli(&["deploy", "reconcilemupstream", "qa", "--ticket", "CHG-404"])
        .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "gate change_ticket refused: change ticket CHG-404 was not confirmed: GET {url}/rest/api/2/issue/CHG-404 answered 404 Not Found"
        )),
        "{out}"
    );
    assert_eq!(
        paths.recv().await.as_deref(),
        Some("/rest/api/2/issue/CHG-404")
    );

    // A ticket that would leave its path segment never reaches the system.
    let out = stack
        .cli(&[
            "deploy",
            "reconcilemupstream",
            "qa",
            "--ticket",
            "CHG-1/../../admin",
        ])
        .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("\"CHG-1/../../admin\" is not a ticket id"),
        "{out}"
    );
    assert!(paths.try_recv().is_err(), "no request for an invalid id");

    // Valid ticket, no approval yet, window closed: parked for approvals
    // first, and the window is named as what comes next.
    let out = stack
        .cli(&["deploy", "reconcilemupstream", "qa", "--ticket", "CHG-1042"])
        .await?;
    assert_eq!(out.code, 5, "{out}");
    assert!(
        out.stderr
            .contains("awaits approval and changed nothing yet"),
        "{out}"
    );
    assert!(
        out.stderr.contains(&format!(
            "then gate business_hours: outside {closed}; it next opens at "
        )),
        "{out}"
    );
    let id = out.request_id()?;

    let status = stack.cli(&["status", &id]).await?;
    assert_eq!(status.code, 0, "{status}");
    assert_eq!(line(&status, "State: "), "awaiting_approval", "{status}");
    for expected in [
        "Gate [wait] approval: needs 1 approval(s) by the approver role, has 0",
        &format!("Gate [closed] business_hours: outside {closed}; it next opens at "),
        &format!("Gate [ok] change_ticket: change ticket CHG-1042 verified: GET {url}/rest/api/2/issue/CHG-1042 answered 200 OK"),
    ] {
        assert!(status.stdout.contains(expected), "missing {expected:?}:\n{status}");
    }
    assert_eq!(
        line(&status, "Waiting For: "),
        "approval, business_hours",
        "{status}"
    );

    // The approval completes the people part: the request is scheduled.
    let approved = stack
        .cli_as("approver-1", &["approve", &id, "--reason", "reviewed"])
        .await?;
    assert_eq!(approved.code, 0, "{approved}");
    assert!(
        approved.stdout.contains(&format!(
            "approval recorded; scheduled: request {id} runs at "
        )),
        "{approved}"
    );
    assert!(
        approved
            .stdout
            .contains(&format!("(window business_hours {closed})")),
        "{approved}"
    );
    let status = stack.cli(&["status", &id]).await?;
    assert_eq!(line(&status, "State: "), "scheduled", "{status}");
    assert!(
        status
            .stdout
            .contains("Gate [ok] approval: approved by approver-1"),
        "{status}"
    );
    assert!(!deployed(&stack, "qa").await?);

    // An approver may cancel someone else's scheduled request.
    let cancelled = stack
        .cli_as("approver-2", &["cancel", &id, "--reason", "freeze"])
        .await?;
    assert_eq!(cancelled.code, 0, "{cancelled}");
    let status = stack.cli(&["status", &id]).await?;
    assert_eq!(line(&status, "State: "), "cancelled", "{status}");
    assert_eq!(
        line(&status, "Note: "),
        "cancelled by approver-2: freeze",
        "{status}"
    );
    Ok(())
}
