//! A routine a plan retires (`pgrollout retire`, issue 15): the plan names
//! it and says why; there is nothing to create. The agent backs up the live
//! definition, drops it in the rollout's transaction and records a
//! `retired` ledger row, which a rollback reverses like any other change.

use crate::proto;
use crate::routine::InvalidField;

/// Longest reason accepted.
pub const MAX_REASON_BYTES: usize = 2000;

/// Why a routine is retired (recorded in the ledger's note and the audit log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retirement {
    pub reason: String,
}

impl TryFrom<proto::Retirement> for Retirement {
    type Error = InvalidField;

    fn try_from(wire: proto::Retirement) -> Result<Self, Self::Error> {
        let reason = wire.reason.trim();
        if reason.is_empty() {
            return Err(InvalidField::new(
                "retire.reason",
                "a retirement needs a reason",
            ));
        }
        if reason.len() > MAX_REASON_BYTES || reason.contains('\0') {
            return Err(InvalidField::new(
                "retire.reason",
                format!("must be at most {MAX_REASON_BYTES} bytes of text"),
            ));
        }
        Ok(Retirement {
            reason: reason.to_owned(),
        })
    }
}

impl From<Retirement> for proto::Retirement {
    fn from(retirement: Retirement) -> Self {
        proto::Retirement {
            reason: retirement.reason,
        }
    }
}

/// A retired routine carries nothing to run: no statement, grants, smoke
/// tests, probe or pgTAP script (they would describe a routine that is
/// about to be gone).
pub(crate) fn check_nothing_to_run(wire: &proto::Routine) -> Result<(), InvalidField> {
    let carried = [
        ("create_sql", !wire.create_sql.is_empty()),
        ("grants", !wire.grants.is_empty()),
        ("smoke_tests", !wire.smoke_tests.is_empty()),
        ("perf_probe", wire.perf_probe.is_some()),
        ("pgtap", wire.pgtap.is_some()),
    ];
    match carried.iter().find(|(_, set)| *set) {
        Some((field, _)) => Err(InvalidField::new(
            *field,
            "must be empty for a routine the plan retires",
        )),
        None => Ok(()),
    }
}

/// Whether a plan retires routines: such a plan retires only (it is built by
/// `pgrollout retire`), and the agent applies it on the retire path.
pub fn plan_retires(routines: &[crate::routine::Routine]) -> bool {
    routines.iter().any(|r| r.retire.is_some())
}

/// Refuses a plan that mixes retirements with routines to create.
pub fn check_plan(routines: &[crate::routine::Routine]) -> Result<(), InvalidField> {
    let retiring = routines.iter().filter(|r| r.retire.is_some()).count();
    if retiring > 0 && retiring < routines.len() {
        return Err(InvalidField::new(
            "routines",
            "a plan either retires routines or creates them, never both",
        ));
    }
    Ok(())
}

/// For the audit log and reports: what a plan retires and why, e.g.
/// `retires public.ov(integer) (reason: replaced by ov2)`; `None` for a plan
/// that retires nothing.
pub fn describe_plan(routines: &[crate::routine::Routine]) -> Option<String> {
    let each: Vec<String> = routines
        .iter()
        .filter_map(|r| {
            let retire = r.retire.as_ref()?;
            Some(format!("{} (reason: {})", r.identity, retire.reason))
        })
        .collect();
    (!each.is_empty()).then(|| format!("retires {}", each.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routine::Routine;

    fn retired() -> proto::Routine {
        proto::Routine {
            schema: "public".into(),
            name: "ov".into(),
            arg_types: vec!["integer".into()],
            retire: Some(proto::Retirement {
                reason: "replaced by ov2".into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_retired_routine_round_trips_without_a_statement() {
        let routine = Routine::try_from(retired()).expect("valid");
        assert_eq!(
            routine.retire.as_ref().map(|r| r.reason.as_str()),
            Some("replaced by ov2")
        );
        assert_eq!(proto::Routine::from(routine), retired());
    }

    #[test]
    fn a_retirement_without_reason_or_with_a_statement_is_refused() {
        let mut no_reason = retired();
        no_reason.retire = Some(proto::Retirement { reason: " ".into() });
        let error = Routine::try_from(no_reason).expect_err("no reason");
        assert_eq!(error.field, "retire.reason");
        let mut with_sql = retired();
        with_sql.create_sql = "CREATE FUNCTION public.ov(integer) …".into();
        let error = Routine::try_from(with_sql).expect_err("statement");
        assert_eq!(error.field, "create_sql");
    }
}
