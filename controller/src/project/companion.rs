//! Companion statements (issue 15): what real code keeps next to a routine
//! in its file — its privileges, its comment, its owner:
//!
//! ```sql
//! REVOKE ALL ON FUNCTION app.tbl_count(regclass) FROM PUBLIC;
//! GRANT EXECUTE ON FUNCTION app.tbl_count(regclass) TO reporting;
//! COMMENT ON FUNCTION app.tbl_count(regclass) IS 'rows of a table';
//! ALTER FUNCTION app.tbl_count(regclass) OWNER TO app_owner;
//! ALTER FUNCTION app.tbl_count(regclass) SET search_path = pg_catalog, pg_temp;
//! ```
//!
//! Such a statement is accepted only when every routine it names is created
//! by the same file, so it can only ever act on what the file deploys: the
//! agent runs it in the deploy's transaction right after the routine's
//! CREATE and sidecar grants, and a rollback restores owner, ACL and comment
//! from the snapshot as for any other change. Names are read with
//! PostgreSQL's parser and resolved as everywhere else in pgrollout
//! ([`RoutineName`]): an unqualified name is in the file's schema, a bare
//! name (no argument list) must match exactly one routine of the file.
//! Anything else — `ALL FUNCTIONS IN SCHEMA`, other objects, column
//! privileges — stays refused, with advice for the common mistakes.
//!
//! One more statement is accepted and **not run**: `DROP FUNCTION|PROCEDURE|
//! ROUTINE [IF EXISTS]` of a routine the file creates *after* it — real code
//! writes it so that a script re-run can change a return type, which is what
//! pgrollout's own lifecycle does (`CREATE OR REPLACE`, or DROP + CREATE
//! carrying owner, ACL and comment when PostgreSQL refuses the replace).
//! It never reaches the agent: the controller's edge refuses a DROP in a plan.

use pg_query::protobuf::{node::Node as NodeKind, DropBehavior, GrantTargetType, ObjectType};
use pgrollout_shared::routine::RoutineKind;

use super::error::{ProjectError, SourceLocation};
use super::pg_dump_scripts;
use super::routine_name::{written_identifier, RoutineName, Signature};
use super::session_settings::{self, SessionSetting};

/// A routine a companion statement names, as written.
#[derive(Clone, Debug)]
pub struct NamedRoutine {
    pub(super) name: RoutineName,
    /// `FUNCTION` or `PROCEDURE` as written; None for `ROUTINE` (either).
    pub(super) kind: Option<RoutineKind>,
}

/// What a statement of a procedure file that is not a CREATE does to the
/// file's routines.
#[derive(Debug)]
pub enum Companion {
    /// Runs after the CREATE of each routine it names.
    Attached(Vec<NamedRoutine>),
    /// A DROP of routines the file creates after it: subsumed by the deploy's
    /// own replace-or-recreate, never run.
    Dropped(Vec<NamedRoutine>),
    /// A `SET` of the script's session (`session_settings.rs`): not run;
    /// when a user could expect otherwise, why.
    SessionSetting(Option<&'static str>),
}

/// A statement of a procedure file that is not a CREATE: the routines it
/// acts on when it is a companion statement, or why it is refused.
/// `statement` names it for errors (`DROP TABLE IF EXISTS`).
pub fn read(
    node: Option<&NodeKind>,
    statement: &str,
    at: &SourceLocation,
) -> Result<Companion, ProjectError> {
    if let Some(NodeKind::DropStmt(drop)) = node {
        if let Some(kind) = routine_kind(drop.remove_type) {
            if drop.behavior == DropBehavior::DropCascade as i32 {
                return Err(not_a_routine(
                    at,
                    statement,
                    "CASCADE would drop what depends on the routine; pgrollout never drops a \
                     dependant (when a changed signature needs DROP + CREATE, it refuses the plan \
                     listing them); remove the CASCADE, or the DROP",
                ));
            }
            return drop
                .objects
                .iter()
                .map(|object| named(object.node.as_ref(), kind, statement, at))
                .collect::<Result<_, _>>()
                .map(Companion::Dropped);
        }
    }
    if let Some(NodeKind::VariableSetStmt(set)) = node {
        match session_settings::judge(set) {
            Some(SessionSetting::NotRun(why)) => return Ok(Companion::SessionSetting(why)),
            Some(SessionSetting::Refused(advice)) => {
                return Err(not_a_routine(at, statement, advice))
            }
            None => {}
        }
    }
    if let Some(NodeKind::SelectStmt(select)) = node {
        match pg_dump_scripts::judge_select(select) {
            Some(SessionSetting::NotRun(why)) => return Ok(Companion::SessionSetting(why)),
            Some(SessionSetting::Refused(advice)) => {
                return Err(not_a_routine(at, statement, advice))
            }
            None => {}
        }
    }
    read_attached(node, statement, at).map(Companion::Attached)
}

fn read_attached(
    node: Option<&NodeKind>,
    statement: &str,
    at: &SourceLocation,
) -> Result<Vec<NamedRoutine>, ProjectError> {
    let companion_error = |reason: String| ProjectError::Companion {
        at: at.clone(),
        reason,
    };
    match node {
        Some(NodeKind::GrantStmt(grant)) => {
            if grant.targtype != GrantTargetType::AclTargetObject as i32 {
                return Err(companion_error(format!(
                    "{statement} … IN SCHEMA acts on routines this file does not define: name each \
                     routine of the file (GRANT EXECUTE ON FUNCTION schema.name(types) TO role), or \
                     move it to a schema migration"
                )));
            }
            let kind = routine_kind(grant.objtype).ok_or_else(|| {
                not_a_routine(
                    at,
                    statement,
                    "only privileges ON FUNCTION, PROCEDURE or ROUTINE of the file's own routines \
                     may stand next to them; move it to a schema migration",
                )
            })?;
            for privilege in &grant.privileges {
                match &privilege.node {
                    Some(NodeKind::AccessPriv(privilege))
                        if privilege.priv_name.eq_ignore_ascii_case("execute")
                            && privilege.cols.is_empty() => {}
                    _ => {
                        return Err(companion_error(format!(
                            "{statement}: a routine has only the EXECUTE privilege; write EXECUTE \
                             or ALL"
                        )))
                    }
                }
            }
            grant
                .objects
                .iter()
                .map(|object| named(object.node.as_ref(), kind, statement, at))
                .collect()
        }
        Some(NodeKind::CommentStmt(comment)) => {
            let kind = routine_kind(comment.objtype).ok_or_else(|| {
                not_a_routine(
                    at,
                    statement,
                    "only comments on the file's own routines may stand next to them; move it to \
                     a schema migration",
                )
            })?;
            let object = comment.object.as_ref().and_then(|o| o.node.as_ref());
            Ok(vec![named(object, kind, statement, at)?])
        }
        // ALTER FUNCTION … SET search_path / SECURITY DEFINER / COST …: the
        // options a CREATE may state itself (RENAME, SET SCHEMA and DEPENDS
        // ON EXTENSION are other statements and stay refused).
        Some(NodeKind::AlterFunctionStmt(alter)) => {
            let kind = routine_kind(alter.objtype).ok_or_else(|| {
                not_a_routine(at, statement, "unexpected object in the parse tree")
            })?;
            let reason = match alter.func.as_ref().map(RoutineName::from_object) {
                Some(Ok(name)) => return Ok(vec![NamedRoutine { name, kind }]),
                Some(Err(reason)) => reason,
                None => "unexpected object in the parse tree".to_owned(),
            };
            Err(companion_error(format!(
                "{statement}: cannot read the routine it names ({reason})"
            )))
        }
        Some(NodeKind::AlterOwnerStmt(alter)) => {
            let kind = routine_kind(alter.object_type).ok_or_else(|| {
                not_a_routine(
                    at,
                    statement,
                    "only ALTER FUNCTION|PROCEDURE|ROUTINE … OWNER TO of the file's own routines \
                     may stand next to them; move it to a schema migration",
                )
            })?;
            let object = alter.object.as_ref().and_then(|o| o.node.as_ref());
            Ok(vec![named(object, kind, statement, at)?])
        }
        Some(NodeKind::VariableSetStmt(set)) if set.name.eq_ignore_ascii_case("search_path") => {
            Err(not_a_routine(
                at,
                statement,
                "declare it in pgrollout.toml [schema] search_path (or the file's sidecar), or \
                 write `SET search_path = …` (not LOCAL) at the file's top: pgrollout runs each \
                 CREATE with it",
            ))
        }
        Some(NodeKind::RenameStmt(rename)) if routine_kind(rename.rename_type).is_some() => {
            Err(not_a_routine(
                at,
                statement,
                "a routine under another name is another routine: write its CREATE with the new \
                 name (callers move to it), and remove the old one with `pgrollout retire`",
            ))
        }
        Some(NodeKind::AlterObjectSchemaStmt(move_to))
            if routine_kind(move_to.object_type).is_some() =>
        {
            Err(not_a_routine(
                at,
                statement,
                "a routine in another schema is another routine: write its CREATE in that \
                 schema, and remove the old one with `pgrollout retire`",
            ))
        }
        Some(NodeKind::TransactionStmt(_)) => Err(not_a_routine(
            at,
            statement,
            "a deploy is one transaction already: a file may open with BEGIN and end with \
             COMMIT (neither is run), nothing else — no COMMIT, ROLLBACK or SAVEPOINT between its \
             statements",
        )),
        _ => Err(not_a_routine(at, statement, DEFAULT_ADVICE)),
    }
}

const DEFAULT_ADVICE: &str = "procedures/*.sql may only hold CREATE [OR REPLACE] FUNCTION or \
     PROCEDURE statements and the GRANT, REVOKE, COMMENT ON, ALTER … OWNER TO and ALTER … SET|\
     SECURITY|COST… statements of those routines; move it to a schema migration";

fn not_a_routine(at: &SourceLocation, statement: &str, advice: &str) -> ProjectError {
    ProjectError::NotARoutine {
        at: at.clone(),
        statement: statement.to_owned(),
        advice: advice.to_owned(),
    }
}

/// `Some(None)` for ROUTINE, `Some(Some(kind))` for FUNCTION/PROCEDURE,
/// `None` for any other object type.
fn routine_kind(object_type: i32) -> Option<Option<RoutineKind>> {
    match ObjectType::try_from(object_type) {
        Ok(ObjectType::ObjectFunction) => Some(Some(RoutineKind::Function)),
        Ok(ObjectType::ObjectProcedure) => Some(Some(RoutineKind::Procedure)),
        Ok(ObjectType::ObjectRoutine) => Some(None),
        _ => None,
    }
}

fn named(
    object: Option<&NodeKind>,
    kind: Option<RoutineKind>,
    statement: &str,
    at: &SourceLocation,
) -> Result<NamedRoutine, ProjectError> {
    let reason = match object {
        Some(NodeKind::ObjectWithArgs(object)) => match RoutineName::from_object(object) {
            Ok(name) => return Ok(NamedRoutine { name, kind }),
            Err(reason) => reason,
        },
        _ => "unexpected object in the parse tree".to_owned(),
    };
    Err(ProjectError::Companion {
        at: at.clone(),
        reason: format!("{statement}: cannot read the routine it names ({reason})"),
    })
}

/// The indices (into `routines`, the file's routines as signatures and
/// kinds) of the routines `named` designates: each name must designate
/// exactly one routine of the file, of the kind written.
pub fn resolve(
    named: &[NamedRoutine],
    is_drop: bool,
    routines: &[(&Signature, RoutineKind)],
    default_schema: &str,
    statement: &str,
    at: &SourceLocation,
) -> Result<Vec<usize>, ProjectError> {
    let error = |reason: String| ProjectError::Companion {
        at: at.clone(),
        reason: format!("{statement} {reason}"),
    };
    let defined = || {
        let all: Vec<String> = routines.iter().map(|(s, _)| written(s)).collect();
        if all.is_empty() {
            "no routine".to_owned()
        } else {
            all.join(", ")
        }
    };
    let mut indices = Vec::with_capacity(named.len());
    for NamedRoutine { name, kind } in named {
        let name = RoutineName {
            schema: Some(
                name.schema
                    .clone()
                    .unwrap_or_else(|| default_schema.to_owned()),
            ),
            ..name.clone()
        };
        let matching: Vec<usize> = routines
            .iter()
            .enumerate()
            .filter(|(_, (signature, _))| name.matches(signature))
            .map(|(index, _)| index)
            .collect();
        let shown = shown_name(&name);
        let index = match matching.as_slice() {
            [index] => *index,
            [] if is_drop => {
                return Err(error(format!(
                    "drops {shown}, which this file does not create (it creates {}): a file's \
                     DROP may only precede the CREATE of the same routine; to remove a routine \
                     use `pgrollout retire <routine> <env>` (backed up, gated, reversible), then \
                     remove the DROP",
                    defined()
                )))
            }
            [] => {
                return Err(error(format!(
                    "acts on {shown}, which this file does not create (it creates {}): a \
                     companion statement may only act on routines created in the same file; \
                     fix the name, or move the statement to a schema migration",
                    defined()
                )))
            }
            several => {
                let overloads: Vec<String> =
                    several.iter().map(|&i| written(routines[i].0)).collect();
                return Err(error(format!(
                    "names {shown}, which matches {} routines of this file ({}): write the \
                     argument types",
                    several.len(),
                    overloads.join(", ")
                )));
            }
        };
        let actual = routines[index].1;
        if let Some(written_kind) = kind {
            if *written_kind != actual {
                return Err(error(format!(
                    "names {} as a {}, but this file creates it as a {}: write {} or ROUTINE",
                    written(routines[index].0),
                    kind_word(*written_kind),
                    kind_word(actual),
                    kind_word(actual).to_ascii_uppercase()
                )));
            }
        }
        if !indices.contains(&index) {
            indices.push(index);
        }
    }
    Ok(indices)
}

pub(super) fn kind_word(kind: RoutineKind) -> &'static str {
    match kind {
        RoutineKind::Function => "function",
        RoutineKind::Procedure => "procedure",
    }
}

fn written(signature: &Signature) -> String {
    format!(
        "{}.{}({})",
        written_identifier(&signature.schema),
        written_identifier(&signature.name),
        signature.arg_types.join(", ")
    )
}

pub(super) fn shown_name(name: &RoutineName) -> String {
    let schema = name.schema.as_deref().unwrap_or_default();
    let base = format!(
        "{}.{}",
        written_identifier(schema),
        written_identifier(&name.name)
    );
    match &name.arg_types {
        Some(types) => format!("{base}({})", types.join(", ")),
        None => base,
    }
}

/// The routines a companion statement received over the wire names
/// (`companion_wire.rs` checks them against the plan): it must be one
/// GRANT/REVOKE, COMMENT ON, ALTER … OWNER TO or ALTER … SET|SECURITY… of
/// routines, nothing else.
pub(super) fn read_wire(statement: &str) -> Result<Vec<NamedRoutine>, String> {
    let parsed = pg_query::parse(statement, 0).map_err(|error| match error {
        pg_query::Error::Parse(message) => format!("does not parse: {message}"),
        other => format!("does not parse: {other}"),
    })?;
    let [one] = parsed.protobuf.stmts.as_slice() else {
        return Err("holds more than one statement".to_owned());
    };
    let node = one.stmt.as_ref().and_then(|stmt| stmt.node.as_ref());
    // A file's DROP never travels in a plan (the CLI leaves it out), so one
    // that does was put there by hand.
    read_attached(node, "the", &SourceLocation::file("the plan")).map_err(|error| error.to_string())
}
