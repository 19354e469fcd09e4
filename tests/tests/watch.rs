//! Post-deploy watches (issue 7 item 6, SEED.md's `create-alert.sh` and
//! "Monitor (24h)") and the `monitoring` gate, on real clusters with the real
//! binaries: a watch notifies when a deploy makes its routine slower and
//! stays quiet for one whose speed did not change, reports calls that start
//! failing, says when track_functions is off, survives a controller restart,
//! and the gate refuses a deploy until the watch exists.

mod watch_support;

use anyhow::Result;
use pgrollout_tests::{Process, Stack, StackOptions};
use watch_support::*;

#[tokio::test]
async fn a_deploy_that_slows_a_routine_raises_an_alert_and_one_that_does_not_stays_quiet(
) -> Result<()> {
    let mut hook = Hook::start().await?;
    let stack = Stack::start_with(notifying(&hook, "")).await?;
    for name in ["wslow", "wsteady"] {
        write(&stack, name, FAST)?;
        deploy(&stack, name).await?;
        call(&stack, name, 20).await?;
    }

    // SEED's flow: the alert first, so its baseline is the version running now.
    let created = create_watch(&stack, "wslow").await?;
    assert_eq!(created.code, 0, "{created}");
    assert!(
        created
            .stdout
            .starts_with("pgrollout: watching wslow in dev until "),
        "{created}"
    );
    assert!(
        created
            .stdout
            .contains("baseline (track_functions = all):\n  public.wslow(integer): "),
        "{created}"
    );
    assert!(
        created
            .stdout
            .contains("public.wslow(integer) · adds: [ok] passes"),
        "{created}"
    );
    let slow = watch_id(&created)?;
    let created = create_watch(&stack, "wsteady").await?;
    assert_eq!(created.code, 0, "{created}");
    let steady = watch_id(&created)?;
    let again = create_watch(&stack, "wsteady").await?;
    assert_eq!(again.code, 1, "one watch per routine: {again}");
    assert!(
        again.stderr.contains(&format!(
            "watch {steady} already watches public.wsteady in dev"
        )),
        "{again}"
    );

    // One deploy makes wslow 50 ms slower per call; the other changes nothing
    // of wsteady's speed.
    write(&stack, "wslow", "PERFORM pg_sleep(0.05);\n  RETURN n + 1;")?;
    write(&stack, "wsteady", "RETURN 1 + n;")?;
    for name in ["wslow", "wsteady"] {
        deploy(&stack, name).await?;
        call(&stack, name, 12).await?;
    }

    let alert = hook.next("watch.alert").await?;
    assert_eq!(alert["watch_id"], slow.as_str(), "{alert}");
    assert_eq!(alert["procedure"], "wslow");
    assert_eq!(alert["environment"], "dev");
    let text = alert["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("🔔 Watch alert: wslow in DEV: public.wslow(integer) takes ")
            && text.contains("(threshold 120%)")
            && text.ends_with(&format!("(watch {slow})")),
        "{text}"
    );

    // wsteady: a sample that counted all 12 new calls judged it, and quietly.
    let state = settled_after_calls(&stack.controller, &steady, 12).await?;
    assert_eq!(state, "watching");
    let audit = audit_actions(&stack).await?;
    let alerts: Vec<&String> = audit
        .iter()
        .filter(|(action, _)| action == "watch.alert")
        .map(|(_, details)| details)
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(
        alerts[0].starts_with(&format!("watch {slow}: ")),
        "{alerts:?}"
    );
    assert!(audit.iter().any(|(action, _)| action == "watch.created"));

    let list = stack.cli(&["alert", "list", "--env", "dev"]).await?;
    assert_eq!(list.code, 0, "{list}");
    assert!(
        list.stdout
            .contains(&format!("{slow}  wslow @ dev  ALERTING")),
        "{list}"
    );
    assert!(list.stdout.contains("— SLOW"), "{list}");
    assert!(
        list.stdout
            .contains(&format!("{steady}  wsteady @ dev  WATCHING")),
        "{list}"
    );
    assert!(list.stdout.contains("  last sample: "), "{list}");
    Ok(())
}

#[tokio::test]
async fn track_functions_off_is_refused_at_create_and_shown_in_the_watch_status() -> Result<()> {
    let mut hook = Hook::start().await?;
    let stack = Stack::start_with(notifying(&hook, "gates = [\"monitoring\"]")).await?;
    write(&stack, "wtrack", FAST)?;
    let pg = &stack.zone("dev").pg;
    let track = |value: &str| {
        format!(
            "ALTER DATABASE \"{}\" SET track_functions = '{value}'",
            pg.dbname()
        )
    };

    pg.execute_sql(&track("none")).await?;
    let refused = create_watch(&stack, "wtrack").await?;
    assert_eq!(refused.code, 1, "{refused}");
    assert!(
        refused
            .stderr
            .contains("track_functions is off on the target database of dev"),
        "{refused}"
    );
    assert!(
        refused
            .stderr
            .contains("ALTER SYSTEM SET track_functions = 'pl'"),
        "{refused}"
    );
    assert!(refused.stderr.contains("No watch was created"), "{refused}");
    let list = stack.cli(&["alert", "list"]).await?;
    assert!(
        list.stdout.starts_with("no watches live or ended"),
        "{list}"
    );

    pg.execute_sql(&track("pl")).await?;
    let created = create_watch(&stack, "wtrack").await?;
    assert_eq!(created.code, 0, "{created}");
    assert!(
        created.stdout.contains("baseline (track_functions = pl):"),
        "{created}"
    );
    let watch = watch_id(&created)?;
    deploy(&stack, "wtrack").await?;

    // Turned off under a running watch: it says it is blind, and tells the channel.
    pg.execute_sql(&track("none")).await?;
    let blind = hook.next("watch.blind").await?;
    assert_eq!(blind["watch_id"], watch.as_str());
    assert!(
        blind["text"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot see: track_functions is off on the target database"),
        "{blind}"
    );
    let list = stack.cli(&["alert", "list"]).await?;
    assert!(
        list.stdout
            .contains(&format!("{watch}  wtrack @ dev  BLIND")),
        "{list}"
    );
    assert!(
        list.stdout
            .contains("track_functions = none (at the baseline: pl)"),
        "{list}"
    );
    assert!(
        list.stdout
            .contains("  note: track_functions is off on the target database: turn it on"),
        "{list}"
    );
    // A watch that cannot see does not satisfy the monitoring gate.
    let plan = stack.cli(&["plan", "wtrack"]).await?;
    assert!(
        plan.stdout.contains(&format!(
            "watch {watch} of public.wtrack is blind: track_functions is off on the target database"
        )),
        "{plan}"
    );

    pg.execute_sql(&track("pl")).await?;
    let recovered = hook.next("watch.recovered").await?;
    assert_eq!(recovered["watch_id"], watch.as_str());
    Ok(())
}

#[tokio::test]
async fn the_monitoring_gate_refuses_a_deploy_until_a_watch_exists() -> Result<()> {
    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into()],
        environment_extra: vec![("dev".into(), "gates = [\"monitoring\"]".into())],
        ..StackOptions::default()
    })
    .await?;

    let refused = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(refused.code, 1, "{refused}");
    assert!(
        refused.stderr.contains(
            "gate monitoring refused: no live post-deploy watch for public.reconcilemupstream in dev; create it \
             before the deploy, so its baseline is the version running now: `pgrollout alert create reconcilemupstream dev`"
        ),
        "{refused}"
    );

    // A viewer may list watches but not create them.
    let project = stack.project.to_string_lossy().to_string();
    let args = [
        "alert",
        "create",
        "reconcilemupstream",
        "dev",
        "--every",
        "1s",
        "--project",
        &project,
    ];
    let viewer = stack.cli_as("looker", &args).await?;
    assert_eq!(viewer.code, 1, "{viewer}");
    assert!(
        viewer.stderr.contains("lacks the deployer role"),
        "{viewer}"
    );
    assert_eq!(stack.cli_as("looker", &["alert", "list"]).await?.code, 0);

    // Not deployed yet: no baseline, and the probe cannot pass — said, not alerted.
    let created = stack.cli(&args).await?;
    assert_eq!(created.code, 0, "{created}");
    assert!(
        created
            .stdout
            .contains("no routine of public.reconcilemupstream exists yet"),
        "{created}"
    );
    assert!(
        created
            .stdout
            .contains("fails and has not passed since the watch was created"),
        "{created}"
    );
    let watch = watch_id(&created)?;

    let deployed = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(deployed.code, 0, "{deployed}");
    assert!(
        deployed.stdout.contains(&format!(
            "gate [ok] monitoring: watched: public.reconcilemupstream by watch {watch}"
        )),
        "{deployed}"
    );

    let cancelled = stack.cli(&["alert", "cancel", &watch]).await?;
    assert_eq!(cancelled.code, 0, "{cancelled}");
    assert!(
        cancelled.stdout.contains(&format!(
            "watch {watch} of reconcilemupstream in dev cancelled"
        )),
        "{cancelled}"
    );
    let twice = stack.cli(&["alert", "cancel", &watch]).await?;
    assert_eq!(twice.code, 1, "{twice}");
    let refused = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(
        refused.code, 1,
        "a cancelled watch configures nothing: {refused}"
    );
    assert!(
        refused.stderr.contains("gate monitoring refused"),
        "{refused}"
    );
    let list = stack.cli(&["alert", "list", "--all"]).await?;
    assert!(
        list.stdout
            .contains(&format!("{watch}  reconcilemupstream @ dev  CANCELLED")),
        "{list}"
    );

    // A watch ends after --for, and still shows with its state.
    let args = [
        "alert",
        "create",
        "addarc",
        "dev",
        "--every",
        "1s",
        "--for",
        "2s",
        "--project",
        &project,
    ];
    let short = stack.cli(&args).await?;
    assert_eq!(short.code, 0, "{short}");
    let short = watch_id(&short)?;
    let ended = stack.controller.wait_for_line(&short, EVENT).await?;
    let mut mark = stack.controller.mark();
    let mut line = plain(&ended);
    while !line.contains("watch ended") {
        line = plain(
            &stack
                .controller
                .wait_for_line_after(mark, &short, EVENT)
                .await?,
        );
        mark = stack.controller.mark();
    }
    let list = stack.cli(&["alert", "list"]).await?;
    assert!(
        list.stdout
            .contains(&format!("{short}  addarc @ dev  ENDED")),
        "{list}"
    );
    assert!(
        list.stdout.contains("  public.addarc: every 1s ended at "),
        "{list}"
    );
    let bad = [
        "alert",
        "create",
        "addarc",
        "dev",
        "--every",
        "1h",
        "--for",
        "1m",
        "--project",
        &project,
    ];
    let bad = stack.cli(&bad).await?;
    assert_eq!(bad.code, 1, "{bad}");
    assert!(
        bad.stderr
            .contains("--for 1m: a watch lasts at least one interval (1h)"),
        "{bad}"
    );

    let audit = audit_actions(&stack).await?;
    for action in ["watch.created", "watch.cancelled", "watch.ended"] {
        assert!(
            audit.iter().any(|(a, _)| a == action),
            "{action}: {audit:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_watch_outlives_a_controller_restart_and_reports_calls_that_start_failing() -> Result<()>
{
    let mut hook = Hook::start().await?;
    let mut stack = Stack::start_with(notifying(&hook, "")).await?;
    let pg = &stack.zone("dev").pg;
    pg.execute_sql("CREATE TABLE public.wfail_items (id integer)")
        .await?;
    write(
        &stack,
        "wfail",
        "RETURN n + (SELECT count(*)::integer FROM public.wfail_items);",
    )?;
    deploy(&stack, "wfail").await?;
    let created = create_watch(&stack, "wfail").await?;
    assert_eq!(created.code, 0, "{created}");
    let watch = watch_id(&created)?;

    // The controller dies (kill -9) and starts again; the watch is read back
    // from its store.
    stack.controller.kill_9()?;
    stack.controller.wait_for_exit(EVENT).await?;
    let config = stack.dir.path().join("controller.toml");
    stack.controller = Process::spawn(
        &stack.bins.controller,
        ["serve", "--config", &config.to_string_lossy()],
        &[],
        "controller-restarted",
    )?;
    let restarted = stack.controller.mark();
    stack
        .controller
        .wait_for_line("watches resumed", EVENT)
        .await?;
    let (state, _, _) = next_sample(&stack.controller, &watch, restarted).await?;
    assert_eq!(state, "watching");

    // Calls start failing: the probe, which passed, now fails.
    stack
        .zone("dev")
        .pg
        .execute_sql("DROP TABLE public.wfail_items")
        .await?;
    let alert = hook.next("watch.alert").await?;
    assert_eq!(alert["watch_id"], watch.as_str(), "{alert}");
    let text = alert["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("calls fail: probe public.wfail(integer) · adds passed before and now fails — executes: ERROR 42P01"),
        "{text}"
    );
    let list = stack.cli(&["alert", "list"]).await?;
    assert!(
        list.stdout
            .contains(&format!("{watch}  wfail @ dev  ALERTING")),
        "{list}"
    );
    assert!(
        list.stdout
            .contains("adds: [FAIL] fails — executes: ERROR 42P01"),
        "{list}"
    );
    Ok(())
}
