//! One rollout = one trace (issue 7, item 1): an in-process OTLP collector
//! receives, for one `pgrollout deploy`, the CLI's span, the controller's
//! rollout, gate and dispatch spans, and the agent's job and SQL step spans —
//! the agent's relayed through the controller, which stamps them with the
//! identity and zone of the agent's certificate — all of one trace, the one
//! the CLI printed and the controller stored, and none carrying the
//! database password or a smoke test's argument.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use pgrollout_tests::otlp_receiver::{only, OtlpReceiver, ReceivedSpan};
use pgrollout_tests::stack::{OPERATOR, TRUST_DOMAIN};
use pgrollout_tests::{Stack, StackOptions};

/// Generous: the spans are exported as soon as the rollout ends.
const SPANS_ARRIVE: Duration = Duration::from_secs(30);
/// The smoke test's argument: a parameter value no span may carry.
const SMOKE_ARGUMENT: &str = "smoke-argument-5f1c9e";
/// The deploy path's steps, in order (DESIGN §5).
const STEPS: [&str; 10] = [
    "connect",
    "lock",
    "idempotency",
    "backup",
    "apply",
    "grants",
    "ledger",
    "smoke",
    "commit",
    "post-commit-smoke",
];
// Not `syntax`: its dry run is a second rollout in the trace (a `check`
// job), which would make the tree below ambiguous.
const GATES: [&str; 2] = ["gate backup_created", "gate backup_verified"];

fn probe_sql() -> &'static str {
    "CREATE OR REPLACE FUNCTION public.trace_probe(tag text) RETURNS text LANGUAGE sql AS 'SELECT upper(tag)';\n"
}

fn probe_sidecar() -> String {
    format!(
        "[[smoke_tests]]\nname = \"echoes\"\ncall = \"SELECT public.trace_probe('{SMOKE_ARGUMENT}') AS tag\"\n\
         expect_columns = [ {{ name = \"tag\", type = \"text\" }} ]\n"
    )
}

/// Every span the trace must hold.
fn expected_names() -> Vec<&'static str> {
    let mut names = vec![
        "pgrollout deploy",
        "rollout deploy",
        "gates",
        "dispatch",
        "job deploy",
    ];
    names.extend(GATES);
    names.extend(STEPS);
    names
}

fn complete(spans: &[ReceivedSpan]) -> bool {
    expected_names()
        .iter()
        .all(|name| spans.iter().any(|s| s.span.name == *name))
}

/// The trace id of `rollout <id> on agent <a> (zone <z>), trace <trace id>`.
fn printed(stdout: &str, prefix: &str, marker: &str) -> Result<String> {
    stdout
        .lines()
        .filter(|line| line.starts_with(prefix))
        .find_map(|line| line.rsplit_once(marker).map(|(_, id)| id.trim().to_owned()))
        .with_context(|| format!("no {prefix:?}…{marker:?} line in:\n{stdout}"))
}

fn child_of(child: &ReceivedSpan, parent: &ReceivedSpan) -> Result<()> {
    ensure!(
        child.parent_id() == parent.span_id(),
        "{:?} should be a child of {:?} ({}), its parent is {:?}",
        child.span.name,
        parent.span.name,
        parent.span_id(),
        child.parent_id()
    );
    Ok(())
}

#[tokio::test]
async fn one_deploy_is_one_trace_from_the_cli_to_the_sql_steps() -> Result<()> {
    let mut collector = OtlpReceiver::start().await?;
    let stack = Stack::start_with(StackOptions {
        // The controller exports to the collector; the agent has none in its
        // zone, so it relays its spans through the controller.
        controller_extra: format!("[telemetry]\notlp_endpoint = \"{}\"\n", collector.endpoint),
        environment_extra: vec![(
            "dev".into(),
            "gates = [\"backup_created\", \"backup_verified\"]".into(),
        )],
        ..StackOptions::default()
    })
    .await?;
    stack.write_procedure("trace_probe.sql", probe_sql())?;
    stack.write_procedure("trace_probe.toml", &probe_sidecar())?;

    let deploy = stack
        .cli_as_with_env(
            OPERATOR,
            &["deploy", "trace_probe", "dev"],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint)],
        )
        .await?;
    ensure!(deploy.code == 0, "{deploy}");
    let trace_id = printed(&deploy.stdout, "rollout ", ", trace ")?;
    let rollout_id = deploy
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("rollout ")?.split_whitespace().next())
        .context("no rollout id")?
        .to_owned();

    let spans = collector.wait_for(SPANS_ARRIVE, complete).await?;

    // One trace, the one the CLI printed.
    for span in &spans {
        ensure!(
            span.trace_id() == trace_id,
            "{} span {:?} is in trace {}, not the deploy's {trace_id}",
            span.service(),
            span.span.name,
            span.trace_id()
        );
    }

    // The tree: CLI → rollout → gates → each gate; rollout → dispatch → job → steps.
    let cli = only(&spans, "pgrollout deploy")?;
    ensure!(cli.parent_id().is_empty(), "the CLI's span is the root");
    ensure!(cli.service() == "pgrollout-cli", "{:?}", cli.resource);
    let rollout = only(&spans, "rollout deploy")?;
    child_of(rollout, cli)?;
    ensure!(
        rollout.service() == "pgrollout-controller",
        "{:?}",
        rollout.resource
    );
    ensure!(rollout.attribute("pgrollout.rollout_id") == Some(rollout_id.clone()));
    ensure!(rollout.attribute("pgrollout.outcome").as_deref() == Some("succeeded"));
    let gates = only(&spans, "gates")?;
    child_of(gates, rollout)?;
    for gate in GATES {
        let gate = only(&spans, gate)?;
        child_of(gate, gates)?;
        ensure!(gate.attribute("pgrollout.gate.state").as_deref() == Some("passed"));
    }
    let dispatch = only(&spans, "dispatch")?;
    child_of(dispatch, rollout)?;
    let job = only(&spans, "job deploy")?;
    child_of(job, dispatch)?;
    ensure!(
        job.attribute("pgrollout.routines").as_deref() == Some("public.trace_probe(text)"),
        "{:?}",
        job.span.attributes
    );
    ensure!(job.attribute("pgrollout.outcome").as_deref() == Some("succeeded"));

    let dbname = stack.zone("dev").pg.dbname().to_owned();
    let mut started = 0;
    for step in STEPS {
        let step = only(&spans, step)?;
        child_of(step, job)?;
        ensure!(step.string("db.system.name") == Some("postgresql"));
        ensure!(step.attribute("db.system").is_none(), "the old key is gone");
        ensure!(step.string("db.namespace") == Some(dbname.as_str()));
        ensure!(step.int("server.port") == Some(i64::from(stack.zone("dev").pg.port())));
        ensure!(
            step.attribute("pgrollout.outcome").as_deref() == Some("succeeded"),
            "{:?}",
            step.span.attributes
        );
        ensure!(
            step.int("pgrollout.duration_ms").is_some(),
            "a number is an OTLP integer: {:?}",
            step.value("pgrollout.duration_ms")
        );
        // The steps ran in order.
        ensure!(
            step.span.start_time_unix_nano >= started,
            "{:?} started before the step before it",
            step.span.name
        );
        started = step.span.start_time_unix_nano;
    }
    let smoke = only(&spans, "smoke")?;
    let smoke_event = smoke
        .span
        .events
        .iter()
        .find(|e| e.name == "smoke test")
        .context("the smoke step records its test")?;
    ensure!(smoke_event
        .attributes
        .iter()
        .any(|kv| kv.key == "pgrollout.routine"
            && pgrollout_tests::otlp_receiver::text(kv.value.as_ref())
                == "public.trace_probe(text)"));

    for span in &spans {
        no_tracing_internals(span)?;
    }
    let smoke_count = smoke.int("pgrollout.smoke.count");
    ensure!(smoke_count == Some(1), "{:?}", smoke.span.attributes);
    ensure!(smoke.span.dropped_events_count == 0);

    // The agent's spans came through the controller, stamped with what the
    // agent's certificate says; the controller's and the CLI's are not.
    let agent_identity = format!("spiffe://{TRUST_DOMAIN}/zone/dev/agent/dev-1");
    for span in spans.iter().filter(|s| s.service() == "pgrollout-agent") {
        for (key, value) in [
            ("pgrollout.agent.name", "dev-1"),
            ("pgrollout.agent.zone", "dev"),
            ("pgrollout.agent.identity", agent_identity.as_str()),
            ("pgrollout.agent.verified", "true"),
            ("pgrollout.relayed_by", "pgrollout-controller"),
        ] {
            ensure!(
                span.resource.get(key).map(String::as_str) == Some(value),
                "agent span {:?}: resource {key} should be {value:?}: {:?}",
                span.span.name,
                span.resource
            );
        }
    }
    ensure!(spans.iter().any(|s| s.service() == "pgrollout-agent"));
    for span in spans.iter().filter(|s| s.service() != "pgrollout-agent") {
        ensure!(!span.resource.contains_key("pgrollout.relayed_by"));
    }

    // No secret, no parameter value, anywhere in the trace.
    let password = stack.zone("dev").pg.password().to_owned();
    for span in &spans {
        for text in span.all_text() {
            ensure!(
                !text.contains(&password),
                "span {:?} carries the database password",
                span.span.name
            );
            ensure!(
                !text.contains(SMOKE_ARGUMENT),
                "span {:?} carries the smoke test's argument: {text:?}",
                span.span.name
            );
        }
    }

    // The controller stored the same trace id on the rollout and its audit entries.
    let status = stack.cli(&["status", &rollout_id]).await?;
    ensure!(status.code == 0, "{status}");
    ensure!(
        printed(&status.stdout, "Trace ID:", "Trace ID:")? == trace_id,
        "{status}"
    );
    let audit = stack
        .cli(&["audit", "--rollout", &rollout_id, "--output", "json"])
        .await?;
    ensure!(audit.code == 0, "{audit}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&audit.stdout)
        .with_context(|| format!("audit --output json:\n{audit}"))?;
    let traced: Vec<&str> = entries
        .iter()
        .filter_map(|entry| entry["trace_id"].as_str())
        .filter(|id| !id.is_empty())
        .collect();
    ensure!(
        !traced.is_empty(),
        "no audit entry of the rollout carries a trace id:\n{audit}"
    );
    ensure!(
        traced.iter().all(|id| *id == trace_id),
        "an audit entry of the rollout names another trace:\n{audit}"
    );

    // A CLI that exports nothing sends no parent it will never export: the
    // next deploy is a trace of its own, the one it printed, rooted at the
    // controller's rollout span (issue 16: no rootless traces).
    let quiet = stack.cli(&["deploy", "trace_probe", "dev"]).await?;
    ensure!(quiet.code == 0, "{quiet}");
    let quiet_trace = printed(&quiet.stdout, "rollout ", ", trace ")?;
    ensure!(
        quiet_trace != trace_id,
        "each rollout is a trace of its own"
    );
    let in_quiet_trace = |spans: &[ReceivedSpan]| -> Vec<ReceivedSpan> {
        spans
            .iter()
            .filter(|s| s.trace_id() == quiet_trace)
            .cloned()
            .collect()
    };
    let all = collector
        .wait_for(SPANS_ARRIVE, |spans| {
            let quiet = in_quiet_trace(spans);
            [
                "rollout deploy",
                "dispatch",
                "job deploy",
                // The same source again is unchanged: no smoke steps, but
                // the job still commits its ledger row.
                "commit",
            ]
            .iter()
            .all(|name| quiet.iter().any(|s| s.span.name == *name))
        })
        .await?;
    let quiet_spans = in_quiet_trace(&all);
    ensure!(only(&quiet_spans, "pgrollout deploy").is_err());
    let rollout = only(&quiet_spans, "rollout deploy")?;
    ensure!(
        rollout.parent_id().is_empty(),
        "the rollout span is the trace's root, not the child of an unexported CLI span: parent {:?}",
        rollout.parent_id()
    );
    child_of(
        only(&quiet_spans, "job deploy")?,
        only(&quiet_spans, "dispatch")?,
    )?;
    Ok(())
}

/// Nothing of tracing's own bookkeeping reaches a collector.
fn no_tracing_internals(span: &ReceivedSpan) -> Result<()> {
    for kv in &span.span.attributes {
        let key = kv.key.as_str();
        ensure!(
            !["busy_ns", "idle_ns", "target", "level"].contains(&key)
                && !key.starts_with("code.")
                && !key.starts_with("thread."),
            "span {:?} carries tracing's {key}",
            span.span.name
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_deploy_the_server_refuses_carries_the_database_conventions_and_its_sqlstate(
) -> Result<()> {
    let mut collector = OtlpReceiver::start().await?;
    let stack = Stack::start_with(StackOptions {
        controller_extra: format!("[telemetry]\notlp_endpoint = \"{}\"\n", collector.endpoint),
        ..StackOptions::default()
    })
    .await?;
    // Parses, but PostgreSQL refuses it at CREATE: 42P01, undefined table.
    stack.write_procedure(
        "trace_broken.sql",
        "CREATE OR REPLACE FUNCTION public.trace_broken(n integer) RETURNS integer LANGUAGE sql \
         AS 'SELECT n + count(*)::integer FROM public.no_such_table';\n",
    )?;
    let deploy = stack.cli(&["deploy", "trace_broken", "dev"]).await?;
    ensure!(deploy.code == 2, "{deploy}");
    let spans = collector
        .wait_for(SPANS_ARRIVE, |spans| {
            ["rollout deploy", "job deploy", "apply"]
                .iter()
                .all(|name| spans.iter().any(|s| s.span.name == *name))
        })
        .await?;

    let pg = &stack.zone("dev").pg;
    let apply = only(&spans, "apply")?;
    let job = only(&spans, "job deploy")?;
    child_of(apply, job)?;
    for span in [apply, job] {
        let name = &span.span.name;
        ensure!(
            span.string("db.system.name") == Some("postgresql"),
            "{name}"
        );
        ensure!(span.string("db.namespace") == Some(pg.dbname()), "{name}");
        ensure!(span.string("server.address") == Some(pg.host()), "{name}");
        ensure!(
            span.int("server.port") == Some(i64::from(pg.port())),
            "{name}"
        );
        ensure!(
            span.string("db.response.status_code") == Some("42P01"),
            "{name}: {:?}",
            span.span.attributes
        );
        ensure!(span.string("error.type") == Some("42P01"), "{name}");
        let status = span.span.status.as_ref().context("a status")?;
        ensure!(status.code == 2, "{name}: status ERROR, not {status:?}");
        ensure!(status.message.contains("42P01"), "{name}: {status:?}");
    }
    ensure!(apply.string("pgrollout.outcome") == Some("failed"));
    ensure!(
        apply.int("pgrollout.duration_ms").is_some(),
        "{:?}",
        apply.span.attributes
    );
    ensure!(
        job.int("pgrollout.attempt") == Some(1),
        "{:?}",
        job.span.attributes
    );
    ensure!(job.int("pgrollout.routine_count") == Some(1));

    let rollout = only(&spans, "rollout deploy")?;
    let status = rollout.span.status.as_ref().context("a status")?;
    ensure!(
        status.code == 2 && status.message == "deploy-failed",
        "{status:?}"
    );
    ensure!(rollout.string("error.type") == Some("deploy-failed"));

    let password = pg.password().to_owned();
    for span in &spans {
        no_tracing_internals(span)?;
        for text in span.all_text() {
            ensure!(
                !text.contains(&password),
                "span {:?} carries the password",
                span.span.name
            );
            ensure!(
                !text.contains("no_such_table"),
                "span {:?} quotes the server's message: {text:?}",
                span.span.name
            );
        }
    }
    Ok(())
}

/// The SQLSTATE on a span is the server's, carried typed from the driver's
/// error where the failure began (issue 14), not read back out of the
/// failure's text. A deploy that waits out the deploy lock is told in the
/// agent's own words, which quote no code, yet the server refused with 55P03
/// (`lock_timeout`): the `lock` step and the job say so.
#[tokio::test]
async fn a_failure_told_in_the_agents_words_still_carries_the_servers_sqlstate() -> Result<()> {
    let mut collector = OtlpReceiver::start().await?;
    let stack = Stack::start_with(StackOptions {
        controller_extra: format!("[telemetry]\notlp_endpoint = \"{}\"\n", collector.endpoint),
        agent_timeouts: "lock = \"1s\"".into(),
        ..StackOptions::default()
    })
    .await?;
    stack.write_procedure(
        "trace_locked.sql",
        "CREATE OR REPLACE FUNCTION public.trace_locked() RETURNS integer LANGUAGE sql AS 'SELECT 1';\n",
    )?;
    // Another session holds the deploy lock (the agent's advisory lock key).
    let holder = stack.zone("dev").pg.connect().await?;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&0x7067_726f_6c6c_6f75_i64])
        .await?;
    let deploy = stack.cli(&["deploy", "trace_locked", "dev"]).await?;
    ensure!(deploy.code == 2, "{deploy}");
    ensure!(
        deploy
            .stderr
            .contains("another rollout holds the deploy lock on target main"),
        "{deploy}"
    );
    ensure!(
        !deploy.stderr.contains("55P03"),
        "the text quotes no code: {deploy}"
    );
    let spans = collector
        .wait_for(SPANS_ARRIVE, |spans| {
            ["job deploy", "lock"]
                .iter()
                .all(|name| spans.iter().any(|s| s.span.name == *name))
        })
        .await?;
    let lock = only(&spans, "lock")?;
    let job = only(&spans, "job deploy")?;
    child_of(lock, job)?;
    for span in [lock, job] {
        let name = &span.span.name;
        ensure!(
            span.string("db.response.status_code") == Some("55P03"),
            "{name}: {:?}",
            span.span.attributes
        );
        ensure!(span.string("error.type") == Some("55P03"), "{name}");
        let status = span.span.status.as_ref().context("a status")?;
        ensure!(status.code == 2, "{name}: status ERROR, not {status:?}");
        ensure!(
            status.message.ends_with("SQLSTATE 55P03"),
            "{name}: {status:?}"
        );
    }
    ensure!(lock.string("pgrollout.outcome") == Some("failed"));
    drop(holder);
    Ok(())
}

/// A routine that declares no smoke test is checked for existence in both
/// smoke steps: each step's span counts it, with no event of its own (a
/// batch of a thousand such routines made a thousand identical events per
/// step); a test that ran keeps its event.
#[tokio::test]
async fn existence_only_checks_are_counted_not_listed_in_the_smoke_spans() -> Result<()> {
    let mut collector = OtlpReceiver::start().await?;
    let stack = Stack::start_with(StackOptions {
        controller_extra: format!("[telemetry]\notlp_endpoint = \"{}\"\n", collector.endpoint),
        ..StackOptions::default()
    })
    .await?;
    stack.write_procedure("trace_probe.sql", probe_sql())?;
    stack.write_procedure("trace_probe.toml", &probe_sidecar())?;
    stack.write_procedure(
        "trace_bare.sql",
        "CREATE OR REPLACE FUNCTION public.trace_bare() RETURNS integer LANGUAGE sql AS 'SELECT 1';\n",
    )?;
    let list = stack.dir.path().join("list.txt");
    std::fs::write(&list, "trace_bare\ntrace_probe\n")?;
    let batch = stack
        .cli(&["batch", "dev", &list.to_string_lossy()])
        .await?;
    ensure!(batch.code == 0, "{batch}");
    let steps = ["smoke", "post-commit-smoke"];
    let spans = collector
        .wait_for(SPANS_ARRIVE, |spans| {
            steps
                .iter()
                .all(|name| spans.iter().any(|s| s.span.name == *name))
        })
        .await?;
    for step in steps {
        let span = only(&spans, step)?;
        let attributes = &span.span.attributes;
        ensure!(
            span.int("pgrollout.smoke.count") == Some(2),
            "{step}: {attributes:?}"
        );
        ensure!(
            span.int("pgrollout.smoke.existence_only") == Some(1),
            "{step}: {attributes:?}"
        );
        let events: Vec<String> = span
            .span
            .events
            .iter()
            .filter(|e| e.name == "smoke test")
            .flat_map(|e| &e.attributes)
            .filter(|kv| kv.key == "pgrollout.routine")
            .map(|kv| pgrollout_tests::otlp_receiver::text(kv.value.as_ref()))
            .collect();
        ensure!(events == ["public.trace_probe(text)"], "{step}: {events:?}");
    }
    Ok(())
}
