//! Issue 24: how a fleet rollout reads — every target with its wave, state,
//! exit code and own rollout, then the summary (succeeded / failed /
//! untouched / rolled back) and the worst exit code; and the same as JSON.

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::FleetReport;
use serde_json::{json, Value};

use super::style::{mark, Mark};

/// The fleet's exit code: the worst of its targets', as the controller
/// computed it.
pub fn exit_code(report: &FleetReport) -> ExitCode {
    match report.exit_code {
        0 => ExitCode::Success,
        1 => ExitCode::ValidationFailed,
        3 => ExitCode::SmokeTestFailed,
        _ => ExitCode::DeploymentFailed,
    }
}

/// The table and the summary line.
pub fn text(report: &FleetReport) -> String {
    let mut text = format!(
        "FLEET ROLLOUT {} — environment {}, plan {}\n",
        report.fleet_id,
        report.environment,
        report.plan_id.get(..12).unwrap_or(&report.plan_id)
    );
    text.push_str(&format!(
        "  {:<4}  {:<28} {:<12} {:>4}  {}\n",
        "wave", "target", "state", "exit", "rollout"
    ));
    for target in &report.targets {
        let marker = match target.state.as_str() {
            "succeeded" => mark(Mark::Ok),
            "pending" | "rolled_back" => mark(Mark::Skipped),
            _ => mark(Mark::Fail),
        };
        let exit = if target.rollout_id.is_empty() && target.state == "pending" {
            "-".to_owned()
        } else {
            target.exit_code.to_string()
        };
        let shown_state = if target.state == "pending" {
            "untouched"
        } else {
            target.state.as_str()
        };
        let rollout = if target.rollout_id.is_empty() {
            "-"
        } else {
            target.rollout_id.as_str()
        };
        text.push_str(&format!(
            "{marker} {:<4}  {:<28} {:<12} {:>4}  {rollout}\n",
            target.wave,
            format!("{}/{}", target.zone, target.target),
            shown_state,
            exit
        ));
        if !target.message.is_empty() && target.state != "succeeded" {
            text.push_str(&format!("        {}\n", first_line(&target.message)));
        }
    }
    text.push_str(&format!("{}\n", summary(report)));
    text
}

/// `Summary: 3 succeeded, 1 failed, 2 untouched, 0 rolled back — halted, exit 3`.
pub fn summary(report: &FleetReport) -> String {
    let count = |state: &str| report.targets.iter().filter(|t| t.state == state).count();
    let unknown = match count("unknown") {
        0 => String::new(),
        n => format!(", {n} unknown"),
    };
    format!(
        "Summary: {} succeeded, {} failed, {} untouched, {} rolled back{unknown} — {}, exit {}",
        count("succeeded"),
        count("failed"),
        count("pending"),
        count("rolled_back"),
        report.state,
        report.exit_code
    )
}

/// `"fleet"` of a command's JSON document: every target listed.
pub fn json(report: &FleetReport) -> Value {
    let count = |state: &str| report.targets.iter().filter(|t| t.state == state).count();
    json!({
        "fleet_id": report.fleet_id,
        "environment": report.environment,
        "plan_id": report.plan_id,
        "state": report.state,
        "exit_code": report.exit_code,
        "summary": {
            "succeeded": count("succeeded"),
            "failed": count("failed"),
            "untouched": count("pending"),
            "rolled_back": count("rolled_back"),
            "unknown": count("unknown"),
        },
        "targets": report.targets.iter().map(|t| json!({
            "zone": t.zone,
            "target": t.target,
            "wave": t.wave,
            "state": if t.state == "pending" { "untouched" } else { t.state.as_str() },
            "rollout_id": (!t.rollout_id.is_empty()).then_some(t.rollout_id.as_str()),
            "exit_code": (!t.rollout_id.is_empty() || t.state != "pending").then_some(t.exit_code),
            "message": t.message,
        })).collect::<Vec<_>>(),
    })
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrollout_shared::proto::FleetTargetState;

    #[test]
    fn untouched_targets_are_listed_and_counted() {
        let target = |name: &str, state: &str, code: i32| FleetTargetState {
            zone: "eu".into(),
            target: name.into(),
            state: state.into(),
            exit_code: code,
            rollout_id: if state == "pending" {
                String::new()
            } else {
                format!("r-{name}")
            },
            ..Default::default()
        };
        let report = FleetReport {
            fleet_id: "f-1".into(),
            state: "halted".into(),
            exit_code: 3,
            targets: vec![
                target("a", "succeeded", 0),
                target("b", "failed", 3),
                target("c", "pending", 0),
            ],
            ..Default::default()
        };
        assert!(text(&report).contains(
            "Summary: 1 succeeded, 1 failed, 1 untouched, 0 rolled back — halted, exit 3"
        ));
        let document = json(&report);
        assert_eq!(document["targets"][2]["state"], "untouched");
        assert_eq!(document["targets"][2]["rollout_id"], Value::Null);
        assert_eq!(document["summary"]["failed"], 1);
    }
}
