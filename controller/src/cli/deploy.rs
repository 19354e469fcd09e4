//! `pgrollout deploy|smoke <procedure> <environment>`: build the plan from
//! the project, hand it to the controller, print each step as the agent
//! reports it, then the report, and exit with the outcome's code.

use std::io::Write;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{
    rollout_update::Body, DeployRequest, JobResult, Outcome, RolloutStarted,
};
use pgrollout_shared::traceparent::TraceParent;

use super::report::{self, RunReport};
use super::{connect, RolloutArgs};
use crate::auth::CLAIMED_ACTOR_HEADER;
use crate::plan::{build_plan, commit_of};
use crate::project::Project;

pub async fn run(
    address: &str,
    tls: &connect::OperatorTls,
    args: RolloutArgs,
    smoke_only: bool,
) -> ExitCode {
    let started = std::time::Instant::now();
    let project = match Project::load(&args.project) {
        Ok(project) => project,
        Err(error) => return fail(ExitCode::ValidationFailed, &connect::error_chain(&error)),
    };
    let routines = match project.select(&args.procedure) {
        Ok(routines) => routines,
        Err(error) => return fail(ExitCode::ValidationFailed, &error.to_string()),
    };
    let identities: Vec<String> = routines.iter().map(|r| r.identity.to_string()).collect();
    let plan = build_plan(routines, &args.procedure, &commit_of(&args.project));
    let verb = if smoke_only {
        "smoke-testing"
    } else {
        "deploying"
    };
    println!(
        "pgrollout: {verb} {} to {} — {} routine(s), plan {}",
        args.procedure,
        args.environment,
        identities.len(),
        short(&plan.plan_id)
    );
    let trace = TraceParent::new_root();
    let mut client = match connect::controller(address, tls).await {
        Ok(client) => client,
        Err((code, message)) => return fail(code, &message),
    };
    let mut request = tonic::Request::new(DeployRequest {
        environment: args.environment.clone(),
        plan: Some(plan.clone()),
        traceparent: trace.to_string(),
        agent_wait_ms: u64::try_from(args.agent_wait.as_millis()).unwrap_or(u64::MAX),
    });
    if let Ok(actor) = operator_name().parse() {
        request.metadata_mut().insert(CLAIMED_ACTOR_HEADER, actor);
    }
    let response = if smoke_only {
        client.smoke(request).await
    } else {
        client.deploy(request).await
    };
    let mut stream = match response {
        Ok(response) => response.into_inner(),
        Err(status) => {
            let (code, message) = connect::refusal(&status, address);
            return fail(code, &message);
        }
    };

    let mut rollout: Option<RolloutStarted> = None;
    let mut result: Option<JobResult> = None;
    loop {
        match stream.message().await {
            Ok(Some(update)) => match update.body {
                Some(Body::Started(started)) => {
                    println!(
                        "rollout {} on agent {} (zone {}), trace {}",
                        started.rollout_id, started.agent_name, started.zone, started.trace_id
                    );
                    rollout = Some(started);
                }
                Some(Body::Event(event)) => {
                    if let Some(line) = report::step_line(&event) {
                        println!("{line}");
                        let _ = std::io::stdout().flush();
                    }
                }
                Some(Body::Finished(finished)) => {
                    result = Some(finished);
                    break;
                }
                None => {}
            },
            Ok(None) => break,
            Err(status) => {
                eprintln!(
                    "pgrollout: lost the controller mid-rollout: {}",
                    status.message()
                );
                break;
            }
        }
    }
    let Some(result) = result else {
        let which = rollout
            .as_ref()
            .map(|r| r.rollout_id.as_str())
            .unwrap_or("(unknown id)");
        return fail(
            ExitCode::DeploymentFailed,
            &format!("the rollout {which} ended without a result; its state is unknown — check the controller's log"),
        );
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
        code,
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

fn fail(code: ExitCode, message: &str) -> ExitCode {
    eprintln!("pgrollout: {message}");
    code
}

fn short(plan_id: &str) -> &str {
    &plan_id[..plan_id.len().min(12)]
}

/// Who the operator says they are: believed only by a `--dev-plaintext`
/// controller; with TLS the certificate says who the operator is.
fn operator_name() -> String {
    std::env::var("PGROLLOUT_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .or_else(|| {
            let out = std::process::Command::new("id").arg("-un").output().ok()?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
