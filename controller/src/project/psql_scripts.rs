//! What scripts written for psql carry beside their CREATEs, and what a
//! deploy makes of it (issue 15: real code deploys as it is): a `BEGIN` …
//! `COMMIT` around the file, a `DROP … IF EXISTS` before each CREATE,
//! psql's own meta-commands, which are not SQL (those whose meaning a deploy
//! already has, such as `\set ON_ERROR_STOP on`, are skipped; the others
//! refused, named), and a `SET search_path`
//! at the top, which declares the file's schema and path as a sidecar's
//! `[schema]` would. Other session `SET`s are `session_settings.rs`;
//! companion statements `companion.rs`.

use std::borrow::Cow;

use pg_query::protobuf::{self, node::Node as NodeKind};

use pgrollout_shared::routine::MAX_SEARCH_PATH_SCHEMAS;

use super::error::{ProjectError, ProjectWarning, SourceLocation};
use super::parse_sql::ParsedRoutine;
use super::project_config::{check_schema_name, SchemaSettings};
use super::session_settings::{self, SessionSetting};
use super::syntax_error::is_comment;

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
    let begin = statements
        .iter()
        .position(|raw| match statement_node(raw) {
            Some(NodeKind::VariableSetStmt(set)) => {
                !(is_search_path(set)
                    || matches!(
                        session_settings::judge(set),
                        Some(SessionSetting::NotRun(_))
                    ))
            }
            Some(NodeKind::SelectStmt(select)) => !matches!(
                super::pg_dump_scripts::judge_select(select),
                Some(SessionSetting::NotRun(_))
            ),
            _ => true,
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

/// ` (line N)` of a statement a warning placed elsewhere speaks of.
pub(super) fn on_line(at: &SourceLocation) -> String {
    at.line
        .map_or_else(String::new, |line| format!(" (line {line})"))
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
            "{shown}{} is not run: pgrollout replaces {} in place (CREATE OR REPLACE, or DROP \
             + CREATE carrying its owner, ACL and comment when its signature's shape changes), so \
             privileges granted before stay unless this file REVOKEs them",
            on_line(at),
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

/// `SET search_path …` (not `SET LOCAL`).
pub(super) fn is_search_path(set: &protobuf::VariableSetStmt) -> bool {
    set.name.eq_ignore_ascii_case("search_path") && !set.is_local
}

/// The schema and path a `SET search_path = a, b` declares: unqualified
/// CREATEs land in `a`, bodies are validated with `a, b`. `"$user"` is left
/// out (pgrollout's path is the same whoever the agent's user is); a path
/// that would create in `pg_catalog` or `pg_temp`, or sets no schema, is
/// refused with why.
pub(super) fn declared_by(set: &protobuf::VariableSetStmt) -> Result<SchemaSettings, String> {
    use pg_query::protobuf::a_const::Val;
    let mut path = Vec::new();
    for arg in &set.args {
        let name = match &arg.node {
            Some(NodeKind::AConst(constant)) => match &constant.val {
                Some(Val::Sval(text)) => text.sval.clone(),
                _ => return Err("a search path lists schema names".to_owned()),
            },
            _ => return Err("a search path lists schema names".to_owned()),
        };
        if name != "$user" {
            check_schema_name(&name)?;
            path.push(name);
        }
    }
    let Some(first) = path.first() else {
        return Err(
            "it names no schema to create in: name one (or declare [schema] in pgrollout.toml)"
                .to_owned(),
        );
    };
    if first.starts_with("pg_") {
        return Err(format!(
            "PostgreSQL would create this file's routines in {first:?}: name the schema they \
             belong in first"
        ));
    }
    if path.len() > MAX_SEARCH_PATH_SCHEMAS {
        return Err(format!(
            "a search path lists 1 to {MAX_SEARCH_PATH_SCHEMAS} schemas"
        ));
    }
    Ok(SchemaSettings {
        schema: first.clone(),
        search_path: path,
    })
}

/// The schema and path a file declares with a `SET search_path` at its top
/// (before its first CREATE; only other session `SET`s and `BEGIN` may come
/// before it), read before the file is parsed because it places the file's
/// unqualified names. `None` when it has none (or does not parse: the parse
/// says why).
pub(super) fn leading_search_path(
    path: &str,
    text: &str,
) -> Result<Option<(SchemaSettings, SourceLocation)>, ProjectError> {
    // The loader's hot path: most files never name a search path, and most
    // that do (a CREATE's own `SET search_path` clause) start with CREATE —
    // the scanner alone says so; only the few statements before it parse.
    let names_a_path = text
        .as_bytes()
        .windows(b"search_path".len())
        .any(|window| window.eq_ignore_ascii_case(b"search_path"));
    if !names_a_path {
        return Ok(None);
    }
    let Ok(statements) = pg_query::split_with_scanner(text) else {
        return Ok(None);
    };
    for statement in statements {
        let leading = first_word(statement);
        let may_declare = ["set", "begin", "start"]
            .iter()
            .any(|word| leading.eq_ignore_ascii_case(word));
        if !may_declare {
            return Ok(None);
        }
        let Ok(parsed) = pg_query::parse(statement, 0) else {
            return Ok(None);
        };
        let node = parsed
            .protobuf
            .stmts
            .first()
            .and_then(|raw| raw.stmt.as_ref())
            .and_then(|stmt| stmt.node.as_ref());
        match node {
            Some(NodeKind::VariableSetStmt(set)) if is_search_path(set) => {
                // The scanner's slice starts after the previous `;`: the
                // statement starts at its first word.
                let offset = (leading.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
                let at = SourceLocation::at_offset(path, text, offset);
                return match declared_by(set) {
                    Ok(settings) => Ok(Some((settings, at))),
                    Err(reason) => Err(ProjectError::Companion {
                        at,
                        reason: format!("SET search_path: {reason}"),
                    }),
                };
            }
            Some(NodeKind::VariableSetStmt(_) | NodeKind::TransactionStmt(_)) => {}
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// A statement's first word, after whitespace and comments.
fn first_word(statement: &str) -> &str {
    let mut rest = statement.trim_start();
    loop {
        if let Some(comment) = rest.strip_prefix("--") {
            rest = comment
                .split_once('\n')
                .map_or("", |(_, after)| after)
                .trim_start();
        } else if let Some(comment) = rest.strip_prefix("/*") {
            // PostgreSQL's block comments nest.
            let mut depth = 1;
            let mut at = 0;
            let bytes = comment.as_bytes();
            while depth > 0 && at + 1 < bytes.len() {
                match &bytes[at..at + 2] {
                    b"/*" => (depth, at) = (depth + 1, at + 2),
                    b"*/" => (depth, at) = (depth - 1, at + 2),
                    _ => at += 1,
                }
            }
            rest = if depth == 0 {
                comment[at..].trim_start()
            } else {
                ""
            };
        } else {
            break;
        }
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// `text` with each line of a psql meta-command whose meaning a deploy
/// already has blanked (spaces, so every position stays where it was):
/// `\set ON_ERROR_STOP on` (scripts' usual first line: a deploy stops at its
/// first error and rolls everything back), and pg_dump's `\restrict <key>`
/// and `\unrestrict <key>` (they stop a restored script from running other
/// meta-commands; pgrollout runs none). Only where the line starts outside
/// any statement, string, body or comment; any other line starting with `\`
/// is left for the parse to refuse, naming it.
pub(super) fn without_honoured_meta_commands(text: &str) -> Cow<'_, str> {
    if !text.contains('\\') {
        return Cow::Borrowed(text);
    }
    let mut lines = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let content = line.trim();
        if is_honoured_meta_command(content) {
            let start = offset + (line.len() - line.trim_start().len());
            lines.push((start, start + content.len()));
        }
        offset += line.len();
    }
    let blank = |lines: &[(usize, usize)]| {
        let mut bytes = text.as_bytes().to_vec();
        for &(start, end) in lines {
            bytes[start..end].fill(b' ');
        }
        // Only ASCII bytes were replaced by ASCII spaces.
        String::from_utf8(bytes).expect("still UTF-8")
    };
    // Scanned without them (a key may start with a digit, which the
    // scanner refuses as a number's trailing junk), each line must have
    // been between statements: no token (a string, a body, a comment)
    // spans it, and the last token before it ends a statement.
    let Ok(scanned) = pg_query::scan(&blank(&lines)) else {
        return Cow::Borrowed(text);
    };
    lines.retain(|&(start, end)| {
        let spanned = scanned
            .tokens
            .iter()
            .any(|token| (token.start as usize) < end && (token.end as usize) > start);
        let previous = scanned
            .tokens
            .iter()
            .rev()
            .find(|token| (token.end as usize) <= start && !is_comment(token.token));
        !spanned
            && previous.is_none_or(|token| &text[token.start as usize..token.end as usize] == ";")
    });
    if lines.is_empty() {
        return Cow::Borrowed(text);
    }
    Cow::Owned(blank(&lines))
}

/// One of the meta-commands [`without_honoured_meta_commands`] blanks:
/// `\restrict KEY` or `\unrestrict KEY` (pg_dump's key is letters and
/// digits), or `\set ON_ERROR_STOP` with a value psql reads as on.
fn is_honoured_meta_command(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or_default();
    let argument = words.next().unwrap_or_default();
    let value = words.next();
    if words.next().is_some() {
        return false;
    }
    match (command, value) {
        ("\\restrict" | "\\unrestrict", None) => {
            !argument.is_empty() && argument.chars().all(|c| c.is_ascii_alphanumeric())
        }
        // psql's boolean spellings of "on" (`\set ON_ERROR_STOP off` stays
        // refused: a deploy cannot go on past an error).
        ("\\set", Some(value)) => {
            argument == "ON_ERROR_STOP"
                && ["on", "true", "yes", "1"]
                    .iter()
                    .any(|on| value.eq_ignore_ascii_case(on))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statements_first_word_is_read_past_comments() {
        assert_eq!(first_word("  SET search_path = app"), "SET");
        assert_eq!(
            first_word("-- why\n/* a /* nested */ one */ begin;"),
            "begin"
        );
        assert_eq!(first_word("/* only a comment"), "");
        assert_eq!(first_word("CREATE FUNCTION f()"), "CREATE");
    }

    #[test]
    fn honoured_meta_commands_are_blanked_only_between_statements() {
        let dump = "--\n-- PostgreSQL database dump\n--\n\n\\restrict 6qOTjGqa9\n\\set ON_ERROR_STOP ON\n\nSET a = 0;\n\
                    CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$\n\\restrict inbody\n$$;\n\
                    \n\\unrestrict AqAh6L8W9\n";
        let blanked = without_honoured_meta_commands(dump);
        assert_eq!(blanked.len(), dump.len());
        assert_eq!(blanked.lines().count(), dump.lines().count());
        assert!(!blanked.contains("AqAh6L8W9"), "{blanked}");
        assert!(
            !blanked.contains("6qOTjGqa9"),
            "a key may start with a digit: {blanked}"
        );
        assert!(
            blanked.contains("\\restrict inbody"),
            "a body is left as it is"
        );
        for kept in [
            "\\set ON_ERROR_STOP off\n",
            "\\set ON_ERROR_STOP\n",
            "\\set on_error_stop on\n",
            "\\set ECHO all\n",
            "\\restrict two words\n",
            "SELECT 1 \\restrict key\n",
            "SELECT 1\n\\restrict key\n",
            "-- \\restrict key\n",
            "/*\n\\restrict key\n*/\n",
            "SELECT '\n\\restrict key\n';\n",
        ] {
            assert_eq!(without_honoured_meta_commands(kept), kept);
        }
    }
}
