//! The `tests_passed` gate: the same plan succeeded in the environment it is
//! promoted from with every smoke test passing and, when the plan declares
//! pgTAP files (`[tests] pgtap`), with each of them run and passed there.

use std::collections::BTreeSet;

use super::{GateInput, GateResult};
use crate::config::{Environment, GateName};
use crate::store::{Store, StoreError};

pub async fn evaluate(
    store: &Store,
    environment: &Environment,
    input: &GateInput<'_>,
) -> Result<GateResult, StoreError> {
    let gate = GateName::TestsPassed;
    let short = &input.plan_id[..input.plan_id.len().min(12)];
    let from = environment.promote_from.as_deref().unwrap_or_default();
    let Some(success) = store.plan_succeeded_in(input.plan_id, from).await? else {
        return Ok(GateResult::failed(
            gate,
            format!("plan {short} never succeeded in {from}; deploy exactly this plan there first"),
        ));
    };
    let rollout = &success.rollout_id;
    if !success.smoke_completed {
        return Ok(GateResult::failed(
            gate,
            format!(
                "plan {short} succeeded in {from} (rollout {rollout}) but its post-commit smoke test never \
                 completed (the agent restarted after COMMIT, or every routine was unchanged): roll it back in \
                 {from} and deploy the plan there again"
            ),
        ));
    }
    if !success.smoke_passed {
        return Ok(GateResult::failed(
            gate,
            format!("plan {short} succeeded in {from} (rollout {rollout}) but its smoke tests did not all pass"),
        ));
    }
    let declared: BTreeSet<&str> = input
        .routines
        .iter()
        .filter_map(|r| r.pgtap.as_ref().map(|script| script.path.as_str()))
        .collect();
    let mut ran = Vec::new();
    let mut problems = Vec::new();
    for path in declared {
        match success.pgtap.iter().find(|report| report.path == path) {
            None => problems.push(format!(
                "pgTAP file {path} did not run in {from} (rollout {rollout}); set run_pgtap = true on \
                 environments.{from} and deploy the plan there again"
            )),
            Some(report) if !report.skipped.is_empty() => problems.push(format!(
                "pgTAP file {path} did not run in {from} (rollout {rollout}): {}",
                report.skipped
            )),
            Some(report) if !report.passed => problems.push(format!(
                "pgTAP file {path} failed in {from} (rollout {rollout}): {}",
                pgrollout_shared::test_reports::pgtap_summary(report)
            )),
            Some(report) => ran.push(format!("{path} {} of {}", report.run - report.failed, report.run)),
        }
    }
    if !problems.is_empty() {
        return Ok(GateResult::failed(gate, problems.join("; ")));
    }
    let pgtap = if ran.is_empty() {
        String::new()
    } else {
        format!(" and pgTAP ({})", ran.join(", "))
    };
    Ok(GateResult::passed(
        gate,
        format!(
            "plan {short} passed its smoke tests{pgtap} in {from}: rollout {rollout} by {}",
            success.actor
        ),
    ))
}
