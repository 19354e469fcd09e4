//! Unchanged means untouched (issue 15): a routine whose live state is exactly
//! what this same plan source produced at its last deploy is not created
//! again, needs no backup entry and gets an `unchanged` ledger row.
//!
//! The comparison is of catalog states, never of source text against the
//! catalog: the ledger's latest row for the routine records the SHA-256 of
//! the source that was deployed (the statement and its grants) and the state
//! that deploy left (`pg_get_functiondef`, owner, ACL, comment — SET options
//! such as search_path are part of the definition). When both the source and
//! the live state still match, re-running the CREATE could only reproduce
//! what is there. Anything else — another source, a rollback since, a change
//! by hand, a routine the ledger never saw — is applied as before.

use pgrollout_shared::routine::Routine;

use crate::jobs::context::{JobContext, JobFailure};
use crate::sql::{self, sha256_hex, LatestRecorded, RoutineSnapshot, TargetConnection};

/// SHA-256 of what the plan asks for one routine: its statement, its
/// companion statements and grants, in order. Everything the agent runs for a routine belongs in here.
pub fn source_sha256(routine: &Routine) -> String {
    let grants: Vec<String> = routine
        .grants
        .iter()
        .map(|grant| format!("{} {}", grant.privilege.keyword(), grant.grantee.to_sql()))
        .collect();
    // The search path the CREATE runs with shapes the routine too (issue 15):
    // the same text under another path is another source.
    let mut create = format!(
        "{}\n-- search_path {}",
        routine.create_sql,
        routine.search_path.join(", ")
    );
    // The companion statements (REVOKE, COMMENT, OWNER TO next to the
    // CREATE) are source too: editing one redeploys. Only when there are
    // any, so the digest of every routine without them stays as it was.
    for statement in &routine.companion_sql {
        create.push_str("\n-- companion ");
        create.push_str(&statement.len().to_string());
        create.push(' ');
        create.push_str(statement);
    }
    source_text_sha256(&create, &grants)
}

fn source_text_sha256(create_sql: &str, grants: &[String]) -> String {
    let mut text = create_sql.to_owned();
    for grant in grants {
        text.push_str("\n-- grant ");
        text.push_str(grant);
    }
    sha256_hex(&text)
}

/// Whether the live state is the one the ledger says the source with this
/// hash produced.
pub fn is_untouched(
    source: &str,
    live: &RoutineSnapshot,
    recorded: Option<&LatestRecorded>,
) -> bool {
    let Some(recorded) = recorded else {
        return false;
    };
    live.existed
        && recorded.source_sha256.as_deref() == Some(source)
        && recorded.definition_sha256 == live.definition_sha256()
        && recorded.owner == live.owner
        && recorded.acl == live.acl
        && recorded.comment == live.comment
}

/// For each routine (with its live snapshot): whether it can be left
/// untouched. One ledger query for all of them.
pub async fn untouched(
    ctx: &JobContext,
    conn: &TargetConnection,
    routines: &[Routine],
    live: &[RoutineSnapshot],
) -> Result<Vec<bool>, JobFailure> {
    let identities: Vec<Option<String>> = live.iter().map(|s| s.identity.clone()).collect();
    let recorded = sql::latest_recorded(&conn.client, &ctx.target.ledger_schema, &identities)
        .await
        .map_err(|e| JobFailure::database("cannot read the ledger", e))?;
    // A digest only where the ledger has something to compare it with: on
    // a first deploy nothing exists, and a thousand digests were ~1 ms of
    // the deploy's serial path (issue 15 item 9).
    Ok(routines
        .iter()
        .zip(live)
        .zip(&recorded)
        .map(|((routine, live), recorded)| {
            recorded
                .as_ref()
                .is_some_and(|recorded| is_untouched(&source_sha256(routine), live, Some(recorded)))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(definition: &str) -> RoutineSnapshot {
        RoutineSnapshot {
            requested: "f(integer)".into(),
            existed: true,
            identity: Some("f(integer)".into()),
            schema: Some("public".into()),
            definition: Some(definition.into()),
            owner: Some("app".into()),
            acl: Some("{app=X/app}".into()),
            comment: None,
        }
    }

    fn recorded(source: &str, state: &RoutineSnapshot) -> LatestRecorded {
        LatestRecorded {
            source_sha256: Some(source.into()),
            definition_sha256: state.definition_sha256(),
            owner: state.owner.clone(),
            acl: state.acl.clone(),
            comment: state.comment.clone(),
        }
    }

    #[test]
    fn only_the_same_source_over_the_state_it_left_is_untouched() {
        let grants = ["EXECUTE \"app\"".to_owned()];
        let f = source_text_sha256("CREATE OR REPLACE FUNCTION f(x integer) ...", &grants);
        let state = live("CREATE OR REPLACE FUNCTION public.f(x integer) ... v1");
        let ledger = recorded(&f, &state);
        assert!(is_untouched(&f, &state, Some(&ledger)));
        // Another source, even one that would give the same definition.
        let other = source_text_sha256("CREATE OR REPLACE FUNCTION f(x integer)  ...", &grants);
        assert!(!is_untouched(&other, &state, Some(&ledger)));
        // A grant more is another source too.
        let more = [grants[0].clone(), "EXECUTE PUBLIC".to_owned()];
        let granted = source_text_sha256("CREATE OR REPLACE FUNCTION f(x integer) ...", &more);
        assert!(!is_untouched(&granted, &state, Some(&ledger)));
        // The catalog changed since (by hand, or a rollback): applied again.
        let edited = RoutineSnapshot {
            comment: Some("by hand".into()),
            ..state.clone()
        };
        assert!(!is_untouched(&f, &edited, Some(&ledger)));
        let replaced = live("CREATE OR REPLACE FUNCTION public.f(x integer) ... v2");
        assert!(!is_untouched(&f, &replaced, Some(&ledger)));
        // Never deployed here, or gone.
        assert!(!is_untouched(&f, &state, None));
        let gone = RoutineSnapshot {
            existed: false,
            ..state
        };
        assert!(!is_untouched(&f, &gone, Some(&ledger)));
    }

    fn routine(companion_sql: Vec<String>) -> Routine {
        Routine {
            create_sql: "CREATE OR REPLACE FUNCTION app.tbl_count(t regclass) ...".into(),
            companion_sql,
            ..super::super::test_routine::routine("tbl_count", &["regclass"])
        }
    }

    #[test]
    fn companion_statements_are_source_and_leave_other_digests_as_they_were() {
        // Without companions: exactly the digest deployed routines recorded
        // before companions existed, so they stay "unchanged".
        let plain = routine(Vec::new());
        let before_companions = source_text_sha256(
            "CREATE OR REPLACE FUNCTION app.tbl_count(t regclass) ...\n-- search_path app",
            &[],
        );
        assert_eq!(source_sha256(&plain), before_companions);
        let revoke = "REVOKE ALL ON FUNCTION app.tbl_count(regclass) FROM PUBLIC".to_owned();
        let comment =
            |text: &str| format!("COMMENT ON FUNCTION app.tbl_count(regclass) IS '{text}'");
        let with = routine(vec![revoke.clone(), comment("rows")]);
        assert_ne!(source_sha256(&with), before_companions);
        // Editing only the COMMENT is another source: it redeploys.
        let edited = routine(vec![revoke.clone(), comment("rows of a table")]);
        assert_ne!(source_sha256(&edited), source_sha256(&with));
        // Order matters (a GRANT after a REVOKE ALL is not the reverse).
        let reordered = routine(vec![comment("rows"), revoke]);
        assert_ne!(source_sha256(&reordered), source_sha256(&with));
    }
}
