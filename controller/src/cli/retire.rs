//! `pgrollout retire <routine> <environment> --reason "…"` (issue 15): a
//! plan that retires one routine, submitted like any deploy — so the
//! environment's gates (approvals, windows, change control, promotion by plan
//! id) apply exactly as to a deploy — which the agent backs up, DROPs in one
//! transaction (refused when anything depends on it) and records as
//! `retired` in the ledger; `pgrollout rollback` brings it back exactly.
//!
//! The routine is named with its argument types (`ov(integer)`); a bare name
//! is enough when the project still defines exactly one routine of it. A
//! file that still defines it is reported: the next deploy of that name would
//! create it again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::Outcome;
use pgrollout_shared::retire::Retirement;
use pgrollout_shared::routine::{Routine, RoutineIdentity, RoutineKind};

use super::follow::{
    parked_line, submit_and_follow, ControlCall, Ending, Followed, GateAttachments, Submission,
    Update, WindowFlags,
};
use super::report::{self, RunReport};
use super::{connect, plan};
use crate::plan::{build_plan, commit_of};
use crate::project::project_config::load_project_settings;
use crate::project::routine_name::RoutineName;
use crate::project::Project;

#[derive(clap::Args)]
pub struct RetireArgs {
    /// The routine, with its argument types: `ov(integer)` or
    /// `app.ov(integer)`; a bare name when the project defines exactly one
    /// routine of it.
    routine: String,
    /// Environment from the controller's config, e.g. dev, qa, prod.
    environment: String,
    /// Why it is retired (required): kept in the ledger and the audit log.
    #[arg(long)]
    reason: String,
    /// The procedure project (for its schema, and to find the routine's file).
    #[arg(long, env = "PGROLLOUT_PROJECT", default_value = ".")]
    project: PathBuf,
    /// Show the plan and the environment's gates; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// How long the controller may wait for an agent of the zone to connect.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    agent_wait: Duration,
    #[command(flatten)]
    attachments: GateAttachments,
    #[command(flatten)]
    window: WindowFlags,
}

pub async fn run(address: &str, tls: &connect::OperatorTls, args: RetireArgs) -> ExitCode {
    let started = std::time::Instant::now();
    if args.reason.trim().is_empty() {
        return fail("--reason must say why the routine is retired");
    }
    let (routine, still_defined) = match resolve(&args.project, &args.routine) {
        Ok(found) => found,
        Err(message) => return fail(&message),
    };
    let identity = routine.identity.to_string();
    let routine = Routine {
        retire: Some(Retirement {
            reason: args.reason.trim().to_owned(),
        }),
        ..routine
    };
    let plan = build_plan(vec![routine], &args.routine, &commit_of(&args.project));
    println!(
        "pgrollout: retiring {identity} from {} — plan {} (reason: {})",
        args.environment,
        &plan.plan_id[..12],
        args.reason.trim()
    );
    if let Some(path) = &still_defined {
        eprintln!(
            "pgrollout: warning: {path} still defines {identity}: remove it from the project, or the next \
             deploy of it creates it again"
        );
    }
    if args.dry_run {
        println!("Would back up and DROP {identity} in {} (refused there if anything depends on it); nothing was changed.", args.environment);
        return plan::evaluate_and_print(
            address,
            tls,
            plan,
            args.attachments,
            Some(&args.environment),
            None,
        )
        .await;
    }
    let submission = Submission {
        address,
        tls,
        environment: &args.environment,
        plan: plan.clone(),
        call: ControlCall::Deploy,
        continue_on_error: false,
        agent_wait: args.agent_wait,
        attachments: &args.attachments,
        window: &args.window,
        connected: None,
        fleet: Default::default(),
    };
    let followed = submit_and_follow(submission, |update| {
        let line = match update {
            Update::Started(started) => Some(report::rollout_line(started)),
            Update::Event(event) => report::step_line(event),
            Update::Parked(parked) => Some(parked_line(parked)),
        };
        if let Some(line) = line {
            println!("{line}");
            let _ = std::io::stdout().flush();
        }
    })
    .await;
    let (rollout, result) = match followed.and_then(Ending::into_result) {
        Ok(Followed {
            rollout, result, ..
        }) => (rollout, result),
        Err((ExitCode::Success, _)) => return ExitCode::Success,
        Err((code, message)) => {
            eprintln!("pgrollout: {message}");
            return code;
        }
    };
    let code =
        ExitCode::from_outcome(Outcome::try_from(result.outcome).unwrap_or(Outcome::Unspecified));
    let run = RunReport {
        procedure: &args.routine,
        environment: &args.environment,
        plan: &plan,
        identities: std::slice::from_ref(&identity),
        rollout: rollout.as_ref(),
        result: &result,
        status: report::RunStatus::Exited(code),
        wall_time: started.elapsed(),
    };
    print!("{}", report::deployment_log(&run));
    if code != ExitCode::Success {
        eprintln!("pgrollout: {}", result.message);
    }
    code
}

/// The routine `text` names, and the project file that still defines it.
/// From the project when it defines the routine (one overload); else from
/// the text itself, which must then carry the argument types. Only its
/// identity, kind and file travel: a retire runs nothing of the file (not
/// its CREATE, grants, companion statements or tests).
fn resolve(project: &Path, text: &str) -> Result<(Routine, Option<String>), String> {
    let name =
        RoutineName::parse(text).map_err(|why| format!("{text:?} is not a routine name: {why}"))?;
    let found = Project::load_for(project, &[text.to_owned()])
        .ok()
        .and_then(|project| project.select(text).ok());
    match found {
        Some(routines) if routines.len() > 1 => {
            let each: Vec<String> = routines.iter().map(|r| r.identity.to_string()).collect();
            Err(format!(
                "{text} names {} routines ({}); retire one at a time, named with its argument types",
                routines.len(),
                each.join(", ")
            ))
        }
        Some(mut routines) if routines.len() == 1 => {
            let routine = routines.remove(0);
            let path = routine.source_path.clone();
            Ok((
                to_retire(
                    routine.identity,
                    routine.kind,
                    routine.source_path,
                    routine.search_path,
                ),
                Some(path),
            ))
        }
        _ => {
            let Some(arg_types) = name.arg_types else {
                return Err(format!(
                    "the project does not define {text}; name the routine to retire with its argument types, \
                     e.g. `pgrollout retire '{text}(integer)' <environment> --reason …` (`()` for none)"
                ));
            };
            let settings = load_project_settings(project).map_err(|e| e.to_string())?;
            // Unqualified argument types mean what they mean where the code
            // lives: the project's path, or the named schema's.
            let (schema, search_path) = match name.schema {
                Some(schema) if schema != settings.schema => (schema.clone(), vec![schema]),
                _ => (settings.schema, settings.search_path),
            };
            let identity = RoutineIdentity {
                schema,
                name: name.name,
                arg_types,
            };
            Ok((
                to_retire(identity, RoutineKind::Function, String::new(), search_path),
                None,
            ))
        }
    }
}

/// The plan's routine for a retire: what names it — its identity, kind,
/// file, and the search path its argument types are written for (`mood`,
/// `items.id%TYPE`) —, nothing to run.
fn to_retire(
    identity: RoutineIdentity,
    kind: RoutineKind,
    source_path: String,
    search_path: Vec<String>,
) -> Routine {
    Routine {
        identity,
        kind,
        create_sql: String::new(),
        grants: Vec::new(),
        smoke_tests: Vec::new(),
        source_path,
        depends_on: Vec::new(),
        perf_probe: None,
        pgtap: None,
        source_line: 0,
        search_path,
        retire: None,
        companion_sql: Vec::new(),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("pgrollout: {message}");
    ExitCode::ValidationFailed
}
