//! Issue 15: routines as pg_dump writes them. `pg_restore --function`
//! (or a dump split per object) leaves each routine in a file with pg_dump's
//! preamble — `\restrict`, the session SETs, `SELECT pg_catalog.set_config(
//! 'search_path', '', false)` — a plain CREATE, `ALTER … OWNER TO`, the
//! COMMENT and ACL statements, and `\unrestrict`. Such files deploy as
//! they are, and the catalog is the dumped database's.

use anyhow::{Context, Result};
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::{pg_bin_dir, run_command, Stack, CLI_TIMEOUT};

/// What both databases have before the routines (roles are the cluster's).
const SETUP: &str = "CREATE SCHEMA app; CREATE TYPE app.mood AS ENUM ('ok', 'bad');";

const ROUTINES: &str = "
CREATE FUNCTION app.f(a integer, b app.mood DEFAULT 'ok') RETURNS integer LANGUAGE sql STABLE
  AS $$ SELECT a $$;
CREATE FUNCTION app.g(t text) RETURNS text LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp AS $$ BEGIN RETURN upper(t); END $$;
REVOKE ALL ON FUNCTION app.g(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.g(text) TO reporting;
COMMENT ON FUNCTION app.g(text) IS 'shouts';
CREATE PROCEDURE app.p(INOUT n integer) LANGUAGE plpgsql AS $$ BEGIN n := n + 1; END $$;
CREATE FUNCTION app.h() RETURNS integer LANGUAGE sql BEGIN ATOMIC SELECT app.f(1); END;
CREATE FUNCTION app.moody(m app.mood) RETURNS text LANGUAGE plpgsql
  AS $$ DECLARE v app.mood := m; BEGIN RETURN v::text; END $$;
";

/// Every routine of schema `app`: identity, definition, ACL, comment and
/// owner, as a user compares two databases.
async fn catalog(client: &Client) -> Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT p.oid::regprocedure::text || ' ' || md5(pg_get_functiondef(p.oid)) || ' ' || \
                    coalesce(p.proacl::text, '-') || ' ' || \
                    coalesce(obj_description(p.oid, 'pg_proc'), '-') || ' ' || \
                    p.proowner::regrole::text \
             FROM pg_proc p WHERE p.pronamespace = 'app'::regnamespace ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

#[tokio::test]
async fn routines_extracted_with_pg_restore_deploy_as_they_were_dumped() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let pg = &stack.zone("dev").pg;
    let target = pg.connect().await?;
    target
        .batch_execute(&format!("CREATE ROLE reporting NOLOGIN; {SETUP}"))
        .await?;
    target.batch_execute("CREATE DATABASE dumped").await?;
    let mut config = pg.config();
    config.dbname("dumped");
    let dumped = pgrollout_tests::connect(&config).await?;
    dumped.batch_execute(&format!("{SETUP} {ROUTINES}")).await?;

    let bin = pg_bin_dir()?;
    let dump = stack.dir.path().join("dumped.dump");
    let dump = dump.to_string_lossy();
    let port = pg.port().to_string();
    let env = [("PGPASSWORD", pg.password())];
    let out = run_command(
        bin.join("pg_dump"),
        [
            "-h",
            pg.host(),
            "-p",
            &port,
            "-U",
            pg.superuser(),
            "-Fc",
            "-f",
            &dump,
            "dumped",
        ],
        &env,
        CLI_TIMEOUT,
    )
    .await?;
    assert_eq!(out.code, 0, "{out:?}");
    // Each routine into its own file, as `pg_restore -l` lists them.
    let listed = run_command(bin.join("pg_restore"), ["-l", &*dump], &[], CLI_TIMEOUT).await?;
    assert_eq!(listed.code, 0, "{listed:?}");
    let mut names = Vec::new();
    for line in listed.stdout.lines() {
        // `215; 1255 16391 FUNCTION app f(integer, app.mood) postgres`
        let Some((_, entry)) = line
            .split_once(" FUNCTION app ")
            .or_else(|| line.split_once(" PROCEDURE app "))
        else {
            continue;
        };
        let signature = entry.rsplit_once(' ').context("owner")?.0;
        let name = signature.split('(').next().context("name")?;
        let file = stack.project.join("procedures").join(format!("{name}.sql"));
        let restored = run_command(
            bin.join("pg_restore"),
            ["-P", signature, "-f", &*file.to_string_lossy(), &*dump],
            &[],
            CLI_TIMEOUT,
        )
        .await?;
        assert_eq!(restored.code, 0, "{restored:?}");
        let text = std::fs::read_to_string(&file)?;
        assert!(
            text.contains("SELECT pg_catalog.set_config('search_path', '', false);"),
            "{text}"
        );
        names.push(name.to_owned());
    }
    names.sort();
    assert_eq!(names, ["f", "g", "h", "moody", "p"]);
    let reference = catalog(&dumped).await?;
    assert_eq!(reference.len(), 5);

    // h calls f: listed first, it still deploys in one batch.
    let list = stack.dir.path().join("dumped.txt");
    std::fs::write(&list, "h\np\ng\nmoody\nf\n")?;
    let list = list.to_string_lossy();
    let out = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("5 deployed"), "{out}");
    assert!(
        out.stderr
            .contains("pg_dump's empty search_path is not used"),
        "{out}"
    );
    assert_eq!(catalog(&target).await?, reference);

    let again = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(again.code, 0, "{again}");
    assert!(again.stdout.contains("0 deployed, 5 unchanged"), "{again}");
    assert_eq!(catalog(&target).await?, reference);
    Ok(())
}
