//! Names and messages that came from a project, a database or an agent are
//! data, never terminal control (issue 13, seen 8): a smoke test named with
//! an escape sequence and a RAISE message full of them reach another
//! operator's `status`, `log`, `rollouts` and `audit` — and the controller's
//! store — with every control character written out.

use anyhow::{Context, Result};
use pgrollout_tests::{CommandOutput, Stack};

const ESC: char = '\u{1b}';
const BEL: char = '\u{7}';
/// The one-byte CSI of the C1 set.
const CSI: char = '\u{9b}';

fn assert_no_controls(out: &CommandOutput) {
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !text.contains([ESC, BEL, CSI, '\r']),
            "raw control characters printed:\n{out}"
        );
    }
}

#[tokio::test]
async fn escape_sequences_from_a_project_and_a_database_are_printed_and_stored_escaped(
) -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    stack.write_procedure(
        "esc.sql",
        "CREATE OR REPLACE FUNCTION public.esc() RETURNS integer LANGUAGE plpgsql AS $$\n\
         BEGIN\n  RAISE EXCEPTION 'boom %', chr(27) || '[2J' || chr(27) || ']0;owned' || chr(7) || chr(155) || '1m';\n\
         END;\n$$;\n",
    )?;
    // TOML's \u001B is the ESC of the test's name.
    stack.write_procedure(
        "esc.toml",
        "[[smoke_tests]]\nname = \"evil\\u001B[31m\\r\"\ncall = \"SELECT public.esc()\"\n",
    )?;
    let deploy = stack.cli(&["deploy", "esc", "dev"]).await?;
    assert_eq!(deploy.code, 3, "{deploy}");
    assert_no_controls(&deploy);
    let rollout = deploy
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("r-"))
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        .context("no rollout id")?
        .to_owned();

    // Another operator, a viewer, reads it back.
    for args in [
        vec!["status", rollout.as_str()],
        vec!["log", rollout.as_str()],
        vec!["rollouts"],
        vec!["audit"],
        vec!["audit", "--output", "json"],
    ] {
        let out = stack.cli_as("looker", &args).await?;
        assert_eq!(out.code, 0, "{out}");
        assert_no_controls(&out);
    }
    // Escaped, not dropped: what was there can still be read.
    let status = stack.cli_as("looker", &["status", &rollout]).await?;
    assert!(status.stdout.contains("\\x1b[2J"), "{status}");
    let log = stack.cli_as("looker", &["log", &rollout]).await?;
    assert!(status.stdout.contains("evil\\x1b[31m"), "{status}");
    assert!(log.stdout.contains("Smoke Test: "), "{log}");

    // Stored escaped as well: the controller's store holds no raw ESC.
    let store = rusqlite::Connection::open(stack.dir.path().join("controller.sqlite"))?;
    for query in [
        "SELECT count(*) FROM job_events WHERE instr(message, char(27)) > 0",
        "SELECT count(*) FROM rollouts WHERE instr(coalesce(message, ''), char(27)) > 0",
        "SELECT count(*) FROM audit_log WHERE instr(details, char(27)) > 0",
    ] {
        let raw: i64 = store.query_row(query, [], |row| row.get(0))?;
        assert_eq!(raw, 0, "{query}");
    }
    let escaped: i64 = store.query_row(
        "SELECT count(*) FROM audit_log WHERE instr(details, '\\x1b[2J') > 0",
        [],
        |row| row.get(0),
    )?;
    assert!(
        escaped > 0,
        "the RAISE message is in the audit log, escaped"
    );
    Ok(())
}
