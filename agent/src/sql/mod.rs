//! Everything the agent says to a target database. Statements longer than a
//! line live in `.sql` files beside this one; identifiers are quoted by
//! [`quote_identifier`]; errors are classified by SQLSTATE, not message text.

mod audit_anchors;
mod connection;
mod drift;
pub mod exact_restore;
mod ledger;
mod ledger_deploy;
mod ledger_job;
mod ledger_latest;
mod ledger_versions;
pub mod notices;
pub mod pipeline;
pub mod project_rows;
pub mod recreate;
pub mod retire;
mod routine_lookup;
pub mod server_version;
pub mod signatures;
mod snapshot;
pub mod static_checks;
mod tls;
pub mod watch_stats;

pub use audit_anchors::audit_anchors;
pub use connection::{
    cancel_query, connect, ConnectError, TargetConnection, RESET_TO_AGENT_SEARCH_PATH,
};
pub use drift::{drift_scan, RoutineState, ScannedRoutine};
pub use ledger::{ensure_ledger, find_job_in_ledger, insert_ledger_rows, LedgerJob, LedgerRow};
pub use ledger_deploy::{insert_deploy_rows, DeployedKind, DeployedRow};
pub use ledger_job::job_record;
pub use ledger_latest::{latest_recorded, LatestRecorded};
pub use ledger_versions::{
    ensure_reversal_columns, rows_for_identities, rows_for_rollout, rows_for_routine_of,
    rows_for_selector, LedgerRecord,
};
pub use routine_lookup::{identities_of, name_of_identity, routines_named};
pub use snapshot::{snapshot_routines, snapshot_routines_at, RoutineSnapshot};

/// Renders a driver error for an operator: SQLSTATE, message, detail, hint,
/// and the line of the statement the error points at, when it says.
/// Database errors never contain the password, and neither does this.
pub fn describe_error(error: &tokio_postgres::Error, statement: Option<&str>) -> String {
    describe_error_after(error, statement, 0)
}

/// [`describe_error`] of `statement` sent after `prefix_chars` characters of
/// the agent's own (one simple query: its savepoint commands, then the
/// statement): the server counts the error's position from the start of the
/// whole message, the line is the statement's own.
pub fn describe_error_after(
    error: &tokio_postgres::Error,
    statement: Option<&str>,
    prefix_chars: usize,
) -> String {
    let Some(db) = error.as_db_error() else {
        // Connection-level errors: the driver's text plus its cause chain.
        return pgrollout_shared::errors::error_chain(error);
    };
    let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    if let (Some(tokio_postgres::error::ErrorPosition::Original(position)), Some(sql)) =
        (db.position(), statement)
    {
        let line = line_of_char_position(sql, (*position as usize).saturating_sub(prefix_chars));
        text.push_str(&format!(" (line {line} of the statement)"));
    }
    if let Some(detail) = db.detail() {
        text.push_str(&format!("; detail: {detail}"));
    }
    if let Some(hint) = db.hint() {
        text.push_str(&format!("; hint: {hint}"));
    }
    if let Some(r#where) = db.where_() {
        text.push_str(&format!("; context: {}", r#where.replace('\n', " / ")));
    }
    text
}

/// PostgreSQL error positions count characters from 1.
pub fn line_of_char_position(sql: &str, position: usize) -> usize {
    1 + sql
        .chars()
        .take(position.saturating_sub(1))
        .filter(|c| *c == '\n')
        .count()
}

/// An identifier (schema, role, table) quoted for any statement the agent
/// sends: always in double quotes, embedded quotes doubled — libpq's
/// `PQescapeIdentifier`, as `postgres-protocol` implements it. The one quoting
/// helper of `sql/`.
pub fn quote_identifier(identifier: &str) -> String {
    postgres_protocol::escape::escape_identifier(identifier)
}

/// SHA-256 of a text, lowercase hex: how definitions are fingerprinted in
/// backups and the ledger.
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_position_maps_to_a_line() {
        let sql = "CREATE FUNCTION f()\nRETURNS int\nAS $$ selec 1 $$";
        assert_eq!(line_of_char_position(sql, 1), 1);
        assert_eq!(line_of_char_position(sql, 21), 2);
        assert_eq!(line_of_char_position(sql, 38), 3);
    }

    /// The agent quotes with libpq's escaping; what the shared routine
    /// helpers write (search paths, GRANTs) must be the same text, or a
    /// ledger schema could be named two ways.
    #[test]
    fn identifiers_are_quoted_as_the_shared_helpers_quote_them() {
        for name in [
            "pgrollout",
            "Mixed Case",
            "a\"b",
            "\"\"",
            "back\\slash",
            "ünï",
            "",
        ] {
            assert_eq!(
                quote_identifier(name),
                pgrollout_shared::routine::quote_identifier(name),
                "{name}"
            );
        }
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }

    /// The agent's own SQL goes to databases of any server encoding, which
    /// convert every query's text from UTF-8: a comment's dash or ellipsis
    /// has no LATIN1 form, and such a database refused the first deploy's
    /// ledger DDL (`tests/tests/ledger_sides.rs`). Plain ASCII only.
    #[test]
    fn every_sql_file_of_the_agent_is_ascii() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sql");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect("src/sql") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "sql") {
                let text = std::fs::read_to_string(&path).expect("sql file");
                if let Some((line, _)) = text.lines().enumerate().find(|(_, l)| !l.is_ascii()) {
                    panic!("{}:{}: not ASCII", path.display(), line + 1);
                }
                checked += 1;
            }
        }
        assert!(
            checked > 10,
            "only {checked} SQL files found in {}",
            dir.display()
        );
    }
}
