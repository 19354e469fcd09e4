//! Putting routines back exactly as they were: definition, owner, ACL and
//! comment, compared byte for byte afterwards. Used by every path that
//! restores (rollback, the automatic rollback after a failed post-commit
//! smoke test, enable).
//!
//! The ACL is rebuilt rather than patched, because its text is ordered: every
//! grantee it names now is revoked (CASCADE, so grants made by grantees go
//! too), then each aclitem of the wanted ACL is granted again in its original
//! order, with its grant option, *as its original grantor* (`SET LOCAL ROLE`)
//! when that grantor is not the one a plain GRANT would record. When this
//! session cannot act as that grantor, the item is granted by whoever a plain
//! GRANT records and the difference is reported: that is the only way the
//! restored ACL can differ. A wanted ACL of NULL (PostgreSQL's implicit
//! default) cannot be produced by GRANT/REVOKE once privileges were changed;
//! the same privileges are written out explicitly and that is reported too.

use pgrollout_shared::routine::set_local_search_path_sql;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::{quote_identifier, sha256_hex, RoutineSnapshot, TargetConnection};

/// Why a restore could not complete. The caller renders the database error
/// with `describe_error`.
#[derive(Debug, thiserror::Error)]
pub enum ExactRestoreError {
    #[error("database error")]
    Database(#[from] tokio_postgres::Error),
    #[error("{lookup} is not in the catalog after its definition was applied")]
    Missing { lookup: String },
    #[error("the ACL grants {privilege}, which routines do not have")]
    Privilege { privilege: String },
}

impl ExactRestoreError {
    /// One line for an operator, the database's own words included.
    pub fn describe(&self) -> String {
        match self {
            ExactRestoreError::Database(error) => super::describe_error(error, None),
            other => other.to_string(),
        }
    }

    /// The server's SQLSTATE, when the database refused.
    pub fn sql_state(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            ExactRestoreError::Database(error) => error.code(),
            ExactRestoreError::Missing { .. } | ExactRestoreError::Privilege { .. } => None,
        }
    }
}

/// Who this session is: decides which grantor a plain GRANT records.
#[derive(Clone, Debug)]
pub struct Session {
    pub user: String,
    pub superuser: bool,
}

pub async fn session(client: &Client) -> Result<Session, tokio_postgres::Error> {
    let row = client
        .query_typed_one(
            "SELECT current_user::text, coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false)",
            &[],
        )
        .await?;
    Ok(Session {
        user: row.get(0),
        superuser: row.get(1),
    })
}

/// One aclitem of a wanted ACL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclItem {
    /// `None`: PUBLIC.
    pub grantee: Option<String>,
    pub grantor: String,
    pub grantable: bool,
    pub may_act_as_grantor: bool,
}

/// The aclitems of each wanted state, in order (empty for a routine that is
/// to be absent). Run before BEGIN: a role that no longer exists is reported
/// before anything changes.
pub async fn wanted_acls(
    conn: &TargetConnection,
    wanted: &[&RoutineSnapshot],
) -> Result<Vec<Vec<AclItem>>, ExactRestoreError> {
    let acls: Vec<Option<String>> = wanted.iter().map(|w| w.acl.clone()).collect();
    let owners: Vec<Option<String>> = wanted
        .iter()
        .map(|w| w.definition.as_ref().and(w.owner.clone()))
        .collect();
    let set_role = conn.version.set_role_privilege();
    let rows = conn
        .client
        .query_typed(
            include_str!("acl_explode.sql"),
            &[
                (&acls, Type::TEXT_ARRAY),
                (&owners, Type::TEXT_ARRAY),
                (&set_role, Type::TEXT),
            ],
        )
        .await?;
    let mut items = vec![Vec::new(); wanted.len()];
    for row in rows {
        let privilege: String = row.get("privilege_type");
        if privilege != "EXECUTE" {
            return Err(ExactRestoreError::Privilege { privilege });
        }
        let position: i64 = row.get("position");
        let Some(slot) = usize::try_from(position - 1)
            .ok()
            .and_then(|i| items.get_mut(i))
        else {
            continue;
        };
        slot.push(AclItem {
            grantee: row.get("grantee"),
            grantor: row.get("grantor"),
            grantable: row.get("is_grantable"),
            may_act_as_grantor: row.get("may_act_as_grantor"),
        });
    }
    Ok(items)
}

/// `DROP ROUTINE` of a routine that did not exist in the wanted state.
/// `identity` is `regprocedure` text from the catalog, quoted by PostgreSQL.
pub async fn drop_routine(client: &Client, identity: &str) -> Result<(), tokio_postgres::Error> {
    client
        .execute_typed(&format!("DROP ROUTINE {identity}"), &[])
        .await
        .map(|_| ())
}

/// Runs one CREATE [OR REPLACE] statement over the extended protocol, which
/// refuses anything after it. Its body is not validated again, as pg_dump
/// restores do: it is a definition PostgreSQL accepted when it was live, and
/// its unqualified calls were resolved with the search path its project
/// declared, which a backup does not record (the smoke tests still run).
/// It runs under `search_path`: a plan's statement under its routine's
/// declared path (an unqualified name lands where its CREATE put it); a
/// `pg_get_functiondef` text under `public` (`&[]`), which it needs only
/// when it was written by an agent whose own path held `public` and so left
/// `public`'s types unqualified. The agent's path comes back afterwards.
pub async fn create_routine(
    client: &Client,
    statement: &str,
    search_path: &[String],
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "SET LOCAL check_function_bodies = off; {}",
            set_local_search_path_sql(search_path)
        ))
        .await?;
    let created = client.execute_typed(statement, &[]).await.map(|_| ());
    // After a failed CREATE the transaction refuses this too; the error
    // reported is the CREATE's.
    let reset = client
        .batch_execute(
            "SET LOCAL check_function_bodies TO DEFAULT; SET LOCAL search_path TO DEFAULT",
        )
        .await;
    created.and(reset)
}

/// The SHA-256 of the live definition found by `lookup`, if it exists.
pub async fn live_definition_sha256(
    client: &Client,
    lookup: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    let row = client
        .query_typed_opt(
            "SELECT pg_get_functiondef(to_regprocedure($1))",
            &[(&lookup, Type::TEXT)],
        )
        .await?;
    Ok(row
        .and_then(|row| row.get::<_, Option<String>>(0))
        .map(|definition| sha256_hex(&definition)))
}

/// One routine whose definition is in place (or which is absent, as wanted)
/// and whose owner, ACL and comment are to match `wanted`.
pub struct ExactTarget<'a> {
    /// How to find the routine now: its signature or `regprocedure` text.
    pub lookup: &'a str,
    pub wanted: &'a RoutineSnapshot,
    pub acl: &'a [AclItem],
}

/// The state reached, and how it departs from the wanted one (if at all).
#[derive(Clone, Debug)]
pub struct ExactOutcome {
    pub after: RoutineSnapshot,
    /// Unavoidable, explained departures (a grantor, a NULL ACL written out).
    pub notes: Vec<String>,
    /// Anything else that does not match byte for byte.
    pub differences: Vec<String>,
}

struct LiveState {
    snapshot: RoutineSnapshot,
    default_acl: Option<String>,
    grantees: Vec<Option<String>>,
}

async fn live_states(
    client: &Client,
    lookups: &[String],
) -> Result<Vec<LiveState>, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            include_str!("restore_state.sql"),
            &[(&lookups, Type::TEXT_ARRAY)],
        )
        .await?;
    Ok(rows
        .iter()
        .zip(lookups)
        .map(|(row, lookup)| LiveState {
            snapshot: RoutineSnapshot {
                requested: lookup.clone(),
                existed: row.get("existed"),
                identity: row.get("identity"),
                schema: None,
                definition: row.get("definition"),
                owner: row.get("owner"),
                acl: row.get("acl"),
                comment: row.get("comment"),
            },
            default_acl: row.get("default_acl"),
            grantees: row
                .get::<_, Option<Vec<Option<String>>>>("grantees")
                .unwrap_or_default(),
        })
        .collect())
}

/// Sets owner, ACL and comment of every target in one round trip, then
/// reads everything back and compares it with the wanted state.
pub async fn set_metadata(
    client: &Client,
    session: &Session,
    targets: &[ExactTarget<'_>],
) -> Result<Vec<ExactOutcome>, ExactRestoreError> {
    let lookups: Vec<String> = targets.iter().map(|t| t.lookup.to_owned()).collect();
    let before = live_states(client, &lookups).await?;
    let mut script = String::new();
    let mut notes: Vec<Vec<String>> = vec![Vec::new(); targets.len()];
    for ((target, live), notes) in targets.iter().zip(&before).zip(&mut notes) {
        if target.wanted.definition.is_none() {
            continue;
        }
        let identity =
            live.snapshot
                .identity
                .as_deref()
                .ok_or_else(|| ExactRestoreError::Missing {
                    lookup: target.lookup.to_owned(),
                })?;
        script.push_str(&metadata_statements(session, identity, live, target, notes));
    }
    if !script.is_empty() {
        client.batch_execute(&script).await?;
    }
    let after = live_states(client, &lookups).await?;
    Ok(targets
        .iter()
        .zip(after)
        .zip(notes)
        .map(|((target, live), mut notes)| {
            let differences = compare(target.wanted, &live, &mut notes);
            ExactOutcome {
                after: live.snapshot,
                notes,
                differences,
            }
        })
        .collect())
}

/// The statements that take one live routine to the wanted owner, ACL and
/// comment. Identifiers are quoted by `quote_identifier`; the routine is
/// named by its `regprocedure` text; the comment is a quoted literal.
fn metadata_statements(
    session: &Session,
    identity: &str,
    live: &LiveState,
    target: &ExactTarget<'_>,
    notes: &mut Vec<String>,
) -> String {
    let wanted = target.wanted;
    let mut script = String::new();
    let owner = wanted.owner.as_deref().unwrap_or_default();
    let owner_changes = live.snapshot.owner.as_deref() != Some(owner);
    if owner_changes {
        script.push_str(&format!(
            "ALTER ROUTINE {identity} OWNER TO {};\n",
            quote_identifier(owner)
        ));
    }
    let acl_matches = match &wanted.acl {
        Some(acl) => live.snapshot.acl.as_deref() == Some(acl),
        // NULL wanted: nothing better than the default, written out or not.
        None => live.snapshot.acl.is_none() || live.snapshot.acl == live.default_acl,
    };
    if owner_changes || !acl_matches {
        let mut revoke_from: Vec<String> = live
            .grantees
            .iter()
            .map(|g| g.as_deref().map_or("PUBLIC".to_owned(), quote_identifier))
            .collect();
        for role in [live.snapshot.owner.as_deref(), Some(owner)]
            .into_iter()
            .flatten()
        {
            let quoted = quote_identifier(role);
            if !revoke_from.contains(&quoted) {
                revoke_from.push(quoted);
            }
        }
        if !revoke_from.iter().any(|g| g == "PUBLIC") {
            revoke_from.push("PUBLIC".into());
        }
        script.push_str(&format!(
            "REVOKE ALL ON ROUTINE {identity} FROM {} CASCADE;\n",
            revoke_from.join(", ")
        ));
        let plain_grantor_is_owner = session.superuser || session.user == owner;
        for item in target.acl {
            let grantee = item
                .grantee
                .as_deref()
                .map_or("PUBLIC".to_owned(), quote_identifier);
            let option = if item.grantable {
                " WITH GRANT OPTION"
            } else {
                ""
            };
            let grant = format!("GRANT EXECUTE ON ROUTINE {identity} TO {grantee}{option};\n");
            let plain_records_grantor = if item.grantor == owner {
                plain_grantor_is_owner
            } else {
                item.grantor == session.user
            };
            if plain_records_grantor {
                script.push_str(&grant);
            } else if item.may_act_as_grantor {
                script.push_str(&format!(
                    "SET LOCAL ROLE {};\n{grant}RESET ROLE;\n",
                    quote_identifier(&item.grantor)
                ));
            } else {
                script.push_str(&grant);
                notes.push(format!(
                    "EXECUTE for {} was granted by {} originally; this agent's role {} cannot act as {}, so the \
                     grant is recorded as made by {}",
                    item.grantee.as_deref().unwrap_or("PUBLIC"),
                    item.grantor,
                    session.user,
                    item.grantor,
                    if plain_grantor_is_owner { owner } else { &session.user },
                ));
            }
        }
    }
    if live.snapshot.comment != wanted.comment {
        let literal = wanted
            .comment
            .as_deref()
            .map_or("NULL".to_owned(), quote_literal);
        script.push_str(&format!("COMMENT ON ROUTINE {identity} IS {literal};\n"));
    }
    script
}

fn compare(wanted: &RoutineSnapshot, live: &LiveState, notes: &mut Vec<String>) -> Vec<String> {
    let after = &live.snapshot;
    let mut differences = Vec::new();
    let routine = after.identity.as_deref().unwrap_or(&after.requested);
    if wanted.definition_sha256() != after.definition_sha256() {
        differences.push(format!(
            "{routine}: definition sha256 {} instead of {}",
            short(after.definition_sha256()),
            short(wanted.definition_sha256())
        ));
    }
    if wanted.definition.is_none() {
        return differences;
    }
    if wanted.owner != after.owner {
        differences.push(format!(
            "{routine}: owner {} instead of {}",
            after.owner.as_deref().unwrap_or("?"),
            wanted.owner.as_deref().unwrap_or("?")
        ));
    }
    match (&wanted.acl, &after.acl) {
        (wanted_acl, after_acl) if wanted_acl == after_acl => {}
        (None, Some(after_acl)) if Some(after_acl) == live.default_acl.as_ref() => notes.push(format!(
            "{routine}: the ACL was PostgreSQL's implicit default (NULL); GRANT and REVOKE cannot set it back to \
             NULL, so the same privileges are now written out: {after_acl}"
        )),
        (wanted_acl, after_acl) => differences.push(format!(
            "{routine}: ACL {} instead of {}",
            after_acl.as_deref().unwrap_or("(default)"),
            wanted_acl.as_deref().unwrap_or("(default)")
        )),
    }
    if wanted.comment != after.comment {
        differences.push(format!("{routine}: the comment differs"));
    }
    differences
}

fn short(sha: Option<String>) -> String {
    sha.map_or("(absent)".to_owned(), |s| s[..s.len().min(12)].to_owned())
}

/// A string literal PostgreSQL reads back exactly, whatever
/// `standard_conforming_strings` says: quotes doubled, and with a backslash
/// present, the `E''` form with backslashes doubled (as `quote_literal` does).
pub fn quote_literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(owner: &str, acl: Option<&str>, grantees: &[Option<&str>]) -> LiveState {
        LiveState {
            snapshot: RoutineSnapshot {
                requested: "f(integer)".into(),
                existed: true,
                identity: Some("f(integer)".into()),
                schema: None,
                definition: Some("CREATE FUNCTION ...".into()),
                owner: Some(owner.into()),
                acl: acl.map(str::to_owned),
                comment: Some("old".into()),
            },
            default_acl: Some(format!("{{=X/{owner},{owner}=X/{owner}}}")),
            grantees: grantees.iter().map(|g| g.map(str::to_owned)).collect(),
        }
    }

    fn item(grantee: Option<&str>, grantor: &str, grantable: bool, may: bool) -> AclItem {
        AclItem {
            grantee: grantee.map(str::to_owned),
            grantor: grantor.into(),
            grantable,
            may_act_as_grantor: may,
        }
    }

    #[test]
    fn the_acl_is_rebuilt_in_order_with_grant_options_and_grantors() {
        let wanted = RoutineSnapshot {
            acl: Some("{app_owner=X/app_owner,a=X*/app_owner,b=X/a}".into()),
            owner: Some("app_owner".into()),
            comment: Some("it's new".into()),
            ..live("app_owner", None, &[]).snapshot
        };
        let acl = [
            item(Some("app_owner"), "app_owner", false, true),
            item(Some("a"), "app_owner", true, true),
            item(Some("b"), "a", false, true),
        ];
        let target = ExactTarget {
            lookup: "f(integer)",
            wanted: &wanted,
            acl: &acl,
        };
        let session = Session {
            user: "postgres".into(),
            superuser: true,
        };
        let now = live(
            "app_owner",
            Some("{app_owner=X/app_owner,a=X*/app_owner,extra=X/app_owner}"),
            &[Some("app_owner"), Some("a"), Some("extra")],
        );
        let mut notes = Vec::new();
        let script = metadata_statements(&session, "f(integer)", &now, &target, &mut notes);
        assert_eq!(
            script,
            "REVOKE ALL ON ROUTINE f(integer) FROM \"app_owner\", \"a\", \"extra\", PUBLIC CASCADE;\n\
             GRANT EXECUTE ON ROUTINE f(integer) TO \"app_owner\";\n\
             GRANT EXECUTE ON ROUTINE f(integer) TO \"a\" WITH GRANT OPTION;\n\
             SET LOCAL ROLE \"a\";\nGRANT EXECUTE ON ROUTINE f(integer) TO \"b\";\nRESET ROLE;\n\
             COMMENT ON ROUTINE f(integer) IS 'it''s new';\n"
        );
        assert!(notes.is_empty());
    }

    #[test]
    fn a_grantor_the_session_cannot_act_as_is_reported_and_an_equal_acl_is_left_alone() {
        let wanted = RoutineSnapshot {
            acl: Some("{o=X/o,b=X/a}".into()),
            ..live("o", None, &[]).snapshot
        };
        let acl = [
            item(Some("o"), "o", false, true),
            item(Some("b"), "a", false, false),
        ];
        let target = ExactTarget {
            lookup: "f(integer)",
            wanted: &wanted,
            acl: &acl,
        };
        let owner_session = Session {
            user: "o".into(),
            superuser: false,
        };
        let mut notes = Vec::new();
        let script = metadata_statements(
            &owner_session,
            "f(integer)",
            &live("o", Some("{o=X/o}"), &[Some("o")]),
            &target,
            &mut notes,
        );
        assert!(
            script.ends_with("GRANT EXECUTE ON ROUTINE f(integer) TO \"b\";\n"),
            "{script}"
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("granted by a originally"), "{notes:?}");

        let mut notes = Vec::new();
        let same = live("o", Some("{o=X/o,b=X/a}"), &[Some("o"), Some("b")]);
        assert_eq!(
            metadata_statements(&owner_session, "f(integer)", &same, &target, &mut notes),
            ""
        );
    }

    #[test]
    fn literals_survive_quotes_and_backslashes() {
        assert_eq!(quote_literal("plain"), "'plain'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\nb 'c'"), r"E'a\\nb ''c'''");
    }
}
