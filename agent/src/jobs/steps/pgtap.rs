//! pgTAP tests after a deploy: each of the plan's pgTAP files (carried in
//! the plan, already split into statements by the controller's parser) runs
//! in a transaction of its own that is always rolled back. pgTAP's output is
//! read as TAP: `ok N`, `not ok N` with its `#` diagnostics, the plan `1..N`.
//!
//! Without the pgtap extension in the target the files are reported as
//! skipped, with what to do; the next environment's `tests_passed` gate
//! does not accept a skipped file.

use pgrollout_shared::proto::PgtapReport;
use pgrollout_shared::routine::{
    set_local_search_path_sql, PgtapScript, Routine, CODE_DEFAULT_SEARCH_PATH,
};

use crate::jobs::context::{JobContext, JobFailure};
use crate::sql::project_rows::{self, MAX_TEXT_OUTPUT_BYTES};
use crate::sql::static_checks::extension_schema;
use crate::sql::{describe_error, TargetConnection};

/// Most failing tests one report keeps (the rest are counted).
const MAX_FAILURES_KEPT: usize = 20;

/// Runs every distinct pgTAP file of `routines` (routines of one source file
/// share theirs).
pub async fn run_scripts(
    ctx: &JobContext,
    conn: &TargetConnection,
    routines: &[Routine],
) -> Result<Vec<PgtapReport>, JobFailure> {
    let mut scripts: Vec<(&PgtapScript, &[String])> = Vec::new();
    for routine in routines {
        if let Some(script) = &routine.pgtap {
            if !scripts.iter().any(|(s, _)| s.path == script.path) {
                scripts.push((script, &routine.search_path));
            }
        }
    }
    let installed = extension_schema(&conn.client, "pgtap")
        .await
        .map_err(|e| JobFailure::database("cannot read pg_extension", e))?;
    let mut reports = Vec::new();
    for (script, code_path) in scripts {
        let Some(pgtap_schema) = &installed else {
            reports.push(PgtapReport {
                path: script.path.clone(),
                skipped: format!(
                    "pgTAP is not installed in target {}: run CREATE EXTENSION pgtap there (Debian package \
                     postgresql-15-pgtap), or remove [tests] pgtap from the sidecar",
                    ctx.target.name
                ),
                ..Default::default()
            });
            continue;
        };
        let path = script_search_path(code_path, pgtap_schema);
        reports.push(run_script(conn, script, &path).await?);
    }
    Ok(reports)
}

/// The path a script runs under: its routines' (`public` when they declare
/// none, as their CREATEs ran), then pgTAP's own schema, so `plan()` and
/// `ok()` resolve wherever the extension was installed.
fn script_search_path(code_path: &[String], pgtap_schema: &str) -> Vec<String> {
    let mut path = if code_path.is_empty() {
        vec![CODE_DEFAULT_SEARCH_PATH.to_owned()]
    } else {
        code_path.to_vec()
    };
    if !path.iter().any(|s| s == pgtap_schema) {
        path.push(pgtap_schema.to_owned());
    }
    path
}

async fn run_script(
    conn: &TargetConnection,
    script: &PgtapScript,
    search_path: &[String],
) -> Result<PgtapReport, JobFailure> {
    let mut output: Vec<String> = Vec::new();
    // What the script printed so far, against MAX_TEXT_OUTPUT_BYTES.
    let mut printed = 0usize;
    let mut error = String::new();
    crate::jobs::context::txn_seal::begin(conn).await?;
    // Undone by the ROLLBACK that always ends the script.
    conn.client
        .batch_execute(&set_local_search_path_sql(search_path))
        .await
        .map_err(|e| JobFailure::database("setting the pgTAP script's search path failed", e))?;
    for (index, statement) in script.statements.iter().enumerate() {
        if let Some(keyword) = ends_the_transaction(statement) {
            error = format!(
                "statement {} ({keyword}) would end the test transaction; refused",
                index + 1
            );
            break;
        }
        // One statement per call (the extended protocol refuses more).
        let room = MAX_TEXT_OUTPUT_BYTES.saturating_sub(printed);
        match project_rows::text_lines(&conn.client, statement, room).await {
            Ok(Ok(lines)) => {
                printed += lines.iter().map(String::len).sum::<usize>();
                output.extend(lines);
            }
            Ok(Err(lines)) => {
                output.extend(lines);
                error = format!(
                    "statement {}: the script printed more than {} MB; the agent stopped reading",
                    index + 1,
                    MAX_TEXT_OUTPUT_BYTES / (1024 * 1024)
                );
                break;
            }
            Err(e) => {
                error = format!(
                    "statement {}: {}",
                    index + 1,
                    describe_error(&e, Some(statement))
                );
                break;
            }
        }
        if let Err(why) = crate::jobs::context::txn_seal::confirm(conn).await {
            error = crate::jobs::context::txn_seal::escaped_message(
                &format!("statement {}", index + 1),
                &why,
            );
            break;
        }
    }
    // Always: a test never leaves anything behind.
    let _ = conn.client.batch_execute("ROLLBACK").await;
    let mut report = parse_tap(&output);
    report.path = script.path.clone();
    report.error = error;
    report.passed = report.error.is_empty()
        && report.failed == 0
        && report.run > 0
        && (report.planned == 0 || report.planned == report.run);
    Ok(report)
}

/// Counts TAP results: `ok`, `not ok` (a `# TODO` one is not a failure) and
/// the plan; a failure keeps the `#` diagnostics printed after it.
fn parse_tap(output: &[String]) -> PgtapReport {
    let mut report = PgtapReport::default();
    let mut in_failure = false;
    for line in output.iter().flat_map(|text| text.lines()) {
        if line.starts_with("ok ") || line == "ok" {
            report.run += 1;
            in_failure = false;
        } else if line.starts_with("not ok") {
            report.run += 1;
            in_failure = !line.contains("# TODO");
            if in_failure {
                report.failed += 1;
                if report.failures.len() < MAX_FAILURES_KEPT {
                    report.failures.push(line.to_owned());
                }
            }
        } else if let Some(count) = line.strip_prefix("1..") {
            report.planned = count.trim().parse().unwrap_or(0);
            in_failure = false;
        } else if line.starts_with('#') && in_failure {
            if let Some(last) = report.failures.last_mut() {
                if last.len() < 2000 {
                    last.push_str(" / ");
                    last.push_str(line.trim_start_matches('#').trim());
                }
            }
        }
    }
    report
}

/// The keyword when a statement would end the agent's transaction. The
/// controller already drops or refuses these; the agent checks again
/// because it will not trust the wire with a COMMIT.
fn ends_the_transaction(statement: &str) -> Option<String> {
    let words = leading_words(statement, 2);
    let first = words.first()?.to_ascii_uppercase();
    let second = words
        .get(1)
        .map(|w| w.to_ascii_uppercase())
        .unwrap_or_default();
    let ends = match first.as_str() {
        "BEGIN" | "START" | "COMMIT" | "END" | "ABORT" => true,
        "ROLLBACK" => second != "TO",
        "PREPARE" => second == "TRANSACTION",
        _ => false,
    };
    ends.then_some(first)
}

/// The first `n` words of a statement, past whitespace and comments.
fn leading_words(statement: &str, n: usize) -> Vec<&str> {
    let mut rest = statement;
    let mut words = Vec::new();
    while words.len() < n {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, tail)| tail);
        } else if rest.starts_with("/*") {
            rest = skip_block_comment(rest);
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end == 0 {
                break;
            }
            words.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
    words
}

/// Skips a (possibly nested) `/* … */` comment at the start of `text`.
fn skip_block_comment(text: &str) -> &str {
    let mut depth = 0;
    let mut index = 0;
    let bytes = text.as_bytes();
    while index + 1 < bytes.len() {
        match (bytes[index], bytes[index + 1]) {
            (b'/', b'*') => {
                depth += 1;
                index += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                index += 2;
                if depth == 0 {
                    return &text[index..];
                }
            }
            _ => index += 1,
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_output_is_counted_with_diagnostics() {
        let output: Vec<String> = [
            "1..3",
            "ok 1 - exists",
            "not ok 2 - adds\n# Failed test 2: \"adds\"\n#         have: 1\n#         want: 2",
            "not ok 3 - later # TODO not yet",
        ]
        .map(String::from)
        .to_vec();
        let report = parse_tap(&output);
        assert_eq!((report.planned, report.run, report.failed), (3, 3, 1));
        assert_eq!(
            report.failures,
            vec!["not ok 2 - adds / Failed test 2: \"adds\" / have: 1 / want: 2"]
        );
    }

    #[test]
    fn transaction_control_is_recognised_behind_comments() {
        assert_eq!(ends_the_transaction("COMMIT"), Some("COMMIT".into()));
        assert_eq!(
            ends_the_transaction("/* a /* b */ */ -- x\n end"),
            Some("END".into())
        );
        assert_eq!(ends_the_transaction("rollback to savepoint s"), None);
        assert_eq!(
            ends_the_transaction("prepare transaction 'x'"),
            Some("PREPARE".into())
        );
        assert_eq!(ends_the_transaction("PREPARE q AS SELECT 1"), None);
        assert_eq!(ends_the_transaction("SELECT plan(1)"), None);
        assert_eq!(ends_the_transaction("  "), None);
    }
}
