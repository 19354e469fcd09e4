//! The ledger read as a stack of versions per routine: each change that is
//! still in force, oldest first. A deploy pushes; a rollback that names the
//! row it reverses (`undoes_ledger_id`) pops it, so the next rollback goes
//! one version further back; a rollback to a named version (`--to`) pushes,
//! so it can itself be rolled back. An adoption of a hand change pushes too.
//! Disable and enable are a separate switch.

use crate::sql::LedgerRecord;

/// Where one routine stands according to its ledger rows.
#[derive(Debug, Default)]
pub struct VersionState<'a> {
    /// Changes in force, oldest first: the last is what a rollback undoes.
    pub in_force: Vec<&'a LedgerRecord>,
    /// The disable in force, if any (enable undoes it).
    pub disabled: Option<&'a LedgerRecord>,
}

impl<'a> VersionState<'a> {
    /// The change a plain rollback undoes.
    pub fn latest(&self) -> Option<&'a LedgerRecord> {
        self.in_force.last().copied()
    }
}

/// Replays one routine's rows (oldest first) into its state.
pub fn version_state<'a>(rows: &[&'a LedgerRecord]) -> VersionState<'a> {
    let mut state = VersionState::default();
    for &row in rows {
        match row.action.as_str() {
            // An adoption (issue 20) records a hand-made version as the one
            // in force: a version like a deploy's, so rolling back the deploy
            // after it restores the hand-made one, and undoing the adoption
            // what pgrollout had deployed before the hand change.
            "deploy" | "adopt" if !row.is_no_op() => state.in_force.push(row),
            "rollback" | "auto-rollback" => {
                if let Some(position) = undone_by(row, &state.in_force) {
                    state.in_force.remove(position);
                } else if row.action == "rollback"
                    && row.undoes_ledger_id.is_none()
                    && !row.is_no_op()
                {
                    // A rollback to a named version is a change of its own.
                    state.in_force.push(row);
                }
            }
            "disable" => state.disabled = Some(row),
            "enable" => state.disabled = None,
            _ => {}
        }
    }
    state
}

/// Which change in force `row` reverses. Automatic rollbacks written before
/// `undoes_ledger_id` existed are matched by their job id, which is the
/// deploy's job id with `:auto-rollback` appended.
fn undone_by(row: &LedgerRecord, in_force: &[&LedgerRecord]) -> Option<usize> {
    match row.undoes_ledger_id {
        Some(id) => in_force.iter().position(|r| r.id == id),
        None if row.action == "auto-rollback" => {
            let deploy_job = row.job_id.strip_suffix(":auto-rollback")?;
            in_force.iter().rposition(|r| r.job_id == deploy_job)
        }
        None => None,
    }
}

/// Rows grouped by identity, groups in order of first appearance, rows in
/// ledger order.
pub fn by_identity(rows: &[LedgerRecord]) -> Vec<(&str, Vec<&LedgerRecord>)> {
    let mut groups: Vec<(&str, Vec<&LedgerRecord>)> = Vec::new();
    for row in rows {
        match groups
            .iter_mut()
            .find(|(identity, _)| *identity == row.identity)
        {
            Some((_, group)) => group.push(row),
            None => groups.push((&row.identity, vec![row])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::RoutineSnapshot;

    fn row(id: i64, action: &str, job: &str, from: Option<&str>, to: Option<&str>) -> LedgerRecord {
        LedgerRecord {
            id,
            applied_at_ms: 0,
            job_id: job.into(),
            rollout_id: format!("r-{job}"),
            plan_id: "p".into(),
            action: action.into(),
            identity: "f(integer)".into(),
            change: "replaced".into(),
            previous: RoutineSnapshot::of_f(from),
            previous_sha256: from.map(crate::sql::sha256_hex),
            new: RoutineSnapshot::of_f(to),
            new_sha256: to.map(crate::sql::sha256_hex),
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

    fn ids(state: &VersionState<'_>) -> Vec<i64> {
        state.in_force.iter().map(|r| r.id).collect()
    }

    #[test]
    fn an_adopted_hand_change_is_a_version_between_the_deploys() {
        let rows = [
            row(1, "deploy", "j1", None, Some("v1")),
            row(2, "adopt", "j2", Some("v1"), Some("by hand")),
            row(3, "deploy", "j3", Some("by hand"), Some("v2")),
            LedgerRecord {
                undoes_ledger_id: Some(3),
                ..row(4, "rollback", "j4", Some("v2"), Some("by hand"))
            },
        ];
        let refs: Vec<&LedgerRecord> = rows.iter().collect();
        // Before the rollback, undoing the deploy brings back the hand change.
        assert_eq!(ids(&version_state(&refs[..3])), [1, 2, 3]);
        // After it, the next rollback undoes the adoption: back to v1.
        let state = version_state(&refs);
        assert_eq!(ids(&state), [1, 2]);
        assert_eq!(
            state
                .latest()
                .and_then(|r| r.previous.definition.as_deref()),
            Some("v1")
        );
    }

    #[test]
    fn rollbacks_walk_back_one_version_at_a_time() {
        let rows = [
            row(1, "deploy", "j1", None, Some("v1")),
            row(2, "deploy", "j2", Some("v1"), Some("v2")),
            row(3, "deploy", "j3", Some("v2"), Some("v3")),
            LedgerRecord {
                undoes_ledger_id: Some(3),
                ..row(4, "rollback", "j4", Some("v3"), Some("v2"))
            },
        ];
        let refs: Vec<&LedgerRecord> = rows.iter().collect();
        let state = version_state(&refs);
        assert_eq!(ids(&state), [1, 2]);
        assert_eq!(state.latest().map(|r| r.id), Some(2));
    }

    #[test]
    fn a_redeploy_of_the_same_version_is_not_a_version() {
        let rows = [
            row(1, "deploy", "j1", None, Some("v1")),
            row(2, "deploy", "j2", Some("v1"), Some("v1")),
        ];
        let refs: Vec<&LedgerRecord> = rows.iter().collect();
        assert_eq!(ids(&version_state(&refs)), [1]);
    }

    #[test]
    fn legacy_auto_rollbacks_pop_their_own_deploy() {
        let rows = [
            row(1, "deploy", "j1", None, Some("v1")),
            row(2, "deploy", "j2", Some("v1"), Some("v2")),
            row(
                3,
                "auto-rollback",
                "j2:auto-rollback",
                Some("v2"),
                Some("v1"),
            ),
        ];
        let refs: Vec<&LedgerRecord> = rows.iter().collect();
        assert_eq!(ids(&version_state(&refs)), [1]);
    }

    #[test]
    fn a_rollback_to_a_named_version_can_itself_be_undone() {
        let rows = [
            row(1, "deploy", "j1", None, Some("v1")),
            row(2, "deploy", "j2", Some("v1"), Some("v2")),
            row(3, "rollback", "j3", Some("v2"), None),
        ];
        let refs: Vec<&LedgerRecord> = rows.iter().collect();
        assert_eq!(ids(&version_state(&refs)), [1, 2, 3]);
    }

    #[test]
    fn enable_ends_the_disable() {
        let rows = [
            row(1, "deploy", "j1", None, Some("v1")),
            row(2, "disable", "j2", Some("v1"), Some("v1")),
        ];
        let refs: Vec<&LedgerRecord> = rows.iter().collect();
        assert_eq!(version_state(&refs).disabled.map(|r| r.id), Some(2));
        let more = [
            rows[0].clone(),
            rows[1].clone(),
            LedgerRecord {
                undoes_ledger_id: Some(2),
                ..row(3, "enable", "j3", Some("v1"), Some("v1"))
            },
        ];
        let refs: Vec<&LedgerRecord> = more.iter().collect();
        let state = version_state(&refs);
        assert!(state.disabled.is_none());
        assert_eq!(ids(&state), [1]);
    }
}
