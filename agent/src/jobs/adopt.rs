//! `pgrollout adopt` and `pgrollout deploy --adopt-drift` (issue 20): a
//! routine changed by hand is *adopted* — its live state (definition, owner,
//! ACL, comment; `SECURITY DEFINER` and every `SET` are in the definition) is
//! written to the ledger as a row with action `adopt`, whose `previous` side
//! is what the ledger expected. No routine is touched.
//!
//! Why: the `no_drift` gate refuses a deploy over a hand change because the
//! change would be lost without a trace. Once adopted, the ledger's stack of
//! versions is pgrollout's version → the hand-made one → (the deploy), so a
//! rollback of the deploy restores the hand-made version, and a second one
//! what pgrollout had deployed (`reversal/versions.rs` pushes `adopt` rows
//! like deploys).
//!
//! Under the deploy advisory lock, in one transaction: the drift scan, the
//! choice, the snapshot of the live state and the ledger rows, so no other
//! pgrollout job runs in between and the rows are all written or none. Only a
//! routine the ledger knows and whose live state differs from its latest row
//! (a `changed` drift finding) can be adopted; without `only_drifted` a
//! selected routine that did not drift is refused (exit 1), naming why.
//! Routine names are data: they reach SQL only as bound parameters.

use pgrollout_shared::job::AdoptSpec;
use pgrollout_shared::proto::{DriftFinding, DriftReport, JobResult, Outcome, RestoredRoutine};

use super::reversal::versions::{by_identity, version_state};
use super::steps::{self, database, drift as compare, refused, Stopped};
use crate::jobs::context::{JobContext, JobFailure};
use crate::sql::{self, LedgerJob, LedgerRecord, LedgerRow, RoutineSnapshot, TargetConnection};

pub async fn run(ctx: &JobContext, spec: &AdoptSpec) -> JobResult {
    adopt(ctx, spec).await.unwrap_or_else(Stopped::into_result)
}

/// One routine to adopt: its drift, and the ledger row whose `new` side the
/// live state replaces.
struct Chosen {
    finding: DriftFinding,
    expected: LedgerRecord,
}

/// What the selection came to: the routines to adopt, and why each other
/// selected routine is not adopted.
#[derive(Default)]
struct Choice {
    adopt: Vec<Chosen>,
    not_adoptable: Vec<String>,
}

async fn adopt(ctx: &JobContext, spec: &AdoptSpec) -> Result<JobResult, Stopped> {
    let conn = steps::connect(ctx).await?;
    steps::lock(ctx, &conn).await?;
    if let Some(replayed) = steps::already_done(ctx, &conn).await? {
        return Ok(replayed.into_result());
    }
    steps::simple(&conn, "BEGIN").await?;
    let work = async {
        let choice = ctx
            .step("drift", choose(ctx, &conn, spec), |choice: &Choice| {
                let names: Vec<&str> = choice
                    .adopt
                    .iter()
                    .map(|c| c.finding.identity.as_str())
                    .collect();
                match names.len() {
                    0 => "no selected routine drifted".to_owned(),
                    n => format!("{n} routine(s) changed by hand: {}", names.join(", ")),
                }
            })
            .await?;
        if choice.adopt.is_empty() {
            return Ok(None);
        }
        let ids = ctx
            .step(
                "ledger",
                record(ctx, &conn, spec, &choice.adopt),
                |rows: &Vec<(i64, RoutineSnapshot)>| {
                    format!("{} ledger row(s) written (action adopt)", rows.len())
                },
            )
            .await?;
        Ok::<_, Stopped>(Some((choice, ids)))
    }
    .await;
    let (choice, rows) = match work {
        Ok(Some(done)) => done,
        Ok(None) => {
            let _ = conn.client.batch_execute("ROLLBACK").await;
            return Ok(JobResult {
                outcome: Outcome::Succeeded as i32,
                message: "no routine drifted; nothing to adopt".into(),
                drift: Some(DriftReport::default()),
                ..Default::default()
            });
        }
        Err(stopped) => {
            let _ = conn.client.batch_execute("ROLLBACK").await;
            return Err(stopped);
        }
    };
    ctx.step("commit", ctx.commit(&conn, true), |_| "committed".into())
        .await?;
    let restored = choice
        .adopt
        .iter()
        .zip(&rows)
        .map(|(chosen, (id, new))| RestoredRoutine {
            identity: chosen.finding.identity.clone(),
            change: "adopted".into(),
            source: format!("ledger #{id}"),
            sha256: new.definition_sha256().unwrap_or_default(),
            undoes_ledger_id: 0,
            undoes_rollout_id: String::new(),
            detail: format!(
                "the hand change ({}) is now the version in force; the one ledger #{} recorded is the version \
                 before it",
                chosen.finding.aspects.join(", "),
                chosen.expected.id
            ),
        })
        .collect();
    Ok(JobResult {
        outcome: Outcome::Succeeded as i32,
        message: format!(
            "adopted {} routine(s) changed by hand; reason: {}",
            rows.len(),
            spec.reason
        ),
        ledger_ids: rows.iter().map(|(id, _)| *id).collect(),
        restored,
        warnings: if spec.only_drifted {
            Vec::new()
        } else {
            choice.not_adoptable
        },
        drift: Some(DriftReport {
            findings: choice.adopt.into_iter().map(|c| c.finding).collect(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Which selected routines drifted, judged as the `no_drift` gate judges
/// them (one scan, `compare::changed`).
async fn choose(
    ctx: &JobContext,
    conn: &TargetConnection,
    spec: &AdoptSpec,
) -> Result<Choice, JobFailure> {
    let schema = &ctx.target.ledger_schema;
    let scan = sql::drift_scan(&conn.client, schema)
        .await
        .map_err(|e| database("cannot read the ledger and the catalog for drift", e))?;
    let mut choice = Choice::default();
    let mut seen: Vec<String> = Vec::new();
    for selector in &spec.routines {
        let named = sql::routines_named(&conn.client, selector, schema)
            .await
            .map_err(|e| database("cannot look the routines up", e))?;
        let shown = selector_text(selector);
        if named.is_empty() {
            choice.not_adoptable.push(format!(
                "{shown}: no such routine in target {}",
                ctx.target.name
            ));
            continue;
        }
        let ledger = sql::rows_for_selector(&conn.client, schema, selector)
            .await
            .map_err(|e| database("cannot read the ledger", e))?;
        let groups = by_identity(&ledger);
        // A name that matches several overloads adopts those that drifted;
        // it is refused only when none of them did.
        let mut adoptable = Vec::new();
        let mut why_not = Vec::new();
        for routine in named {
            if seen.contains(&routine.identity) {
                continue;
            }
            seen.push(routine.identity.clone());
            let rows = groups
                .iter()
                .find(|(identity, _)| *identity == routine.identity)
                .map(|(_, rows)| rows.as_slice())
                .unwrap_or_default();
            let scanned = scan
                .routines
                .iter()
                .find(|r| r.ledgered && r.identity == routine.identity);
            match judge(&routine.identity, rows, scanned) {
                Ok(chosen) => adoptable.push(chosen),
                Err(why) => why_not.push(why),
            }
        }
        if adoptable.is_empty() {
            choice.not_adoptable.extend(why_not);
        }
        choice.adopt.extend(adoptable);
    }
    if !spec.only_drifted && !choice.not_adoptable.is_empty() {
        return Err(refused(format!(
            "nothing was adopted: {}. Only a routine the ledger knows whose live state differs from its latest \
             ledger row can be adopted; `pgrollout drift <environment>` lists them",
            choice.not_adoptable.join("; ")
        )));
    }
    Ok(choice)
}

/// Whether one routine can be adopted: the ledger knows it, expects it to
/// exist under this identity, it is not disabled, and it drifted.
fn judge(
    identity: &str,
    rows: &[&LedgerRecord],
    scanned: Option<&crate::sql::ScannedRoutine>,
) -> Result<Chosen, String> {
    let Some(latest) = rows.last() else {
        return Err(format!(
            "{identity} was never deployed by pgrollout (its ledger has no row); deploy it instead"
        ));
    };
    if let Some(disable) = version_state(rows).disabled {
        return Err(format!(
            "{identity} is disabled (ledger #{}); run `pgrollout enable` first",
            disable.id
        ));
    }
    if latest.new.definition.is_none() {
        return Err(format!(
            "{identity}: its latest ledger row (#{}) says it does not exist; deploy it instead",
            latest.id
        ));
    }
    let Some(scanned) = scanned else {
        return Err(format!(
            "{identity}: not found live under its ledger identity"
        ));
    };
    let (Some(expected), Some(live)) = (&scanned.expected, &scanned.live) else {
        return Err(format!(
            "{identity}: not found live under its ledger identity"
        ));
    };
    match compare::changed(identity, expected, live) {
        Some(finding) => Ok(Chosen {
            finding,
            expected: (*latest).clone(),
        }),
        None => Err(format!(
            "{identity} did not drift: it is as ledger #{} recorded it",
            latest.id
        )),
    }
}

/// Writes one `adopt` row per routine: `previous` what the ledger expected,
/// `new` the live state read now, in this transaction. Returns each row's id
/// and the state it recorded, in the order of `chosen`.
async fn record(
    ctx: &JobContext,
    conn: &TargetConnection,
    spec: &AdoptSpec,
    chosen: &[Chosen],
) -> Result<Vec<(i64, RoutineSnapshot)>, JobFailure> {
    let ledger_error = |e: tokio_postgres::Error| database("ledger write failed", e);
    let identities: Vec<String> = chosen.iter().map(|c| c.finding.identity.clone()).collect();
    let live = sql::snapshot_routines(&conn.client, &identities)
        .await
        .map_err(|e| database("cannot read the live state to adopt", e))?;
    if let Some(gone) = live.iter().find(|s| !s.existed) {
        return Err(refused(format!(
            "{} disappeared while it was being adopted; nothing was adopted",
            gone.requested
        )));
    }
    sql::ensure_reversal_columns(&conn.client, &ctx.target.ledger_schema)
        .await
        .map_err(ledger_error)?;
    let notes: Vec<String> = chosen
        .iter()
        .map(|c| {
            format!(
                "adopted a hand change ({}) by {}: {}",
                c.finding.aspects.join(", "),
                ctx.job.actor,
                spec.reason
            )
        })
        .collect();
    let rows: Vec<LedgerRow<'_>> = chosen
        .iter()
        .zip(&live)
        .zip(&notes)
        .map(|((c, new), note)| LedgerRow {
            identity: &c.finding.identity,
            change: "adopted",
            // A hand-made version comes from no plan or commit.
            plan_id: "",
            commit_sha: None,
            previous: &c.expected.new,
            new,
            undoes_ledger_id: None,
            new_identity: None,
            note: Some(note),
            source_sha256: None,
            // Nothing is changed, so nothing is backed up: the row itself
            // holds both versions in full.
            backed_up: false,
        })
        .collect();
    let job = LedgerJob {
        job_id: &ctx.job.id,
        attempt: i32::try_from(ctx.job.attempt).unwrap_or(i32::MAX),
        rollout_id: &ctx.job.rollout_id,
        action: "adopt",
        actor: &ctx.job.actor,
        trace_id: &ctx.job.trace.trace_id,
        backup_path: "",
        backup_sha256: "",
        audit_head: ctx.job.audit_head.as_ref(),
    };
    let ids = sql::insert_ledger_rows(&conn.client, &ctx.target.ledger_schema, &job, &rows)
        .await
        .map_err(ledger_error)?;
    Ok(chosen
        .iter()
        .zip(live)
        .filter_map(|(c, snapshot)| {
            ids.iter()
                .find(|(_, identity)| *identity == c.finding.identity)
                .map(|(id, _)| (*id, snapshot))
        })
        .collect())
}

/// The operator's selector as they wrote it, for messages.
fn selector_text(selector: &pgrollout_shared::operations::RoutineSelector) -> String {
    let mut text = match &selector.schema {
        Some(schema) => format!("{schema}.{}", selector.name),
        None => selector.name.clone(),
    };
    if let Some(types) = &selector.arg_types {
        text.push_str(&format!("({})", types.join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{sha256_hex, RoutineState, ScannedRoutine};

    fn row(id: i64, action: &str, to: Option<&str>) -> LedgerRecord {
        LedgerRecord {
            id,
            applied_at_ms: 0,
            job_id: format!("j{id}"),
            rollout_id: format!("r{id}"),
            plan_id: "p".into(),
            action: action.into(),
            identity: "f(integer)".into(),
            change: "replaced".into(),
            previous: RoutineSnapshot::of_f(None),
            previous_sha256: None,
            new: RoutineSnapshot::of_f(to),
            new_sha256: to.map(sha256_hex),
            actor: "alice".into(),
            trace_id: None,
            commit_sha: None,
            backup_path: None,
            backup_sha256: None,
            undoes_ledger_id: None,
            new_identity: None,
            note: None,
        }
    }

    fn scanned(expected: &str, live: &str) -> ScannedRoutine {
        let state = |definition: &str| RoutineState {
            definition: Some(definition.into()),
            owner: Some("app".into()),
            acl: None,
            comment: None,
        };
        ScannedRoutine {
            ledgered: true,
            identity: "f(integer)".into(),
            schema: "public".into(),
            name: "f".into(),
            expected: Some(state(expected)),
            live: Some(state(live)),
        }
    }

    #[test]
    fn only_a_routine_the_ledger_knows_that_drifted_is_adopted() {
        let deployed = row(1, "deploy", Some("v1"));
        let chosen = judge("f(integer)", &[&deployed], Some(&scanned("v1", "by hand")));
        let chosen = chosen.unwrap_or_else(|why| panic!("{why}"));
        assert_eq!(chosen.expected.id, 1);
        assert_eq!(chosen.finding.aspects, ["definition"]);

        let same = judge("f(integer)", &[&deployed], Some(&scanned("v1", "v1")));
        assert!(same.is_err_and(|why| why.contains("did not drift")));

        let never = judge("f(integer)", &[], None);
        assert!(never.is_err_and(|why| why.contains("never deployed")));

        let retired = row(2, "deploy", None);
        let gone = judge("f(integer)", &[&deployed, &retired], None);
        assert!(gone.is_err_and(|why| why.contains("does not exist")));

        let disabled = row(3, "disable", Some("v1"));
        let off = judge(
            "f(integer)",
            &[&deployed, &disabled],
            Some(&scanned("v1", "by hand")),
        );
        assert!(off.is_err_and(|why| why.contains("is disabled")));
    }
}
