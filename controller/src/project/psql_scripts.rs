//! What scripts written for psql carry beside their CREATEs, and what a
//! deploy makes of it (issue 15: real code deploys as it is): a `BEGIN` …
//! `COMMIT` around the file, a `DROP … IF EXISTS` before each CREATE, and
//! psql's own meta-commands, which are not SQL. Session `SET`s are
//! `session_settings.rs`; companion statements `companion.rs`.

use pg_query::protobuf::{self, node::Node as NodeKind};

use super::error::{ProjectError, ProjectWarning, SourceLocation};
use super::parse_sql::ParsedRoutine;
use super::session_settings::{self, SessionSetting};

/// Where the file's own `BEGIN` and `COMMIT` are, when it opens with a plain
/// `BEGIN` (or `START TRANSACTION`; only session `SET`s before it) and ends
/// with `COMMIT` (or `END`), as scripts meant for psql often do. Those two
/// are not run: the deploy is one transaction already. Any other
/// transaction statement (ROLLBACK, SAVEPOINT, a COMMIT inside, BEGIN READ
/// ONLY, COMMIT AND CHAIN) is refused by `companion::read`.
pub(super) fn transaction_wrapper(statements: &[protobuf::RawStmt]) -> Option<(usize, usize)> {
    use protobuf::TransactionStmtKind as Kind;
    let kind = |raw: &protobuf::RawStmt| match statement_node(raw) {
        Some(NodeKind::TransactionStmt(transaction))
            if transaction.options.is_empty() && !transaction.chain =>
        {
            Kind::try_from(transaction.kind).ok()
        }
        _ => None,
    };
    let begin = statements.iter().position(|raw| {
        !matches!(statement_node(raw), Some(NodeKind::VariableSetStmt(set))
            if matches!(session_settings::judge(set), Some(SessionSetting::NotRun(_))))
    })?;
    let commit = statements.len().checked_sub(1)?;
    let wrapped = commit > begin + 1
        && matches!(
            kind(&statements[begin]),
            Some(Kind::TransStmtBegin | Kind::TransStmtStart)
        )
        && kind(&statements[commit]) == Some(Kind::TransStmtCommit);
    wrapped.then_some((begin, commit))
}

pub(super) fn statement_node(raw: &protobuf::RawStmt) -> Option<&NodeKind> {
    raw.stmt.as_ref().and_then(|stmt| stmt.node.as_ref())
}

/// A file's DROP of `routine`, which the file creates: accepted only before
/// the CREATE (after it, psql would leave the routine dropped), and never
/// run — the deploy replaces the routine in place, or drops and recreates
/// it carrying owner, ACL and comment when PostgreSQL refuses the replace.
/// The warning, placed at the CREATE (where a deploy of the routine shows
/// it), says how that differs from running the file with psql.
pub(super) fn subsumed_drop(
    routine: &ParsedRoutine,
    shown: &str,
    drop_start: usize,
    at: &SourceLocation,
) -> Result<ProjectWarning, ProjectError> {
    let line = at
        .line
        .map_or_else(String::new, |line| format!(" (line {line})"));
    if routine.span.start < drop_start {
        return Err(ProjectError::Companion {
            at: at.clone(),
            reason: format!(
                "{shown} drops {}, which this file creates before it: run as written it would \
                 leave the routine dropped; a file's DROP may only precede the CREATE of the \
                 same routine; to remove a routine use `pgrollout retire <routine> <env>`",
                routine.identity
            ),
        });
    }
    Ok(ProjectWarning {
        at: routine.defined_at.clone(),
        message: format!(
            "{shown}{line} is not run: pgrollout replaces {} in place (CREATE OR REPLACE, or DROP \
             + CREATE carrying its owner, ACL and comment when its signature's shape changes), so \
             privileges granted before stay unless this file REVOKEs them",
            routine.identity
        ),
    })
}

/// The psql meta-command (`\set ON_ERROR_STOP on`, `\echo …`, `\i file`) at
/// `offset`, when a line starts with it there: scripts written for psql
/// carry them, and PostgreSQL's parser only says "syntax error at \".
pub(super) fn psql_meta_command(text: &str, offset: usize) -> Option<&str> {
    let rest = text.get(offset..)?;
    let line_start = text[..offset].rfind('\n').map_or(0, |at| at + 1);
    let before = &text[line_start..offset];
    if !rest.starts_with('\\') || !before.trim().is_empty() {
        return None;
    }
    let line = rest.lines().next().unwrap_or(rest).trim_end();
    Some(match line.char_indices().nth(40) {
        Some((cut, _)) => &line[..cut],
        None => line,
    })
}
