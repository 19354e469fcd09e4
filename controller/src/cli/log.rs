//! `pgrollout log <rollout>`: SEED.md's DEPLOYMENT LOG block for a recorded
//! rollout, from the controller's store, rendered by the same code as the
//! block `deploy` prints at the end. The duration is the controller's: from
//! recording the rollout to recording its end.

use pgrollout_shared::text::escaped;
use std::time::Duration;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::{GetRolloutRequest, Plan, RolloutStarted, RolloutStatus};

use super::connect::{self, OperatorTls};
use super::report::{self, RunReport, RunStatus};

#[derive(clap::Args)]
pub struct LogArgs {
    /// The rollout id, as `deploy`, `batch` and `rollouts` print it.
    rollout: String,
}

pub async fn run(address: &str, tls: &OperatorTls, args: LogArgs) -> ExitCode {
    let mut client = match connect::controller(address, tls).await {
        Ok(client) => client,
        Err((code, message)) => return fail(code, &message),
    };
    let request = GetRolloutRequest {
        rollout_id: args.rollout,
    };
    match client.get_rollout(request).await {
        Ok(response) => {
            let status = escaped(response.into_inner(), "pgrollout.v1.RolloutStatus");
            print!("{}", render(&status));
            ExitCode::Success
        }
        Err(status) => {
            let (code, message) = connect::refusal(&status, address);
            fail(code, &message)
        }
    }
}

/// The block for one recorded rollout.
pub(super) fn render(status: &RolloutStatus) -> String {
    let plan = Plan {
        plan_id: status.plan_id.clone(),
        commit_sha: status.commit_sha.clone(),
        label: status.label.clone(),
        routines: Vec::new(),
    };
    let rollout = RolloutStarted {
        rollout_id: status.rollout_id.clone(),
        environment: status.environment.clone(),
        zone: status.zone.clone(),
        agent_name: status.agent_name.clone(),
        trace_id: status.trace_id.clone(),
        actor: status.actor.clone(),
        started_at_unix_ms: status.created_at_unix_ms,
        ..Default::default()
    };
    let result = status.result.clone().unwrap_or_default();
    let run_status = match status.state.as_str() {
        "rolled_back" => RunStatus::RolledBack,
        "unknown" => RunStatus::Unknown,
        _ if !status.finished => RunStatus::Running,
        _ => RunStatus::Exited(exit_code(status.exit_code)),
    };
    let finished_at = if status.finished {
        status.finished_at_unix_ms
    } else {
        now_unix_ms()
    };
    let elapsed_ms = u64::try_from(finished_at - status.created_at_unix_ms).unwrap_or(0);
    let block = report::deployment_log(&RunReport {
        procedure: &status.label,
        environment: &status.environment,
        plan: &plan,
        identities: &status.routine_identities,
        rollout: Some(&rollout),
        result: &result,
        status: run_status,
        wall_time: Duration::from_millis(elapsed_ms),
    });
    // A pruned rollout's block says so, above its closing rule, rather than
    // read as one that ran no smoke test and made no backup.
    match super::status::pruned_line(status) {
        Some(pruned) => match block.trim_end_matches('\n').rsplit_once('\n') {
            Some((body, rule)) => format!("{body}\n{pruned}\n{rule}\n"),
            None => block,
        },
        None => block,
    }
}

fn exit_code(code: i32) -> ExitCode {
    match code {
        0 => ExitCode::Success,
        1 => ExitCode::ValidationFailed,
        3 => ExitCode::SmokeTestFailed,
        _ => ExitCode::DeploymentFailed,
    }
}

fn fail(code: ExitCode, message: &str) -> ExitCode {
    eprintln!("pgrollout: {message}");
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::style::{mark, Mark};
    use pgrollout_shared::proto::{JobResult, Outcome, SmokeReport};

    #[test]
    fn a_recorded_deploy_renders_as_seed_s_block() {
        let status = RolloutStatus {
            rollout_id: "r-18c3f2a9b10-7f3a".into(),
            kind: "deploy".into(),
            environment: "qa".into(),
            actor: "operator alice".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            state: "succeeded".into(),
            exit_code: 0,
            finished: true,
            created_at_unix_ms: 1_763_044_200_000,
            finished_at_unix_ms: 1_763_044_245_000,
            plan_id: "abc123def4567890".into(),
            commit_sha: "abc123def456".into(),
            label: "reconcilemupstream".into(),
            routine_identities: vec!["public.reconcilemupstream(text)".into()],
            result: Some(JobResult {
                outcome: Outcome::Succeeded as i32,
                backup_path: "/backups/r.sql".into(),
                backup_sha256: "ff".into(),
                smoke: vec![SmokeReport {
                    passed: true,
                    ..Default::default()
                }],
                ledger_ids: vec![7],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            render(&status),
            "===========================================\n\
             DEPLOYMENT LOG\n\
             ===========================================\n\
             Timestamp: 2025-11-13 14:30:00 UTC\n\
             Procedure: reconcilemupstream\n\
             Routines: public.reconcilemupstream(text)\n\
             Environment: QA\n\
             Version: abc123def456\n\
             Deployed By: operator alice\n\
             Commit SHA: abc123def456\n\
             Backup: /backups/r.sql (sha256 ff)\n\
             Smoke Test: ✅ PASS\n\
             Duration: 45.00 seconds\n\
             Status: ✅ SUCCESS\n\
             Rollout: r-18c3f2a9b10-7f3a\n\
             Trace ID: 4bf92f3577b34da6a3ce929d0e0e4736\n\
             Ledger: 7\n\
             ===========================================\n"
                .replace("✅", mark(Mark::Ok))
        );
        let rolled_back = RolloutStatus {
            state: "rolled_back".into(),
            ..status
        };
        assert!(render(&rolled_back).contains(&format!(
            "\nStatus: {} ROLLED BACK (succeeded, later undone by a rollback)\n",
            mark(Mark::Undone)
        )));
    }

    #[test]
    fn a_pruned_rollout_says_when_it_was_pruned_instead_of_an_empty_report() {
        let status = RolloutStatus {
            rollout_id: "r-1".into(),
            kind: "deploy".into(),
            environment: "dev".into(),
            state: "succeeded".into(),
            finished: true,
            created_at_unix_ms: 1_763_044_200_000,
            finished_at_unix_ms: 1_763_044_201_000,
            label: "reconcilemupstream".into(),
            pruned_at_unix_ms: 1_771_000_000_000,
            ..Default::default()
        };
        let block = render(&status);
        let lines: Vec<&str> = block.lines().collect();
        assert_eq!(
            lines[lines.len() - 2],
            "Pruned: 2026-02-13 16:26:40 UTC — step events and job result removed by the store's retention; \
             the rollout, its plan and its audit entries are kept",
            "{block}"
        );
        assert!(lines[lines.len() - 1].starts_with("====="), "{block}");
        assert!(!render(&RolloutStatus {
            pruned_at_unix_ms: 0,
            ..status
        })
        .contains("Pruned"));
    }
}
