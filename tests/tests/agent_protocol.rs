//! The real agent against a scripted controller written here: redelivered
//! jobs apply once, and hostile or malformed offers are refused without
//! touching the database.

use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use pgrollout_shared::job::{Job, JobKind};
use pgrollout_shared::proto::{
    self,
    agent_link_server::{AgentLink, AgentLinkServer},
    agent_message::Body,
    controller_message, AgentMessage, ControllerMessage, Outcome,
};
use pgrollout_shared::routine::{Routine, RoutineIdentity, RoutineKind};
use pgrollout_shared::traceparent::TraceParent;
use pgrollout_tests::stack::{agent_config_text, PASSWORD_ENV};
use pgrollout_tests::{PgCluster, Process, TestDir};
use tokio::sync::{mpsc, Mutex};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(20);

/// A controller that hands every agent message to the test and lets the test
/// send whatever it likes back.
struct ScriptedController {
    from_agent: mpsc::UnboundedSender<AgentMessage>,
    to_agent: Mutex<Option<mpsc::Sender<Result<ControllerMessage, Status>>>>,
}

#[tonic::async_trait]
impl AgentLink for ScriptedController {
    type ConnectStream = ReceiverStream<Result<ControllerMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let from_agent = self.from_agent.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                let _ = from_agent.send(message);
            }
        });
        let (tx, rx) = mpsc::channel(64);
        let welcome = proto::Welcome {
            zone: "dev".into(),
            agent_name: "dev-1".into(),
            ..Default::default()
        };
        let _ = tx
            .send(Ok(ControllerMessage {
                body: Some(controller_message::Body::Welcome(welcome)),
            }))
            .await;
        *self.to_agent.lock().await = Some(tx);
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Scenario {
    pg: PgCluster,
    inbox: mpsc::UnboundedReceiver<AgentMessage>,
    controller: std::sync::Arc<ScriptedController>,
    _agent: Process,
    _dir: TestDir,
}

impl Scenario {
    async fn start() -> Result<Scenario> {
        let dir = TestDir::new("protocol")?;
        let pg = PgCluster::start("dev").await?;
        pg.psql_file(
            pgrollout_tests::stack::repo_root().join("deploy/examples/project/schema.sql"),
        )
        .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (from_agent, inbox) = mpsc::unbounded_channel();
        let controller = std::sync::Arc::new(ScriptedController {
            from_agent,
            to_agent: Mutex::new(None),
        });
        let service = AgentLinkServer::from_arc(controller.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            agent_config_text("dev", port, &dir.path().join("backups"), &pg, "", None),
        )?;
        let bins = pgrollout_tests::Binaries::locate()?;
        let agent = Process::spawn(
            &bins.agent,
            ["--config", &config.to_string_lossy()],
            &[(PASSWORD_ENV, pg.password())],
            "agent",
        )?;
        agent.wait_for_line("connected to controller", WAIT).await?;
        let mut scenario = Scenario {
            pg,
            inbox,
            controller,
            _agent: agent,
            _dir: dir,
        };
        match scenario.next().await?.body {
            Some(Body::Hello(hello)) => assert_eq!(hello.claimed_zone, "dev"),
            other => bail!("expected Hello first, got {other:?}"),
        }
        Ok(scenario)
    }

    async fn send(&self, body: controller_message::Body) -> Result<()> {
        let sender = self
            .controller
            .to_agent
            .lock()
            .await
            .clone()
            .context("no stream")?;
        sender
            .send(Ok(ControllerMessage { body: Some(body) }))
            .await
            .context("agent stream closed")
    }

    async fn next(&mut self) -> Result<AgentMessage> {
        tokio::time::timeout(WAIT, self.inbox.recv())
            .await
            .context("agent said nothing")?
            .context("inbox closed")
    }

    /// Skips heartbeats; returns the next message that matters.
    async fn next_significant(&mut self) -> Result<Body> {
        loop {
            match self.next().await?.body {
                Some(Body::Heartbeat(_)) | None => continue,
                Some(body) => return Ok(body),
            }
        }
    }

    /// Waits for the job's result, acknowledging events as a controller does.
    /// The result is the job's last message: it comes after every event of
    /// the job (its sequence number the next after theirs), never ahead of
    /// one still on its way to the agent's journal.
    async fn result_of(&mut self, job_id: &str) -> Result<proto::JobResult> {
        let mut last_event = 0;
        loop {
            match self.next_significant().await? {
                Body::Event(event) => {
                    if event.job_id == job_id {
                        last_event = last_event.max(event.seq);
                    }
                    self.send(ack(&event.job_id, event.seq)).await?
                }
                Body::Result(result) if result.job_id == job_id => {
                    assert_eq!(
                        result.seq,
                        last_event + 1,
                        "the result of {job_id} came before some of its events"
                    );
                    self.send(ack(&result.job_id, result.seq)).await?;
                    return Ok(result);
                }
                _ => {}
            }
        }
    }
}

fn ack(job_id: &str, seq: u64) -> controller_message::Body {
    controller_message::Body::Ack(proto::Ack {
        job_id: job_id.into(),
        seq,
        attempt: 1,
    })
}

fn offer(job_id: &str, create_sql: &str, name: &str) -> proto::JobOffer {
    let routine = Routine {
        identity: RoutineIdentity {
            schema: "public".into(),
            name: name.into(),
            arg_types: vec![],
        },
        kind: RoutineKind::Function,
        create_sql: create_sql.into(),
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
    };
    Job {
        backup_retention_days: 0,
        audit_head: None,
        approvals: Default::default(),
        id: job_id.into(),
        attempt: 1,
        deadline: SystemTime::now() + Duration::from_secs(60),
        lease: None,
        trace: TraceParent::new_root(),
        target: "main".into(),
        rollout_id: format!("r-{job_id}"),
        plan_id: "plan".into(),
        actor: "scripted".into(),
        commit_sha: "none".into(),
        label: name.into(),
        kind: JobKind::Deploy {
            routines: vec![routine],
            batch: Default::default(),
        },
    }
    .into()
}

#[tokio::test]
async fn a_job_delivered_twice_applies_once() -> Result<()> {
    let mut scenario = Scenario::start().await?;
    let job = offer(
        "j-twice",
        "CREATE FUNCTION public.twice() RETURNS int LANGUAGE sql AS 'select 2'",
        "twice",
    );

    scenario
        .send(controller_message::Body::Offer(job.clone()))
        .await?;
    assert!(matches!(
        scenario.next_significant().await?,
        Body::Accept(_)
    ));
    let first = scenario.result_of("j-twice").await?;
    assert_eq!(first.outcome(), Outcome::Succeeded, "{}", first.message);
    assert!(!first.replayed_from_ledger);

    // Redelivered, as after a controller crash: the ledger answers.
    scenario.send(controller_message::Body::Offer(job)).await?;
    assert!(matches!(
        scenario.next_significant().await?,
        Body::Accept(_)
    ));
    let second = scenario.result_of("j-twice").await?;
    assert_eq!(second.outcome(), Outcome::Succeeded, "{}", second.message);
    assert!(second.replayed_from_ledger, "{}", second.message);
    assert_eq!(second.ledger_ids, first.ledger_ids);

    let client = scenario.pg.connect().await?;
    let rows: i64 = client
        .query_one(
            "SELECT count(*) FROM pgrollout.ledger WHERE job_id = 'j-twice'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(rows, 1, "applied exactly once");
    Ok(())
}

#[tokio::test]
async fn malformed_and_hostile_offers_are_refused_and_change_nothing() -> Result<()> {
    let mut scenario = Scenario::start().await?;
    // An agent without an `[approvals]` policy starts opening a job's
    // connection as it takes the job on, ahead of the job itself: an offer
    // refused at the edge must not get even one abandoned before it
    // authenticated. Nothing else connects to this cluster meanwhile.
    scenario.pg.log_connections().await?;
    let before_refusals = scenario.pg.log_offset()?;

    let mut bad_trace = offer(
        "j-trace",
        "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'select 1'",
        "f",
    );
    bad_trace.traceparent = "not-a-traceparent".into();
    scenario
        .send(controller_message::Body::Offer(bad_trace))
        .await?;
    match scenario.next_significant().await? {
        Body::Decline(decline) => {
            assert!(decline.reason.contains("traceparent"), "{}", decline.reason)
        }
        other => bail!("expected a Decline, got {other:?}"),
    }

    let mut wrong_target = offer(
        "j-target",
        "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'select 1'",
        "f",
    );
    wrong_target.target = "billing".into();
    scenario
        .send(controller_message::Body::Offer(wrong_target))
        .await?;
    match scenario.next_significant().await? {
        Body::Decline(decline) => assert!(
            decline.reason.contains("no target named \"billing\""),
            "{}",
            decline.reason
        ),
        other => bail!("expected a Decline, got {other:?}"),
    }

    let mut hostile_grant = offer(
        "j-grant",
        "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'select 1'",
        "f",
    );
    if let Some(proto::job_offer::Kind::Deploy(deploy)) = &mut hostile_grant.kind {
        deploy.routines[0].grants.push(proto::Grant {
            privilege: "EXECUTE".into(),
            grantee: "x\"; DROP TABLE public.material; --".into(),
        });
        deploy.routines[0].grants.push(proto::Grant {
            privilege: "SELECT; DROP".into(),
            grantee: "app".into(),
        });
    }
    scenario
        .send(controller_message::Body::Offer(hostile_grant))
        .await?;
    match scenario.next_significant().await? {
        Body::Decline(decline) => {
            assert!(decline.reason.contains("privilege"), "{}", decline.reason)
        }
        other => bail!("expected a Decline, got {other:?}"),
    }

    assert_eq!(
        scenario.pg.connections_since(before_refusals)?,
        0,
        "an offer refused at the edge made the agent connect to the target"
    );

    // A second statement smuggled after the CREATE is refused by the
    // protocol the agent applies with, and the transaction rolls back.
    let smuggled = offer(
        "j-smuggle",
        "CREATE FUNCTION public.evil() RETURNS int LANGUAGE sql AS 'select 1'; DROP TABLE public.material",
        "evil",
    );
    scenario
        .send(controller_message::Body::Offer(smuggled))
        .await?;
    assert!(matches!(
        scenario.next_significant().await?,
        Body::Accept(_)
    ));
    let result = scenario.result_of("j-smuggle").await?;
    assert_eq!(
        result.outcome(),
        Outcome::DeployFailed,
        "{}",
        result.message
    );
    assert!(
        result.message.contains("cannot insert multiple commands"),
        "{}",
        result.message
    );

    let client = scenario.pg.connect().await?;
    let row = client
        .query_one("SELECT to_regclass('public.material') IS NOT NULL, to_regprocedure('public.evil()') IS NULL, to_regprocedure('public.f()') IS NULL", &[])
        .await?;
    assert!(row.get::<_, bool>(0), "the table survived");
    assert!(
        row.get::<_, bool>(1) && row.get::<_, bool>(2),
        "no function was created"
    );
    Ok(())
}

/// A deploy offer (as a hand-made controller could send it, past the
/// controller's edge check) whose routine `name` carries `smoke` calls.
fn offer_with_smoke(job_id: &str, name: &str, smoke: &[&str]) -> proto::JobOffer {
    let mut job: Job = offer(
        job_id,
        &format!("CREATE FUNCTION public.{name}() RETURNS int LANGUAGE sql AS 'select 2'"),
        name,
    )
    .try_into()
    .expect("a valid offer");
    let JobKind::Deploy { routines, .. } = &mut job.kind else {
        unreachable!("offer() makes deploys")
    };
    routines[0].smoke_tests = smoke
        .iter()
        .enumerate()
        .map(|(index, call)| pgrollout_shared::routine::SmokeTest {
            name: format!("call {index}"),
            call_sql: (*call).into(),
            expect_columns: vec![],
            max_duration: Duration::from_secs(5),
            allow_warnings: false,
            search_path: vec![],
        })
        .collect();
    job.into()
}

/// Issue 13, defence in depth: smoke calls that end the deploy's
/// transaction reach the agent anyway (the controller's check bypassed). The
/// agent's sealed transaction cannot be committed by them, the calls behind
/// them change nothing, and the result says what the ledger shows.
#[tokio::test]
async fn smoke_calls_that_end_the_transaction_commit_nothing_even_past_the_controller() -> Result<()>
{
    let mut scenario = Scenario::start().await?;
    let client = scenario.pg.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE public.victim (id int PRIMARY KEY); \
             INSERT INTO public.victim SELECT generate_series(1, 9)",
        )
        .await?;
    let cases: [(&str, &[&str]); 5] = [
        (
            "commit",
            &["COMMIT", "DELETE FROM public.victim WHERE id = 4"],
        ),
        (
            "rollback",
            &["ROLLBACK", "DELETE FROM public.victim WHERE id = 5"],
        ),
        (
            "release",
            &[
                "RELEASE SAVEPOINT pgrollout_smoke",
                "DELETE FROM public.victim WHERE id = 6",
            ],
        ),
        (
            "chain",
            &[
                "COMMIT AND CHAIN",
                "BEGIN",
                "DELETE FROM public.victim WHERE id = 7",
            ],
        ),
        (
            "rollback_then_do",
            &[
                "ROLLBACK",
                "ROLLBACK",
                "DO $$ BEGIN DELETE FROM public.victim WHERE id = 8; COMMIT; END $$",
            ],
        ),
    ];
    for (name, calls) in cases {
        let job_id = format!("j-{name}");
        let function = format!("hostile_{name}");
        scenario
            .send(controller_message::Body::Offer(offer_with_smoke(
                &job_id, &function, calls,
            )))
            .await?;
        assert!(matches!(
            scenario.next_significant().await?,
            Body::Accept(_)
        ));
        let result = scenario.result_of(&job_id).await?;
        assert_eq!(
            result.outcome(),
            Outcome::DeployFailed,
            "{name}: {}",
            result.message
        );
        assert!(
            result
                .message
                .contains("ended or left the agent's transaction")
                && result
                    .message
                    .contains("nothing of this deploy was committed"),
            "{name}: {}",
            result.message
        );
        assert!(
            !result.message.contains("the database is as it was"),
            "{name}: {}",
            result.message
        );
        let victims: i64 = client
            .query_one("SELECT count(*) FROM public.victim", &[])
            .await?
            .get(0);
        assert_eq!(victims, 9, "{name}: no victim row deleted");
        let routine: Option<String> = client
            .query_one(
                "SELECT to_regprocedure($1)::text",
                &[&format!("public.{function}()")],
            )
            .await?
            .get(0);
        assert_eq!(routine, None, "{name}: the routine was not created");
        let ledger: Option<String> = client
            .query_one("SELECT to_regclass('pgrollout.ledger')::text", &[])
            .await?
            .get(0);
        let ledger_rows: i64 = match ledger {
            None => 0,
            Some(_) => client
                .query_one(
                    "SELECT count(*) FROM pgrollout.ledger WHERE job_id = $1",
                    &[&job_id],
                )
                .await?
                .get(0),
        };
        assert_eq!(ledger_rows, 0, "{name}: no ledger row");
    }
    Ok(())
}
