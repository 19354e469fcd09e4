//! Adopting drift (issue 20): `pgrollout deploy … --adopt-drift --reason` and
//! `pgrollout adopt`. A routine changed by hand is recorded in the ledger
//! (action `adopt`: previous = what pgrollout had deployed, new = the live
//! hand-made state) by an approver or admin, audited with the reason; the
//! `no_drift` gate then lets the deploy through, and the rollback stack runs
//! deploy → hand-made version → pgrollout's earlier version. Real clusters,
//! the real binaries; checked: exit codes, printed text, catalog, ledger,
//! audit log.

use anyhow::Result;
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::{Stack, StackOptions};

/// Two overloads: `ad(integer)` is edited by hand, `ad(text)` never drifts.
const AD: &str = "\
CREATE OR REPLACE FUNCTION public.ad(x integer) RETURNS text LANGUAGE sql AS $$ SELECT 'v1 ' || x $$;\n\n\
CREATE OR REPLACE FUNCTION public.ad(x text) RETURNS text LANGUAGE sql AS $$ SELECT 'text ' || x $$;\n";

const HAND_EDIT: &str = "\
CREATE OR REPLACE FUNCTION public.ad(x integer) RETURNS text LANGUAGE sql AS $$ SELECT 'hotfix ' || x $$;
COMMENT ON FUNCTION public.ad(integer) IS 'hotfixed at 3am';";

async fn ledger_rows(client: &Client) -> Result<i64> {
    Ok(client
        .query_one("SELECT count(*) FROM pgrollout.ledger", &[])
        .await?
        .get(0))
}

/// `ad(integer)`'s body and comment, as the catalog holds them.
async fn live(client: &Client) -> Result<(String, Option<String>)> {
    let row = client
        .query_one(
            "SELECT prosrc, obj_description(oid, 'pg_proc') FROM pg_proc \
             WHERE oid = 'public.ad(integer)'::regprocedure",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

#[tokio::test]
async fn deploy_adopt_drift_records_the_hand_edit_and_rollbacks_walk_back_through_it() -> Result<()>
{
    let stack = Stack::start_with(StackOptions {
        environment_extra: vec![("dev".into(), "gates = [\"no_drift\"]".into())],
        ..StackOptions::default()
    })
    .await?;
    stack.write_procedure("ad.sql", AD)?;
    let out = stack.cli(&["deploy", "ad", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let client = stack.zone("dev").pg.connect().await?;
    client.batch_execute(HAND_EDIT).await?;
    stack.write_procedure("ad.sql", &AD.replace("'v1 '", "'v2 '"))?;
    let rows_before = ledger_rows(&client).await?;

    // Without the flag: refused with the diff, and the refusal names the flag.
    let out = stack.cli(&["deploy", "ad", "dev"]).await?;
    assert_eq!(out.code, 1, "{out}");
    let printed = format!("{}{}", out.stdout, out.stderr);
    for expected in [
        "refused by the no_drift gate",
        "ad(integer) (definition, comment)",
        "+AS $function$ SELECT 'hotfix ' || x $function$",
        "--adopt-drift --reason",
    ] {
        assert!(
            printed.contains(expected),
            "missing {expected:?} in:\n{out}"
        );
    }

    // A deployer without the approver role: refused before anything changes.
    let out = stack
        .cli(&[
            "deploy",
            "ad",
            "dev",
            "--adopt-drift",
            "--reason",
            "keep it",
        ])
        .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("approver"), "{out}");
    assert!(out.stderr.contains("nothing was deployed"), "{out}");
    assert_eq!(ledger_rows(&client).await?, rows_before);
    assert_eq!(live(&client).await?.0, " SELECT 'hotfix ' || x ");

    // --adopt-drift needs a reason.
    let out = stack
        .cli_as("approver-1", &["deploy", "ad", "dev", "--adopt-drift"])
        .await?;
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(ledger_rows(&client).await?, rows_before);

    // An approver: the hand edit is adopted, then the deploy goes through.
    let reason = "INC-42: the 3am hotfix is kept on record";
    let out = stack
        .cli_as(
            "approver-1",
            &["deploy", "ad", "dev", "--adopt-drift", "--reason", reason],
        )
        .await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("ad(integer): adopted"), "{out}");
    assert!(
        out.stdout
            .contains("+AS $function$ SELECT 'hotfix ' || x $function$"),
        "the adopted change is shown: {out}"
    );
    assert!(
        out.stdout
            .contains("  comment: (none) -> \"hotfixed at 3am\""),
        "{out}"
    );
    assert_eq!(live(&client).await?.0, " SELECT 'v2 ' || x ");

    // The ledger: one adopt row, previous = what pgrollout deployed, new =
    // the hand-made state (comment included), with the reason; then the deploy.
    let adopted = client
        .query(
            "SELECT identity, previous_definition, new_definition, new_comment, note, actor \
             FROM pgrollout.ledger WHERE action = 'adopt'",
            &[],
        )
        .await?;
    assert_eq!(adopted.len(), 1, "only the routine that drifted");
    let row = &adopted[0];
    assert_eq!(row.get::<_, String>("identity"), "public.ad(integer)");
    assert!(row
        .get::<_, String>("previous_definition")
        .contains("'v1 '"));
    assert!(row.get::<_, String>("new_definition").contains("'hotfix '"));
    assert_eq!(
        row.get::<_, Option<String>>("new_comment").as_deref(),
        Some("hotfixed at 3am")
    );
    assert!(row.get::<_, String>("note").contains(reason));
    assert_eq!(row.get::<_, String>("actor"), "approver-1");
    let order: Vec<String> = client
        .query(
            "SELECT action FROM pgrollout.ledger WHERE identity = 'public.ad(integer)' ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(order, ["deploy", "adopt", "deploy"]);

    // Audited: who, which routine, why.
    let audit = stack.audit_lines()?;
    assert!(
        audit
            .iter()
            .any(|l| l.starts_with("drift.adopted|ok|approver-1|")
                && l.contains("ad(integer)")
                && l.contains(reason)),
        "{audit:#?}"
    );
    let clean = stack.cli(&["drift", "dev"]).await?;
    assert_eq!(clean.code, 0, "{clean}");

    // Rolling back the deploy restores the adopted hand-made version…
    let out = stack.cli(&["rollback", "ad", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        live(&client).await?,
        (
            " SELECT 'hotfix ' || x ".to_owned(),
            Some("hotfixed at 3am".to_owned())
        )
    );
    // …and a second rollback what pgrollout had deployed before the hand edit.
    let out = stack.cli(&["rollback", "ad", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        live(&client).await?,
        (" SELECT 'v1 ' || x ".to_owned(), None)
    );
    let clean = stack.cli(&["drift", "dev"]).await?;
    assert_eq!(clean.code, 0, "the ledger follows every step: {clean}");

    // The adopted version is a named version too: `history` lists it and
    // `rollback --to <its ledger id>` brings it back.
    let adopt_id: i64 = client
        .query_one(
            "SELECT id FROM pgrollout.ledger WHERE action = 'adopt'",
            &[],
        )
        .await?
        .get(0);
    let history = stack.cli(&["history", "ad", "dev"]).await?;
    assert_eq!(history.code, 0, "{history}");
    assert!(history.stdout.contains("adopt"), "{history}");
    let out = stack
        .cli(&["rollback", "ad", "dev", "--to", &adopt_id.to_string()])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(live(&client).await?.0, " SELECT 'hotfix ' || x ");
    Ok(())
}

#[tokio::test]
async fn adopt_takes_only_drifted_routines_and_treats_names_as_data() -> Result<()> {
    let stack = Stack::start_with(StackOptions::default()).await?;
    stack.write_procedure("ad.sql", AD)?;
    // A first deploy (no ledger yet) with --adopt-drift: nothing drifted, so
    // nothing is adopted, and the deploy runs.
    let out = stack
        .cli_as(
            "approver-1",
            &["deploy", "ad", "dev", "--adopt-drift", "--reason", "first"],
        )
        .await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("no selected routine drifted"), "{out}");
    let client = stack.zone("dev").pg.connect().await?;
    let adopted: i64 = client
        .query_one(
            "SELECT count(*) FROM pgrollout.ledger WHERE action = 'adopt'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(adopted, 0);
    let rows_before = ledger_rows(&client).await?;
    let adopt = |operator: &'static str, name: &'static str| {
        let stack = &stack;
        async move {
            stack
                .cli_as(operator, &["adopt", "dev", name, "--reason", "keep it"])
                .await
        }
    };

    // Nothing drifted: refused, naming why.
    let out = adopt("approver-1", "ad").await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("ad(integer) did not drift"), "{out}");
    assert_eq!(ledger_rows(&client).await?, rows_before);

    // Hostile names are data: a quoted identifier that reads like SQL is
    // looked up as a name (and not found); one with `;` is refused at once.
    let out = adopt("approver-1", "public.\"ad' OR '1'='1\"").await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("no such routine"), "{out}");
    let out = adopt("approver-1", "ad(integer); DROP TABLE pgrollout.ledger").await?;
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(
        ledger_rows(&client).await?,
        rows_before,
        "the ledger is intact"
    );

    client.batch_execute(HAND_EDIT).await?;
    // Only an approver or admin adopts.
    let out = adopt("looker", "ad").await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("approver"), "{out}");
    // No reason: refused by the CLI and, for any other client, the controller.
    let out = stack.cli_as("approver-1", &["adopt", "dev", "ad"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(ledger_rows(&client).await?, rows_before);

    // A name matching both overloads adopts the one that drifted.
    let out = adopt("approver-1", "ad").await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("ad(integer): adopted"), "{out}");
    assert!(!out.stdout.contains("ad(text): adopted"), "{out}");
    assert_eq!(ledger_rows(&client).await?, rows_before + 1);
    let clean = stack.cli(&["drift", "dev"]).await?;
    assert_eq!(clean.code, 0, "adopted drift is no longer drift: {clean}");
    assert_eq!(
        live(&client).await?.0,
        " SELECT 'hotfix ' || x ",
        "no routine touched"
    );

    // Adopted once, it has not drifted any more.
    let out = adopt("approver-1", "ad(integer)").await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("did not drift"), "{out}");
    Ok(())
}
