//! What a script or a log shipper reads (issue 16 items 12, 13, 15; issue 21
//! item 3): `--output json` of each command, parsed and checked against the
//! catalog and the ledger; plain ASCII markers and no ANSI codes off a
//! terminal; help texts that list only what applies; JSON service logs.

use anyhow::{Context, Result};
use pgrollout_tests::{Stack, StackOptions};
use serde_json::Value;

fn json(out: &pgrollout_tests::CommandOutput) -> Result<Value> {
    serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("stdout is not one JSON document:\n{out}"))
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// `schema.name(types)` of every routine named `name` in `zone`'s catalog
/// (its schema, `public`, is on the search path).
async fn catalog(stack: &Stack, zone: &str, name: &str) -> Result<Vec<String>> {
    let client = stack.zone(zone).pg.connect().await?;
    let rows = client
        .query(
            "SELECT n.nspname || '.' || p.oid::regprocedure::text FROM pg_proc p \
             JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname = $1 ORDER BY 1",
            &[&name],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// Ledger ids of `zone` with their action, oldest first.
async fn ledger(stack: &Stack, zone: &str) -> Result<Vec<(i64, String)>> {
    let client = stack.zone(zone).pg.connect().await?;
    let rows = client
        .query("SELECT id, action FROM pgrollout.ledger ORDER BY id", &[])
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn has_decorations(text: &str) -> bool {
    text.contains('\x1b')
        || ['✅', '❌', '➖', '↩', '⏳', '❓', '🕒', '⚠']
            .iter()
            .any(|emoji| text.contains(*emoji))
}

#[tokio::test]
async fn every_command_prints_one_json_document_that_matches_the_catalog_and_ledger() -> Result<()>
{
    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into(), "qa".into()],
        environment_extra: vec![("qa".into(), "require_approval = true\napprovals = 1".into())],
        ..StackOptions::default()
    })
    .await?;

    // deploy: the result names what the catalog now holds and the ledger rows.
    let out = stack
        .cli(&["deploy", "reconcilemupstream", "dev", "--output", "json"])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let deploy = json(&out)?;
    assert_eq!(deploy["exit_code"], 0, "{deploy}");
    let result = &deploy["result"];
    assert_eq!(result["outcome"], "succeeded", "{deploy}");
    let live = catalog(&stack, "dev", "reconcilemupstream").await?;
    let mut applied: Vec<&str> = result["applied"]
        .as_array()
        .context("applied")?
        .iter()
        .map(|a| text(&a["identity"]))
        .collect();
    applied.sort();
    assert_eq!(applied, live, "{deploy}");
    let rows = ledger(&stack, "dev").await?;
    let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        result["ledger_ids"],
        serde_json::json!(ids),
        "ledger {rows:?}"
    );
    let rollout = text(&deploy["rollout"]["rollout"]).to_owned();
    assert!(rollout.starts_with("r-"), "{deploy}");
    assert_eq!(deploy["rollout"]["environment"], "dev");
    assert!(
        !out.stdout.contains("STEP_STATUS") && !out.stdout.contains("OUTCOME_"),
        "{out}"
    );

    // status and rollouts: the same rollout, as recorded.
    let out = stack.cli(&["status", &rollout, "--output", "json"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let status = json(&out)?;
    assert_eq!(status["rollout"], rollout.as_str());
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["result"]["outcome"], "succeeded", "{status}");
    assert_eq!(status["result"]["ledger_ids"], serde_json::json!(ids));
    let out = stack.cli(&["rollouts", "--output", "json"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let listed = json(&out)?;
    let row = listed
        .as_array()
        .context("rollouts is an array")?
        .iter()
        .find(|r| r["rollout"] == rollout.as_str())
        .with_context(|| format!("{rollout} not listed: {listed}"))?;
    assert_eq!(row["state"], "succeeded");
    assert_eq!(row["environment"], "dev");

    // agents: one per zone, serving the zone's database.
    let out = stack.cli(&["agents", "--output", "json"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let agents = json(&out)?;
    for zone in ["dev", "qa"] {
        let agent = agents
            .as_array()
            .context("agents is an array")?
            .iter()
            .find(|a| a["zone"] == zone)
            .with_context(|| format!("no agent of {zone}: {agents}"))?;
        assert_eq!(
            agent["targets"][0]["dbname"],
            stack.zone(zone).pg.dbname(),
            "{agents}"
        );
    }

    // plan: dev is ready, qa waits for its approval.
    let out = stack
        .cli(&["plan", "reconcilemupstream", "--output", "json"])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let plan = json(&out)?;
    assert_eq!(text(&plan["plan_id"]).len(), 64, "{plan}");
    let verdict = |env: &str| -> Option<String> {
        plan["environments"]
            .as_array()?
            .iter()
            .find(|e| e["environment"] == env)
            .map(|e| text(&e["verdict"]).to_owned())
    };
    assert_eq!(verdict("dev").as_deref(), Some("ready"), "{plan}");
    assert_eq!(verdict("qa").as_deref(), Some("waits"), "{plan}");

    // deploy to qa waits (exit 5, its request id a field); approve starts it.
    let out = stack
        .cli(&["deploy", "reconcilemupstream", "qa", "--output", "json"])
        .await?;
    assert_eq!(out.code, 5, "{out}");
    let parked = json(&out)?;
    assert_eq!(parked["request"]["state"], "awaiting_approval", "{parked}");
    let request = text(&parked["request"]["request"]).to_owned();
    assert!(request.starts_with("p-"), "{parked}");
    let out = stack
        .cli_as("approver-1", &["approve", &request, "--output", "json"])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let approved = json(&out)?;
    assert_eq!(approved["request"], request.as_str(), "{approved}");
    assert!(text(&approved["rollout"]).starts_with("r-"), "{approved}");

    // rollback: the ledger gains the reversal rows the document names.
    let out = stack
        .cli(&["rollback", "reconcilemupstream", "dev", "--output", "json"])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let rollback = json(&out)?;
    assert_eq!(rollback["result"]["outcome"], "succeeded", "{rollback}");
    let after = ledger(&stack, "dev").await?;
    let new_ids: Vec<i64> = after
        .iter()
        .filter(|(id, _)| !ids.contains(id))
        .map(|(id, _)| *id)
        .collect();
    assert!(!new_ids.is_empty(), "no reversal rows: {after:?}");
    assert_eq!(rollback["result"]["ledger_ids"], serde_json::json!(new_ids));
    let restored = rollback["result"]["restored"]
        .as_array()
        .context("restored")?;
    assert_eq!(restored.len(), live.len(), "{rollback}");

    // alert list: the watch just created, on the routines of the catalog.
    let project = stack.project.display().to_string();
    let out = stack
        .cli(&[
            "alert",
            "create",
            "reconcilemupstream",
            "dev",
            "--for",
            "1h",
            "--every",
            "1h",
            "--project",
            &project,
        ])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let out = stack.cli(&["alert", "list", "--output", "json"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let watches = json(&out)?;
    let watch = &watches[0];
    assert_eq!(watch["environment"], "dev", "{watches}");
    assert_eq!(watch["procedure"], "reconcilemupstream", "{watches}");
    assert!(text(&watch["watch"]).starts_with('w'), "{watches}");
    let state = text(&watch["state"]);
    assert_eq!(state, state.to_lowercase(), "{watches}");
    for routine in watch["routines"].as_array().context("routines")? {
        assert!(
            live.contains(&text(&routine["identity"]).to_owned()),
            "{routine} is not in the catalog {live:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn off_a_terminal_markers_are_ascii_and_no_output_or_log_has_ansi_codes() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    // Neither NO_COLOR nor TERM=dumb: not being a terminal is enough.
    let env = [("TERM", "xterm-256color")];
    let deploy = stack
        .cli_as_with_env(
            pgrollout_tests::stack::OPERATOR,
            &["deploy", "reconcilemupstream", "dev"],
            &env,
        )
        .await?;
    assert_eq!(deploy.code, 0, "{deploy}");
    assert!(deploy.stdout.contains("Status: [ok] SUCCESS"), "{deploy}");
    assert!(deploy.stdout.contains("[ok] PASS"), "{deploy}");
    let plan = stack
        .cli_as_with_env(
            pgrollout_tests::stack::OPERATOR,
            &["plan", "reconcilemupstream"],
            &env,
        )
        .await?;
    assert_eq!(plan.code, 0, "{plan}");
    let rollback = stack
        .cli_as_with_env(
            pgrollout_tests::stack::OPERATOR,
            &["rollback", "reconcilemupstream", "dev"],
            &env,
        )
        .await?;
    assert_eq!(rollback.code, 0, "{rollback}");
    for out in [&deploy, &plan, &rollback] {
        assert!(!has_decorations(&out.stdout), "{out}");
        assert!(!has_decorations(&out.stderr), "{out}");
    }
    // Service logs written to files: plain text.
    let logs = stack.all_process_output();
    assert!(!logs.contains('\x1b'), "ANSI codes in a service log");

    // On a terminal (a pseudo-terminal from `script`), emoji — unless
    // NO_COLOR says otherwise.
    let on_terminal = |no_color: bool| {
        let stack = &stack;
        async move {
            let cli = stack.bins.controller.display().to_string();
            let project = stack.project.display().to_string();
            let ca = stack.ca_dir.clone();
            let mut command = tokio::process::Command::new("script");
            command
                .args([
                    "-qec",
                    &format!("{cli} smoke reconcilemupstream dev --project {project}"),
                    "/dev/null",
                ])
                .env("PGROLLOUT_ADDR", &stack.operators)
                .env("PGROLLOUT_CA", ca.join("ca.pem"))
                .env(
                    "PGROLLOUT_CERT",
                    ca.join(format!("operator-{}.pem", pgrollout_tests::stack::OPERATOR)),
                )
                .env(
                    "PGROLLOUT_KEY",
                    ca.join(format!("operator-{}.key", pgrollout_tests::stack::OPERATOR)),
                )
                .env("TERM", "xterm")
                .env_remove("NO_COLOR")
                .stdin(std::process::Stdio::null());
            if no_color {
                command.env("NO_COLOR", "1");
            }
            let out = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
                .await
                .context("script timed out")??;
            Ok::<String, anyhow::Error>(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };
    let fancy = on_terminal(false).await?;
    assert!(fancy.contains("✅"), "no emoji on a terminal:\n{fancy}");
    let plain = on_terminal(true).await?;
    assert!(
        plain.contains("[ok]") && !has_decorations(&plain),
        "NO_COLOR ignored:\n{plain}"
    );
    Ok(())
}

#[tokio::test]
async fn serve_and_agent_write_one_json_object_per_line_when_asked() -> Result<()> {
    let mut stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into()],
        start_agents: false,
        controller_extra: "[log]\nformat = \"json\"\n".into(),
        ..StackOptions::default()
    })
    .await?;
    let config = stack.zone("dev").agent_config.clone();
    let mut agent_toml = std::fs::read_to_string(&config)?;
    agent_toml.push_str("\n[log]\nformat = \"json\"\n");
    std::fs::write(&config, agent_toml)?;
    stack.start_agent("dev").await?;
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");

    let controller_log = std::fs::read_to_string(stack.controller.log_path())?;
    let agent = stack.zone("dev").agent.as_ref().context("agent")?;
    let agent_log = std::fs::read_to_string(agent.log_path())?;
    for (name, log, expected) in [
        ("controller", &controller_log, "controller listening"),
        ("agent", &agent_log, "connected to controller"),
    ] {
        let mut messages = Vec::new();
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            let object: Value = serde_json::from_str(line)
                .with_context(|| format!("{name} log line is not JSON: {line}"))?;
            for key in ["timestamp", "level", "target", "message"] {
                assert!(object[key].is_string(), "{name}: no {key} in {line}");
            }
            assert!(object["fields"].is_object(), "{name}: no fields in {line}");
            let level = text(&object["level"]);
            assert!(
                ["error", "warn", "info", "debug", "trace"].contains(&level),
                "{line}"
            );
            messages.push(object);
        }
        let found = messages
            .iter()
            .find(|m| m["message"] == expected)
            .with_context(|| format!("{name}: no {expected:?} line in\n{log}"))?;
        if name == "controller" {
            assert_eq!(found["fields"]["tls"], true, "{found}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn help_lists_only_flags_that_apply_and_check_takes_procedure_then_env() -> Result<()> {
    let bins = pgrollout_tests::Binaries::locate()?;
    let help = |args: &'static [&'static str]| {
        let bins = &bins;
        async move {
            let out = bins.run_cli(args, &[]).await?;
            anyhow::ensure!(out.code == 0, "{args:?}: {out}");
            Ok::<String, anyhow::Error>(out.stdout)
        }
    };
    let connection_flags = ["--controller", "--ca", "--cert", "--key"];
    for args in [
        &["ca", "init", "--help"][..],
        &["ca", "issue", "--help"],
        &["ca", "issue", "operator", "--help"],
        &["serve", "--help"],
        &["lint", "--help"],
    ] {
        let text = help(args).await?;
        for flag in connection_flags {
            assert!(
                !text
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{flag} "))),
                "{args:?} lists {flag}:\n{text}"
            );
        }
    }
    let serve = help(&["serve", "--help"]).await?;
    let config = serve
        .lines()
        .find(|l| l.trim_start().starts_with("--config"))
        .context("serve --help has --config")?;
    assert!(
        config.len() > "      --config <CONFIG>".len() + 5,
        "--config has no description: {config}\n{serve}"
    );
    // Commands that talk to the controller still take the flags.
    let deploy = help(&["deploy", "--help"]).await?;
    for flag in connection_flags {
        assert!(deploy.contains(&format!("{flag} <")), "{flag}:\n{deploy}");
    }
    let alert = help(&["alert", "list", "--help"]).await?;
    assert!(alert.contains("--controller <"), "{alert}");
    for command in ["check", "perf"] {
        let args: &'static [&'static str] = if command == "check" {
            &["check", "--help"]
        } else {
            &["perf", "--help"]
        };
        let text = help(args).await?;
        assert!(
            text.contains(&format!(
                "Usage: pgrollout {command} [OPTIONS] <PROCEDURES>... <ENVIRONMENT>"
            )),
            "{text}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn check_takes_procedure_then_environment_and_still_reads_the_old_order() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let new = stack.cli(&["check", "reconcilemupstream", "dev"]).await?;
    assert_eq!(new.code, 0, "{new}");
    assert!(new.stdout.contains("CHECK @ DEV"), "{new}");
    assert!(!new.stderr.contains("old order"), "{new}");
    let old = stack.cli(&["check", "dev", "reconcilemupstream"]).await?;
    assert_eq!(old.code, 0, "{old}");
    assert!(old.stdout.contains("CHECK @ DEV"), "{old}");
    assert!(
        old.stderr.contains(
            "reading `dev reconcilemupstream` as the old order <environment> <procedure>..."
        ),
        "{old}"
    );
    Ok(())
}

/// `count` small functions with a smoke test each, and the list naming them.
fn write_many(stack: &Stack, count: usize, version: i32) -> Result<String> {
    let mut list = String::new();
    for i in 0..count {
        let name = format!("many_{i:03}");
        stack.write_procedure(
            &format!("{name}.sql"),
            &format!(
                "CREATE OR REPLACE FUNCTION public.{name}() RETURNS integer LANGUAGE sql AS 'SELECT {version}';"
            ),
        )?;
        stack.write_procedure(
            &format!("{name}.toml"),
            &format!("[[smoke_tests]]\nname = \"answers\"\ncall = \"SELECT public.{name}()\"\n"),
        )?;
        list.push_str(&name);
        list.push('\n');
    }
    let path = stack.dir.path().join("many.txt");
    std::fs::write(&path, list)?;
    Ok(path.to_string_lossy().into_owned())
}

#[tokio::test]
async fn a_large_batch_times_each_routine_shows_progress_in_every_phase_and_summarises_lists(
) -> Result<()> {
    const COUNT: usize = 45;
    let stack = Stack::start(&["dev"]).await?;
    let list = write_many(&stack, COUNT, 1)?;

    // JSON lines: progress through apply and both smoke phases, and every
    // routine's own time.
    let out = stack
        .cli(&["batch", "dev", &list, "--output", "json"])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("not JSON lines:\n{out}"))?;
    for step in ["apply", "smoke", "post-commit-smoke"] {
        let last = lines
            .iter()
            .rfind(|l| l["type"] == "progress" && l["step"] == step)
            .with_context(|| format!("no progress through {step}:\n{out}"))?;
        assert_eq!(last["done"], last["total"], "{last}");
    }
    assert!(
        lines
            .iter()
            .filter(|l| l["type"] == "step")
            .all(|l| l["status"]
                .as_str()
                .is_some_and(|s| s.chars().all(|c| c.is_ascii_lowercase()))),
        "{out}"
    );
    let summary = lines.last().context("no summary")?;
    let routines = summary["routines"].as_array().context("routines")?;
    assert_eq!(routines.len(), COUNT, "{summary}");
    for routine in routines {
        assert_eq!(routine["status"], "deployed", "{routine}");
        assert!(
            routine["duration_us"].as_u64().unwrap_or_default() > 0,
            "no time measured: {routine}"
        );
    }

    // Text: the report names failures and the first rows, counts the rest.
    write_many(&stack, COUNT, 2)?;
    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains(&format!(
            "… and {} more (--output json lists all)",
            COUNT - 20
        )),
        "{out}"
    );
    let row = out
        .stdout
        .lines()
        .find(|l| l.contains("public.many_000()") && l.contains("[ok] deployed"))
        .with_context(|| format!("no row of many_000:\n{out}"))?;
    assert!(!row.trim_end().ends_with(" 0 ms"), "{row}");
    let rollout = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Rollout: "))
        .context("no rollout id")?
        .to_owned();

    // A rollback of the whole batch: one line per item, none of them long.
    let out = stack.cli(&["rollback", "--rollout", &rollout]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains(&format!("\nRoutines: {COUNT}\n")),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!(
            "  … and {} more (--output json lists all)\n",
            COUNT - 20
        )),
        "{out}"
    );
    assert!(
        out.stdout.contains("more block(s) not shown"),
        "smoke blocks not summarised:\n{out}"
    );
    let longest = out
        .stdout
        .lines()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0);
    assert!(longest < 400, "a {longest}-character line:\n{out}");
    Ok(())
}
