//! What the signed-approvals attack scenarios share (`signed_approvals.rs`,
//! `signed_approvals_sql.rs`): a prod agent with an `[approvals]` policy
//! routed to a hostile controller, operators with certificates of their own
//! CA, and jobs signed as their CLIs would. Each test crate uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use pgrollout_shared::job::{Job, JobKind, SignedApprovals};
use pgrollout_shared::proto::{self, Outcome};
use pgrollout_shared::routine::{Routine, RoutineIdentity, RoutineKind};
use pgrollout_shared::signing::{action, Signer, Statement};
use pgrollout_shared::traceparent::TraceParent;
use pgrollout_tests::hostile_controller::HostileController;
use pgrollout_tests::stack::{Stack, StackOptions, TRUST_DOMAIN};
use pgrollout_tests::PgCluster;

pub const REQUEST: &str = "req-signed-1";

pub struct Scenario {
    pub stack: Stack,
    pub hostile: HostileController,
    pub operators_ca: PathBuf,
    pub next_job: u32,
}

impl Scenario {
    pub async fn start() -> Result<Scenario> {
        let mut stack = Stack::start_with(StackOptions {
            zones: vec!["prod".into()],
            start_agents: false,
            ..StackOptions::default()
        })
        .await?;
        // Operators get their certificates from a CA of their own, whose key
        // is nowhere near the controller (README, Trust model).
        let operators_ca = stack.dir.path().join("operators-ca");
        let dir = operators_ca.to_string_lossy().to_string();
        cli(
            &stack,
            &["ca", "init", "--dir", &dir, "--trust-domain", TRUST_DOMAIN],
        )
        .await?;
        for name in ["alice", "bob", "carol", "dave", "mallory"] {
            cli(
                &stack,
                &["ca", "issue", "operator", "--dir", &dir, "--name", name],
            )
            .await?;
        }
        std::fs::write(
            operators_ca.join("revoked.txt"),
            "# revoked operators\nmallory\n",
        )?;
        let config_path = stack.zone("prod").agent_config.clone();
        let config = std::fs::read_to_string(&config_path)?;
        let second_target = second_target(&config)?;
        std::fs::write(
            &config_path,
            format!(
                "{config}{second_target}\n[approvals]\noperator_ca = \"{dir}/ca.pem\"\nenvironment = \"prod\"\n\
                 approvers = [\"bob\", \"carol\", \"alice\", \"mallory\"]\nadmins = [\"dave\"]\nrequired_approvers = 2\n\
                 revocation_list = \"{dir}/revoked.txt\"\n"
            ),
        )?;
        let hostile = HostileController::start(&stack.ca_dir).await?;
        stack.route_agent_via("prod", hostile.port)?;
        // Every refusal is checked to come before the agent even connects.
        stack.zone("prod").pg.log_connections().await?;
        stack.start_agent("prod").await?;
        Ok(Scenario {
            stack,
            hostile,
            operators_ca,
            next_job: 0,
        })
    }

    pub fn pg(&self) -> &PgCluster {
        &self.stack.zone("prod").pg
    }

    pub fn signer(&self, name: &str) -> Result<Signer> {
        signer_in(&self.operators_ca, name)
    }

    /// Offers `job` and returns its result and step lines.
    pub async fn run(&mut self, mut job: Job) -> Result<(proto::JobResult, Vec<String>)> {
        self.next_job += 1;
        job.id = format!("signed-{}", self.next_job);
        let id = job.id.clone();
        self.hostile.offer(job.into()).await?;
        self.hostile.result_of(&id).await
    }

    /// Runs a hostile job: refused with `expected` in its reason, exit 1's
    /// outcome, and the database as it was (`probe` still answers `answer`,
    /// `absent` does not exist, the ledger has as many rows as before), and
    /// the agent never connected to it.
    pub async fn refused(
        &mut self,
        what: &str,
        job: Job,
        expected: &str,
        absent: &str,
    ) -> Result<()> {
        let before = self.ledger_rows().await?;
        let log_offset = self.pg().log_offset()?;
        let (result, steps) = self.run(job).await?;
        // Not even a connection: under `[approvals]` the agent opens none
        // before the signatures are checked, not even one abandoned before
        // it authenticated. Nothing else connects to this cluster while the
        // job runs.
        assert_eq!(
            self.pg().connections_since(log_offset)?,
            0,
            "{what}: the agent connected to the target"
        );
        assert_eq!(
            result.outcome(),
            Outcome::ValidationFailed,
            "{what}: {} {steps:?}",
            result.message
        );
        assert!(
            result.message.contains(expected),
            "{what}: expected {expected:?} in {:?}",
            result.message
        );
        assert!(
            steps.iter().any(|s| s.starts_with("approvals: refused")),
            "{what}: {steps:?}"
        );
        assert_eq!(self.ledger_rows().await?, before, "{what}: ledger changed");
        assert_eq!(
            self.call("signed_probe").await?,
            Some(1),
            "{what}: signed_probe changed"
        );
        assert_eq!(
            self.call(absent).await?,
            None,
            "{what}: {absent} was created"
        );
        Ok(())
    }

    pub async fn ledger_rows(&self) -> Result<i64> {
        let client = self.pg().connect().await?;
        Ok(client
            .query_one("SELECT count(*) FROM pgrollout.ledger", &[])
            .await?
            .get(0))
    }

    /// What `public.<name>()` returns, or None when there is no such function.
    pub async fn call(&self, name: &str) -> Result<Option<i32>> {
        let client = self.pg().connect().await?;
        let exists: bool = client
            .query_one(
                "SELECT to_regprocedure('public.' || $1 || '()') IS NOT NULL",
                &[&name],
            )
            .await?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let row = client
            .query_one(&format!("SELECT public.{name}()"), &[])
            .await?;
        Ok(Some(row.get(0)))
    }
}

pub async fn cli(stack: &Stack, args: &[&str]) -> Result<()> {
    let out = stack.bins.run_cli(args, &[]).await?;
    anyhow::ensure!(out.code == 0, "pgrollout {}: {out}", args.join(" "));
    Ok(())
}

/// A copy of the agent config's `[[targets]]` entry named `second`: the
/// same database under another target name, to replay a job to.
pub fn second_target(config: &str) -> Result<String> {
    let start = config.find("[[targets]]").context("no [[targets]]")?;
    let block = &config[start..];
    let end = block[1..].find("\n[").map_or(block.len(), |i| i + 1);
    Ok(block[..end].replace("name = \"main\"", "name = \"second\""))
}

pub fn signer_in(dir: &Path, name: &str) -> Result<Signer> {
    Ok(Signer::load(
        &dir.join(format!("operator-{name}.pem")),
        &dir.join(format!("operator-{name}.key")),
    )?)
}

pub fn routine(name: &str, answer: i32) -> Routine {
    Routine {
        identity: RoutineIdentity {
            schema: "public".into(),
            name: name.into(),
            arg_types: vec![],
        },
        kind: RoutineKind::Function,
        create_sql: format!(
            "CREATE OR REPLACE FUNCTION public.{name}() RETURNS int LANGUAGE sql AS 'select {answer}'"
        ),
        grants: vec![],
        smoke_tests: vec![],
        source_path: format!("procedures/{name}.sql"),
        depends_on: vec![],
        perf_probe: None,
        pgtap: None,
        source_line: 0,
        search_path: vec![],
        retire: None,
        companion_sql: Vec::new(),
    }
}

/// A deploy job of `routines`, naming the plan id they hash to.
pub fn deploy(routines: Vec<Routine>, target: &str) -> Job {
    let plan_id = pgrollout_shared::plan_id::plan_id_of_job(&routines);
    Job {
        id: String::new(),
        attempt: 1,
        deadline: SystemTime::now() + Duration::from_secs(60),
        lease: None,
        trace: TraceParent::new_root(),
        target: target.into(),
        rollout_id: "r-signed".into(),
        plan_id,
        actor: "alice".into(),
        commit_sha: "none".into(),
        label: "signed".into(),
        backup_retention_days: 0,
        audit_head: None,
        approvals: SignedApprovals::default(),
        kind: JobKind::Deploy {
            routines,
            batch: Default::default(),
        },
    }
}

/// What `role` signs for `job`, as the CLI would: this plan, prod, main.
pub fn statement(job: &Job, role: &str) -> Statement {
    Statement {
        action: action::DEPLOY.into(),
        role: role.into(),
        plan_id: job.plan_id.clone(),
        environment: "prod".into(),
        zone: "prod".into(),
        target: "main".into(),
        request_id: REQUEST.into(),
        reason: String::new(),
        expires_unix_ms: pgrollout_shared::job::now_unix_ms() + 3_600_000,
    }
}

/// `job` with the statements signed by (signer, statement).
pub fn signed(mut job: Job, statements: &[(&Signer, Statement)]) -> Result<Job> {
    job.approvals = SignedApprovals {
        request_id: REQUEST.into(),
        signatures: statements
            .iter()
            .map(|(signer, statement)| signer.sign(statement))
            .collect::<Result<_, _>>()?,
        ..Default::default()
    };
    Ok(job)
}

/// The audit entries of the agent's refusals the real controller recorded.
pub fn refused_job_entries(stack: &Stack) -> Result<Vec<String>> {
    Ok(stack
        .audit_lines()?
        .into_iter()
        .filter(|line| line.starts_with("agent.refused_job|"))
        .collect())
}

/// Restarts the prod agent (SIGKILL first: what it kept must be on disk)
/// connected to the real controller, and waits until the controller handled
/// what the agent sent on connecting: a job through the same stream.
pub async fn reconnect_to_the_real_controller(s: &mut Scenario) -> Result<()> {
    s.stack.kill_agent("prod").await?;
    let path = s.stack.zone("prod").agent_config.clone();
    let text = std::fs::read_to_string(&path)?.replace(
        &format!("127.0.0.1:{}", s.hostile.port),
        &format!("127.0.0.1:{}", s.stack.agents_port()),
    );
    std::fs::write(&path, text)?;
    s.stack.start_agent("prod").await?;
    let history = s.stack.cli(&["history", "signed_probe", "prod"]).await?;
    anyhow::ensure!(history.code == 0, "{history}");
    Ok(())
}
