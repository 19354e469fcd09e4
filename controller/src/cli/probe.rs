//! `pgrollout check <procedure>... <env>` (the syntax gate's dry run on
//! demand) and `pgrollout perf <procedure>... <env>` (the performance
//! probes), in the order of every other command (the old `<env>
//! <procedure>...` still works where unambiguous, see `split_words`): build
//! the plan from the project, run it on the environment's database in
//! transactions that are always rolled back, print what was found. Neither
//! changes anything; `perf` records its medians for the performance gate.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{JobResult, Outcome};
use pgrollout_shared::routine::Routine;
use pgrollout_shared::test_reports::{finding_line, perf_line};

use super::connect::OperatorTls;
use super::follow::{
    submit_and_follow, ControlCall, Followed, GateAttachments, Submission, Update, WindowFlags,
};
use super::report;
use crate::plan::{build_plan, commit_of};
use crate::project::Project;

#[derive(clap::Args)]
pub struct ProbeArgs {
    /// Routine names as in the project (all overloads of each), e.g. addarc.
    #[arg(required = true, num_args = 1..)]
    procedures: Vec<String>,
    /// Environment from the controller's config, e.g. dev, qa, prod.
    environment: String,
    /// The procedure project: a directory with procedures/*.sql.
    #[arg(long, env = "PGROLLOUT_PROJECT", default_value = ".")]
    project: PathBuf,
    /// How long the controller may wait for an agent of the zone to connect.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    agent_wait: Duration,
}

/// `pgrollout check`: exit 0 when the dry run found no error, 1 when it did.
pub async fn check(address: &str, tls: &OperatorTls, args: ProbeArgs) -> ExitCode {
    let (result, code, environment) = match run(address, tls, &args, ControlCall::Check).await {
        Ok(done) => done,
        Err(code) => return code,
    };
    let errors = result
        .findings
        .iter()
        .filter(|f| f.level == "error")
        .count();
    println!(
        "CHECK @ {}: {errors} error(s), {} warning(s)",
        environment.to_uppercase(),
        result.findings.len() - errors
    );
    for finding in &result.findings {
        println!("  {}", finding_line(finding));
    }
    for warning in &result.warnings {
        println!("  note: {warning}");
    }
    finish(code, &result)
}

/// `pgrollout perf`: exit 0 when every probe measured.
pub async fn perf(address: &str, tls: &OperatorTls, args: ProbeArgs) -> ExitCode {
    let (result, code, environment) = match run(address, tls, &args, ControlCall::Perf).await {
        Ok(done) => done,
        Err(code) => return code,
    };
    println!("PERFORMANCE PROBE @ {}", environment.to_uppercase());
    for probe in &result.perf {
        println!("  {}", perf_line(probe));
    }
    if code == ExitCode::Success {
        println!(
            "recorded: the performance gate of environments promoted from {environment} compares these medians"
        );
    }
    finish(code, &result)
}

fn finish(code: ExitCode, result: &JobResult) -> ExitCode {
    if code != ExitCode::Success {
        eprintln!("pgrollout: {}", result.message);
    }
    code
}

/// Builds the plan, submits it and prints the steps; `Err` with the exit
/// code when there is no result to show (the reason is already printed).
async fn run(
    address: &str,
    tls: &OperatorTls,
    args: &ProbeArgs,
    call: ControlCall,
) -> Result<(JobResult, ExitCode, String), ExitCode> {
    let words: Vec<String> = args
        .procedures
        .iter()
        .chain([&args.environment])
        .cloned()
        .collect();
    let project = match Project::load_for(&args.project, &words) {
        Ok(project) => project,
        Err(error) => {
            eprintln!("pgrollout: {}", super::connect::error_chain(&error));
            return Err(ExitCode::ValidationFailed);
        }
    };
    let (procedures, environment) = split_words(&words, |w| project.select(w).is_ok());
    if procedures.first() != words.first() {
        eprintln!(
            "pgrollout: note: reading `{environment} {}` as the old order <environment> <procedure>...; \
             write `<procedure>... <environment>` like every other command",
            procedures.join(" ")
        );
    }
    let mut routines: Vec<Routine> = Vec::new();
    for name in &procedures {
        match project.select(name) {
            Ok(selected) => {
                for routine in selected {
                    if !routines.iter().any(|r| r.identity == routine.identity) {
                        routines.push(routine);
                    }
                }
            }
            Err(error) => {
                eprintln!("pgrollout: {error}");
                return Err(ExitCode::ValidationFailed);
            }
        }
    }
    let count = routines.len();
    let label = procedures.join(",");
    let plan = build_plan(routines, &label, &commit_of(&args.project));
    if matches!(call, ControlCall::Check) {
        for warning in crate::project::definer::plan_warnings(&plan.routines) {
            println!("  warning: {warning}");
        }
    }
    let what = match call {
        ControlCall::Check => "checking",
        _ => "probing the performance of",
    };
    println!(
        "pgrollout: {what} {label} in {environment} — {count} routine(s), plan {} (in transactions that are rolled back)",
        &plan.plan_id[..plan.plan_id.len().min(12)]
    );
    let attachments = GateAttachments::default();
    let submission = Submission {
        address,
        tls,
        environment: &environment,
        plan,
        call,
        continue_on_error: false,
        agent_wait: args.agent_wait,
        attachments: &attachments,
        // Checks and probes are never scheduled: they change nothing.
        window: &WindowFlags::default(),
        connected: None,
        fleet: Default::default(),
    };
    let followed = submit_and_follow(submission, |update| match update {
        Update::Started(started) => println!(
            "rollout {} on agent {} (zone {}), trace {}",
            started.rollout_id, started.agent_name, started.zone, started.trace_id
        ),
        Update::Event(event) => {
            if let Some(line) = report::step_line(event) {
                println!("{line}");
                let _ = std::io::stdout().flush();
            }
        }
        // Checks and probes change nothing, so they are never parked.
        Update::Parked(_) => {}
    })
    .await;
    match followed.and_then(|ending| ending.into_result()) {
        Ok(Followed { result, .. }) => {
            let outcome = Outcome::try_from(result.outcome).unwrap_or(Outcome::Unspecified);
            Ok((result, ExitCode::from_outcome(outcome), environment))
        }
        Err((code, message)) => {
            eprintln!("pgrollout: {message}");
            Err(code)
        }
    }
}

/// `<procedure>... <environment>`, the order of every other command; the old
/// `<environment> <procedure>...` only when the project has a routine named
/// like the last word and none named like the first — then the order cannot
/// be the new one, whatever the controller's environments are called.
fn split_words(words: &[String], is_routine: impl Fn(&str) -> bool) -> (Vec<String>, String) {
    match words {
        [first, .., last] if is_routine(last) && !is_routine(first) => {
            (words[1..].to_vec(), first.clone())
        }
        [procedures @ .., environment] => (procedures.to_vec(), environment.clone()),
        [] => (Vec::new(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::split_words;

    fn words(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn procedures_come_first_and_the_old_order_is_read_only_when_unambiguous() {
        let routine = |w: &str| w == "addarc" || w == "qa";
        assert_eq!(
            split_words(&words("addarc dev"), routine),
            (words("addarc"), "dev".to_owned())
        );
        assert_eq!(
            split_words(&words("dev addarc"), routine),
            (words("addarc"), "dev".to_owned())
        );
        // A routine named like the environment: the new order wins.
        assert_eq!(
            split_words(&words("qa addarc"), routine),
            (words("qa"), "addarc".to_owned())
        );
    }
}
