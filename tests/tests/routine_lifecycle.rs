//! A routine's whole lifecycle as PostgreSQL models it (issue 15): rollbacks
//! that restore states which existed, across overloads and no-op deploys;
//! unchanged routines left untouched; changes `CREATE OR REPLACE` cannot make
//! applied as DROP + CREATE. Real clusters, the real binaries; the catalog is
//! read with `pg_get_functiondef`.

use anyhow::{Context, Result};
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::{CommandOutput, Stack};

/// `pg_get_functiondef` of a signature, `None` when it does not exist.
async fn definition(client: &Client, signature: &str) -> Result<Option<String>> {
    Ok(client
        .query_opt(
            "SELECT pg_get_functiondef(to_regprocedure($1))",
            &[&signature],
        )
        .await?
        .and_then(|row| row.get(0)))
}

/// Both overloads of `ov`, as the catalog holds them.
async fn overloads(client: &Client) -> Result<(Option<String>, Option<String>)> {
    Ok((
        definition(client, "public.ov(integer)").await?,
        definition(client, "public.ov(text)").await?,
    ))
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

/// `ov.sql`: two overloads in one file; `marker` changes only `ov(integer)`.
fn ov(marker: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION public.ov(x integer) RETURNS text LANGUAGE sql AS $$ SELECT '{marker}' || x $$;\n\n\
         CREATE OR REPLACE FUNCTION public.ov(x text) RETURNS text LANGUAGE sql AS $$ SELECT 'text ' || x $$;\n"
    )
}

async fn deploy(stack: &Stack, marker: &str) -> Result<CommandOutput> {
    stack.write_procedure("ov.sql", &ov(marker))?;
    let out = stack.cli(&["deploy", "ov", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    Ok(out)
}

#[tokio::test]
async fn rolling_back_overloads_restores_only_what_the_undone_change_changed() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    deploy(&stack, "v1").await?;
    let v1 = overloads(&client).await?;
    assert!(v1.0.is_some() && v1.1.is_some(), "{v1:?}");
    deploy(&stack, "v2").await?;
    let v2 = overloads(&client).await?;
    assert_ne!(v2.0, v1.0);
    assert_eq!(v2.1, v1.1, "ov(text) unchanged");
    // A no-op deploy is not a change: the rollback below still undoes v2.
    deploy(&stack, "v2").await?;

    let out = stack.cli(&["rollback", "ov", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(overloads(&client).await?, v1, "{out}");
    assert!(!out.stdout.contains("is gone"), "{out}");
    assert!(
        out.stdout
            .contains("ov(text): left as it is — the change being undone"),
        "{out}"
    );
    let text_rows = ledger(&client, "public.ov(text)").await?;
    assert!(
        text_rows.iter().all(|row| row.starts_with("deploy:")),
        "ov(text) was not touched by the rollback: {text_rows:?}"
    );

    // One further back: the first deploy created both, so both go.
    let out = stack.cli(&["rollback", "ov", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(overloads(&client).await?, (None, None), "{out}");

    // The same in an emergency, and for a whole rollout.
    deploy(&stack, "v1").await?;
    deploy(&stack, "v2").await?;
    let out = stack
        .cli(&[
            "rollback",
            "ov",
            "dev",
            "--emergency",
            "--reason",
            "INC-1: ov(integer) misbehaves",
        ])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(overloads(&client).await?, v1, "{out}");
    let rollout = deploy(&stack, "v3").await?.rollout_id()?;
    let v3 = overloads(&client).await?;
    let out = stack.cli(&["rollback", "--rollout", &rollout]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(overloads(&client).await?, v1, "{out}");

    // --to a ledger row names one routine's version: only that one moves.
    let v3_row: i64 = client
        .query_one(
            "SELECT max(id) FROM pgrollout.ledger WHERE identity = 'public.ov(integer)' AND action = 'deploy' \
             AND change = 'replaced'",
            &[],
        )
        .await?
        .get(0);
    let out = stack
        .cli(&["rollback", "ov", "dev", "--to", &v3_row.to_string()])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(overloads(&client).await?, (v3.0, v1.1), "{out}");
    Ok(())
}

/// The `xmin` of a routine's `pg_proc` row: it changes whenever anything
/// re-creates or alters the routine, so an equal one means untouched.
async fn row_version(client: &Client, signature: &str) -> Result<String> {
    Ok(client
        .query_one(
            "SELECT xmin::text FROM pg_proc WHERE oid = to_regprocedure($1)",
            &[&signature],
        )
        .await?
        .get(0))
}

/// `change` and whether the row names a backup, for a routine's latest row.
async fn latest_row(client: &Client, identity: &str) -> Result<(String, bool)> {
    let row = client
        .query_one(
            "SELECT change, backup_path IS NOT NULL FROM pgrollout.ledger WHERE identity = $1 \
             ORDER BY id DESC LIMIT 1",
            &[&identity],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

#[tokio::test]
async fn unchanged_routines_are_left_untouched_and_recorded_as_unchanged() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    deploy(&stack, "v1").await?;
    let integer = row_version(&client, "public.ov(integer)").await?;
    let text = row_version(&client, "public.ov(text)").await?;

    // The same project again: nothing is created, backed up or smoke-tested.
    let out = deploy(&stack, "v1").await?;
    for expected in [
        "no backup needed: all 2 routine(s) unchanged",
        "all 2 routine(s) unchanged: nothing created or replaced",
        "public.ov(integer) [unchanged]",
        "public.ov(text) [unchanged]",
        "Backup: none",
    ] {
        assert!(
            out.stdout.contains(expected),
            "expected {expected:?} in:\n{out}"
        );
    }
    assert!(
        !out.stdout.contains("routine(s) created or replaced"),
        "{out}"
    );
    assert_eq!(row_version(&client, "public.ov(integer)").await?, integer);
    assert_eq!(row_version(&client, "public.ov(text)").await?, text);
    assert_eq!(
        latest_row(&client, "public.ov(integer)").await?,
        ("unchanged".into(), false)
    );
    assert_eq!(
        latest_row(&client, "public.ov(text)").await?,
        ("unchanged".into(), false)
    );

    // One overload changed: only it is re-created and backed up.
    let out = deploy(&stack, "v2").await?;
    assert!(
        out.stdout
            .contains("1 routine(s) created or replaced; 1 unchanged, left untouched"),
        "{out}"
    );
    assert!(
        out.stdout.contains("public.ov(integer) [replaced]"),
        "{out}"
    );
    assert!(out.stdout.contains("public.ov(text) [unchanged]"), "{out}");
    assert_ne!(row_version(&client, "public.ov(integer)").await?, integer);
    assert_eq!(row_version(&client, "public.ov(text)").await?, text);
    assert_eq!(
        latest_row(&client, "public.ov(integer)").await?,
        ("replaced".into(), true)
    );
    assert_eq!(
        latest_row(&client, "public.ov(text)").await?,
        ("unchanged".into(), false)
    );

    // Changed by hand: the live state is not what the plan left, so the
    // plan's version is applied again rather than taken for unchanged.
    let planned = definition(&client, "public.ov(text)").await?;
    client
        .batch_execute(
            "CREATE OR REPLACE FUNCTION public.ov(x text) RETURNS text LANGUAGE sql AS $$ SELECT 'hand ' || x $$",
        )
        .await?;
    let out = deploy(&stack, "v2").await?;
    assert_eq!(
        definition(&client, "public.ov(text)").await?,
        planned,
        "{out}"
    );
    assert_eq!(
        latest_row(&client, "public.ov(text)").await?,
        ("replaced".into(), true)
    );
    Ok(())
}

/// `rt.sql` with the given return type and argument name.
fn rt(returns: &str, argument: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION public.rt({argument} integer) RETURNS {returns} LANGUAGE sql \
         AS $$ SELECT {argument}::{returns} $$;\n"
    )
}

/// Return type, owner, ACL and comment of `public.rt(integer)`.
async fn rt_state(client: &Client) -> Result<Option<(String, String, String, String)>> {
    Ok(client
        .query_opt(
            "SELECT pg_get_function_result(p.oid), p.proowner::regrole::text, p.proacl::text, \
             obj_description(p.oid, 'pg_proc') FROM pg_proc p WHERE p.oid = to_regprocedure('public.rt(integer)')",
            &[],
        )
        .await?
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3))))
}

#[tokio::test]
async fn a_change_create_or_replace_cannot_make_is_a_drop_and_create_that_keeps_owner_acl_comment(
) -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    stack.write_procedure(
        "rt.toml",
        "[[grants]]\nprivilege = \"EXECUTE\"\nto = [\"perseus_app\"]\n",
    )?;
    stack.write_procedure("rt.sql", &rt("integer", "x"))?;
    let out = stack.cli(&["deploy", "rt", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    client
        .batch_execute(
            "CREATE ROLE rt_owner NOLOGIN; ALTER FUNCTION public.rt(integer) OWNER TO rt_owner; \
             GRANT EXECUTE ON FUNCTION public.rt(integer) TO perseus_report; \
             COMMENT ON FUNCTION public.rt(integer) IS 'kept across DROP + CREATE'",
        )
        .await?;
    let before = rt_state(&client).await?.context("rt")?;
    // A deploy after the hand changes, so the ledger records them.
    stack.write_procedure(
        "rt.sql",
        &rt("integer", "x").replace("SELECT", "SELECT /* v1 */"),
    )?;
    assert_eq!(stack.cli(&["deploy", "rt", "dev"]).await?.code, 0);
    let v1 = rt_state(&client).await?.context("rt")?;
    assert_eq!(v1, before);
    let v1_definition = definition(&client, "public.rt(integer)").await?;

    // Another return type: applied as DROP + CREATE, metadata carried over.
    stack.write_procedure("rt.sql", &rt("bigint", "x"))?;
    let out = stack.cli(&["deploy", "rt", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("by DROP + CREATE"), "{out}");
    assert!(
        out.stdout.contains("public.rt(integer) [recreated]"),
        "{out}"
    );
    let (returns, owner, acl, comment) = rt_state(&client).await?.context("rt")?;
    assert_eq!(returns, "bigint");
    assert_eq!(
        (owner, acl, comment),
        (v1.1.clone(), v1.2.clone(), v1.3.clone())
    );

    // Rolling it back restores the old signature exactly.
    let out = stack.cli(&["rollback", "rt", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(rt_state(&client).await?, Some(v1.clone()), "{out}");
    assert_eq!(
        definition(&client, "public.rt(integer)").await?,
        v1_definition
    );

    // A renamed argument is the same kind of change.
    stack.write_procedure("rt.sql", &rt("integer", "y"))?;
    let out = stack.cli(&["deploy", "rt", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        definition(&client, "public.rt(integer)")
            .await?
            .is_some_and(|d| d.contains("rt(y integer)")),
        "{out}"
    );

    // Something depends on it: refused, naming it, and nothing changed.
    client
        .batch_execute("CREATE VIEW public.rt_view AS SELECT public.rt(1) AS r")
        .await?;
    let live = (
        rt_state(&client).await?,
        definition(&client, "public.rt(integer)").await?,
    );
    stack.write_procedure("rt.sql", &rt("text", "y"))?;
    let out = stack.cli(&["deploy", "rt", "dev"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        format!("{}{}", out.stdout, out.stderr)
            .contains("public.rt(integer) is used by view public.rt_view"),
        "{out}"
    );
    assert_eq!(
        (
            rt_state(&client).await?,
            definition(&client, "public.rt(integer)").await?
        ),
        live
    );
    Ok(())
}
