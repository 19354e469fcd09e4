//! What operators read: step lines, SEED.md's SMOKE TEST blocks and its
//! DEPLOYMENT LOG block. Kept in one place so the format cannot drift, and
//! checked as text by the end-to-end tests.

use std::time::Duration;

use pgrollout_shared::exit_code::ExitCode;

use super::style::{mark, Mark};
use pgrollout_shared::proto::{
    DeployOrderView, JobEvent, JobResult, Plan, RolloutStarted, RoutineOutcome, SmokeReport,
    StepStatus,
};

const RULE: &str = "===========================================";

/// How many items of a long list the human report shows; the rest are
/// counted ("… and 1027 more"), and `--output json` lists them all. A
/// 1,000-routine rollback printed 849 KB, one line of 214 KB (issue 16).
pub const LIST_LIMIT: usize = 20;

/// Which rows of a long per-routine list a human report shows, in their
/// order: every notable one (failed, skipped …) up to [`LIST_LIMIT`], then
/// the others while room is left; and how many are left out.
pub fn rows_to_show<T>(rows: &[T], notable: impl Fn(&T) -> bool) -> (Vec<&T>, usize) {
    if rows.len() <= LIST_LIMIT {
        return (rows.iter().collect(), 0);
    }
    let notable_count = rows.iter().filter(|r| notable(r)).count().min(LIST_LIMIT);
    let mut room_for_others = LIST_LIMIT - notable_count;
    let mut notable_left = notable_count;
    let shown: Vec<&T> = rows
        .iter()
        .filter(|r| {
            if notable(r) {
                let keep = notable_left > 0;
                notable_left = notable_left.saturating_sub(1);
                keep
            } else {
                let keep = room_for_others > 0;
                room_for_others = room_for_others.saturating_sub(1);
                keep
            }
        })
        .collect();
    let hidden = rows.len() - shown.len();
    (shown, hidden)
}

/// The line that stands for the rows [`rows_to_show`] left out.
pub fn more_line(hidden: usize) -> String {
    format!("  … and {hidden} more (--output json lists all)")
}

/// How many items of a list printed on one line (routines with their
/// change) are shown, so the line stays a few hundred characters long.
pub const INLINE_LIMIT: usize = 5;

/// `a, b, c` — or the first `limit` and how many more.
pub fn summarised(items: &[String], limit: usize) -> String {
    let text = pgrollout_shared::text::abridged(items, limit, ", ");
    if items.len() <= limit {
        text
    } else {
        format!("{text} (--output json lists all)")
    }
}

/// The line that says a rollout started, where and in which trace.
pub fn rollout_line(started: &RolloutStarted) -> String {
    format!(
        "rollout {} on agent {} (zone {}), trace {}",
        started.rollout_id, started.agent_name, started.zone, started.trace_id
    )
}

/// A deploy order: each routine with what it waits for and why, then the
/// notes.
pub fn order_block(view: &DeployOrderView) -> String {
    let mut text = String::from("deploy order:\n");
    for (index, routine) in view.routines.iter().enumerate() {
        text.push_str(&format!("  {:>4}. {}", index + 1, routine.identity));
        if !routine.after.is_empty() {
            let after: Vec<String> = routine
                .after
                .iter()
                .map(|d| format!("{} ({})", d.identity, d.reason))
                .collect();
            text.push_str(&format!("  after {}", after.join(", ")));
        }
        text.push('\n');
    }
    for note in &view.notes {
        text.push_str(&format!("  note: {note}\n"));
    }
    text
}

/// One finished step: `  ✅ backup          3 ms  /var/backups/...`.
/// Started events print nothing: the finished line follows within the step.
pub fn step_line(event: &JobEvent) -> Option<String> {
    let mark = match StepStatus::try_from(event.status).ok()? {
        StepStatus::Succeeded => mark(Mark::Ok),
        StepStatus::Failed => mark(Mark::Fail),
        StepStatus::Skipped => mark(Mark::Skipped),
        StepStatus::Started | StepStatus::Unspecified => return None,
    };
    let message = if event.message.is_empty() {
        String::new()
    } else {
        format!("  {}", event.message)
    };
    Some(format!(
        "  {mark} {:<18}{:>7} ms{message}",
        event.step, event.duration_ms
    ))
}

/// SMOKE TEST blocks for the last phase that ran (post-commit if it ran,
/// else in-transaction), one per routine and test.
pub fn smoke_blocks(reports: &[SmokeReport], environment: &str) -> String {
    let Some(last_phase) = reports.last().map(|r| r.phase.as_str()) else {
        return String::new();
    };
    let mut text = String::new();
    let last: Vec<&SmokeReport> = reports.iter().filter(|r| r.phase == last_phase).collect();
    // Failures first-class: every failed block is shown (up to the limit),
    // passing ones only while the list is short.
    let shown: Vec<&SmokeReport> = if last.len() <= LIST_LIMIT {
        last.clone()
    } else {
        last.iter()
            .filter(|r| !r.passed)
            .take(LIST_LIMIT)
            .copied()
            .collect()
    };
    for report in &shown {
        text.push_str(&format!(
            "{RULE}\nSMOKE TEST: {} @ {} ({})\n  test: {}\n{RULE}\n",
            report.routine,
            environment.to_uppercase(),
            report.phase,
            report.test
        ));
        for (check, label) in [
            ("exists", "Procedure exists"),
            ("executes", "Can execute (test data)"),
            ("structure", "Returns correct structure"),
            ("duration", "Execution time"),
            ("warnings", "No errors detected"),
        ] {
            let line = match report.checks.iter().find(|c| c.check == check) {
                Some(c) if c.passed => format!("{} {label}: {}", mark(Mark::Ok), c.detail),
                Some(c) => format!("{} {label}: {}", mark(Mark::Fail), c.detail),
                None if report.checks.iter().any(|c| !c.passed) => {
                    format!("{} {label}: not run", mark(Mark::Skipped))
                }
                None => continue,
            };
            text.push_str(&line);
            text.push('\n');
        }
        let verdict = if report.passed {
            format!("{} PASS", mark(Mark::Ok))
        } else {
            format!("{} FAIL", mark(Mark::Fail))
        };
        text.push_str(&format!("{RULE}\nRESULT: {verdict}\n{RULE}\n"));
    }
    if shown.len() < last.len() {
        let passed = last.iter().filter(|r| r.passed).count();
        text.push_str(&format!(
            "SMOKE TEST @ {} ({last_phase}): {passed} of {} passed; {} more block(s) not shown (--output json lists all)\n",
            environment.to_uppercase(),
            last.len(),
            last.len() - shown.len()
        ));
    }
    text
}

/// The closing line of `pgrollout smoke`.
pub fn smoke_verdict(result: &JobResult) -> String {
    let passed = result.smoke.iter().filter(|r| r.passed).count();
    format!(
        "smoke: {passed} of {} passed — {}\n",
        result.smoke.len(),
        result.message
    )
}

/// Everything the DEPLOYMENT LOG block needs. `deploy` fills it from the
/// rollout it just followed, `log` from the controller's record.
pub struct RunReport<'a> {
    pub procedure: &'a str,
    pub environment: &'a str,
    pub plan: &'a Plan,
    pub identities: &'a [String],
    pub rollout: Option<&'a RolloutStarted>,
    pub result: &'a JobResult,
    pub status: RunStatus,
    pub wall_time: Duration,
}

/// Where the rollout stands, for the block's `Status:` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    /// It ended with this exit code.
    Exited(ExitCode),
    /// It succeeded, and a rollback later undid every change it made.
    RolledBack,
    /// No result yet.
    Running,
    /// The agent vanished mid-job; its ledger decides once it reports.
    Unknown,
}

/// SEED.md's DEPLOYMENT LOG block, plus rollout, trace and ledger ids.
pub fn deployment_log(run: &RunReport<'_>) -> String {
    let started_at = run
        .rollout
        .map(|r| r.started_at_unix_ms)
        .unwrap_or_default();
    let smoke = if !run.result.smoke_incomplete.is_empty() {
        // The agent restarted after COMMIT: say what is known, not "NOT RUN".
        format!(
            "{} INCOMPLETE — {}",
            mark(Mark::Incomplete),
            run.result.smoke_incomplete
        )
    } else if run.result.smoke.is_empty() {
        format!("{} NOT RUN", mark(Mark::Skipped))
    } else if run.result.smoke.iter().all(|r| r.passed) {
        format!("{} PASS", mark(Mark::Ok))
    } else {
        format!("{} FAIL", mark(Mark::Fail))
    };
    let status = match run.status {
        RunStatus::Exited(ExitCode::Success) if run.result.replayed_from_ledger => {
            format!(
                "{} SUCCESS (already applied; nothing changed)",
                mark(Mark::Ok)
            )
        }
        RunStatus::Exited(ExitCode::Success) if !run.result.smoke_incomplete.is_empty() => format!(
            "{} SUCCESS (committed; the agent restarted before its post-commit checks)",
            mark(Mark::Ok)
        ),
        RunStatus::Exited(ExitCode::Success) => format!("{} SUCCESS", mark(Mark::Ok)),
        RunStatus::Exited(code) => format!("{} FAILED (exit {})", mark(Mark::Fail), code.code()),
        RunStatus::RolledBack => {
            format!(
                "{} ROLLED BACK (succeeded, later undone by a rollback)",
                mark(Mark::Undone)
            )
        }
        RunStatus::Running => format!("{} RUNNING", mark(Mark::Waiting)),
        RunStatus::Unknown => {
            format!(
                "{} UNKNOWN (the agent has not reported; its ledger decides)",
                mark(Mark::Unknown)
            )
        }
    };
    let backup = if run.result.backup_path.is_empty() {
        "none".to_owned()
    } else {
        format!(
            "{} (sha256 {})",
            run.result.backup_path, run.result.backup_sha256
        )
    };
    let changes: Vec<String> = if run.result.applied.is_empty() {
        run.identities.to_vec()
    } else {
        run.result
            .applied
            .iter()
            .map(|a| format!("{} [{}]", a.identity, a.change))
            .collect()
    };
    let ledger: Vec<String> = run.result.ledger_ids.iter().map(i64::to_string).collect();
    let mut lines = vec![
        RULE.to_owned(),
        "DEPLOYMENT LOG".to_owned(),
        RULE.to_owned(),
        format!("Timestamp: {}", utc_timestamp(started_at)),
        format!("Procedure: {}", run.procedure),
        format!("Routines: {}", summarised(&changes, INLINE_LIMIT)),
        format!("Environment: {}", run.environment.to_uppercase()),
        format!(
            "Version: {}",
            &run.plan.plan_id[..run.plan.plan_id.len().min(12)]
        ),
        format!(
            "Deployed By: {}",
            run.rollout.map(|r| r.actor.as_str()).unwrap_or("?")
        ),
        format!("Commit SHA: {}", run.plan.commit_sha),
        format!("Backup: {backup}"),
        format!("Smoke Test: {smoke}"),
        format!("Duration: {:.2} seconds", run.wall_time.as_secs_f64()),
        format!("Status: {status}"),
    ];
    if let Some(rollout) = run.rollout {
        lines.push(format!("Rollout: {}", rollout.rollout_id));
        lines.push(format!("Trace ID: {}", rollout.trace_id));
    }
    if !ledger.is_empty() {
        lines.push(format!("Ledger: {}", summarised(&ledger, LIST_LIMIT)));
    }
    lines.push(RULE.to_owned());
    lines.join("\n") + "\n"
}

/// The summary report at the end of a batch (SEED.md "deploy-batch.sh"):
/// every routine with its status, duration and error, then the totals.
pub fn batch_report(
    label: &str,
    environment: &str,
    mode: &str,
    rollout: Option<&RolloutStarted>,
    result: &JobResult,
    code: ExitCode,
    wall_time: Duration,
) -> String {
    let total = result.routines.len();
    let width = result
        .routines
        .iter()
        .map(|o| o.identity.len())
        .max()
        .unwrap_or(0);
    let mut lines = vec![
        RULE.to_owned(),
        "BATCH DEPLOYMENT REPORT".to_owned(),
        RULE.to_owned(),
        format!("Batch: {label} ({total} routines)"),
        format!("Environment: {}", environment.to_uppercase()),
        format!("Mode: {mode}"),
    ];
    let numbered: Vec<(usize, &RoutineOutcome)> = result.routines.iter().enumerate().collect();
    let (shown, hidden) = rows_to_show(&numbered, |(_, o)| !is_ok(&o.status));
    for &(index, outcome) in shown {
        let mark = outcome_mark(&outcome.status);
        let mut line = format!(
            "  {:>w$}/{total} {:<width$}  {mark} {:<12}{:>9} ms",
            index + 1,
            outcome.identity,
            outcome.status,
            routine_ms(outcome),
            w = total.to_string().len(),
        );
        if !outcome.error.is_empty() {
            line.push_str(&format!("  {}", outcome.error));
        }
        lines.push(line);
    }
    if hidden > 0 {
        lines.push(more_line(hidden));
    }
    let count = |status: &str| {
        result
            .routines
            .iter()
            .filter(|o| o.status == status)
            .count()
    };
    if !result.backup_path.is_empty() {
        lines.push(format!(
            "Backup: {} (sha256 {})",
            result.backup_path, result.backup_sha256
        ));
    }
    lines.push(format!(
        "Result: {} deployed, {} unchanged, {} failed, {} skipped, {} rolled back, {} not run",
        count("deployed"),
        count("unchanged"),
        count("failed"),
        count("skipped"),
        count("rolled-back"),
        count("not-run")
    ));
    lines.push(format!("Duration: {:.2} seconds", wall_time.as_secs_f64()));
    lines.push(match code {
        ExitCode::Success => format!("Status: {} SUCCESS", mark(Mark::Ok)),
        code => format!("Status: {} FAILED (exit {})", mark(Mark::Fail), code.code()),
    });
    if let Some(rollout) = rollout {
        lines.push(format!("Rollout: {}", rollout.rollout_id));
        lines.push(format!("Trace ID: {}", rollout.trace_id));
    }
    lines.push(RULE.to_owned());
    lines.join("\n") + "\n"
}

/// A routine's own time in milliseconds, to the microsecond when measured
/// so (`0.42`): a CREATE takes well under a millisecond.
pub fn routine_ms(outcome: &RoutineOutcome) -> String {
    if outcome.duration_us > 0 {
        format!("{:.2}", outcome.duration_us as f64 / 1000.0)
    } else {
        outcome.duration_ms.to_string()
    }
}

/// Whether a routine's outcome needs no attention.
pub fn is_ok(status: &str) -> bool {
    matches!(status, "deployed" | "unchanged")
}

/// The mark printed beside a routine's outcome.
pub fn outcome_mark(status: &str) -> &'static str {
    match status {
        "deployed" | "unchanged" | "retired" => mark(Mark::Ok),
        "failed" => mark(Mark::Fail),
        "rolled-back" => mark(Mark::Undone),
        _ => mark(Mark::Skipped),
    }
}

/// `2025-11-13 14:30:00 UTC`, as SEED.md prints it.
pub fn utc_timestamp(unix_ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    let rfc3339 = humantime::format_rfc3339_seconds(time).to_string();
    format!(
        "{} UTC",
        rfc3339.trim_end_matches('Z').replacen('T', " ", 1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrollout_shared::proto::SmokeCheck;

    #[test]
    fn long_lists_show_failures_first_and_count_the_rest() {
        let rows: Vec<usize> = (0..1000).collect();
        let (shown, hidden) = rows_to_show(&rows, |&r| r == 500 || r == 999);
        assert_eq!(shown.len(), LIST_LIMIT);
        assert_eq!(hidden, 1000 - LIST_LIMIT);
        assert!(shown.contains(&&500) && shown.contains(&&999));
        assert_eq!(*shown[0], 0, "the rest in their order");
        let items: Vec<String> = (0..1047)
            .map(|i| format!("public.f{i}(integer) [restored]"))
            .collect();
        let line = summarised(&items, INLINE_LIMIT);
        assert!(line.len() < 300, "{line}");
        assert!(
            line.ends_with("… and 1042 more (--output json lists all)"),
            "{line}"
        );
    }

    #[test]
    fn timestamp_reads_like_seed() {
        assert_eq!(utc_timestamp(1_763_044_200_000), "2025-11-13 14:30:00 UTC");
    }

    #[test]
    fn a_failed_smoke_block_names_the_failed_check_and_what_did_not_run() {
        let report = SmokeReport {
            routine: "public.addarc(text, text)".into(),
            test: "adds".into(),
            phase: "in-transaction".into(),
            checks: vec![
                SmokeCheck {
                    check: "exists".into(),
                    passed: true,
                    detail: "ok".into(),
                },
                SmokeCheck {
                    check: "executes".into(),
                    passed: false,
                    detail: "ERROR P0001: boom".into(),
                },
            ],
            passed: false,
            duration_ms: 3,
        };
        let text = smoke_blocks(&[report], "qa");
        assert!(text.contains("SMOKE TEST: public.addarc(text, text) @ QA (in-transaction)"));
        let expected = "✅ Procedure exists: ok\n❌ Can execute (test data): ERROR P0001: boom\n➖ Returns correct structure: not run"
            .replace("✅", mark(Mark::Ok))
            .replace("❌", mark(Mark::Fail))
            .replace("➖", mark(Mark::Skipped));
        assert!(text.contains(&expected), "{text}");
        assert!(text.contains(&format!("RESULT: {} FAIL", mark(Mark::Fail))));
    }
}
