//! `pgrollout retire` (issue 15): a routine taken out of service is a change
//! like any other — gated as a deploy, backed up, dropped in the rollout's
//! transaction, ledgered as `retired`, audited with its reason — and a
//! rollback recreates it exactly. Real clusters, the real binaries; what is
//! checked is what an operator would: the catalog, the ledger, the backup
//! file, the audit log, the exit code.

use anyhow::{Context, Result};
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::{Stack, StackOptions};

/// `ov.sql`: two overloads in one file.
const OV: &str = "CREATE OR REPLACE FUNCTION public.ov(x integer) RETURNS text LANGUAGE sql AS $$ SELECT 'int ' || x $$;\n\n\
                  CREATE OR REPLACE FUNCTION public.ov(x text) RETURNS text LANGUAGE sql AS $$ SELECT 'text ' || x $$;\n";

/// Everything "exactly" means for one routine: md5 of `pg_get_functiondef`
/// (SET options included), owner, ACL, comment, `proconfig`. `None` when it
/// does not exist.
async fn state(client: &Client, signature: &str) -> Result<Option<Vec<Option<String>>>> {
    let row = client
        .query_opt(
            "SELECT md5(pg_get_functiondef(p.oid)), pg_get_userbyid(p.proowner)::text, p.proacl::text, \
                    obj_description(p.oid, 'pg_proc'), p.proconfig::text \
             FROM pg_proc p WHERE p.oid = to_regprocedure($1)",
            &[&signature],
        )
        .await?;
    Ok(row.map(|row| (0..5).map(|i| row.get(i)).collect()))
}

/// `action:change` of every ledger row of a routine, oldest first.
async fn ledger(client: &Client, identity: &str) -> Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT action || ':' || change FROM pgrollout.ledger WHERE identity = $1 ORDER BY id",
            &[&identity],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

async fn ledger_rows(client: &Client) -> Result<i64> {
    Ok(client
        .query_one("SELECT count(*) FROM pgrollout.ledger", &[])
        .await?
        .get(0))
}

async fn stack_with_ov(options: StackOptions) -> Result<(Stack, Client)> {
    let stack = Stack::start_with(options).await?;
    stack.write_procedure("ov.sql", OV)?;
    let client = stack.zone("dev").pg.connect().await?;
    let out = stack.cli(&["deploy", "ov", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    Ok((stack, client))
}

#[tokio::test]
async fn a_retired_overload_is_backed_up_dropped_ledgered_audited_and_rolled_back_exactly(
) -> Result<()> {
    let (stack, client) = stack_with_ov(StackOptions::default()).await?;
    // Metadata a DROP loses and a restore must bring back: owner, ACL,
    // comment, a SET option.
    client
        .batch_execute(
            "CREATE ROLE retire_owner; CREATE ROLE retire_reader;
             ALTER FUNCTION public.ov(integer) OWNER TO retire_owner;
             GRANT EXECUTE ON FUNCTION public.ov(integer) TO retire_reader;
             COMMENT ON FUNCTION public.ov(integer) IS 'the old integer entry point';
             ALTER FUNCTION public.ov(integer) SET work_mem = '2MB';",
        )
        .await?;
    let before = state(&client, "public.ov(integer)")
        .await?
        .context("ov(integer)")?;
    let sibling = state(&client, "public.ov(text)")
        .await?
        .context("ov(text)")?;

    let out = stack
        .cli(&[
            "retire",
            "ov(integer)",
            "dev",
            "--reason",
            "CHG-7: superseded by ov(text)",
        ])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("public.ov(integer) [retired]"), "{out}");
    assert!(out.stdout.contains("Status: [ok] SUCCESS"), "{out}");
    assert!(
        out.stderr
            .contains("procedures/ov.sql still defines public.ov(integer)"),
        "the operator learns the file would bring it back: {out}"
    );

    // The catalog: gone, its sibling untouched.
    assert_eq!(state(&client, "public.ov(integer)").await?, None, "{out}");
    assert_eq!(
        state(&client, "public.ov(text)").await?,
        Some(sibling.clone())
    );
    assert_eq!(
        ledger(&client, "public.ov(text)").await?,
        ["deploy:created"]
    );

    // The ledger: a retired row naming its backup, the reason as its note.
    let row = client
        .query_one(
            "SELECT change, note, md5(previous_definition), new_definition IS NULL, backup_path, \
                    previous_owner, previous_comment \
             FROM pgrollout.ledger WHERE identity = 'public.ov(integer)' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, String>(0), "retired");
    assert_eq!(
        row.get::<_, String>(1),
        "retired: CHG-7: superseded by ov(text)"
    );
    assert_eq!(Some(row.get::<_, String>(2)), before[0]);
    assert!(row.get::<_, bool>(3));
    assert_eq!(row.get::<_, String>(5), "retire_owner");
    assert_eq!(row.get::<_, String>(6), "the old integer entry point");
    // The backup file holds the definition, replayable by hand.
    let backup: String = row.get(4);
    let text = std::fs::read_to_string(&backup).with_context(|| backup.clone())?;
    assert!(text.contains("'int ' || x"), "{text}");
    assert!(text.contains("work_mem"), "{text}");

    // The audit log says what was retired and why.
    let audit = stack.audit_lines()?;
    assert!(
        audit
            .iter()
            .any(|line| line.starts_with("deploy.started|ok|")
                && line.contains(
                    "retires public.ov(integer) (reason: CHG-7: superseded by ov(text))"
                )),
        "{audit:#?}"
    );

    // Retiring it again: nothing there, exit 1, nothing changed.
    let again = stack
        .cli(&["retire", "ov(integer)", "dev", "--reason", "again"])
        .await?;
    assert_eq!(again.code, 1, "{again}");
    assert!(
        again.stderr.contains("no such routine in target"),
        "{again}"
    );

    // A plain rollback of the name recreates exactly what was retired, and
    // leaves the sibling alone.
    let out = stack.cli(&["rollback", "ov", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        state(&client, "public.ov(integer)").await?,
        Some(before.clone()),
        "{out}"
    );
    assert_eq!(
        state(&client, "public.ov(text)").await?,
        Some(sibling.clone()),
        "{out}"
    );

    // And the rollback of the retire rollout does the same.
    let out = stack
        .cli(&[
            "retire",
            "public.ov(int4)",
            "dev",
            "--reason",
            "second time",
        ])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(state(&client, "public.ov(integer)").await?, None);
    let rollout = out.rollout_id()?;
    let out = stack.cli(&["rollback", "--rollout", &rollout]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        state(&client, "public.ov(integer)").await?,
        Some(before),
        "{out}"
    );
    assert_eq!(state(&client, "public.ov(text)").await?, Some(sibling));
    Ok(())
}

#[tokio::test]
async fn a_retirement_that_is_unknown_ambiguous_or_still_used_is_refused_and_changes_nothing(
) -> Result<()> {
    let (stack, client) = stack_with_ov(StackOptions::default()).await?;
    let rows_before = ledger_rows(&client).await?;

    // Not in the catalog.
    let out = stack
        .cli(&["retire", "nosuch(integer)", "dev", "--reason", "cleanup"])
        .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("cannot retire public.nosuch(integer): no such routine in target"),
        "{out}"
    );
    // Not in the project and no argument types: which one is meant?
    let out = stack
        .cli(&["retire", "nosuch", "dev", "--reason", "cleanup"])
        .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("name the routine to retire with its argument types"),
        "{out}"
    );
    // A bare name with two overloads.
    let out = stack
        .cli(&["retire", "ov", "dev", "--reason", "cleanup"])
        .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("ov names 2 routines"), "{out}");
    // No reason.
    let out = stack
        .cli(&["retire", "ov(text)", "dev", "--reason", " "])
        .await?;
    assert_eq!(out.code, 1, "{out}");

    // Still used: a view and a BEGIN ATOMIC function depend on ov(text).
    client
        .batch_execute(
            "CREATE VIEW public.ov_view AS SELECT public.ov('a'::text) AS v;
             CREATE FUNCTION public.ov_user() RETURNS text LANGUAGE sql BEGIN ATOMIC SELECT public.ov('b'::text); END;",
        )
        .await?;
    let out = stack
        .cli(&["retire", "ov(text)", "dev", "--reason", "cleanup"])
        .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("view public.ov_view"), "{out}");
    assert!(out.stderr.contains("function public.ov_user()"), "{out}");
    assert!(out.stderr.contains("nothing was changed"), "{out}");
    assert!(state(&client, "public.ov(text)").await?.is_some());

    // A dry run shows the plan and the gates, and changes nothing.
    let out = stack
        .cli(&[
            "retire",
            "ov(integer)",
            "dev",
            "--reason",
            "cleanup",
            "--dry-run",
        ])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .contains("Would back up and DROP public.ov(integer)"),
        "{out}"
    );
    assert!(out.stdout.contains("dev: ready"), "{out}");
    assert!(state(&client, "public.ov(integer)").await?.is_some());
    assert_eq!(
        ledger_rows(&client).await?,
        rows_before,
        "no refusal wrote a ledger row"
    );
    Ok(())
}

#[tokio::test]
async fn a_retirement_where_deploys_need_approval_is_parked_until_approved() -> Result<()> {
    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into(), "qa".into()],
        environment_extra: vec![(
            "qa".into(),
            "promote_from = \"dev\"\nrequire_approval = true".into(),
        )],
        ..StackOptions::default()
    })
    .await?;
    stack.write_procedure("ov.sql", OV)?;
    let qa = stack.zone("qa").pg.connect().await?;
    qa.batch_execute(OV).await?;
    let exists = "SELECT to_regprocedure('public.ov(integer)') IS NOT NULL";

    // Promotion applies as to any plan: QA takes only what DEV ran.
    let retire = ["retire", "ov(integer)", "qa", "--reason", "CHG-9"];
    let out = stack.cli(&retire).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("never succeeded in dev"), "{out}");
    let dev = stack.zone("dev").pg.connect().await?;
    dev.batch_execute(OV).await?;
    let out = stack
        .cli(&["retire", "ov(integer)", "dev", "--reason", "CHG-9"])
        .await?;
    assert_eq!(out.code, 0, "{out}");

    let out = stack.cli(&retire).await?;
    assert_eq!(out.code, 5, "parked, nothing changed yet: {out}");
    assert!(
        out.stderr
            .contains("awaits approval and changed nothing yet"),
        "{out}"
    );
    assert!(qa.query_one(exists, &[]).await?.get::<_, bool>(0));
    let request = out.request_id()?;
    let out = stack
        .cli_as("approver-1", &["approve", &request, "--follow"])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(!qa.query_one(exists, &[]).await?.get::<_, bool>(0), "{out}");
    assert_eq!(ledger(&qa, "public.ov(integer)").await?, ["deploy:retired"]);
    Ok(())
}

/// A file that keeps its routine's privileges and comment beside it (the
/// README's SECURITY DEFINER example) deploys them; retiring that routine
/// runs none of them, and a rollback brings back exactly what was dropped.
#[tokio::test]
async fn a_routine_whose_file_keeps_grants_and_a_comment_is_retired_and_restored() -> Result<()> {
    let stack = Stack::start_with(StackOptions::default()).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client.batch_execute("CREATE ROLE kept_reader").await?;
    stack.write_procedure(
        "kept.sql",
        "CREATE OR REPLACE FUNCTION public.kept(t regclass) RETURNS bigint LANGUAGE sql AS 'SELECT 1';\n\
         REVOKE ALL ON FUNCTION public.kept(regclass) FROM PUBLIC;\n\
         GRANT EXECUTE ON FUNCTION public.kept(regclass) TO kept_reader;\n\
         COMMENT ON FUNCTION public.kept(regclass) IS 'kept';\n\
         ALTER FUNCTION public.kept(regclass) SET work_mem = '2MB';\n",
    )?;
    let out = stack.cli(&["deploy", "kept", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let before = state(&client, "public.kept(regclass)")
        .await?
        .context("kept")?;

    let out = stack
        .cli(&["retire", "kept", "dev", "--reason", "CHG-9: unused"])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("public.kept(regclass) [retired]"),
        "{out}"
    );
    assert_eq!(state(&client, "public.kept(regclass)").await?, None);

    let back = stack.cli(&["rollback", "kept", "dev"]).await?;
    assert_eq!(back.code, 0, "{back}");
    assert_eq!(
        state(&client, "public.kept(regclass)").await?,
        Some(before),
        "definition, owner, ACL, comment and SET option as they were"
    );
    Ok(())
}
