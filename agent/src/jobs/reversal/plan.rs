//! Deciding what a rollback restores, from the target's ledger alone: for
//! each routine, the change to undo (or the named version to return to).
//! Anything that makes the request unsafe or meaningless — a disabled
//! routine, a routine changed again after the rollout being undone, a ledger
//! id about another procedure — is refused here, before anything changes.

use pgrollout_shared::operations::{RollbackScope, RollbackSpec, RollbackTarget};

use super::versions::{by_identity, version_state, VersionState};
use crate::jobs::context::JobFailure;
use crate::jobs::steps::refused;
use crate::sql::{LedgerRecord, RoutineSnapshot};

/// One routine's part in a rollback.
#[derive(Debug)]
pub struct Planned<'a> {
    /// `regprocedure` text, as the ledger records it.
    pub identity: &'a str,
    pub goal: Goal<'a>,
    /// The ledger's latest row for the routine: its `new` side is what
    /// should be live now (drift is measured against it).
    pub live: Option<&'a LedgerRecord>,
    /// Every row of this routine, oldest first.
    pub rows: Vec<&'a LedgerRecord>,
}

/// What a routine goes back to.
#[derive(Clone, Copy, Debug)]
pub enum Goal<'a> {
    /// A plain rollback: the state before this change.
    Undo(&'a LedgerRecord),
    /// A rollback to a named version: the state this row put in place.
    To(&'a LedgerRecord),
}

impl<'a> Planned<'a> {
    /// The change this rollback reverses (none when going to a named version).
    pub fn undoes(&self) -> Option<&'a LedgerRecord> {
        match self.goal {
            Goal::Undo(row) => Some(row),
            Goal::To(_) => None,
        }
    }

    /// The ledger row that defines the wanted state.
    pub fn ledger_row(&self) -> &'a LedgerRecord {
        match self.goal {
            Goal::Undo(row) | Goal::To(row) => row,
        }
    }

    fn to(&self) -> Option<&'a LedgerRecord> {
        match self.goal {
            Goal::To(row) => Some(row),
            Goal::Undo(_) => None,
        }
    }

    /// The wanted state as the ledger records it.
    pub fn wanted(&self) -> &'a RoutineSnapshot {
        match self.goal {
            Goal::Undo(row) => &row.previous,
            Goal::To(row) => &row.new,
        }
    }

    /// SHA-256 of the wanted definition; `None`: the routine is to be absent.
    pub fn wanted_sha256(&self) -> Option<&'a str> {
        match self.goal {
            Goal::Undo(row) => row.previous_sha256.as_deref(),
            Goal::To(row) => row.new_sha256.as_deref(),
        }
    }

    /// The ledger row whose backup file holds the wanted version: the change
    /// being undone, or the first later change that replaced the named one.
    pub fn backup_row(&self) -> Option<&'a LedgerRecord> {
        if let Some(undone) = self.undoes() {
            // An adoption changed no routine and took no backup: the version
            // before it is in the ledger (and the controller's plans).
            return (undone.action != "adopt").then_some(undone);
        }
        let to = self.to()?;
        self.rows.iter().copied().find(|row| {
            row.id > to.id && row.backup_path.is_some() && row.previous_sha256 == to.new_sha256
        })
    }

    /// Plan and commit that produced the wanted version, when the ledger
    /// knows: the named row, or the latest earlier change that left it.
    pub fn wanted_origin(&self) -> (String, Option<String>) {
        if let Some(to) = self.to() {
            return (to.plan_id.clone(), to.commit_sha.clone());
        }
        let wanted = self.wanted_sha256();
        let undone = self.undoes();
        self.rows
            .iter()
            .rev()
            .filter(|row| undone.is_none_or(|undone| row.id < undone.id))
            .find(|row| wanted.is_some() && row.new_sha256.as_deref() == wanted)
            .map(|row| (row.plan_id.clone(), row.commit_sha.clone()))
            .unwrap_or_default()
    }
}

/// The routines to restore, in the order to restore them, and notes about
/// routines left alone.
pub fn plan<'a>(
    rows: &'a [LedgerRecord],
    spec: &RollbackSpec,
    label: &str,
    target: &str,
) -> Result<(Vec<Planned<'a>>, Vec<String>), JobFailure> {
    if rows.is_empty() {
        return Err(refused(match &spec.scope {
            RollbackScope::Routines(_) => format!(
                "the ledger of target {target} has no rows for {label}: pgrollout never changed it there, so there \
                 is nothing to roll back"
            ),
            RollbackScope::Rollout(id) => {
                format!("the ledger of target {target} has no rows of rollout {id}")
            }
        }));
    }
    let groups: Vec<_> = by_identity(rows)
        .into_iter()
        .map(|(identity, group)| {
            let state = version_state(&group);
            (identity, group, state)
        })
        .collect();
    let mut notes = Vec::new();
    let mut planned = Vec::new();
    let latest_change = latest_change(&groups);
    for (identity, group, state) in &groups {
        if let Some(disable) = state.disabled {
            return Err(refused(format!(
                "{identity} is disabled (ledger #{}, {}); run `pgrollout enable` first, then roll back",
                disable.id, disable.change
            )));
        }
        let entry = match (&spec.scope, &spec.target) {
            (RollbackScope::Rollout(rollout), _) => {
                undo_rollout_row(identity, group, state, rollout, &mut notes)?
            }
            (_, RollbackTarget::Previous) => match (state.latest(), latest_change) {
                (Some(latest), Some(change)) if latest.job_id == change.job_id => {
                    Some(Goal::Undo(latest))
                }
                (Some(latest), Some(change)) => {
                    notes.push(format!(
                        "{identity}: left as it is — the change being undone (ledger #{}, rollout {}) did not \
                         change it; its own latest change is ledger #{} of rollout {}",
                        change.id, change.rollout_id, latest.id, latest.rollout_id
                    ));
                    None
                }
                _ => {
                    notes.push(format!("{identity}: no change left to roll back"));
                    None
                }
            },
            (_, RollbackTarget::LedgerId(id)) => group
                .iter()
                .find(|row| row.id == *id)
                .map(|row| named_version(row).map(Goal::To))
                .transpose()?,
            (_, RollbackTarget::PlanId(plan)) => {
                let row = group
                    .iter()
                    .rev()
                    .find(|row| row.action == "deploy" && row.plan_id.starts_with(plan.as_str()));
                if row.is_none() {
                    notes.push(format!(
                        "{identity}: left as it is — plan {plan} never deployed it"
                    ));
                }
                row.map(|row| Goal::To(row))
            }
        };
        let Some(goal) = entry else { continue };
        planned.push(Planned {
            identity,
            goal,
            live: group.last().copied(),
            rows: group.clone(),
        });
    }
    if planned.is_empty() {
        return Err(refused(nothing_message(spec, label, target, &notes)));
    }
    if let RollbackScope::Rollout(_) = spec.scope {
        // Reverse deploy order: dependants are undone before what they need.
        planned.sort_by_key(|p| std::cmp::Reverse(p.undoes().map(|row| row.id)));
    }
    Ok((planned, notes))
}

/// The change a plain rollback of these routines undoes: the most recent one
/// still in force among them. Only the routines that change changed go back
/// (each to its state before it); an overload it left unchanged stays as it
/// is, so the result is a state that existed.
fn latest_change<'a>(
    groups: &[(&str, Vec<&'a LedgerRecord>, VersionState<'a>)],
) -> Option<&'a LedgerRecord> {
    groups
        .iter()
        .filter_map(|(_, _, state)| state.latest())
        .max_by_key(|row| row.id)
}

fn named_version(row: &LedgerRecord) -> Result<&LedgerRecord, JobFailure> {
    match row.action.as_str() {
        "deploy" | "rollback" | "auto-rollback" | "adopt" => Ok(row),
        other => Err(refused(format!(
            "ledger #{} records a {other}, not a version; use `pgrollout enable` to undo a disable",
            row.id
        ))),
    }
}

/// The row of `rollout` to undo for one routine; refuses when a later change
/// sits on top of it.
fn undo_rollout_row<'a>(
    identity: &str,
    group: &[&'a LedgerRecord],
    state: &VersionState<'a>,
    rollout: &str,
    notes: &mut Vec<String>,
) -> Result<Option<Goal<'a>>, JobFailure> {
    let Some(row) = group
        .iter()
        .rev()
        .find(|row| row.rollout_id == rollout && row.action == "deploy" && !row.is_no_op())
    else {
        notes.push(format!("{identity}: rollout {rollout} did not change it"));
        return Ok(None);
    };
    if !state.in_force.iter().any(|r| r.id == row.id) {
        notes.push(format!(
            "{identity}: already rolled back (ledger #{})",
            row.id
        ));
        return Ok(None);
    }
    match state.latest() {
        Some(latest) if latest.id != row.id => Err(refused(format!(
            "{identity} was changed after rollout {rollout}, by ledger #{} ({} of rollout {}); roll that back first",
            latest.id, latest.action, latest.rollout_id
        ))),
        _ => Ok(Some(Goal::Undo(row))),
    }
}

fn nothing_message(spec: &RollbackSpec, label: &str, target: &str, notes: &[String]) -> String {
    let why = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    };
    match (&spec.scope, &spec.target) {
        (RollbackScope::Rollout(id), _) => {
            format!("rollout {id} has nothing left to roll back in target {target}{why}")
        }
        (_, RollbackTarget::Previous) => format!(
            "nothing to roll back for {label} in target {target}: every change the ledger records is already \
             undone{why}"
        ),
        (_, RollbackTarget::LedgerId(id)) => format!(
            "ledger row #{id} of target {target} does not exist or is not about {label}; `pgrollout history {label} \
             <environment>` lists its rows"
        ),
        (_, RollbackTarget::PlanId(plan)) => format!(
            "plan {plan} never deployed {label} to target {target}; `pgrollout history {label} <environment>` lists \
             the plans it did"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::sha256_hex;

    fn deploy(id: i64, rollout: &str, from: Option<&str>, to: &str) -> LedgerRecord {
        LedgerRecord {
            id,
            applied_at_ms: 0,
            job_id: format!("j{id}"),
            rollout_id: rollout.into(),
            plan_id: format!("plan{id}"),
            action: "deploy".into(),
            identity: "f(integer)".into(),
            change: "replaced".into(),
            previous: RoutineSnapshot::of_f(from),
            previous_sha256: from.map(sha256_hex),
            new: RoutineSnapshot::of_f(Some(to)),
            new_sha256: Some(sha256_hex(to)),
            actor: "alice".into(),
            trace_id: None,
            commit_sha: None,
            backup_path: Some(format!("/b/{id}.sql")),
            backup_sha256: None,
            undoes_ledger_id: None,
            new_identity: None,
            note: None,
        }
    }

    fn spec(scope: RollbackScope, target: RollbackTarget) -> RollbackSpec {
        RollbackSpec {
            scope,
            target,
            emergency: None,
            known_versions: Vec::new(),
        }
    }

    fn all() -> RollbackScope {
        RollbackScope::Routines(pgrollout_shared::operations::RoutineSelector {
            schema: None,
            name: "f".into(),
            arg_types: None,
        })
    }

    #[test]
    fn a_plain_rollback_undoes_the_latest_change_and_knows_where_its_version_came_from() {
        let rows = [
            deploy(1, "r1", None, "v1"),
            deploy(2, "r2", Some("v1"), "v2"),
        ];
        let (planned, _) =
            plan(&rows, &spec(all(), RollbackTarget::Previous), "f", "main").expect("plan");
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].undoes().map(|r| r.id), Some(2));
        assert_eq!(planned[0].wanted().definition.as_deref(), Some("v1"));
        assert_eq!(planned[0].wanted_origin().0, "plan1");
        assert_eq!(planned[0].backup_row().map(|r| r.id), Some(2));
    }

    #[test]
    fn a_named_version_is_found_in_the_backup_of_the_change_that_replaced_it() {
        let rows = [
            deploy(1, "r1", None, "v1"),
            deploy(2, "r2", Some("v1"), "v2"),
            deploy(3, "r3", Some("v2"), "v3"),
        ];
        let (planned, _) = plan(
            &rows,
            &spec(all(), RollbackTarget::LedgerId(1)),
            "f",
            "main",
        )
        .expect("plan");
        assert_eq!(planned[0].wanted().definition.as_deref(), Some("v1"));
        assert_eq!(planned[0].backup_row().map(|r| r.id), Some(2));
        let (planned, _) = plan(
            &rows,
            &spec(all(), RollbackTarget::PlanId("plan2".into())),
            "f",
            "main",
        )
        .expect("plan");
        assert_eq!(planned[0].wanted().definition.as_deref(), Some("v2"));
    }

    #[test]
    fn a_rollback_of_overloads_undoes_only_what_the_latest_change_changed() {
        let of = |identity: &str, row: LedgerRecord| LedgerRecord {
            identity: identity.into(),
            ..row
        };
        let rows = [
            of("f(integer)", deploy(1, "r1", None, "i1")),
            of("f(text)", deploy(2, "r1", None, "t1")),
            of("f(integer)", deploy(3, "r2", Some("i1"), "i2")),
            // Unchanged by r2: a no-op row, not a version.
            of("f(text)", deploy(4, "r2", Some("t1"), "t1")),
        ];
        let rows = rows.map(|mut row| {
            row.job_id = format!("job-{}", row.rollout_id);
            row
        });
        let (planned, notes) =
            plan(&rows, &spec(all(), RollbackTarget::Previous), "f", "main").expect("plan");
        assert_eq!(planned.len(), 1, "{planned:?}");
        assert_eq!(planned[0].identity, "f(integer)");
        assert_eq!(planned[0].wanted().definition.as_deref(), Some("i1"));
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("f(text): left as it is")),
            "{notes:?}"
        );
    }

    #[test]
    fn a_rollout_changed_again_later_is_refused_before_anything_changes() {
        let rows = [
            deploy(1, "r1", None, "v1"),
            deploy(2, "r2", Some("v1"), "v2"),
        ];
        let error = plan(
            &rows,
            &spec(
                RollbackScope::Rollout("r1".into()),
                RollbackTarget::Previous,
            ),
            "f",
            "main",
        )
        .expect_err("r2 sits on top");
        assert_eq!(
            error.outcome,
            pgrollout_shared::proto::Outcome::ValidationFailed
        );
        assert!(
            error
                .message()
                .contains("changed after rollout r1, by ledger #2"),
            "{}",
            error.message()
        );
    }
}
