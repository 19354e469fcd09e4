//! SQL that is not a plan's routine definitions — smoke test calls (which are
//! also the post-deploy watch's probes), `[perf]` probe calls and pgTAP
//! statements — checked with PostgreSQL's parser so that it can never end or
//! escape the transaction the agent runs it in (issue 13).
//!
//! The agent wraps each of these in a transaction (and each smoke or probe
//! call in a savepoint) that it always rolls back. A statement that ends that
//! transaction (`COMMIT`, `ROLLBACK`, `PREPARE TRANSACTION`, …) would commit
//! the deploy half-way or let the next call run outside any transaction, so:
//!
//! - a smoke or probe call must be exactly one statement of an **allowed**
//!   kind: `SELECT` (`VALUES`, `WITH`, but not `SELECT … INTO`), `CALL`,
//!   `INSERT`, `UPDATE`, `DELETE` or `MERGE`. Data changes are allowed
//!   because the savepoint rolls them back; everything else (transaction
//!   control, `SET`, `DO`, DDL, utility statements) is refused;
//! - a pgTAP statement may be most SQL (tests create fixtures, `SET ROLE`,
//!   use savepoints), but not what ends the transaction, what cannot run in
//!   a transaction block, or what outlives a rollback (`LOAD`, `DISCARD`,
//!   `DEALLOCATE`, `COPY` to or from files, `SET SESSION AUTHORIZATION`);
//! - neither may call a function whose effect escapes the transaction
//!   (`dblink*` and `pg_background*` run SQL in sessions of their own, and
//!   a few server-file and server-control functions).
//!
//! `SET` and `RESET` are transactional in PostgreSQL (rolled back with the
//! savepoint), so no setting outlives a smoke call; they are refused in calls
//! only because a call has no business changing settings.
//!
//! The CLI checks while it reads the project (errors carry `file:line`); the
//! controller checks every plan it receives again ([`check_routines`]), so a
//! hand-made client cannot skip it; the agent, which has no SQL parser,
//! seals its transactions so that none of them can commit early anyway.

use super::checked_sql::{checked, Check};
use pg_query::protobuf::{node::Node as NodeKind, TransactionStmtKind};
use pgrollout_shared::routine::Routine;

/// Functions whose effects escape the caller's transaction, or act on the
/// server outside it (matched on the unqualified name).
const ESCAPING_FUNCTIONS: &[(&str, &str)] = &[
    (
        "dblink",
        "runs SQL in another session, outside this transaction",
    ),
    (
        "pg_background",
        "runs SQL in a background worker, outside this transaction",
    ),
    ("lo_export", "writes a server file that no rollback removes"),
    ("lo_import", "reads a server file"),
    (
        "pg_file_write",
        "writes a server file that no rollback removes",
    ),
    ("pg_file_rename", "renames a server file"),
    ("pg_file_unlink", "removes a server file"),
    ("pg_reload_conf", "reloads the server's configuration"),
    ("pg_promote", "promotes a standby"),
    ("pg_terminate_backend", "terminates another session"),
    (
        "pg_advisory_lock",
        "takes a session lock that outlives the rollback (use pg_advisory_xact_lock)",
    ),
    (
        "pg_try_advisory_lock",
        "takes a session lock that outlives the rollback (use pg_try_advisory_xact_lock)",
    ),
    // Releasing is not transactional either, and the session holds
    // pgrollout's own deploy lock (the agent checks it before COMMIT too).
    (
        "pg_advisory_unlock",
        "releases session locks, the deploy lock pgrollout holds while the call runs among them",
    ),
    ("pg_cancel_backend", "cancels another session's statement"),
    // Replication slots and origins, backups and statistics live outside
    // any transaction: what these do is not rolled back.
    (
        "pg_create_physical_replication_slot",
        "creates a replication slot, which no rollback removes",
    ),
    (
        "pg_create_logical_replication_slot",
        "creates a replication slot, which no rollback removes",
    ),
    (
        "pg_copy_physical_replication_slot",
        "creates a replication slot, which no rollback removes",
    ),
    (
        "pg_copy_logical_replication_slot",
        "creates a replication slot, which no rollback removes",
    ),
    (
        "pg_drop_replication_slot",
        "drops a replication slot, which no rollback restores",
    ),
    (
        "pg_replication_slot_advance",
        "moves a replication slot on, which no rollback undoes",
    ),
    (
        "pg_replication_origin_",
        "changes replication origin progress outside the transaction",
    ),
    (
        "pg_backup_start",
        "puts the server in backup mode for the session",
    ),
    (
        "pg_start_backup",
        "puts the server in backup mode for the session",
    ),
    ("pg_backup_stop", "ends the server's backup mode"),
    ("pg_stop_backup", "ends the server's backup mode"),
    (
        "pg_stat_reset",
        "resets statistics (a post-deploy watch's baseline) outside the transaction",
    ),
    (
        "pg_stat_statements_reset",
        "resets statistics (a post-deploy watch's baseline) outside the transaction",
    ),
    ("pg_switch_wal", "forces a WAL segment switch on the server"),
    ("pg_rotate_logfile", "rotates the server's log file"),
];

/// A smoke test or `[perf]` probe call: one statement of an allowed kind.
pub fn check_call(call: &str) -> Result<(), String> {
    let parsed = parse(call, "the call")?;
    let node = match parsed.protobuf.stmts.as_slice() {
        [one] => one.stmt.as_ref().and_then(|s| s.node.as_ref()),
        [] => {
            return Err(
                "the call is empty: write e.g. SELECT * FROM addarc('M-0001', 'M-0002')".into(),
            )
        }
        many => {
            return Err(format!(
                "the call holds {} statements; a smoke test or probe runs exactly one",
                many.len()
            ))
        }
    };
    match node {
        Some(NodeKind::SelectStmt(select)) if select.into_clause.is_some() => Err(
            "SELECT … INTO creates a table: a smoke test or probe call must be a SELECT, CALL, \
             INSERT, UPDATE, DELETE or MERGE"
                .into(),
        ),
        Some(
            NodeKind::SelectStmt(_)
            | NodeKind::CallStmt(_)
            | NodeKind::InsertStmt(_)
            | NodeKind::UpdateStmt(_)
            | NodeKind::DeleteStmt(_)
            | NodeKind::MergeStmt(_),
        ) => check_functions(&parsed),
        other => Err(format!(
            "{} is not allowed in a smoke test or probe call: the agent runs each call in a \
             savepoint it rolls back, so a call must be one SELECT, CALL, INSERT, UPDATE, DELETE \
             or MERGE{}",
            kind_name(call, other),
            if ends_transaction(other) {
                " (transaction control would end the deploy's transaction)"
            } else {
                ""
            }
        )),
    }
}

/// What a pgTAP statement (already parsed) must not be. Transaction control
/// other than savepoints is handled by the splitter before this.
pub fn check_pgtap_statement(text: &str, node: Option<&NodeKind>) -> Result<(), String> {
    let refuse = |why: &str| {
        Err(format!(
            "{} {why}: pgrollout runs pgTAP files in a transaction it always rolls back, \
             so a test cannot change anything that outlives it",
            kind_name(text, node)
        ))
    };
    match node {
        Some(NodeKind::TransactionStmt(transaction)) => match transaction_kind(transaction.kind) {
            Some(
                TransactionStmtKind::TransStmtSavepoint
                | TransactionStmtKind::TransStmtRelease
                | TransactionStmtKind::TransStmtRollbackTo,
            ) => Ok(()),
            _ => refuse("would end the test transaction"),
        },
        Some(
            NodeKind::VacuumStmt(_)
            | NodeKind::CreatedbStmt(_)
            | NodeKind::DropdbStmt(_)
            | NodeKind::AlterSystemStmt(_)
            | NodeKind::CreateTableSpaceStmt(_)
            | NodeKind::DropTableSpaceStmt(_)
            | NodeKind::CreateSubscriptionStmt(_)
            | NodeKind::AlterSubscriptionStmt(_)
            | NodeKind::DropSubscriptionStmt(_)
            | NodeKind::ReindexStmt(_)
            | NodeKind::CheckPointStmt(_),
        ) => refuse("cannot run in (or acts outside) a transaction block"),
        Some(NodeKind::IndexStmt(index)) if index.concurrent => {
            refuse("cannot run in a transaction block")
        }
        Some(NodeKind::DiscardStmt(_) | NodeKind::LoadStmt(_) | NodeKind::DeallocateStmt(_)) => {
            refuse("acts on the session, beyond the transaction")
        }
        Some(NodeKind::CopyStmt(_)) => refuse("reads or writes outside the transaction"),
        Some(NodeKind::VariableSetStmt(set)) if set.name == "session_authorization" => {
            refuse("changes the session's user")
        }
        _ => {
            let parsed = parse(text, "the statement")?;
            check_functions(&parsed)
        }
    }
}

/// The edge check of a plan received over the wire: every smoke test call,
/// probe call and pgTAP statement of `routines` passes the checks above,
/// and every companion statement acts only on routines of the plan
/// (`companion_wire.rs`).
/// The message names the routine and what failed.
pub fn check_routines(routines: &[Routine]) -> Result<(), String> {
    for routine in routines {
        let at = || format!("{} ({})", routine.identity, routine.source_path);
        for test in &routine.smoke_tests {
            checked(Check::Call, &test.call_sql, check_call)
                .map_err(|why| format!("{}: smoke test {:?}: {why}", at(), test.name))?;
        }
        if let Some(probe) = &routine.perf_probe {
            checked(Check::Call, &probe.call_sql, check_call)
                .map_err(|why| format!("{}: [perf] call: {why}", at()))?;
        }
        if let Some(script) = &routine.pgtap {
            for (index, statement) in script.statements.iter().enumerate() {
                let in_file = |why: String| {
                    format!(
                        "{}: pgTAP {} statement {}: {why}",
                        at(),
                        script.path,
                        index + 1
                    )
                };
                let parsed = parse(statement, "the statement").map_err(in_file)?;
                let [one] = parsed.protobuf.stmts.as_slice() else {
                    return Err(in_file("holds more than one statement".into()));
                };
                let node = one.stmt.as_ref().and_then(|s| s.node.as_ref());
                if matches!(node, Some(NodeKind::TransactionStmt(t))
                    if !matches!(transaction_kind(t.kind), Some(
                        TransactionStmtKind::TransStmtSavepoint
                        | TransactionStmtKind::TransStmtRelease
                        | TransactionStmtKind::TransStmtRollbackTo)))
                {
                    return Err(in_file(
                        "transaction control; the agent's transaction replaces the file's".into(),
                    ));
                }
                check_pgtap_statement(statement, node).map_err(in_file)?;
            }
        }
    }
    super::companion_wire::check_plan(routines)
}

fn parse(sql: &str, what: &str) -> Result<pg_query::ParseResult, String> {
    pg_query::parse(sql, 0).map_err(|error| match error {
        pg_query::Error::Parse(message) => format!("{what} does not parse: {message}"),
        other => format!("{what} does not parse: {other}"),
    })
}

/// Refuses calls of [`ESCAPING_FUNCTIONS`] anywhere in the statement.
fn check_functions(parsed: &pg_query::ParseResult) -> Result<(), String> {
    for name in parsed.functions() {
        let bare = name
            .rsplit('.')
            .next()
            .unwrap_or(&name)
            .to_ascii_lowercase();
        if let Some((_, why)) = ESCAPING_FUNCTIONS
            .iter()
            .find(|(prefix, _)| bare.starts_with(prefix))
        {
            return Err(format!(
                "calls {name}(), which {why}; smoke tests, probes and tests must stay inside \
                 the transaction pgrollout rolls back"
            ));
        }
    }
    Ok(())
}

fn transaction_kind(kind: i32) -> Option<TransactionStmtKind> {
    TransactionStmtKind::try_from(kind).ok()
}

fn ends_transaction(node: Option<&NodeKind>) -> bool {
    matches!(node, Some(NodeKind::TransactionStmt(_)))
}

/// The statement's leading keywords (e.g. `COMMIT`, `SET SESSION`) for a
/// message: what the user wrote, without quoting arbitrary text at length.
fn kind_name(text: &str, node: Option<&NodeKind>) -> String {
    let mut words: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .take(2)
        .map(str::to_ascii_uppercase)
        .collect();
    // The second word only where it says what the statement does.
    let telling = ["SET", "RESET", "DISCARD", "CREATE", "ALTER", "DROP"];
    if !words.first().is_some_and(|w| telling.contains(&w.as_str())) {
        words.truncate(1);
    }
    match (node, words.as_slice()) {
        (Some(NodeKind::TransactionStmt(_)), [first, ..]) => {
            format!("{first} (transaction control)")
        }
        (_, []) => "an empty statement".into(),
        (_, words) => words.join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(call: &str) -> String {
        check_call(call).expect_err(call)
    }

    #[test]
    fn calls_of_the_allowed_kinds_pass() {
        for call in [
            "SELECT * FROM public.addarc('M-0001', 'M-0002')",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "VALUES (1)",
            "CALL public.reconcile(1)",
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1",
            "DELETE FROM t WHERE id = 4",
            "SELECT pg_advisory_xact_lock(1)",
        ] {
            check_call(call).unwrap_or_else(|e| panic!("{call}: {e}"));
        }
    }

    #[test]
    fn transaction_control_and_session_statements_are_refused() {
        for call in [
            "COMMIT",
            "commit and chain",
            "ROLLBACK",
            "END",
            "ABORT",
            "BEGIN",
            "START TRANSACTION",
            "SAVEPOINT s",
            "RELEASE SAVEPOINT pgrollout_smoke",
            "ROLLBACK TO SAVEPOINT pgrollout_smoke",
            "PREPARE TRANSACTION 'x'",
            "COMMIT PREPARED 'x'",
            "ROLLBACK PREPARED 'x'",
            "SET SESSION AUTHORIZATION postgres",
            "SET search_path = evil",
            "RESET ALL",
            "DISCARD ALL",
            "VACUUM",
            "CREATE DATABASE x",
            "CREATE INDEX CONCURRENTLY i ON t (a)",
            "ALTER SYSTEM SET work_mem = '1GB'",
            "DO $$ BEGIN COMMIT; END $$",
            "LOCK TABLE t",
            "LISTEN x",
            "NOTIFY x",
            "CREATE TABLE x (a int)",
            "SELECT 1 INTO x",
            "EXPLAIN ANALYZE DELETE FROM t",
        ] {
            let why = refused(call);
            assert!(
                why.contains("not allowed") || why.contains("INTO"),
                "{call}: {why}"
            );
        }
        assert!(refused("COMMIT").starts_with("COMMIT (transaction control)"));
        assert!(refused("SELECT 1; COMMIT").contains("2 statements"));
        assert!(refused("").contains("empty"));
    }

    #[test]
    fn functions_that_escape_the_transaction_are_refused() {
        for call in [
            "SELECT dblink_exec('dbname=x', 'DELETE FROM t')",
            "SELECT * FROM public.dblink('x', 'SELECT 1') AS t(a int)",
            "SELECT pg_background_launch('DELETE FROM t')",
            "INSERT INTO t SELECT pg_advisory_lock(1)",
            "SELECT lo_export(1, '/tmp/x')",
            "SELECT pg_advisory_unlock_all()",
            "SELECT pg_catalog.pg_advisory_unlock(8101528047016915061)",
            "SELECT pg_cancel_backend(42)",
            "SELECT pg_drop_replication_slot('standby1')",
            "SELECT * FROM pg_create_physical_replication_slot('s')",
            "SELECT pg_replication_origin_advance('o', '0/1')",
            "SELECT pg_stat_reset()",
            "SELECT pg_stat_reset_single_function_counters(1)",
            "SELECT pg_backup_start('x')",
        ] {
            assert!(refused(call).contains("calls "), "{call}");
        }
    }

    /// The controller's edge: a plan a hand-made client built.
    #[test]
    fn a_received_plan_with_hostile_sql_is_refused_at_the_edge() {
        use pgrollout_shared::routine::{PgtapScript, RoutineIdentity, RoutineKind, SmokeTest};
        let routine = |smoke: &str, pgtap: &[&str]| Routine {
            identity: RoutineIdentity {
                schema: "public".into(),
                name: "f".into(),
                arg_types: vec![],
            },
            kind: RoutineKind::Function,
            create_sql: "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'".into(),
            grants: vec![],
            smoke_tests: vec![SmokeTest {
                name: "t".into(),
                call_sql: smoke.into(),
                expect_columns: vec![],
                max_duration: std::time::Duration::from_secs(1),
                allow_warnings: false,
                search_path: vec![],
            }],
            source_path: "procedures/f.sql".into(),
            depends_on: vec![],
            perf_probe: None,
            pgtap: Some(PgtapScript {
                path: "tests/f.sql".into(),
                statements: pgtap.iter().map(|s| (*s).to_owned()).collect(),
            }),
            source_line: 1,
            search_path: vec![],
            retire: None,
            companion_sql: Vec::new(),
        };
        check_routines(&[routine(
            "SELECT public.f()",
            &["SELECT plan(1)", "SAVEPOINT a"],
        )])
        .expect("harmless");
        let error = check_routines(&[routine("COMMIT", &[])]).expect_err("commit");
        assert!(
            error.starts_with("public.f() (procedures/f.sql): smoke test \"t\": COMMIT"),
            "{error}"
        );
        for statements in [&["ROLLBACK"][..], &["SELECT 1; COMMIT"], &["DISCARD ALL"]] {
            let error = check_routines(&[routine("SELECT 1", statements)]).expect_err("pgtap");
            assert!(error.contains("pgTAP tests/f.sql statement 1"), "{error}");
        }
    }

    #[test]
    fn pgtap_statements_allow_fixtures_and_refuse_escapes() {
        let check = |sql: &str| {
            let parsed = pg_query::parse(sql, 0).expect("parses");
            let node = parsed.protobuf.stmts[0]
                .stmt
                .as_ref()
                .and_then(|s| s.node.clone());
            check_pgtap_statement(sql, node.as_ref())
        };
        for ok in [
            "CREATE TABLE t (a int)",
            "SET ROLE app",
            "SET LOCAL search_path = x",
            "SAVEPOINT s",
            "DO $$ BEGIN PERFORM 1; END $$",
            "SELECT ok(true)",
        ] {
            check(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "COMMIT",
            "PREPARE TRANSACTION 'x'",
            "VACUUM t",
            "DISCARD ALL",
            "SET SESSION AUTHORIZATION x",
            "LOAD 'x'",
            "DEALLOCATE ALL",
            "COPY t TO '/tmp/x'",
            "CREATE INDEX CONCURRENTLY i ON t (a)",
            "SELECT dblink_exec('x', 'DELETE FROM t')",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
