//! Plans: the immutable, content-addressed bundle a rollout applies. The
//! plan id is the SHA-256 of the routines' canonical encoding, so the same
//! SQL always yields the same plan, and the controller can recompute the id
//! of whatever a client sends (DESIGN §3).

pub mod order;

use pgrollout_shared::proto;
use pgrollout_shared::routine::Routine;

/// Builds the wire plan for these routines, sorted by identity.
pub fn build_plan(mut routines: Vec<Routine>, label: &str, commit_sha: &str) -> proto::Plan {
    routines.sort_by(|a, b| a.identity.cmp(&b.identity));
    let routines: Vec<proto::Routine> = routines.into_iter().map(Into::into).collect();
    proto::Plan {
        plan_id: plan_id(&routines),
        commit_sha: commit_sha.to_owned(),
        label: label.to_owned(),
        routines,
    }
}

/// The plan id lives in `pgrollout_shared::plan_id`, one implementation for
/// the controller and the agents that verify signed approvals (issue 19).
pub use pgrollout_shared::plan_id::plan_id;

/// Routines in deploy order, with the dependencies between them as
/// `(dependent, dependency)` indices into the returned order, and why each
/// exists. The same content always gives the same order, whatever order the
/// routines came in.
pub struct DeployOrder {
    pub routines: Vec<Routine>,
    pub dependencies: Vec<(usize, usize)>,
    /// For display: "dependent needs dependency (reason)".
    pub reasons: Vec<(usize, usize, self::order::DependencyReason)>,
    /// Declared dependencies that name no routine of this plan (they may
    /// already exist in the database).
    pub unresolved: Vec<(String, String)>,
    /// Routines whose bodies could not be read for calls, and why.
    pub not_analysed: Vec<(String, String)>,
}

impl DeployOrder {
    /// The order as the operator sees it: every routine with what it waits
    /// for and why, and the notes. Sent with a batch's `RolloutStarted`, so
    /// the order shown is the order the agent applies.
    pub fn view(&self) -> proto::DeployOrderView {
        let mut routines: Vec<proto::OrderedRoutine> = self
            .routines
            .iter()
            .map(|routine| proto::OrderedRoutine {
                identity: routine.identity.to_string(),
                after: Vec::new(),
            })
            .collect();
        for &(dependent, dependency, reason) in &self.reasons {
            let identity = routines[dependency].identity.clone();
            routines[dependent].after.push(proto::OrderDependency {
                identity,
                reason: reason.to_string(),
            });
        }
        let not_analysed = self.not_analysed.iter().map(|(routine, why)| {
            format!("the calls in {routine} were not analysed ({why}); declare its dependencies in its sidecar")
        });
        let unresolved = self.unresolved.iter().map(|(routine, name)| {
            format!("{routine} declares a dependency on {name}, which is not in this batch (it must already exist)")
        });
        proto::DeployOrderView {
            routines,
            notes: not_analysed.chain(unresolved).collect(),
        }
    }
}

pub fn deploy_order(routines: Vec<Routine>) -> Result<DeployOrder, self::order::OrderError> {
    let declared: Vec<Vec<String>> = routines.iter().map(|r| r.depends_on.clone()).collect();
    let order = self::order::order_routines(&routines, &declared)?;
    let mut position = vec![0; routines.len()];
    for (new, &old) in order.order.iter().enumerate() {
        position[old] = new;
    }
    // A weak dependency given up to break a cycle points forward; what
    // the agent is told (and the operator shown) is the order it follows.
    let kept: Vec<_> = order
        .dependencies
        .iter()
        .filter(|d| position[d.to] < position[d.from])
        .collect();
    let mut dependencies: Vec<(usize, usize)> = kept
        .iter()
        .map(|d| (position[d.from], position[d.to]))
        .collect();
    dependencies.sort_unstable();
    dependencies.dedup();
    let reasons = kept
        .iter()
        .map(|d| (position[d.from], position[d.to], d.reason))
        .collect();
    let unresolved = order
        .unresolved_declared
        .iter()
        .map(|(index, name)| (routines[*index].identity.to_string(), name.clone()))
        .collect();
    let not_analysed = order
        .not_analysed
        .iter()
        .map(|(index, why)| (routines[*index].identity.to_string(), why.clone()))
        .collect();
    // Moved into their order, not copied (`order.order` is a permutation).
    let mut slots: Vec<Option<Routine>> = routines.into_iter().map(Some).collect();
    let ordered: Vec<Routine> = order
        .order
        .iter()
        .filter_map(|&i| slots.get_mut(i).and_then(Option::take))
        .collect();
    debug_assert_eq!(ordered.len(), slots.len(), "the order is a permutation");
    Ok(DeployOrder {
        routines: ordered,
        dependencies,
        reasons,
        unresolved,
        not_analysed,
    })
}

/// The project's git commit (with `+dirty` when procedures/ has local
/// changes), or `none` outside a git repository.
pub fn commit_of(project: &std::path::Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(project)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(sha) if !sha.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--", "."]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{sha}+dirty")
            } else {
                sha
            }
        }
        _ => "none".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrollout_shared::routine::{RoutineIdentity, RoutineKind};

    fn routine(name: &str, body: &str) -> Routine {
        Routine {
            identity: RoutineIdentity {
                schema: "public".into(),
                name: name.into(),
                arg_types: vec![],
            },
            kind: RoutineKind::Function,
            create_sql: format!("CREATE FUNCTION {name}() RETURNS int LANGUAGE sql AS '{body}'"),
            grants: vec![],
            smoke_tests: vec![],
            source_path: format!("procedures/{name}.sql"),
            depends_on: vec![],
            perf_probe: None,
            pgtap: None,
            source_line: 0,
            search_path: vec![],
            retire: None,
            companion_sql: Vec::new(),
        }
    }

    #[test]
    fn same_content_same_plan_in_any_order() {
        let a = build_plan(
            vec![routine("a", "select 1"), routine("b", "select 2")],
            "x",
            "c1",
        );
        let b = build_plan(
            vec![routine("b", "select 2"), routine("a", "select 1")],
            "y",
            "c2",
        );
        assert_eq!(a.plan_id, b.plan_id);
        let c = build_plan(
            vec![routine("a", "select 1"), routine("b", "select 3")],
            "x",
            "c1",
        );
        assert_ne!(a.plan_id, c.plan_id);
        assert_eq!(plan_id(&a.routines), a.plan_id);
    }

    #[test]
    fn the_start_line_is_metadata_and_a_probe_is_content() {
        let base = build_plan(vec![routine("a", "select 1")], "x", "c");
        let mut moved = routine("a", "select 1");
        moved.source_line = 12;
        assert_eq!(build_plan(vec![moved], "x", "c").plan_id, base.plan_id);
        let mut probed = routine("a", "select 1");
        probed.perf_probe = Some(pgrollout_shared::routine::PerfProbe {
            call_sql: "SELECT a()".into(),
            runs: 7,
        });
        assert_ne!(build_plan(vec![probed], "x", "c").plan_id, base.plan_id);
    }
}
