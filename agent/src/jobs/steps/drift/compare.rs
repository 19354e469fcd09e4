//! What counts as drift (issue 20), judged from one scan: the ledger's last
//! recorded state of each routine against the catalog's. Pure, so every
//! rule is unit-tested without a database.
//!
//! - **changed**: it exists under its identity but its definition (the
//!   catalog's rendering, so `SECURITY DEFINER` and every `SET` such as
//!   `search_path` are part of it), owner, ACL items (as a set) or comment
//!   differ from what the ledger recorded;
//! - **dropped**: the ledger expects it and no routine has its identity;
//! - **renamed**: a dropped one whose definition, name line aside, is the
//!   definition of a routine the ledger never saw (`ALTER FUNCTION …
//!   RENAME TO` / `SET SCHEMA` keep the body and change only that line);
//! - **unmanaged**: a routine of a managed schema (a schema holding a routine
//!   the ledger knows) that pgrollout never deployed — or that the ledger
//!   says it retired or rolled back out of existence.

use pgrollout_shared::proto::DriftFinding;

use super::diff::{acl_items, unified};
use crate::sql::{RoutineState, ScannedRoutine};

/// The findings for the routines `names` selects (all when empty), and how
/// many routines the ledger expects among them.
pub fn findings(routines: &[ScannedRoutine], names: &[String]) -> (Vec<DriftFinding>, u32) {
    let selected: Vec<&ScannedRoutine> = routines
        .iter()
        .filter(|r| names.is_empty() || names.iter().any(|n| matches_name(r, n)))
        .collect();
    let checked = selected
        .iter()
        .filter(|r| r.ledgered && r.expected.is_some())
        .count();
    let mut found = Vec::new();
    let mut dropped: Vec<(&ScannedRoutine, &RoutineState)> = Vec::new();
    // Routines the ledger does not expect but that exist: rename targets first.
    let mut strangers: Vec<&ScannedRoutine> = Vec::new();
    for routine in &selected {
        match (&routine.expected, &routine.live) {
            (Some(expected), Some(live)) => {
                if let Some(finding) = changed(&routine.identity, expected, live) {
                    found.push(finding);
                }
            }
            (Some(expected), None) => dropped.push((routine, expected)),
            (None, Some(_)) => strangers.push(routine),
            (None, None) => {}
        }
    }
    // A rename's new identity may be outside the name filter: look for it
    // among every routine the ledger does not expect.
    let mut renamed_to: Vec<&str> = Vec::new();
    for (routine, expected) in dropped {
        let target = routines.iter().find(|other| {
            other.expected.is_none()
                && !renamed_to.contains(&other.identity.as_str())
                && other
                    .live
                    .as_ref()
                    .is_some_and(|live| same_body(expected, live))
        });
        let mut finding = DriftFinding {
            identity: routine.identity.clone(),
            kind: "dropped".into(),
            ..Default::default()
        };
        if let Some(target) = target {
            renamed_to.push(&target.identity);
            finding.kind = "renamed".into();
            finding.renamed_to = target.identity.clone();
            if let Some(live) = &target.live {
                let metadata = changed(&routine.identity, expected, live);
                finding.details = metadata.map(|m| m.details).unwrap_or_default();
            }
        }
        found.push(finding);
    }
    for routine in strangers {
        if renamed_to.contains(&routine.identity.as_str()) {
            continue;
        }
        let mut finding = DriftFinding {
            identity: routine.identity.clone(),
            kind: "unmanaged".into(),
            ..Default::default()
        };
        if routine.ledgered {
            finding.details.push(
                "the ledger's latest row says it does not exist (retired or rolled back); it was created outside pgrollout".into(),
            );
        }
        found.push(finding);
    }
    (found, u32::try_from(checked).unwrap_or(u32::MAX))
}

/// A `changed` finding when anything the ledger recorded differs.
pub fn changed(
    identity: &str,
    expected: &RoutineState,
    live: &RoutineState,
) -> Option<DriftFinding> {
    let mut finding = DriftFinding {
        identity: identity.to_owned(),
        kind: "changed".into(),
        ..Default::default()
    };
    let recorded = lines(expected.definition.as_deref());
    let now = lines(live.definition.as_deref());
    finding.definition_diff = unified(&recorded, &now);
    if !finding.definition_diff.is_empty() {
        finding.aspects = definition_aspects(&recorded, &now);
    }
    if expected.owner != live.owner {
        finding.aspects.push("owner".into());
        finding.details.push(format!(
            "owner: {} -> {}",
            shown(expected.owner.as_deref()),
            shown(live.owner.as_deref())
        ));
    }
    let (acl_recorded, acl_now) = (
        acl_items(expected.acl.as_deref()),
        acl_items(live.acl.as_deref()),
    );
    if acl_recorded != acl_now {
        finding.aspects.push("acl".into());
        let recorded: Vec<&str> = acl_recorded.iter().map(String::as_str).collect();
        let now: Vec<&str> = acl_now.iter().map(String::as_str).collect();
        finding.acl_diff = unified(&recorded, &now);
    }
    if expected.comment != live.comment {
        finding.aspects.push("comment".into());
        finding.details.push(format!(
            "comment: {} -> {}",
            shown(expected.comment.as_deref()),
            shown(live.comment.as_deref())
        ));
    }
    (!finding.aspects.is_empty()).then_some(finding)
}

/// Which parts of the rendering differ: pg_get_functiondef writes
/// ` SECURITY DEFINER` and each ` SET name …` on lines of their own.
fn definition_aspects(recorded: &[&str], now: &[&str]) -> Vec<String> {
    let mut aspects: Vec<String> = Vec::new();
    let differing = recorded
        .iter()
        .filter(|line| !now.contains(line))
        .chain(now.iter().filter(|line| !recorded.contains(line)));
    for line in differing {
        let aspect = if line.starts_with(" SECURITY DEFINER") {
            "security_definer"
        } else if line.starts_with(" SET ") {
            "config"
        } else {
            "definition"
        };
        if !aspects.iter().any(|a| a == aspect) {
            aspects.push(aspect.to_owned());
        }
    }
    if aspects.is_empty() {
        // Same lines in another order (or repeated): still a change.
        aspects.push("definition".into());
    }
    aspects.sort_by_key(|a| {
        ["definition", "security_definer", "config"]
            .iter()
            .position(|k| k == a)
    });
    aspects
}

/// Both definitions alike but for their first line, the one naming the routine.
fn same_body(expected: &RoutineState, live: &RoutineState) -> bool {
    let body = |definition: Option<&str>| {
        definition
            .and_then(|d| d.split_once('\n'))
            .map(|(_, rest)| rest.to_owned())
    };
    let recorded = body(expected.definition.as_deref());
    recorded.is_some() && recorded == body(live.definition.as_deref())
}

fn lines(text: Option<&str>) -> Vec<&str> {
    text.map(|t| t.lines().collect()).unwrap_or_default()
}

fn shown(value: Option<&str>) -> String {
    value.map_or_else(|| "(none)".to_owned(), |v| format!("{v:?}"))
}

/// `name` matches the routine's bare name, `schema.name` its schema too.
fn matches_name(routine: &ScannedRoutine, wanted: &str) -> bool {
    match wanted.split_once('.') {
        Some((schema, name)) => routine.schema == schema && routine.name == name,
        None => routine.name == wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(definition: &str, acl: Option<&str>) -> RoutineState {
        RoutineState {
            definition: Some(definition.to_owned()),
            owner: Some("app".into()),
            acl: acl.map(str::to_owned),
            comment: None,
        }
    }

    fn scanned(
        identity: &str,
        expected: Option<RoutineState>,
        live: Option<RoutineState>,
    ) -> ScannedRoutine {
        let name = identity.split('(').next().unwrap_or_default().to_owned();
        ScannedRoutine {
            ledgered: expected.is_some(),
            identity: identity.to_owned(),
            schema: "public".into(),
            name,
            expected,
            live,
        }
    }

    const F: &str = "CREATE OR REPLACE FUNCTION public.f()\n RETURNS integer\n LANGUAGE sql\nAS $function$select 1$function$\n";

    #[test]
    fn identical_state_is_no_drift() {
        let routines = [scanned("f()", Some(state(F, None)), Some(state(F, None)))];
        assert_eq!(findings(&routines, &[]), (Vec::new(), 1));
    }

    #[test]
    fn acl_order_is_not_drift_but_a_grant_is() {
        let recorded = state(F, Some("{app=X/app,=X/app}"));
        let reordered = state(F, Some("{=X/app,app=X/app}"));
        assert!(changed("f()", &recorded, &reordered).is_none());
        let granted = state(F, Some("{=X/app,app=X/app,bob=X/app}"));
        let finding = changed("f()", &recorded, &granted).expect("drift");
        assert_eq!(finding.aspects, ["acl"]);
        assert!(
            finding.acl_diff.contains("+bob=X/app"),
            "{}",
            finding.acl_diff
        );
    }

    #[test]
    fn search_path_and_definer_are_their_own_aspects() {
        let altered = F.replace(
            " LANGUAGE sql\n",
            " LANGUAGE sql\n SECURITY DEFINER\n SET search_path TO 'pg_temp'\n",
        );
        let finding = changed("f()", &state(F, None), &state(&altered, None)).expect("drift");
        assert_eq!(finding.aspects, ["security_definer", "config"]);
    }

    #[test]
    fn a_dropped_routine_whose_body_reappears_is_renamed() {
        let moved = F.replace("public.f()", "public.g()");
        let routines = [
            scanned("f()", Some(state(F, None)), None),
            scanned("g()", None, Some(state(&moved, None))),
            scanned(
                "h()",
                None,
                Some(state(&F.replace("select 1", "select 2"), None)),
            ),
        ];
        let (found, checked) = findings(&routines, &[]);
        assert_eq!(checked, 1);
        let kinds: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|f| (f.identity.as_str(), f.kind.as_str(), f.renamed_to.as_str()))
            .collect();
        assert_eq!(kinds, [("f()", "renamed", "g()"), ("h()", "unmanaged", "")]);
    }

    #[test]
    fn names_limit_the_report() {
        let routines = [
            scanned("f()", Some(state(F, None)), None),
            scanned("g()", Some(state(F, None)), None),
        ];
        let (found, checked) = findings(&routines, &["g".into()]);
        assert_eq!(
            (found.len(), found[0].identity.as_str(), checked),
            (1, "g()", 1)
        );
    }
}
