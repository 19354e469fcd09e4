//! Observability (issue 7, items 3–5): notifications to Slack and webhooks,
//! deployment metrics from `pgrollout metrics` and the Prometheus endpoint,
//! and `pgrollout log` — on real clusters with the real binaries.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgrollout_tests::http_get::http_request;
use pgrollout_tests::stack::OPERATOR;
use pgrollout_tests::webhook_endpoint::Endpoint;
use pgrollout_tests::{free_port, Stack, StackOptions};
use serde_json::Value;
use tokio::net::TcpListener;

fn version(name: &str, body: &str) -> String {
    format!("CREATE OR REPLACE FUNCTION public.{name}(n integer) RETURNS integer LANGUAGE sql AS '{body}';\n")
}

/// Parses, but fails at CREATE: the body reads a table that does not exist.
fn broken(name: &str) -> String {
    version(
        name,
        "SELECT n + count(*)::integer FROM public.no_such_table",
    )
}

fn sidecar(name: &str) -> String {
    format!(
        "[[smoke_tests]]\nname = \"adds\"\ncall = \"SELECT public.{name}(1) AS total\"\n\
         expect_columns = [ {{ name = \"total\", type = \"integer\" }} ]\n"
    )
}

fn write(stack: &Stack, name: &str, sql: &str) -> Result<()> {
    stack.write_procedure(&format!("{name}.sql"), sql)?;
    stack.write_procedure(&format!("{name}.toml"), &sidecar(name))
}

/// A port nothing listens on.
fn dead_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A listener that accepts connections and never answers: every attempt
/// runs into the per-attempt timeout.
async fn stuck_endpoint() -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    Ok(url)
}

#[tokio::test]
async fn rollouts_reach_slack_and_a_dead_or_stuck_webhook_changes_nothing() -> Result<()> {
    let mut slack = Endpoint::start(200).await?;
    let dead = format!("http://127.0.0.1:{}/hook", dead_port()?);
    let stuck = stuck_endpoint().await?;
    let slack_url_file = tempfile::NamedTempFile::new()?;
    std::fs::write(
        slack_url_file.path(),
        format!("{}/services/T0/B0/SECRET\n", slack.url),
    )?;
    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into(), "qa".into()],
        environment_extra: vec![(
            "dev".into(),
            "notification_channel = \"#dev-deploys\"".into(),
        )],
        controller_extra: format!(
            "[notifications]\ntimeout = \"2s\"\nbackoff = \"200ms\"\n\
             [notifications.channels.team-slack]\nkind = \"slack\"\nurl_file = \"{}\"\n\
             [notifications.channels.dead-hook]\nkind = \"webhook\"\nurl = \"{dead}\"\n\
             [notifications.channels.stuck-hook]\nkind = \"webhook\"\nurl = \"{stuck}\"\n\
             [notifications.routes]\ndev = [\"team-slack\", \"dead-hook\", \"stuck-hook\"]\n",
            slack_url_file.path().display()
        ),
        ..StackOptions::default()
    })
    .await?;
    write(&stack, "obs_n", &version("obs_n", "SELECT n + 1"))?;

    // The same deploy to QA, which notifies nobody, is the baseline.
    let started = Instant::now();
    let baseline = stack.cli(&["deploy", "obs_n", "qa"]).await?;
    let baseline_time = started.elapsed();
    assert_eq!(baseline.code, 0, "{baseline}");

    let started = Instant::now();
    let deploy = stack.cli(&["deploy", "obs_n", "dev"]).await?;
    let deploy_time = started.elapsed();
    assert_eq!(deploy.code, 0, "{deploy}");
    assert!(deploy.stdout.contains("Status: [ok] SUCCESS"), "{deploy}");
    // One attempt's timeout is the budget; delivery is not awaited at all.
    assert!(
        deploy_time < baseline_time + Duration::from_secs(2),
        "deploy took {deploy_time:?} with failing channels, {baseline_time:?} without"
    );
    let deployed = deploy.rollout_id()?;
    let (path, body) = slack.next().await?;
    assert_eq!(path, "/services/T0/B0/SECRET");
    assert_eq!(
        body["text"],
        format!("✅ Deployed obs_n to DEV (by {OPERATOR}, rollout {deployed})")
    );
    assert_eq!(body["channel"], "#dev-deploys");
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["blocks"][0]["text"]["text"], body["text"]);

    write(&stack, "obs_n", &broken("obs_n"))?;
    let failed = stack.cli(&["deploy", "obs_n", "dev"]).await?;
    assert_eq!(failed.code, 2, "{failed}");
    let failed_id = failed.rollout_id()?;
    let text = slack.next().await?.1["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        text.starts_with("❌ Deploy of obs_n to DEV failed (exit 2): ")
            && text.contains("no_such_table")
            && text.ends_with(&format!("(by {OPERATOR}, rollout {failed_id})")),
        "{text}"
    );

    let rollback = stack.cli(&["rollback", "obs_n", "dev"]).await?;
    assert_eq!(rollback.code, 0, "{rollback}");
    let rollback_id = rollback.rollout_id()?;
    assert_eq!(
        slack.next().await?.1["text"],
        format!("↩️ Rolled back obs_n in DEV (by {OPERATOR}, rollout {rollback_id})")
    );

    write(&stack, "obs_n", &version("obs_n", "SELECT n + 2"))?;
    assert_eq!(stack.cli(&["deploy", "obs_n", "dev"]).await?.code, 0);
    slack.next().await?;
    let emergency = stack
        .cli(&[
            "rollback",
            "obs_n",
            "dev",
            "--emergency",
            "--reason",
            "pager 4411",
        ])
        .await?;
    assert_eq!(emergency.code, 0, "{emergency}");
    assert_eq!(
        slack.next().await?.1["text"],
        format!(
            "🚨 EMERGENCY: Rolled back obs_n in DEV — reason: pager 4411 (by {OPERATOR}, rollout {})",
            emergency.rollout_id()?
        )
    );

    // The failing channels are audited once their attempts are spent. The
    // entries are written by the controller, another process, with nothing
    // to wait on from here: poll with a deadline (3 attempts of 2 s at most,
    // plus backoff, for the stuck endpoint).
    let deadline = Instant::now() + Duration::from_secs(20);
    let failures = loop {
        let failures: Vec<Value> = stack
            .audit_entries()
            .await?
            .into_iter()
            .filter(|e| {
                e["action"] == "notification.failed" && e["rollout_id"] == deployed.as_str()
            })
            .collect();
        if failures.len() >= 2 || Instant::now() > deadline {
            break failures;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let details: BTreeMap<String, String> = failures
        .iter()
        .filter_map(|e| {
            let details = e["details"].as_str()?;
            let channel = details
                .strip_prefix("channel ")?
                .split_whitespace()
                .next()?;
            Some((channel.to_owned(), details.to_owned()))
        })
        .collect();
    assert_eq!(
        details.keys().collect::<Vec<_>>(),
        ["dead-hook", "stuck-hook"],
        "{failures:?}"
    );
    assert!(
        details["dead-hook"].starts_with(
            "channel dead-hook (webhook): event deploy.succeeded: 3 attempt(s) failed; last: request failed"
        ),
        "{details:?}"
    );
    assert!(
        details["stuck-hook"].ends_with("3 attempt(s) failed; last: no response within 2s"),
        "{details:?}"
    );
    let everything = stack.audit_entries().await?;
    assert!(
        !serde_json::to_string(&everything)?.contains("SECRET"),
        "the Slack URL is a secret"
    );
    assert!(
        !stack.all_process_output().contains("SECRET"),
        "nor is it logged"
    );
    Ok(())
}

/// The controller's record of one rollout.
struct Recorded {
    id: String,
    kind: String,
    label: String,
    state: String,
    exit_code: i64,
    created_at: i64,
    finished_at: i64,
}

fn recorded(stack: &Stack) -> Result<Vec<Recorded>> {
    let store = rusqlite::Connection::open(stack.dir.path().join("controller.sqlite"))?;
    let mut statement = store.prepare(
        "SELECT r.id, r.kind, p.label, r.state, r.exit_code, r.created_at, r.finished_at \
         FROM rollouts r JOIN plans p ON p.plan_id = r.plan_id ORDER BY r.created_at",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(Recorded {
            id: row.get(0)?,
            kind: row.get(1)?,
            label: row.get(2)?,
            state: row.get(3)?,
            exit_code: row.get(4)?,
            created_at: row.get(5)?,
            finished_at: row.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The mean in whole milliseconds, rounded half up, as the controller does.
fn mean_ms(values: &[i64]) -> i64 {
    let n = values.len() as i64;
    (2 * values.iter().sum::<i64>() + n) / (2 * n)
}

/// `GET <path>` over a fresh connection; the status line and the body.
async fn http_get(port: u16, method: &str, path: &str) -> Result<(String, String)> {
    let (head, body) = http_request(port, method, path).await?;
    Ok((head.lines().next().unwrap_or_default().to_owned(), body))
}

#[tokio::test]
async fn metrics_and_the_prometheus_endpoint_show_exactly_what_the_store_holds() -> Result<()> {
    let port = free_port();
    let stack = Stack::start_with(StackOptions {
        controller_extra: format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
        ..StackOptions::default()
    })
    .await?;
    // obs_a: two good deploys, one that fails, then a rollback; obs_b: one.
    for (sql, code) in [
        (version("obs_a", "SELECT n + 1"), 0),
        (version("obs_a", "SELECT n + 2"), 0),
        (broken("obs_a"), 2),
    ] {
        write(&stack, "obs_a", &sql)?;
        let out = stack.cli(&["deploy", "obs_a", "dev"]).await?;
        assert_eq!(out.code, code, "{out}");
    }
    write(&stack, "obs_b", &version("obs_b", "SELECT n"))?;
    assert_eq!(stack.cli(&["deploy", "obs_b", "dev"]).await?.code, 0);
    let rollback = stack.cli(&["rollback", "obs_a", "dev"]).await?;
    assert_eq!(rollback.code, 0, "{rollback}");

    // What to expect, from the store's own timestamps.
    let rollouts = recorded(&stack)?;
    let deploys = |label: &str| -> Vec<&Recorded> {
        rollouts
            .iter()
            .filter(|r| r.kind == "deploy" && r.label == label)
            .collect()
    };
    let durations = |label: &str| -> Vec<i64> {
        deploys(label)
            .iter()
            .map(|r| r.finished_at - r.created_at)
            .collect()
    };
    let (a_average, b_average) = (mean_ms(&durations("obs_a")), mean_ms(&durations("obs_b")));
    let rolled_back = rollouts
        .iter()
        .find(|r| r.kind == "rollback")
        .context("no rollback recorded")?;
    // The most recent bad deploy before the rollback is the failed third one.
    let failed = deploys("obs_a")[2];
    assert_eq!((failed.state.as_str(), failed.exit_code), ("failed", 2));
    assert_eq!(
        deploys("obs_a")[1].state,
        "rolled_back",
        "the rollback undid the second deploy"
    );
    let mttr = rolled_back.finished_at - failed.finished_at;
    assert!(mttr > 0);
    let seconds = |ms: i64| format!("{:.2}s", ms as f64 / 1000.0);

    let out = stack.cli(&["metrics"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let rows: Vec<Vec<String>> = out
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec![
                "obs_a".to_owned(),
                "dev".into(),
                "3".into(),
                "66.7%".into(),
                seconds(a_average),
                "1".into(),
                seconds(mttr)
            ],
            vec![
                "obs_b".to_owned(),
                "dev".into(),
                "1".into(),
                "100.0%".into(),
                seconds(b_average),
                "0".into(),
                "-".into()
            ],
        ],
        "{out}"
    );

    let json = stack
        .cli(&["metrics", "obs_a", "--env", "dev", "--output", "json"])
        .await?;
    assert_eq!(json.code, 0, "{json}");
    assert_eq!(
        serde_json::from_str::<Value>(&json.stdout)?,
        serde_json::json!([{
            "procedure": "obs_a", "environment": "dev", "deployments": 3, "successes": 2,
            "success_rate": 2.0 / 3.0, "average_duration_ms": a_average, "rollbacks": 1,
            "mttr_ms": mttr, "mttr_samples": 1
        }])
    );
    let none = stack.cli(&["metrics", "obs_a", "--env", "qa"]).await?;
    assert_eq!(none.stdout, "no deployments recorded\n", "{none}");

    let (status, body) = http_get(port, "GET", "/metrics").await?;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let a = "procedure=\"obs_a\",environment=\"dev\"";
    let b = "procedure=\"obs_b\",environment=\"dev\"";
    let mut expected = vec![
        format!("pgrollout_deployments_total{{{a}}} 3"),
        format!("pgrollout_deployment_successes_total{{{a}}} 2"),
        format!("pgrollout_deployment_success_ratio{{{a}}} {}", 2.0f64 / 3.0),
        format!(
            "pgrollout_deployment_duration_seconds_average{{{a}}} {}",
            a_average as f64 / 1000.0
        ),
        format!("pgrollout_rollbacks_total{{{a}}} 1"),
        format!("pgrollout_mttr_seconds{{{a}}} {}", mttr as f64 / 1000.0),
        format!("pgrollout_deployments_total{{{b}}} 1"),
        format!("pgrollout_deployment_success_ratio{{{b}}} 1"),
        format!("pgrollout_rollbacks_total{{{b}}} 0"),
        "pgrollout_agents_connected{zone=\"dev\"} 1".to_owned(),
    ];
    let mut by_state: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for r in &rollouts {
        *by_state.entry((&r.kind, &r.state)).or_default() += 1;
    }
    for ((kind, state), count) in by_state {
        expected.push(format!(
            "pgrollout_rollouts{{kind=\"{kind}\",state=\"{state}\"}} {count}"
        ));
    }
    // Same series, same number (`1` and `1.0` are one value to Prometheus).
    let parse = |line: &str| -> Option<(String, f64)> {
        let (series, value) = line.rsplit_once(' ')?;
        Some((series.to_owned(), value.parse().ok()?))
    };
    for line in &expected {
        let want = parse(line).expect("expected lines are samples");
        assert!(
            body.lines().filter_map(parse).any(|got| got == want),
            "{line} missing from:\n{body}"
        );
    }
    assert!(
        !body.contains(&format!("pgrollout_mttr_seconds{{{b}}}")),
        "no MTTR without a rollback:\n{body}"
    );
    assert_eq!(
        http_get(port, "GET", "/other").await?.0,
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        http_get(port, "POST", "/metrics").await?.0,
        "HTTP/1.1 405 Method Not Allowed"
    );
    Ok(())
}

/// The DEPLOYMENT LOG block's lines from a command's output.
fn block(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == "DEPLOYMENT LOG")
        .map(|i| i - 1)
        .unwrap_or(lines.len());
    lines[start..]
        .iter()
        .enumerate()
        .take_while(|(i, l)| *i < 3 || !l.starts_with("====="))
        .map(|(_, l)| l.to_string())
        .collect()
}

#[tokio::test]
async fn log_prints_the_deployment_log_block_of_a_recorded_rollout() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    write(&stack, "obs_l", &version("obs_l", "SELECT n + 1"))?;
    let deploy = stack.cli(&["deploy", "obs_l", "dev"]).await?;
    assert_eq!(deploy.code, 0, "{deploy}");
    let id = deploy.rollout_id()?;

    let log = stack.cli(&["log", &id]).await?;
    assert_eq!(log.code, 0, "{log}");
    let rollout = recorded(&stack)?
        .into_iter()
        .find(|r| r.id == id)
        .context("recorded")?;
    let duration = format!(
        "Duration: {:.2} seconds",
        (rollout.finished_at - rollout.created_at) as f64 / 1000.0
    );
    // Line for line what `deploy` printed, except that the duration is the
    // controller's, from its store.
    let expected: Vec<String> = block(&deploy.stdout)
        .into_iter()
        .map(|l| {
            if l.starts_with("Duration: ") {
                duration.clone()
            } else {
                l
            }
        })
        .collect();
    assert_eq!(block(&log.stdout), expected, "{log}");
    assert_eq!(
        log.stdout,
        expected.join("\n") + "\n===========================================\n"
    );
    for line in [
        "Procedure: obs_l",
        "Environment: DEV",
        &format!("Deployed By: {OPERATOR}"),
        "Smoke Test: [ok] PASS",
        "Status: [ok] SUCCESS",
        &format!("Rollout: {id}"),
    ] {
        assert!(expected.iter().any(|l| l == line), "{line} in {expected:?}");
    }
    assert!(
        expected
            .iter()
            .any(|l| l.starts_with("Trace ID: ") && l.len() == 42),
        "{expected:?}"
    );

    write(&stack, "obs_l", &broken("obs_l"))?;
    let failed = stack.cli(&["deploy", "obs_l", "dev"]).await?;
    assert_eq!(failed.code, 2, "{failed}");
    let log = stack.cli(&["log", &failed.rollout_id()?]).await?;
    assert!(
        log.stdout.contains("\nStatus: [FAIL] FAILED (exit 2)\n"),
        "{log}"
    );
    assert!(
        log.stdout.contains("\nRoutines: public.obs_l(integer)\n"),
        "{log}"
    );

    assert_eq!(stack.cli(&["rollback", "obs_l", "dev"]).await?.code, 0);
    let log = stack.cli(&["log", &id]).await?;
    assert!(
        log.stdout
            .contains("\nStatus: [undone] ROLLED BACK (succeeded, later undone by a rollback)\n"),
        "{log}"
    );

    let unknown = stack.cli(&["log", "r-no-such-rollout"]).await?;
    assert_eq!(unknown.code, 1, "{unknown}");
    assert!(
        unknown.stderr.contains("no rollout \"r-no-such-rollout\""),
        "{unknown}"
    );
    Ok(())
}
