//! The harness's own tests: clusters, processes and command runs behave as the scenario files expect.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgrollout_tests::tokio_postgres::error::SqlState;
use pgrollout_tests::{
    free_port, run_command, Binaries, CommandOutput, PgCluster, Process, TestDir,
};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn two_clusters_start_in_parallel_take_only_the_right_password_and_survive_a_restart(
) -> Result<()> {
    let began = Instant::now();
    let (dev, prod) = tokio::try_join!(PgCluster::start("dev"), PgCluster::start("prod"))?;
    eprintln!(
        "two clusters started in parallel in {:.2?}",
        began.elapsed()
    );
    assert_ne!(dev.port(), prod.port());

    for pg in [&dev, &prod] {
        let client = pg.connect().await?;
        let row = client
            .query_one("select 1::int4, current_database(), current_user", &[])
            .await?;
        assert_eq!(row.get::<_, i32>(0), 1);
        assert_eq!(row.get::<_, &str>(1), pg.dbname());
        assert_eq!(row.get::<_, &str>(2), pg.superuser());
        let scram =
            "select rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname = current_user";
        assert!(
            client.query_one(scram, &[]).await?.get::<_, bool>(0),
            "password stored as a SCRAM verifier"
        );

        let mut wrong = pg.config();
        wrong.password("not-the-password");
        let error = pgrollout_tests::connect(&wrong)
            .await
            .expect_err("a wrong password must be refused");
        let code = error
            .downcast_ref::<pgrollout_tests::tokio_postgres::Error>()
            .and_then(|e| e.code());
        assert_eq!(code, Some(&SqlState::INVALID_PASSWORD), "{error:#}");
    }

    let port = prod.port();
    prod.execute_sql("create table kept (x int); insert into kept values (7);")
        .await?;
    prod.stop().await?;
    assert!(!prod.is_running());
    assert!(
        prod.connect().await.is_err(),
        "a stopped cluster refuses connections"
    );
    dev.connect()
        .await?
        .simple_query("select 1")
        .await
        .context("the other cluster is untouched")?;

    prod.restart().await?;
    assert_eq!(prod.port(), port);
    let kept: i32 = prod
        .connect()
        .await?
        .query_one("select x from kept", &[])
        .await?
        .get(0);
    assert_eq!(kept, 7);

    prod.crash().await?;
    prod.restart().await?;
    let kept: i32 = prod
        .connect()
        .await?
        .query_one("select x from kept", &[])
        .await?
        .get(0);
    assert_eq!(kept, 7, "committed data survives a crash");
    Ok(())
}

#[tokio::test]
async fn sql_files_are_applied_and_errors_carry_postgres_message() -> Result<()> {
    let pg = PgCluster::start("sql").await?;
    let dir = TestDir::new("schema")?;
    let schema = dir.path().join("schema.sql");
    std::fs::write(
        &schema,
        "create schema app;\ncreate function app.add(a int, b int) returns int language sql as $$ select a + b $$;\n",
    )?;
    pg.psql_file(&schema).await?;
    assert!(pg.execute_sql("select app.add(2, 3);").await?.contains('5'));

    let error = pg
        .execute_sql("select 1;\nselect * from no_such_table;")
        .await
        .expect_err("must fail");
    assert!(
        format!("{error:#}").contains(r#"relation "no_such_table" does not exist"#),
        "{error:#}"
    );
    Ok(())
}

#[tokio::test]
async fn a_line_on_stderr_is_awaited_and_kill_9_ends_the_process() -> Result<()> {
    let script = "echo starting; echo ready >&2; exec sleep 30";
    let mut process = Process::spawn("/bin/sh", ["-c", script], &[], "sleeper")?;
    assert_eq!(process.wait_for_line("ready", WAIT).await?, "ready");
    assert_eq!(process.output_so_far(), "starting\nready\n");

    process.kill_9()?;
    let status = process.wait_for_exit(WAIT).await?;
    assert_eq!(status.signal(), Some(9));
    assert!(
        !Path::new(&format!("/proc/{}", process.pid())).exists(),
        "the process is gone"
    );
    let log = std::fs::read_to_string(process.log_path())?;
    assert!(
        log.contains("starting\n") && log.contains("ready\n"),
        "{log}"
    );
    Ok(())
}

#[tokio::test]
async fn a_mark_waits_for_a_new_line() -> Result<()> {
    let dir = TestDir::new("fifo")?;
    let fifo = dir.path().join("go");
    let made = run_command("mkfifo", [&fifo], &[], WAIT).await?;
    assert_eq!(made.code, 0, "{made}");
    // The second "step" comes only after the test writes to the fifo, so the mark is surely before it.
    let script = format!(
        "echo step one; read x < '{}'; echo step two; exec sleep 30",
        fifo.display()
    );
    let process = Process::spawn("/bin/sh", ["-c", &script], &[], "stepper")?;
    assert_eq!(process.wait_for_line("step", WAIT).await?, "step one");
    let mark = process.mark();
    tokio::task::spawn_blocking(move || std::fs::write(fifo, "go\n")).await??;
    assert_eq!(
        process.wait_for_line_after(mark, "step", WAIT).await?,
        "step two"
    );
    Ok(())
}

#[tokio::test]
async fn waiting_fails_with_the_output_on_timeout_and_at_once_on_exit() -> Result<()> {
    let quiet = Process::spawn(
        "/bin/sh",
        ["-c", "echo one; echo two; exec sleep 30"],
        &[],
        "quiet",
    )?;
    quiet.wait_for_line("two", WAIT).await?;
    let error = quiet
        .wait_for_line("never printed", Duration::from_millis(200))
        .await
        .expect_err("times out");
    let message = format!("{error:#}");
    assert!(
        message.contains("within 200ms") && message.contains("one\ntwo"),
        "{message}"
    );

    let began = Instant::now();
    let gone = Process::spawn("/bin/sh", ["-c", "echo bye"], &[], "gone")?;
    let error = gone
        .wait_for_line("never printed", WAIT)
        .await
        .expect_err("exits first");
    assert!(
        format!("{error:#}").contains("closed its output"),
        "{error:#}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "noticed the exit, not the timeout"
    );
    Ok(())
}

#[tokio::test]
async fn terminate_sends_sigterm_and_the_environment_is_passed() -> Result<()> {
    let script = "echo zone=$PGROLLOUT_ZONE; exec sleep 30";
    let mut process = Process::spawn(
        "/bin/sh",
        ["-c", script],
        &[("PGROLLOUT_ZONE", "dev")],
        "env",
    )?;
    process.wait_for_line("zone=dev", WAIT).await?;
    let status = process.terminate_and_wait().await?;
    assert_eq!(status.signal(), Some(15));
    Ok(())
}

#[tokio::test]
async fn the_cli_runs_to_completion_with_its_exit_code_or_is_killed_on_timeout() -> Result<()> {
    let bins = Binaries::from_paths("/bin/sh", "/bin/sh");
    let out = bins
        .run_cli(
            ["-c", "echo out; echo $GREETING >&2; exit 3"],
            &[("GREETING", "hello")],
        )
        .await?;
    let expected = CommandOutput {
        code: 3,
        stdout: "out\n".into(),
        stderr: "hello\n".into(),
    };
    assert_eq!(out, expected);

    let error = run_command(
        "/bin/sh",
        ["-c", "echo partial; exec sleep 30"],
        &[],
        Duration::from_millis(300),
    )
    .await
    .expect_err("times out");
    let message = format!("{error:#}");
    assert!(
        message.contains("did not finish within 300ms") && message.contains("partial"),
        "{message}"
    );
    Ok(())
}

#[test]
fn missing_binaries_say_how_to_build_them() -> Result<()> {
    let empty = TestDir::new("no-binaries")?;
    let error = Binaries::in_dir(empty.path()).expect_err("nothing there");
    assert!(
        error
            .to_string()
            .contains("run `cargo build --workspace --bins` first"),
        "{error}"
    );
    Ok(())
}

#[test]
fn free_ports_are_distinct_and_bindable() -> Result<()> {
    let (first, second) = (free_port(), free_port());
    assert_ne!(first, second);
    std::net::TcpListener::bind(("127.0.0.1", first))?;
    Ok(())
}

#[test]
fn a_test_dir_is_removed_after_a_pass_and_kept_after_a_panic() -> Result<()> {
    let passed = TestDir::new("passed")?;
    let passed_path = passed.path().to_owned();
    drop(passed);
    assert!(!passed_path.exists());

    let panicked = std::thread::spawn(|| -> std::path::PathBuf {
        let dir = TestDir::new("panicked").expect("temp dir");
        std::panic::panic_any(dir.path().to_owned())
    })
    .join()
    .expect_err("the thread panicked");
    let kept = panicked
        .downcast::<std::path::PathBuf>()
        .map_err(|_| anyhow::anyhow!("unexpected panic payload"))?;
    assert!(kept.exists(), "kept for post-mortem");
    std::fs::remove_dir_all(*kept)?;
    Ok(())
}
