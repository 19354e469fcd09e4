//! A config reload (issue 16, item 9): environment settings — here a
//! maintenance window — apply at once, to `plan` and to requests already
//! scheduled; a setting read only at start-up is named as needing a restart
//! in the controller's log and the audit log, never silently ignored.

use std::time::Duration;

use anyhow::Result;
use pgrollout_tests::{window_from_now, Stack, StackOptions};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_reloaded_window_is_what_plan_shows_and_starts_the_request_it_scheduled() -> Result<()> {
    let closed = window_from_now(12 * 60, 1)?;
    // Opened a minute ago, for two hours: open now whatever the time.
    let open = window_from_now(-1, 120)?;
    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into()],
        environment_extra: vec![("dev".into(), format!("maintenance_window = \"{closed}\""))],
        ..StackOptions::default()
    })
    .await?;

    let plan = stack.cli(&["plan", "reconcilemupstream"]).await?;
    assert_eq!(plan.code, 0, "{plan}");
    assert!(plan.stdout.contains(&closed), "{plan}");
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let request = out.request_id()?;
    assert!(out.stdout.contains("scheduled: request"), "{out}");

    // The operator moves the window, and changes a setting read at start-up.
    let config_path = stack.dir.path().join("controller.toml");
    let config = std::fs::read_to_string(&config_path)?.replace(&closed, &open);
    let mark = stack.controller.mark();
    std::fs::write(
        &config_path,
        format!("{config}\n[limits]\nmax_message_bytes = 8388608\n"),
    )?;
    stack.controller.signal("HUP")?;
    let logged = stack
        .controller
        .wait_for_line_after(mark, "config reloaded", WAIT)
        .await?;
    assert!(
        logged.contains("need_restart")
            && logged.contains("limits")
            && logged.contains("apply only after a restart"),
        "the log names what a reload cannot apply: {logged}"
    );

    let plan = stack.cli(&["plan", "reconcilemupstream"]).await?;
    assert_eq!(plan.code, 0, "{plan}");
    assert!(plan.stdout.contains(&open), "the new window: {plan}");
    assert!(!plan.stdout.contains(&closed), "not the old one: {plan}");

    // The request scheduled for the old window runs now that it is open.
    let followed = stack.cli(&["status", &request, "--follow"]).await?;
    assert_eq!(followed.code, 0, "{followed}");
    let client = stack.zone("dev").pg.connect().await?;
    let deployed: bool = client
        .query_one(
            "SELECT to_regprocedure('public.reconcilemupstream(text)') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    assert!(deployed, "the scheduled deploy ran in the reloaded window");

    let audit = stack.audit_lines()?;
    assert!(
        audit.iter().any(|l| l.starts_with("config.reloaded|ok|")
            && l.contains("changed but need a restart: limits")),
        "{audit:#?}"
    );
    Ok(())
}
