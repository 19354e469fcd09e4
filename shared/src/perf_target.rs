//! What a performance probe times as the OLD definition when an environment
//! is promoted from the one it runs in (issue 23): the version each target
//! environment (PROD) runs now, so the target's performance gate compares
//! the new median with what it would replace, never with a version the
//! source environment (QA) happened to run before.

use crate::proto;
use crate::routine::InvalidField;

/// An environment promoted from the probe's, and the versions it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerfTarget {
    pub environment: String,
    /// Its performance gate's limit, in percent of the old median.
    pub threshold_percent: u32,
    /// The routines of the plan it runs a version of; any other routine of
    /// the plan is new there.
    pub baselines: Vec<PerfBaseline>,
}

/// The version of one routine a target runs now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerfBaseline {
    /// `schema.name(argument types)`, as the plan writes it.
    pub routine: String,
    pub definition_sha256: String,
    /// `None`: the controller holds no statement for that version, so it
    /// cannot be timed (the probe says there is no comparable baseline).
    pub create_sql: Option<String>,
    pub source: String,
}

impl PerfTarget {
    /// The version `routine` runs here; `None` when it is new here.
    pub fn baseline_of(&self, routine: &str) -> Option<&PerfBaseline> {
        self.baselines.iter().find(|b| b.routine == routine)
    }
}

/// Validates the targets an offer carries.
pub fn targets_from_wire(targets: Vec<proto::PerfTarget>) -> Result<Vec<PerfTarget>, InvalidField> {
    targets
        .into_iter()
        .enumerate()
        .map(|(index, target)| {
            let invalid = |field: &str, reason: &str| InvalidField {
                field: format!("perf_targets[{index}].{field}"),
                reason: reason.into(),
            };
            if target.environment.trim().is_empty() || target.environment.len() > 256 {
                return Err(invalid("environment", "must be 1 to 256 bytes"));
            }
            if target.threshold_percent == 0 {
                return Err(invalid("threshold_percent", "must be at least 1"));
            }
            let baselines = target
                .baselines
                .into_iter()
                .map(|b| {
                    if b.routine.trim().is_empty() {
                        return Err(invalid("baselines.routine", "must not be empty"));
                    }
                    Ok(PerfBaseline {
                        routine: b.routine,
                        definition_sha256: b.definition_sha256,
                        create_sql: (!b.create_sql.trim().is_empty()).then_some(b.create_sql),
                        source: b.source,
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok(PerfTarget {
                environment: target.environment,
                threshold_percent: target.threshold_percent,
                baselines,
            })
        })
        .collect()
}

impl From<PerfTarget> for proto::PerfTarget {
    fn from(target: PerfTarget) -> Self {
        proto::PerfTarget {
            environment: target.environment,
            threshold_percent: target.threshold_percent,
            baselines: target
                .baselines
                .into_iter()
                .map(|b| proto::PerfBaseline {
                    routine: b.routine,
                    definition_sha256: b.definition_sha256,
                    create_sql: b.create_sql.unwrap_or_default(),
                    source: b.source,
                })
                .collect(),
        }
    }
}
