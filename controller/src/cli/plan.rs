//! `pgrollout plan <procedure>...`: build the immutable plan (content hash,
//! git commit, author) and show, per environment, which gates it passes and
//! what is still missing.

use std::path::PathBuf;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::EvaluatePlanRequest;

use super::connect::{self, OperatorTls};
use super::follow::GateAttachments;
use super::output::{self, OutputFlag};
use super::style::{mark, Mark};
use crate::plan::{build_plan, commit_of, deploy_order};
use crate::project::Project;

#[derive(clap::Args)]
pub struct PlanArgs {
    /// Procedure names (all overloads of each).
    #[arg(required = true)]
    procedures: Vec<String>,
    #[arg(long, env = "PGROLLOUT_PROJECT", default_value = ".")]
    project: PathBuf,
    #[command(flatten)]
    attachments: GateAttachments,
    #[command(flatten)]
    output: OutputFlag,
}

pub async fn run(address: &str, tls: &OperatorTls, args: PlanArgs) -> ExitCode {
    let project = match Project::load_for(&args.project, &args.procedures) {
        Ok(project) => project,
        Err(error) => return fail(ExitCode::ValidationFailed, &connect::error_chain(&error)),
    };
    let mut routines = Vec::new();
    let mut problems = Vec::new();
    for name in &args.procedures {
        match project.select(name) {
            Ok(selected) => routines.extend(
                selected
                    .into_iter()
                    .filter(|r| {
                        !routines
                            .iter()
                            .any(|o: &pgrollout_shared::routine::Routine| o.identity == r.identity)
                    })
                    .collect::<Vec<_>>(),
            ),
            Err(error) => problems.push(error.to_string()),
        }
    }
    if !problems.is_empty() {
        return fail(ExitCode::ValidationFailed, &problems.join("\n  "));
    }
    for warning in project.warnings_for(&routines) {
        eprintln!("pgrollout: warning: {warning}");
    }
    let order = match deploy_order(routines) {
        Ok(order) => order,
        Err(error) => return fail(ExitCode::ValidationFailed, &error.to_string()),
    };
    let label = args.procedures.join("+");
    let plan = build_plan(order.routines, &label, &commit_of(&args.project));
    let json = args.output.json();
    let warnings = crate::project::definer::plan_warnings(&plan.routines);
    let document = serde_json::json!({
        "plan_id": plan.plan_id,
        "commit_sha": plan.commit_sha,
        "routines": plan.routines.iter().map(|r| serde_json::json!({
            "identity": format!("{}.{}({})", r.schema, r.name, r.arg_types.join(", ")),
            "source": r.source_path,
        })).collect::<Vec<_>>(),
        "warnings": warnings,
    });
    if !json {
        print_plan(&plan, &warnings);
    }
    evaluate_and_print(
        address,
        tls,
        plan,
        args.attachments,
        None,
        json.then_some(document),
    )
    .await
}

/// Asks the controller which gates `plan` passes and prints the verdict of
/// every environment (or only `only`'s): as text, or into `json` (the plan's
/// document, which gets an `environments` field) printed as one document.
pub async fn evaluate_and_print(
    address: &str,
    tls: &OperatorTls,
    plan: pgrollout_shared::proto::Plan,
    attachments: GateAttachments,
    only: Option<&str>,
    json: Option<serde_json::Value>,
) -> ExitCode {
    let mut client = match connect::controller(address, tls).await {
        Ok(client) => client,
        Err((code, message)) => return fail(code, &message),
    };
    let request = EvaluatePlanRequest {
        plan: Some(plan),
        ticket: attachments.ticket.unwrap_or_default(),
        runbook: attachments.runbook.unwrap_or_default(),
        rollback_plan: attachments.rollback_plan.unwrap_or_default(),
    };
    let response = match client.evaluate_plan(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            let (code, message) = connect::refusal(&status, address);
            return fail(code, &message);
        }
    };
    let shown: Vec<_> = response
        .environments
        .into_iter()
        .filter(|e| only.is_none_or(|only| e.environment == only))
        .collect();
    if let Some(mut document) = json {
        document["environments"] = shown
            .iter()
            .map(|e| {
                serde_json::json!({
                    "environment": e.environment,
                    "verdict": verdict(&e.gates).0,
                    "gates": e.gates.iter().map(output::gate).collect::<Vec<_>>(),
                })
            })
            .collect();
        output::print(&document);
        return ExitCode::Success;
    }
    for environment in shown {
        println!(
            "{}: {}",
            environment.environment,
            verdict(&environment.gates).1
        );
        if environment.gates.is_empty() {
            println!("  no gates");
        }
        for gate in environment.gates {
            let mark_of = match gate.state.as_str() {
                _ if gate.passed => (Mark::Ok, "passed "),
                "pending" => (Mark::Waiting, "pending"),
                "scheduled" => (Mark::Closed, "closed "),
                _ => (Mark::Fail, "missing"),
            };
            println!(
                "  {} {} {:<20} {}",
                mark(mark_of.0),
                mark_of.1,
                gate.gate,
                gate.reason
            );
        }
    }
    ExitCode::Success
}

fn fail(code: ExitCode, message: &str) -> ExitCode {
    eprintln!("pgrollout: {message}");
    code
}

fn print_plan(plan: &pgrollout_shared::proto::Plan, warnings: &[String]) {
    println!("Plan: {}", plan.plan_id);
    println!("Commit: {}", plan.commit_sha);
    println!("Routines: {}", plan.routines.len());
    for routine in &plan.routines {
        let arguments = routine.arg_types.join(", ");
        println!(
            "  {}.{}({arguments})  {}",
            routine.schema, routine.name, routine.source_path
        );
    }
    for warning in warnings {
        println!("  warning: {warning}");
    }
}

/// An environment's verdict: `ready`, `waits` (for approvals or a window:
/// the deploy would be parked or scheduled, not refused) or `blocked`.
fn verdict(gates: &[pgrollout_shared::proto::GateOutcome]) -> (&'static str, &'static str) {
    let open = gates.iter().all(|g| g.passed);
    let waits = gates
        .iter()
        .all(|g| g.passed || g.state == "pending" || g.state == "scheduled");
    match (open, waits) {
        (true, _) => ("ready", "ready"),
        (false, true) => ("waits", "waits (approvals or window)"),
        (false, false) => ("blocked", "blocked"),
    }
}
