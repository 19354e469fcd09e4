//! `pgrollout batch <env> <list-file>`: deploy many procedures as one plan,
//! in dependency order — all or nothing by default, or each routine on its
//! own with `--continue-on-error` (SEED.md "deploy-batch.sh").

use super::output::Output;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{
    DeployOrderView, JobEvent, JobResult, Outcome, Plan, RolloutStarted,
};
use pgrollout_shared::routine::{routines_from_wire, Routine};

use super::connect::OperatorTls;
use super::follow::{
    connect_ahead, parked_line, submit_and_follow, Ending, Followed, Submission, Update,
};
use super::report;
use crate::plan::{build_plan, commit_of, deploy_order};
use crate::project::Project;

#[derive(clap::Args)]
pub struct BatchArgs {
    /// Environment from the controller's config, e.g. dev, qa, prod.
    environment: String,
    /// One procedure name per line; `#` starts a comment; blank lines are ignored.
    list_file: PathBuf,
    /// Each routine in its own transaction; failures (and what depends on them) are skipped.
    #[arg(long)]
    continue_on_error: bool,
    /// Validate and print the deploy order, then stop.
    #[arg(long)]
    dry_run: bool,
    /// text (default: a progress bar on a terminal, plain lines otherwise) or json (one object per line).
    #[arg(long, default_value = "text")]
    output: Output,
    /// The procedure project: a directory with procedures/*.sql.
    #[arg(long, env = "PGROLLOUT_PROJECT", default_value = ".")]
    project: PathBuf,
    /// How long the controller may wait for an agent of the zone to connect.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    agent_wait: Duration,
    #[command(flatten)]
    attachments: super::follow::GateAttachments,
    #[command(flatten)]
    window: super::follow::WindowFlags,
}

pub async fn run(address: &str, tls: &OperatorTls, args: BatchArgs) -> ExitCode {
    let started = Instant::now();
    // The TLS handshake (and the signing context's round trip) overlaps
    // reading and parsing the project.
    let connecting = (!args.dry_run).then(|| connect_ahead(address, tls, &args.environment));
    // So does asking git for the project's commit (two processes).
    let commit = {
        let project = args.project.clone();
        std::thread::spawn(move || commit_of(&project))
    };
    let (names, routines) = match validate(&args) {
        Ok(valid) => valid,
        Err(problems) => {
            eprintln!(
                "pgrollout: the batch was not started; {} problem(s):",
                problems.len()
            );
            for problem in &problems {
                eprintln!("  - {problem}");
            }
            return ExitCode::ValidationFailed;
        }
    };
    let label = args
        .list_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "batch".into());
    let routine_count = routines.len();
    let commit = commit.join().unwrap_or_else(|_| "none".to_owned());
    let plan = build_plan(routines, &label, &commit);
    let mode = if args.continue_on_error {
        "continue-on-error"
    } else {
        "all-or-nothing"
    };
    let json = args.output == Output::Json;
    if !json {
        println!(
            "pgrollout: batch {label} to {} — {routine_count} routine(s) from {names} name(s), plan {}, {mode}",
            args.environment,
            &plan.plan_id[..12]
        );
    }
    if args.dry_run {
        return print_local_order(&plan, json);
    }

    let submission = Submission {
        address,
        tls,
        environment: &args.environment,
        plan,
        call: super::follow::ControlCall::Deploy,
        continue_on_error: args.continue_on_error,
        agent_wait: args.agent_wait,
        attachments: &args.attachments,
        window: &args.window,
        connected: connecting,
        fleet: Default::default(),
    };
    // The order is the controller's: it orders the plan itself (it does not
    // trust a client's order) and sends it with the rollout's start, so the
    // order shown is the one applied and is computed once, not twice.
    let mut progress = Progress::new(json, std::io::stdout().is_terminal());
    let followed = submit_and_follow(submission, |update| progress.show(update)).await;
    progress.finish();
    let Followed {
        rollout, result, ..
    } = match followed.and_then(Ending::into_result) {
        // Issue 24: a batch to a fleet environment ran on every target.
        Ok(Followed {
            fleet: Some(fleet),
            result,
            rollout,
        }) => {
            let followed = super::operation::Followed {
                rollout,
                result,
                fleet: Some(fleet.clone()),
            };
            return super::resume::fleet_ending(&fleet, &followed, json);
        }
        Ok(followed) => followed,
        // Scheduled for its window: recorded, and it runs by itself.
        Err((ExitCode::Success, _)) => return ExitCode::Success,
        Err((code, message)) => {
            eprintln!("pgrollout: {message}");
            return code;
        }
    };
    let code =
        ExitCode::from_outcome(Outcome::try_from(result.outcome).unwrap_or(Outcome::Unspecified));
    if json {
        println!("{}", summary_json(rollout.as_ref(), &result, code));
    } else {
        print!(
            "{}",
            report::smoke_blocks(
                &result
                    .smoke
                    .iter()
                    .filter(|r| !r.passed)
                    .cloned()
                    .collect::<Vec<_>>(),
                &args.environment
            )
        );
        print!(
            "{}",
            report::batch_report(
                &label,
                &args.environment,
                mode,
                rollout.as_ref(),
                &result,
                code,
                started.elapsed()
            )
        );
    }
    if code != ExitCode::Success {
        eprintln!("pgrollout: {}", result.message);
    }
    code
}

/// Reads the list and resolves every name; returns every problem at once.
fn validate(args: &BatchArgs) -> Result<(usize, Vec<Routine>), Vec<String>> {
    let list = read_list(&args.list_file).map_err(|e| vec![e])?;
    let names: Vec<String> = list.iter().map(|(_, name)| name.clone()).collect();
    let project = Project::load_for(&args.project, &names)
        .map_err(|e| vec![super::connect::error_chain(&e)])?;
    let list_name = args.list_file.display();
    // Moved out of the project, not cloned: a batch selects hundreds.
    let selection = project.into_selection(&names);
    let mut problems: Vec<String> = selection
        .problems
        .iter()
        .map(|(position, error)| format!("{list_name}:{}: {error}", list[*position].0))
        .collect();
    if list.is_empty() {
        problems.push(format!("{list_name} names no procedure"));
    }
    if problems.is_empty() {
        // One write for all of them: stderr is unbuffered. A library whose
        // every file says the same (a DROP … IF EXISTS before each CREATE)
        // must not bury the report: the first few, then how many more.
        let mut warnings: String = selection
            .warnings
            .iter()
            .take(SHOWN_WARNINGS)
            .map(|warning| format!("pgrollout: warning: {warning}\n"))
            .collect();
        let more = selection.warnings.len().saturating_sub(SHOWN_WARNINGS);
        if more > 0 {
            warnings.push_str(&format!(
                "pgrollout: … and {more} more warning(s): `pgrollout lint` lists them all\n"
            ));
        }
        eprint!("{warnings}");
        Ok((list.len(), selection.routines))
    } else {
        Err(problems)
    }
}

/// How many of a batch's project warnings are printed before the count of
/// the rest.
const SHOWN_WARNINGS: usize = 10;

/// `(line number, name)` for every name in the list file.
fn read_list(path: &Path) -> Result<Vec<(usize, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the list {}: {e}", path.display()))?;
    // Saved by a Windows editor: a byte order mark before the first name.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    Ok(text
        .lines()
        .enumerate()
        .filter_map(|(index, line)| {
            let name = line.split('#').next().unwrap_or_default().trim();
            (!name.is_empty()).then(|| (index + 1, name.to_owned()))
        })
        .collect())
}

/// `--dry-run`: orders the plan here, the way the controller would, prints
/// the order and stops; nothing is sent. A cycle or an unreadable body is
/// a validation failure.
fn print_local_order(plan: &Plan, json: bool) -> ExitCode {
    let ordered = routines_from_wire(plan.routines.clone())
        .map_err(|error| error.to_string())
        .and_then(|routines| deploy_order(routines).map_err(|error| error.to_string()));
    let view = match ordered {
        Ok(order) => order.view(),
        Err(error) => {
            eprintln!("pgrollout: the batch was not started: {error}");
            return ExitCode::ValidationFailed;
        }
    };
    if json {
        println!("{}", order_json(&view));
    } else {
        print!("{}", report::order_block(&view));
    }
    ExitCode::Success
}

fn order_json(view: &DeployOrderView) -> serde_json::Value {
    serde_json::json!({
        "order": view.routines.iter().map(|r| r.identity.as_str()).collect::<Vec<_>>(),
    })
}

fn summary_json(
    rollout: Option<&RolloutStarted>,
    result: &JobResult,
    code: ExitCode,
) -> serde_json::Value {
    serde_json::json!({
        "type": "summary",
        "rollout": rollout.map(|r| r.rollout_id.clone()),
        "trace_id": rollout.map(|r| r.trace_id.clone()),
        "exit_code": code.code(),
        "message": result.message,
        "backup": result.backup_path,
        "backup_sha256": result.backup_sha256,
        "routines": result.routines.iter().map(|o| serde_json::json!({
            "identity": o.identity, "status": o.status, "duration_ms": o.duration_ms,
            "duration_us": o.duration_us, "error": o.error,
        })).collect::<Vec<_>>(),
    })
}

/// Live progress: a bar redrawn in place on a terminal, plain lines
/// otherwise, JSON objects with `--output json`. The bar is one `print!`,
/// not indicatif: it shares stdout with the step lines printed between its
/// redraws (indicatif would need each routed through `ProgressBar::println`),
/// and the agent already sends progress at most every 100 ms, so there is no
/// redraw rate left to limit (issue 14).
struct Progress {
    json: bool,
    terminal: bool,
    bar_drawn: bool,
}

impl Progress {
    fn new(json: bool, terminal: bool) -> Self {
        Progress {
            json,
            terminal,
            bar_drawn: false,
        }
    }

    fn show(&mut self, update: Update<'_>) {
        match update {
            Update::Started(started) if self.json => {
                let order = started.order.as_ref().map(order_json);
                println!(
                    "{}",
                    serde_json::json!({"type": "started", "rollout": started.rollout_id, "agent": started.agent_name,
                        "trace_id": started.trace_id, "order": order.map(|o| o["order"].clone())})
                )
            }
            Update::Started(started) => {
                if let Some(order) = &started.order {
                    print!("{}", report::order_block(order));
                }
                println!("{}", report::rollout_line(started));
            }
            Update::Event(event) => self.event(event),
            Update::Parked(parked) if self.json => println!(
                "{}",
                serde_json::json!({"type": "parked", "request": parked.request_id, "state": parked.state,
                    "run_at_unix_ms": parked.run_at_unix_ms, "window": parked.window, "message": parked.message})
            ),
            Update::Parked(parked) => {
                println!("{}", parked_line(parked));
                if matches!(parked.state.as_str(), "awaiting_approval" | "scheduled") {
                    // The controller sends its order with the rollout's start.
                    println!("  the deploy order is shown when the batch starts; `--dry-run` prints it now");
                }
            }
        }
        let _ = std::io::stdout().flush();
    }

    fn event(&mut self, event: &JobEvent) {
        let is_progress = event.total > 0;
        if self.json {
            let status = super::output::step_status(event.status);
            println!(
                "{}",
                serde_json::json!({"type": if is_progress { "progress" } else { "step" }, "step": event.step, "status": status,
                    "done": event.done, "total": event.total, "duration_ms": event.duration_ms, "message": event.message})
            );
            return;
        }
        if is_progress {
            if self.terminal {
                let width = 30;
                let filled = (event.done as usize * width) / event.total.max(1) as usize;
                print!(
                    "\r  [{}{}] {}/{} {}",
                    "#".repeat(filled),
                    ".".repeat(width - filled),
                    event.done,
                    event.total,
                    event.step
                );
                self.bar_drawn = true;
            } else {
                println!("  {} {}/{}", event.step, event.done, event.total);
            }
            return;
        }
        if let Some(line) = report::step_line(event) {
            if self.bar_drawn {
                println!();
                self.bar_drawn = false;
            }
            println!("{line}");
        }
    }

    fn finish(&mut self) {
        if self.bar_drawn {
            println!();
        }
    }
}
