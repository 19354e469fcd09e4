//! The `no_drift` gate's check (issue 20), on the deploy path: after the
//! deploy lock and the idempotency check, before BEGIN. A routine this deploy
//! would replace whose live state is not what the ledger last recorded was
//! changed by hand; replacing it would lose that change without a trace, so
//! the deploy is refused (exit 1) naming it, with the diff.
//!
//! Why here and not at the controller: only the agent sees the live catalog,
//! and under the deploy's advisory lock no other pgrollout job can change the
//! target between this check and the CREATEs. (A hand change in that
//! instant is not excluded — no lock stops `psql` — but the backup the
//! deploy takes next still records it.) Only `changed` counts: a deploy does
//! not overwrite a routine that was dropped or renamed, and an unmanaged one
//! of the same identity is overwritten only if the ledger knows it.

use pgrollout_shared::proto::DriftFinding;
use pgrollout_shared::routine::Routine;
use tokio_postgres::types::Type;

use super::compare::changed;
use crate::jobs::context::{JobContext, JobFailure};
use crate::jobs::steps::{database, refused};
use crate::sql::{self, TargetConnection};

/// Refuses the deploy when a routine it would replace drifted.
pub async fn refuse_drift(
    ctx: &JobContext,
    conn: &TargetConnection,
    routines: &[Routine],
) -> Result<(), JobFailure> {
    ctx.step(
        "drift",
        drifted(ctx, conn, routines),
        |checked: &Vec<DriftFinding>| {
            format!(
                "no drift in the {} routine(s) this deploy replaces",
                checked.len()
            )
        },
    )
    .await
    .map(|_| ())
}

/// The routines checked when none drifted; else the refusal naming those that did.
async fn drifted(
    ctx: &JobContext,
    conn: &TargetConnection,
    routines: &[Routine],
) -> Result<Vec<DriftFinding>, JobFailure> {
    let inputs = crate::sql::signatures::signatures_of(conn, routines)
        .await
        .map_err(|e| database("cannot look up the routines for the no_drift check", e))?;
    let identities: Vec<Option<String>> = conn
        .client
        .query_typed(
            "SELECT to_regprocedure(s)::regprocedure::text \
             FROM unnest($1::text[]) WITH ORDINALITY AS u(s, n) ORDER BY n",
            &[(&inputs, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(|e| database("cannot look up the routines for the no_drift check", e))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let scan = sql::drift_scan(&conn.client, &ctx.target.ledger_schema)
        .await
        .map_err(|e| {
            database(
                "cannot read the ledger and the catalog for the no_drift check",
                e,
            )
        })?;
    let mut findings = Vec::new();
    let mut checked = Vec::new();
    for routine in scan
        .routines
        .iter()
        .filter(|r| r.ledgered && identities.iter().flatten().any(|i| *i == r.identity))
    {
        let (Some(expected), Some(live)) = (&routine.expected, &routine.live) else {
            continue;
        };
        match changed(&routine.identity, expected, live) {
            Some(finding) => findings.push(finding),
            None => checked.push(DriftFinding {
                identity: routine.identity.clone(),
                ..Default::default()
            }),
        }
    }
    if findings.is_empty() {
        return Ok(checked);
    }
    Err(refused(refusal(&findings)))
}

/// The refusal: each drifted routine, what differs, and its diffs.
fn refusal(findings: &[DriftFinding]) -> String {
    let mut text = format!(
        "refused by the no_drift gate: {} routine(s) this deploy would replace were changed outside pgrollout \
         since its ledger last recorded them; nothing was changed. Bring the change into the project (or \
         restore the recorded state) and deploy again, or deploy again with `--adopt-drift --reason TEXT` \
         (approver or admin) to record the hand-made version in the ledger first, so a rollback restores it; \
         `pgrollout drift <environment>` shows every drift.",
        findings.len()
    );
    for finding in findings {
        text.push_str(&format!(
            "\n{} ({})",
            finding.identity,
            finding.aspects.join(", ")
        ));
        for detail in &finding.details {
            text.push_str(&format!("\n  {detail}"));
        }
        for diff in [&finding.definition_diff, &finding.acl_diff] {
            for line in diff.lines() {
                text.push_str(&format!("\n  {line}"));
            }
        }
    }
    text
}
