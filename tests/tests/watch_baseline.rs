//! What a post-deploy watch can see (issue 23): the deploy's own smoke calls
//! are not counted in its statistics, a watch with no baseline for a routine
//! of the plan is reported by the `monitoring` gate (and refused where
//! configured), and `--max-time` watches a brand-new routine for speed.
//! Real clusters, real binaries.

mod watch_support;

use anyhow::Result;
use pgrollout_tests::{CommandOutput, Stack, StackOptions};
use watch_support::*;

/// The first sample of `watch` that counted at least `calls` calls since the
/// baseline, then the one after it (so late statistics had time to land):
/// that later sample's state and count.
async fn after_calls(stack: &Stack, watch: &str, calls: u64) -> Result<(String, u64)> {
    let mut mark = stack.controller.mark();
    loop {
        let (_, counted, after) = next_sample(&stack.controller, watch, mark).await?;
        mark = after;
        if counted >= calls {
            let (state, counted, _) = next_sample(&stack.controller, watch, mark).await?;
            return Ok((state, counted));
        }
    }
}

#[tokio::test]
async fn the_deploys_own_smoke_calls_are_not_counted_by_the_watch() -> Result<()> {
    let stack = Stack::start_with(StackOptions::default()).await?;
    write(&stack, "wcount", FAST)?;
    deploy(&stack, "wcount").await?;
    call(&stack, "wcount", 20).await?;
    let created = create_watch(&stack, "wcount").await?;
    assert_eq!(created.code, 0, "{created}");
    let watch = watch_id(&created)?;

    // The deploy calls wcount twice (its smoke test, in the transaction and
    // after COMMIT); only the 12 calls made afterwards are the callers'.
    write(&stack, "wcount", "RETURN 1 + n;")?;
    deploy(&stack, "wcount").await?;
    call(&stack, "wcount", 12).await?;
    let (state, counted) = after_calls(&stack, &watch, 12).await?;
    assert_eq!(counted, 12, "the deploy's smoke calls were counted");
    assert_eq!(state, "watching");
    Ok(())
}

async fn watch_new(stack: &Stack, extra: &[&str]) -> Result<CommandOutput> {
    let project = stack.project.to_string_lossy().to_string();
    let mut args = vec![
        "alert",
        "create",
        "wnew",
        "dev",
        "--every",
        "1s",
        "--for",
        "10m",
        "--project",
        &project,
    ];
    args.extend_from_slice(extra);
    stack.cli(&args).await
}

#[tokio::test]
async fn a_watch_that_cannot_see_a_new_routine_get_slower_is_refused_and_max_time_sees_it(
) -> Result<()> {
    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into()],
        environment_extra: vec![(
            "dev".into(),
            "gates = [\"monitoring\"]\nmonitoring_without_baseline = \"refuse\"".into(),
        )],
        ..StackOptions::default()
    })
    .await?;
    // Brand new, and 50 ms per call.
    write(&stack, "wnew", "PERFORM pg_sleep(0.05);\n  RETURN n + 1;")?;

    // A watch created before the routine exists has no baseline for it.
    let created = watch_new(&stack, &[]).await?;
    assert_eq!(created.code, 0, "{created}");
    let blind = watch_id(&created)?;
    let refused = stack.cli(&["deploy", "wnew", "dev"]).await?;
    assert_eq!(refused.code, 1, "{refused}");
    assert!(
        refused.stderr.contains(&format!(
            "gate monitoring refused: no baseline for public.wnew(integer) (watch {blind}): no calls were counted \
             before the deploy, so the watch can see failing calls but not slow ones"
        )),
        "{refused}"
    );
    assert!(refused.stderr.contains("--max-time"), "{refused}");
    assert!(
        refused
            .stderr
            .contains("monitoring_without_baseline = \"refuse\""),
        "{refused}"
    );
    let cancelled = stack.cli(&["alert", "cancel", &blind]).await?;
    assert_eq!(cancelled.code, 0, "{cancelled}");

    // With an absolute bound per call, the watch sees it: the gate passes and
    // the first slow calls alert, with no baseline at all.
    let created = watch_new(&stack, &["--max-time", "20ms", "--min-calls", "3"]).await?;
    assert_eq!(created.code, 0, "{created}");
    assert!(
        created
            .stdout
            .contains("exceeds 20ms (--max-time), baseline or not"),
        "{created}"
    );
    assert!(
        created
            .stdout
            .contains("its speed is held to --max-time 20.0 ms per call"),
        "{created}"
    );
    let bounded = watch_id(&created)?;
    let deployed = stack.cli(&["deploy", "wnew", "dev"]).await?;
    assert_eq!(deployed.code, 0, "{deployed}");
    assert!(
        deployed.stdout.contains(&format!(
            "gate [ok] monitoring: watched: public.wnew by watch {bounded}\n"
        )),
        "{deployed}"
    );
    call(&stack, "wnew", 3).await?;
    let (state, counted) = after_calls(&stack, &bounded, 3).await?;
    assert_eq!((state.as_str(), counted), ("alerting", 3));
    let list = stack.cli(&["alert", "list", "--env", "dev"]).await?;
    assert!(
        list.stdout.contains("public.wnew(integer) takes ")
            && list.stdout.contains("over the --max-time bound of 20.0 ms"),
        "{list}"
    );

    // Dropped by hand: the watch says it is gone, not "not deployed yet".
    let dev = stack.zone("dev").pg.connect().await?;
    dev.batch_execute("DROP FUNCTION public.wnew(integer)")
        .await?;
    after_calls(&stack, &bounded, 0).await?;
    let list = stack.cli(&["alert", "list", "--env", "dev"]).await?;
    assert!(
        list.stdout
            .contains("no routine named public.wnew exists in the target any more"),
        "{list}"
    );
    Ok(())
}
