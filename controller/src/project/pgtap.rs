//! pgTAP test files named by a sidecar's `[tests] pgtap`: read, parsed with
//! PostgreSQL's parser, and split into single statements for the agent.
//!
//! The agent runs the statements in a transaction of its own that it always
//! rolls back, so the file's own `BEGIN` / `ROLLBACK` (as `pg_prove` files
//! write them) are dropped, and anything that would end the agent's
//! transaction early — `COMMIT`, `END`, `PREPARE TRANSACTION` — or escape
//! it is refused (`hostile_sql`): a test must never leave a change behind.

use std::path::Path;

use pg_query::protobuf::{node::Node as NodeKind, TransactionStmtKind};
use pgrollout_shared::routine::PgtapScript;

use super::error::{ProjectError, SourceLocation};
use super::hostile_sql;
use super::parse_sql::syntax_error;

/// Reads and splits the pgTAP file at project-relative `path`, named by the
/// sidecar at `named_at`.
pub fn load(
    root: &Path,
    path: &str,
    named_at: &SourceLocation,
) -> Result<PgtapScript, ProjectError> {
    let full = root.join(path);
    if !full.is_file() {
        return Err(ProjectError::InvalidSidecar {
            at: named_at.clone(),
            reason: format!("pgtap = {path:?}: no such file in the project"),
        });
    }
    let text = super::read(&full)?;
    split(path, &text)
}

/// The statements of a pgTAP file, in order, without transaction control.
pub fn split(path: &str, text: &str) -> Result<PgtapScript, ProjectError> {
    let invalid = |offset: usize, reason: String| ProjectError::InvalidTestFile {
        at: SourceLocation::at_offset(path, text, offset),
        reason,
    };
    if let Some(offset) = text.find('\0') {
        return Err(invalid(
            offset,
            "the file contains a NUL byte; remove it".into(),
        ));
    }
    // psql meta-commands are not SQL: the agent has no psql to run them.
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('\\') {
            return Err(invalid(
                offset,
                format!(
                    "{:?} is a psql meta-command; pgrollout runs the file's SQL statements itself \
                     (no psql), so remove it",
                    line.trim()
                ),
            ));
        }
        offset += line.len();
    }
    let parsed = pg_query::parse(text, 0).map_err(|error| syntax_error(path, text, error))?;
    let mut statements = Vec::new();
    for raw in &parsed.protobuf.stmts {
        let start = usize::try_from(raw.stmt_location).unwrap_or(0);
        let end = match usize::try_from(raw.stmt_len).unwrap_or(0) {
            0 => text.len(),
            len => start + len,
        };
        let statement = text.get(start..end).unwrap_or_default().trim();
        let node = raw.stmt.as_ref().and_then(|s| s.node.as_ref());
        if let Some(NodeKind::TransactionStmt(transaction)) = node {
            // pg_prove's wrapper: the agent's own transaction replaces it.
            if matches!(
                TransactionStmtKind::try_from(transaction.kind),
                Ok(TransactionStmtKind::TransStmtBegin
                    | TransactionStmtKind::TransStmtStart
                    | TransactionStmtKind::TransStmtRollback)
            ) {
                continue;
            }
        }
        hostile_sql::check_pgtap_statement(statement, node).map_err(|why| invalid(start, why))?;
        statements.push(statement.to_owned());
    }
    if statements.is_empty() {
        return Err(invalid(0, "the file holds no test statements".into()));
    }
    Ok(PgtapScript {
        path: path.to_owned(),
        statements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pg_prove_file_loses_its_wrapper_and_keeps_its_tests() {
        let text = "-- tests\nBEGIN;\nSELECT plan(2);\nSELECT ok(true, 'a; b');\n\
                    SAVEPOINT s;\nSELECT pass('x');\nSELECT * FROM finish();\nROLLBACK;\n";
        let script = split("tests/a.sql", text).expect("valid");
        assert_eq!(
            script.statements,
            vec![
                "SELECT plan(2)",
                "SELECT ok(true, 'a; b')",
                "SAVEPOINT s",
                "SELECT pass('x')",
                "SELECT * FROM finish()"
            ]
        );
    }

    #[test]
    fn commit_and_meta_commands_are_refused_with_their_line() {
        let error = split("t.sql", "SELECT plan(1);\nCOMMIT;\n").expect_err("commit");
        assert!(
            error
                .to_string()
                .starts_with("t.sql:2:1: COMMIT (transaction control) would end"),
            "{error}"
        );
        let error = split("t.sql", "SELECT 1;\n\\set ECHO none\n").expect_err("psql");
        assert!(
            error
                .to_string()
                .starts_with("t.sql:2:1: \"\\\\set ECHO none\" is a psql"),
            "{error}"
        );
        let error = split("t.sql", "SELECT plan(1;\n").expect_err("syntax");
        assert!(error.to_string().starts_with("t.sql:1:"), "{error}");
    }
}
