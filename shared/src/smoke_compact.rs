//! The compact wire form of existence-only smoke reports (issue 15 item 9).
//!
//! A routine that declares no smoke test still gets a report per phase: it
//! exists in its schema. In a batch of a thousand such routines those reports
//! are most of the result (about 140 bytes and six strings each, twice), and
//! every byte of it is journaled, fsynced, sent, decoded and escaped. The
//! agent sends the passed ones as a list of identities per phase and schema
//! with their positions; the controller puts them back before anything reads
//! the result. [`compact`] takes out exactly the reports [`expand`] rebuilds
//! byte for byte, so the round trip is the identity on any list.

use std::collections::HashMap;

use crate::proto::{ExistenceOnlyReports, JobResult, SmokeCheck, SmokeReport};

/// The `test` of a routine's report when it declares no smoke test.
pub const EXISTENCE_ONLY_TEST: &str = "(no smoke test declared: existence only)";

/// The `exists` check's detail when `routine` was found in `schema`: the one
/// wording the agent writes and [`expand`] rebuilds.
pub fn existence_detail(routine: &impl std::fmt::Display, schema: &str) -> String {
    format!("{routine} exists in schema {schema}")
}

/// The passed report of a routine without smoke tests, found in `schema`.
pub fn existence_only_report(routine: String, phase: &str, schema: &str) -> SmokeReport {
    let detail = existence_detail(&routine, schema);
    SmokeReport {
        routine,
        test: EXISTENCE_ONLY_TEST.into(),
        phase: phase.into(),
        passed: true,
        checks: vec![SmokeCheck {
            check: "exists".into(),
            passed: true,
            detail,
        }],
        duration_ms: 0,
    }
}

/// The schema of a passed existence-only report, when the report is exactly
/// what [`existence_only_report`] makes of it (and so can be rebuilt).
pub fn existence_only_schema(report: &SmokeReport) -> Option<&str> {
    let [check] = report.checks.as_slice() else {
        return None;
    };
    let plain = report.passed
        && report.test == EXISTENCE_ONLY_TEST
        && report.duration_ms == 0
        && check.check == "exists"
        && check.passed;
    if !plain {
        return None;
    }
    check
        .detail
        .strip_prefix(report.routine.as_str())?
        .strip_prefix(" exists in schema ")
}

/// Moves every passed existence-only report of `result.smoke` into
/// `result.existence_only`, grouped by phase and schema in first-seen order.
pub fn compact(result: &mut JobResult) {
    let mut kept = Vec::with_capacity(result.smoke.len());
    let mut groups: Vec<ExistenceOnlyReports> = Vec::new();
    let mut group_of: HashMap<(String, String), usize> = HashMap::new();
    for (position, report) in std::mem::take(&mut result.smoke).into_iter().enumerate() {
        let Some(schema) = existence_only_schema(&report).map(str::to_owned) else {
            kept.push(report);
            continue;
        };
        let key = (report.phase, schema);
        // Cloned only for a new group: a batch has a few groups and
        // thousands of reports.
        let index = match group_of.get(&key) {
            Some(&index) => index,
            None => {
                groups.push(ExistenceOnlyReports {
                    phase: key.0.clone(),
                    schema: key.1.clone(),
                    ..Default::default()
                });
                group_of.insert(key, groups.len() - 1);
                groups.len() - 1
            }
        };
        let group = &mut groups[index];
        group.routines.push(report.routine);
        // A result holds far fewer than 2^32 reports (its size is bounded).
        group
            .positions
            .push(u32::try_from(position).unwrap_or(u32::MAX));
    }
    result.smoke = kept;
    result.existence_only.extend(groups);
}

/// Puts the reports of `result.existence_only` back into `result.smoke`, each
/// at its position. The result comes from an agent: a group whose lists
/// differ in length, a position used twice or past the end of the full list
/// is refused, and the result is left as it was.
pub fn expand(result: &mut JobResult) -> Result<(), String> {
    if result.existence_only.is_empty() {
        return Ok(());
    }
    let mut placed: Vec<(usize, usize, usize)> = Vec::new();
    for (g, group) in result.existence_only.iter().enumerate() {
        if group.routines.len() != group.positions.len() {
            return Err(format!(
                "{} routine(s) but {} position(s) in a group",
                group.routines.len(),
                group.positions.len()
            ));
        }
        placed.extend(
            group
                .positions
                .iter()
                .enumerate()
                .map(|(i, &position)| (position as usize, g, i)),
        );
    }
    let total = result.smoke.len() + placed.len();
    placed.sort_unstable();
    for pair in placed.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(format!("position {} given twice", pair[0].0));
        }
    }
    if let Some(&(last, _, _)) = placed.last() {
        if last >= total {
            return Err(format!(
                "position {last} is past the end of {total} report(s)"
            ));
        }
    }
    let mut groups = std::mem::take(&mut result.existence_only);
    let mut others = std::mem::take(&mut result.smoke).into_iter();
    let mut smoke = Vec::with_capacity(total);
    for (position, g, i) in placed {
        // Every position is unique and below `total`, so the others fill the
        // gaps before it exactly.
        smoke.extend(others.by_ref().take(position - smoke.len()));
        let group = &mut groups[g];
        let routine = std::mem::take(&mut group.routines[i]);
        smoke.push(existence_only_report(routine, &group.phase, &group.schema));
    }
    smoke.extend(others);
    result.smoke = smoke;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tested(routine: &str, phase: &str, passed: bool) -> SmokeReport {
        SmokeReport {
            routine: routine.into(),
            test: "returns one".into(),
            phase: phase.into(),
            passed,
            checks: vec![
                SmokeCheck {
                    check: "exists".into(),
                    passed: true,
                    detail: format!("{routine} exists in schema lib"),
                },
                SmokeCheck {
                    check: "executes".into(),
                    passed,
                    detail: "1 row".into(),
                },
            ],
            duration_ms: 3,
        }
    }

    fn mixed() -> Vec<SmokeReport> {
        let missing = SmokeReport {
            checks: vec![SmokeCheck {
                check: "exists".into(),
                passed: false,
                detail: "lib.gone() not found in the catalog".into(),
            }],
            passed: false,
            ..existence_only_report("lib.gone()".into(), "in-transaction", "lib")
        };
        vec![
            existence_only_report("lib.a(integer)".into(), "in-transaction", "lib"),
            tested("lib.b(text)", "in-transaction", true),
            existence_only_report("util.c()".into(), "in-transaction", "util"),
            missing,
            existence_only_report(
                "\"odd schema\".\"d e\"()".into(),
                "in-transaction",
                "odd schema",
            ),
            existence_only_report("lib.a(integer)".into(), "post-commit", "lib"),
            tested("lib.b(text)", "post-commit", false),
            existence_only_report("util.c()".into(), "post-commit", "util"),
        ]
    }

    #[test]
    fn compact_then_expand_gives_back_the_same_list() {
        let reports = mixed();
        let mut result = JobResult {
            smoke: reports.clone(),
            ..Default::default()
        };
        compact(&mut result);
        assert_eq!(
            result.smoke.len(),
            3,
            "the tested and the failed stay whole"
        );
        assert_eq!(
            result.existence_only.len(),
            5,
            "one group per phase and schema"
        );
        expand(&mut result).expect("a sound compact form");
        assert_eq!(result.smoke, reports);
        assert!(result.existence_only.is_empty());
    }

    #[test]
    fn a_report_that_differs_in_any_field_is_kept_whole() {
        let base = existence_only_report("lib.a()".into(), "post-commit", "lib");
        let variants = [
            SmokeReport {
                duration_ms: 1,
                ..base.clone()
            },
            SmokeReport {
                test: "named".into(),
                ..base.clone()
            },
            SmokeReport {
                routine: "lib.b()".into(),
                ..base.clone()
            },
            SmokeReport {
                checks: vec![base.checks[0].clone(), base.checks[0].clone()],
                ..base.clone()
            },
        ];
        for variant in variants {
            let mut result = JobResult {
                smoke: vec![variant.clone()],
                ..Default::default()
            };
            compact(&mut result);
            assert_eq!(result.smoke, vec![variant]);
            assert!(result.existence_only.is_empty());
        }
    }

    #[test]
    fn a_hostile_compact_form_is_refused_and_the_result_left_alone() {
        let group = |routines: &[&str], positions: &[u32]| ExistenceOnlyReports {
            phase: "post-commit".into(),
            schema: "lib".into(),
            routines: routines.iter().map(|r| r.to_string()).collect(),
            positions: positions.to_vec(),
        };
        let cases = [
            (vec![group(&["lib.a()"], &[])], "position(s)"),
            (vec![group(&["lib.a()", "lib.b()"], &[0, 0])], "twice"),
            (
                vec![group(&["lib.a()"], &[0]), group(&["lib.b()"], &[0])],
                "twice",
            ),
            (vec![group(&["lib.a()"], &[2])], "past the end"),
            (vec![group(&["lib.a()"], &[u32::MAX])], "past the end"),
        ];
        for (groups, why) in cases {
            let mut result = JobResult {
                smoke: vec![tested("lib.t()", "post-commit", true)],
                existence_only: groups.clone(),
                ..Default::default()
            };
            let error = expand(&mut result).expect_err(why);
            assert!(error.contains(why), "{error}");
            assert_eq!(result.existence_only, groups);
            assert_eq!(result.smoke.len(), 1);
        }
    }
}
