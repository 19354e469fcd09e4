//! `pgrollout deploy|smoke <procedure> <environment>`: build the plan from
//! the project, hand it to the controller, print each step as the agent
//! reports it, then the report, and exit with the outcome's code.

use std::io::Write;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::Outcome;

use super::follow::{parked_line, submit_and_follow, Ending, Followed, Submission, Update};
use super::output;
use super::report::{self, RunReport};
use super::{connect, RolloutArgs};
use crate::plan::{build_plan, commit_of};
use crate::project::Project;

pub async fn run(
    address: &str,
    tls: &connect::OperatorTls,
    args: RolloutArgs,
    smoke_only: bool,
) -> ExitCode {
    let started = std::time::Instant::now();
    // Only the files that may define the routine are parsed (issue 15).
    let project = match Project::load_for(&args.project, std::slice::from_ref(&args.procedure)) {
        Ok(project) => project,
        Err(error) => return fail(ExitCode::ValidationFailed, &connect::error_chain(&error)),
    };
    let routines = match project.select(&args.procedure) {
        Ok(routines) => routines,
        Err(error) => return fail(ExitCode::ValidationFailed, &error.to_string()),
    };
    for warning in project.warnings_for(&routines) {
        eprintln!("pgrollout: warning: {warning}");
    }
    let identities: Vec<String> = routines.iter().map(|r| r.identity.to_string()).collect();
    // Signatures as PostgreSQL reads them (quoted names): the adoption's selectors.
    let signatures: Vec<String> = routines
        .iter()
        .map(|r| r.identity.regprocedure_input())
        .collect();
    let plan = build_plan(routines, &args.procedure, &commit_of(&args.project));
    let verb = if smoke_only {
        "smoke-testing"
    } else {
        "deploying"
    };
    let json = args.output.json();
    if args.adopt_drift {
        if smoke_only {
            return fail(
                ExitCode::ValidationFailed,
                "--adopt-drift is an option of deploy: a smoke test changes nothing",
            );
        }
        // Issue 20: the hand changes are recorded first (approver or admin;
        // refused before anything changes otherwise), then the plan deploys.
        if !json {
            println!(
                "pgrollout: --adopt-drift: recording the live state of the routines of {} changed by hand in {} \
                 before deploying",
                args.procedure, args.environment
            );
        }
        let reason = args.reason.clone().unwrap_or_default();
        if let Err(code) = super::adopt::before_deploy(
            address,
            tls,
            &args.environment,
            signatures,
            &reason,
            args.agent_wait,
            json,
        )
        .await
        {
            eprintln!("pgrollout: nothing was deployed");
            return code;
        }
    }
    if json {
        // One document at the end, nothing before it on stdout.
        let followed =
            submit_and_follow(submission(&args, address, tls, &plan, smoke_only), |_| {}).await;
        return print_json(followed);
    }
    // Which files were parsed shows that a deploy reads what it needs only.
    println!(
        "pgrollout: {verb} {} to {} — {} routine(s), plan {} (parsed {} of {} file(s))",
        args.procedure,
        args.environment,
        identities.len(),
        short(&plan.plan_id),
        project.files_loaded(),
        project.files_total()
    );
    let submission = submission(&args, address, tls, &plan, smoke_only);
    let followed = submit_and_follow(submission, |update| match update {
        Update::Started(started) => println!("{}", report::rollout_line(started)),
        Update::Event(event) => {
            if let Some(line) = report::step_line(event) {
                println!("{line}");
                let _ = std::io::stdout().flush();
            }
        }
        Update::Parked(parked) => {
            println!("{}", parked_line(parked));
            let _ = std::io::stdout().flush();
        }
    })
    .await;
    let (rollout, result) = match followed.and_then(Ending::into_result) {
        // Issue 24: a fleet reports every target and the worst code.
        Ok(Followed {
            fleet: Some(fleet),
            result,
            ..
        }) => return fleet_ending(&fleet, &result),
        Ok(Followed {
            rollout, result, ..
        }) => (rollout, result),
        // Scheduled for its window: recorded, and it runs by itself.
        Err((ExitCode::Success, _)) => return ExitCode::Success,
        Err((code, message)) => return fail(code, &message),
    };
    let outcome = Outcome::try_from(result.outcome).unwrap_or(Outcome::Unspecified);
    let code = ExitCode::from_outcome(outcome);
    let run = RunReport {
        procedure: &args.procedure,
        environment: &args.environment,
        plan: &plan,
        identities: &identities,
        rollout: rollout.as_ref(),
        result: &result,
        status: report::RunStatus::Exited(code),
        wall_time: started.elapsed(),
    };
    print!("{}", report::smoke_blocks(&result.smoke, &args.environment));
    if smoke_only {
        print!("{}", report::smoke_verdict(&result));
    } else {
        print!("{}", report::deployment_log(&run));
    }
    if code != ExitCode::Success {
        eprintln!("pgrollout: {}", result.message);
    }
    code
}

/// The end of a fleet rollout: its table and summary, exit with the worst
/// code of its targets.
fn fleet_ending(
    fleet: &pgrollout_shared::proto::FleetReport,
    result: &pgrollout_shared::proto::JobResult,
) -> ExitCode {
    print!("{}", super::fleet_report::text(fleet));
    let code = super::fleet_report::exit_code(fleet);
    if code != ExitCode::Success {
        eprintln!("pgrollout: {}", result.message);
    }
    code
}

fn submission<'a>(
    args: &'a RolloutArgs,
    address: &'a str,
    tls: &'a connect::OperatorTls,
    plan: &pgrollout_shared::proto::Plan,
    smoke_only: bool,
) -> Submission<'a> {
    Submission {
        address,
        tls,
        environment: &args.environment,
        plan: plan.clone(),
        call: if smoke_only {
            super::follow::ControlCall::Smoke
        } else {
            super::follow::ControlCall::Deploy
        },
        continue_on_error: false,
        agent_wait: args.agent_wait,
        attachments: &args.attachments,
        window: &args.window,
        connected: None,
        fleet: args.fleet,
    }
}

/// `--output json`: the rollout, the request it waits as (if parked) and
/// the result, as one document; refusals stay on stderr with their code.
fn print_json(followed: Result<Ending, (ExitCode, String)>) -> ExitCode {
    match followed {
        Ok(Ending::Finished(followed)) => {
            let outcome =
                Outcome::try_from(followed.result.outcome).unwrap_or(Outcome::Unspecified);
            let code = ExitCode::from_outcome(outcome);
            let code = match &followed.fleet {
                Some(fleet) => super::fleet_report::exit_code(fleet),
                None => code,
            };
            let mut document = output::run_document(
                followed.rollout.as_ref(),
                None,
                Some(&followed.result),
                code,
            );
            if let Some(fleet) = &followed.fleet {
                document["fleet"] = super::fleet_report::json(fleet);
            }
            output::print(&document);
            if code != ExitCode::Success {
                eprintln!("pgrollout: {}", followed.result.message);
            }
            code
        }
        Ok(Ending::Parked(parked)) => {
            let code = match Ending::Parked(parked.clone()).into_result() {
                Err((code, _)) => code,
                Ok(_) => ExitCode::Success,
            };
            output::print(&output::run_document(None, Some(&parked), None, code));
            code
        }
        // Parked for approvals: the controller refuses with the request's
        // id in its message (and exit 5); scripts get the id as a field.
        Err((ExitCode::AwaitingApproval, message)) => {
            let id = message
                .split_whitespace()
                .find(|word| word.starts_with("p-"))
                .unwrap_or_default();
            let parked = pgrollout_shared::proto::RequestParked {
                request_id: id.to_owned(),
                state: "awaiting_approval".to_owned(),
                message: message.clone(),
                ..Default::default()
            };
            output::print(&output::run_document(
                None,
                Some(&parked),
                None,
                ExitCode::AwaitingApproval,
            ));
            fail(ExitCode::AwaitingApproval, &message)
        }
        Err((code, message)) => fail(code, &message),
    }
}

fn fail(code: ExitCode, message: &str) -> ExitCode {
    eprintln!("pgrollout: {message}");
    code
}

fn short(plan_id: &str) -> &str {
    &plan_id[..plan_id.len().min(12)]
}
