//! The controller's and the agent's `/metrics` as Prometheus itself reads
//! them (issue 21 item 7): `promtool check metrics` (the Prometheus
//! project's own parser and linter) accepts both scrapes after real
//! deploys, the duration histograms move with each rollout, a batch counts
//! under `kind="batch"` (its list file's name is no label), and both
//! programs show `pgrollout_build_info` and the `process_*` metrics.

use std::process::Stdio;

use anyhow::{ensure, Context, Result};
use pgrollout_tests::http_get::http_request;
use pgrollout_tests::{free_port, Stack, StackOptions};
use tokio::io::AsyncWriteExt;

fn function(name: &str, body: &str) -> String {
    format!("CREATE OR REPLACE FUNCTION public.{name}(n integer) RETURNS integer LANGUAGE sql AS '{body}';\n")
}

/// `GET /metrics` over a fresh connection: checks the status and the
/// content type, returns the body.
async fn scrape(port: u16) -> Result<String> {
    let (head, body) = http_request(port, "GET", "/metrics").await?;
    ensure!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    ensure!(
        head.lines()
            .any(|l| l
                .eq_ignore_ascii_case("content-type: text/plain; version=0.0.4; charset=utf-8")),
        "{head}"
    );
    Ok(body)
}

/// `promtool check metrics` on `text`: its verdict, or why it could not run.
async fn promtool(text: &str) -> Result<()> {
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context(
            "promtool is missing: run deploy/install-prerequisites.sh (Debian package prometheus)",
        )?;
    let mut stdin = child.stdin.take().context("promtool's stdin")?;
    stdin.write_all(text.as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {:?}\n{said}\n--- scraped ---\n{text}",
        out.status
    );
    Ok(())
}

/// The value of the sample `series` (name and labels exactly as exposed),
/// 0 when absent.
fn sample(text: &str, series: &str) -> Result<f64> {
    match text
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
    {
        Some(value) => value
            .trim()
            .parse()
            .with_context(|| format!("{series}: {value:?}")),
        None => Ok(0.0),
    }
}

#[tokio::test]
async fn promtool_accepts_both_scrapes_and_the_histograms_follow_real_deploys() -> Result<()> {
    let (controller_port, agent_port) = (free_port(), free_port());
    let mut stack = Stack::start_with(StackOptions {
        controller_extra: format!("[metrics]\nlisten = \"127.0.0.1:{controller_port}\"\n"),
        ..StackOptions::default()
    })
    .await?;
    stack.kill_agent("dev").await?;
    let config = stack.zone("dev").agent_config.clone();
    let text = std::fs::read_to_string(&config)?;
    std::fs::write(
        &config,
        format!("{text}[health]\nlisten = \"127.0.0.1:{agent_port}\"\n"),
    )?;
    stack.start_agent("dev").await?;

    let deploys = "pgrollout_deploy_duration_seconds_count{environment=\"dev\",kind=\"deploy\"}";
    let batches = "pgrollout_deploy_duration_seconds_count{environment=\"dev\",kind=\"batch\"}";
    let applied =
        "pgrollout_agent_step_duration_seconds_count{step=\"apply\",outcome=\"succeeded\"}";
    let before = (scrape(controller_port).await?, scrape(agent_port).await?);
    promtool(&before.0).await?;
    promtool(&before.1).await?;
    ensure!(sample(&before.0, deploys)? == 0.0 && sample(&before.1, applied)? == 0.0);

    stack.write_procedure("metrics_ok.sql", &function("metrics_ok", "SELECT n"))?;
    stack.write_procedure("metrics_two.sql", &function("metrics_two", "SELECT n + 2"))?;
    // Parses, but PostgreSQL refuses it at CREATE (42P01).
    stack.write_procedure(
        "metrics_bad.sql",
        &function(
            "metrics_bad",
            "SELECT n + count(*)::integer FROM public.no_such_table",
        ),
    )?;
    let ok = stack.cli(&["deploy", "metrics_ok", "dev"]).await?;
    ensure!(ok.code == 0, "{ok}");
    let bad = stack.cli(&["deploy", "metrics_bad", "dev"]).await?;
    ensure!(bad.code == 2, "{bad}");
    let list = stack.dir.path().join("release-list-4711.txt");
    std::fs::write(&list, "metrics_ok\nmetrics_two\n")?;
    let batch = stack
        .cli(&["batch", "dev", &list.to_string_lossy()])
        .await?;
    ensure!(batch.code == 0, "{batch}");

    let controller = scrape(controller_port).await?;
    let agent = scrape(agent_port).await?;
    promtool(&controller).await?;
    promtool(&agent).await?;

    // Controller: two single-routine deploys and one batch, each in its
    // histogram; every bucket up to +Inf holds them all.
    ensure!(sample(&controller, deploys)? == 2.0, "{controller}");
    ensure!(sample(&controller, batches)? == 1.0, "{controller}");
    ensure!(
        sample(
            &controller,
            "pgrollout_deploy_duration_seconds_bucket{environment=\"dev\",kind=\"deploy\",le=\"+Inf\"}"
        )? == 2.0,
        "{controller}"
    );
    ensure!(
        sample(
            &controller,
            "pgrollout_deploy_duration_seconds_sum{environment=\"dev\",kind=\"deploy\"}"
        )? > 0.0,
        "{controller}"
    );
    for (series, value) in [
        (
            "pgrollout_deployments_total{procedure=\"metrics_ok\",environment=\"dev\"}",
            1.0,
        ),
        (
            "pgrollout_deployments_total{procedure=\"metrics_bad\",environment=\"dev\"}",
            1.0,
        ),
        (
            "pgrollout_deployment_successes_total{procedure=\"metrics_bad\",environment=\"dev\"}",
            0.0,
        ),
        (
            "pgrollout_deployments_total{kind=\"batch\",environment=\"dev\"}",
            1.0,
        ),
    ] {
        ensure!(
            sample(&controller, series)? == value,
            "{series} ≠ {value}:\n{controller}"
        );
    }
    ensure!(
        !controller.contains("release-list-4711"),
        "a list file's name is no label:\n{controller}"
    );

    // Agent: the steps of three jobs, one of them a failed apply.
    ensure!(sample(&agent, applied)? >= 1.0, "{agent}");
    ensure!(
        sample(
            &agent,
            "pgrollout_agent_step_duration_seconds_count{step=\"apply\",outcome=\"failed\"}"
        )? == 1.0,
        "{agent}"
    );
    ensure!(
        sample(
            &agent,
            "pgrollout_agent_jobs_total{kind=\"deploy\",outcome=\"deploy-failed\"}"
        )? == 1.0,
        "{agent}"
    );
    ensure!(
        sample(&agent, "pgrollout_agent_controller_connected")? == 1.0,
        "{agent}"
    );

    // Both: which build, and the process as every client library shows it.
    for (text, program) in [
        (&controller, "pgrollout-controller"),
        (&agent, "pgrollout-agent"),
    ] {
        let build = format!("pgrollout_build_info{{program=\"{program}\",version=\"");
        ensure!(
            text.lines()
                .any(|l| l.starts_with(&build) && l.ends_with("\"} 1")),
            "{text}"
        );
        ensure!(
            sample(text, "process_resident_memory_bytes")? > 1e6,
            "{text}"
        );
        ensure!(sample(text, "process_open_fds")? >= 3.0, "{text}");
        ensure!(sample(text, "process_cpu_seconds_total")? > 0.0, "{text}");
        let started = sample(text, "process_start_time_seconds")?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64();
        ensure!(
            started > now - 600.0 && started <= now + 1.0,
            "started {started}, now {now}"
        );
        let queue_full = "pgrollout_spans_dropped_total{stage=\"export\",reason=\"queue_full\"}";
        ensure!(
            text.lines().any(|l| l == format!("{queue_full} 0")),
            "{text}"
        );
    }
    Ok(())
}
