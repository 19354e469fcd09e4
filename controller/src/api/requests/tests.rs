//! Scheduling by window at the engine level, with an injected clock (DESIGN
//! §10): the real Control service, store, gates and scheduler, with a fake
//! agent registered for the zone that accepts and reports each job it is
//! offered. Time moves only when the test says so.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::{
    control_server::Control, controller_message, rollout_update::Body, ControllerMessage,
    DeployRequest, JobOffer, JobResult, Outcome, RequestParked,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Status};

use crate::api::operator::ControlService;
use crate::auth::{Caller, CLAIMED_ACTOR_HEADER};
use crate::config::{ControllerConfig, OperatorRole};
use crate::engine::clock::ManualClock;
use crate::engine::registry::AgentHandle;
use crate::engine::requests::request_state;
use crate::engine::router::JobUpdate;
use crate::engine::Controller;
use crate::store::Store;

/// 2026-11-27 is a Friday; the window is 02:00-04:00 UTC every day.
fn at(day_of_month: u64, hour: u64, minute: u64) -> SystemTime {
    let friday_27_nov_2026 = 1_795_737_600;
    UNIX_EPOCH
        + Duration::from_secs(
            friday_27_nov_2026 + (day_of_month - 27) * 86_400 + hour * 3600 + minute * 60,
        )
}

fn unix_ms(time: SystemTime) -> i64 {
    let since = time.duration_since(UNIX_EPOCH).expect("after 1970");
    i64::try_from(since.as_millis()).expect("fits")
}

struct Installation {
    dir: tempfile::TempDir,
}

impl Installation {
    fn new() -> Self {
        Installation {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A controller over this installation's store, with `prod_extra` in
    /// the prod environment, standing at `now`, its scheduler running, and
    /// a fake prod agent whose offers arrive on the returned receiver.
    fn controller(
        &self,
        prod_extra: &str,
        now: SystemTime,
    ) -> (
        Running,
        mpsc::Receiver<Result<ControllerMessage, crate::engine::error::EngineError>>,
    ) {
        let config_path = self.dir.path().join("controller.toml");
        std::fs::write(
            &config_path,
            format!(
                "[listen]\noperators = \"127.0.0.1:0\"\nagents = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n\
                 [environments.prod]\nzone = \"prod\"\nmaintenance_window = \"02:00-04:00 UTC\"\n{prod_extra}\n",
                self.store_path().display()
            ),
        )
        .expect("config written");
        let config = ControllerConfig::load(&config_path).expect("valid config");
        let store = Store::open(&self.store_path()).expect("store");
        let clock = ManualClock::at(now);
        let controller = Controller::with_clock(config, config_path, store, None, clock.clone());
        let (sender, offers) = mpsc::channel(16);
        controller.registry.register(Arc::new(AgentHandle {
            session: controller.registry.next_session(),
            name: "prod-1".into(),
            zone: "prod".into(),
            version: "test".into(),
            targets: vec![crate::domain::agent_report::AgentTarget {
                name: "main".into(),
                dbname: "app".into(),
                labels: Default::default(),
            }],
            connected_at: now_unix_ms(),
            last_heartbeat: AtomicI64::new(now_unix_ms()),
            draining: false.into(),
            certificate: None,
            sender,
        }));
        // The scheduler runs under its lease, as `serve` runs it.
        let scheduled = controller.clone();
        let scheduler = tokio::spawn(async move {
            crate::engine::liveness::register(&scheduled)
                .await
                .expect("registered");
            let leader = crate::engine::leader::Leader::start(scheduled.clone());
            crate::engine::requests::run_scheduler(scheduled, leader).await;
        });
        (
            Running {
                controller,
                clock,
                scheduler,
            },
            offers,
        )
    }

    fn store_path(&self) -> PathBuf {
        self.dir.path().join("controller.sqlite")
    }
}

struct Running {
    controller: Arc<Controller>,
    clock: Arc<ManualClock>,
    scheduler: tokio::task::JoinHandle<()>,
}

impl Running {
    /// `kill -9`: the scheduler stops; only the store remains.
    fn kill(self) {
        self.scheduler.abort();
    }

    /// `pgrollout deploy reconcilemupstream prod` by alice.
    async fn deploy(&self) -> Result<RequestParked, Status> {
        Ok(self.deploy_and_follow(false).await?.0)
    }

    /// The same, with `--follow` when `follow`: the stream stays open.
    async fn deploy_and_follow(
        &self,
        follow: bool,
    ) -> Result<(RequestParked, crate::api::UpdateStream), Status> {
        let service = ControlService {
            controller: self.controller.clone(),
        };
        let mut request = Request::new(DeployRequest {
            environment: "prod".into(),
            plan: Some(plan()),
            traceparent: String::new(),
            agent_wait_ms: 1000,
            follow,
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert(CLAIMED_ACTOR_HEADER, "alice".parse().expect("ascii"));
        let mut stream = service.deploy(request).await?.into_inner();
        match stream.next().await {
            Some(Ok(update)) => match update.body {
                Some(Body::Parked(parked)) => Ok((parked, stream)),
                other => panic!("expected the request to be parked, got {other:?}"),
            },
            other => panic!("expected one update, got {other:?}"),
        }
    }

    async fn request(&self, id: &str) -> pgrollout_shared::proto::RolloutStatus {
        super::request_status(&self.controller, id)
            .await
            .expect("status")
            .expect("request exists")
    }

    async fn audit_actions(&self) -> Vec<String> {
        self.controller
            .store
            .audit_entries()
            .await
            .expect("audit")
            .into_iter()
            .map(|e| e.entry.action)
            .collect()
    }

    /// What a real agent does with an offer: accept it, apply, report.
    async fn agent_applies(&self, offer: &JobOffer) {
        let store = &self.controller.store;
        assert!(store
            .claim_job(
                &offer.job_id,
                offer.attempt,
                "prod-1",
                "prod",
                now_unix_ms()
            )
            .await
            .expect("claim"));
        self.controller
            .router
            .publish(&offer.job_id, JobUpdate::Accepted);
        let result = JobResult {
            job_id: offer.job_id.clone(),
            attempt: offer.attempt,
            outcome: Outcome::Succeeded as i32,
            message: "1 routine(s) deployed".into(),
            seq: 1,
            ..Default::default()
        };
        let result =
            crate::domain::agent_report::ReportedResult::try_from(result).expect("a sound result");
        assert!(store
            .finish_job(&result, now_unix_ms())
            .await
            .expect("finish"));
        self.controller
            .router
            .publish(&offer.job_id, JobUpdate::Finished(Box::new(result)));
    }
}

fn plan() -> pgrollout_shared::proto::Plan {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/project");
    let project = crate::project::Project::load(&root).expect("sample project");
    let routines = project.select("reconcilemupstream").expect("routine");
    crate::plan::build_plan(routines, "reconcilemupstream", "0123abcd")
}

/// The next job offer, within a few seconds.
async fn next_offer(
    offers: &mut mpsc::Receiver<Result<ControllerMessage, crate::engine::error::EngineError>>,
) -> JobOffer {
    let message = tokio::time::timeout(Duration::from_secs(10), offers.recv())
        .await
        .expect("an offer within 10s")
        .expect("agent channel open")
        .expect("not a disconnect");
    match message.body {
        Some(controller_message::Body::Offer(offer)) => offer,
        other => panic!("expected an offer, got {other:?}"),
    }
}

/// Lets the scheduler act on what just changed (it runs on its own task).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_outside_its_maintenance_window_is_scheduled_and_then_applied_when_the_window_opens(
) {
    let installation = Installation::new();
    let (prod, mut offers) = installation.controller("", at(27, 14, 30));

    // `deploy --follow`: the operator stays attached to the scheduled request.
    let (parked, mut followed) = prod
        .deploy_and_follow(true)
        .await
        .expect("scheduled, not refused");
    assert_eq!(parked.state, "scheduled");
    assert_eq!(
        parked.run_at_unix_ms,
        unix_ms(at(28, 2, 0)),
        "Saturday 02:00"
    );
    assert_eq!(parked.window, "maintenance_window 02:00-04:00 UTC");
    let id = parked.request_id.clone();
    let status = prod.request(&id).await;
    assert_eq!(status.state, "scheduled");
    let window_gate = status
        .gates
        .iter()
        .find(|g| g.gate == "maintenance_window")
        .expect("window gate shown");
    assert_eq!(window_gate.state, "scheduled");
    assert!(
        window_gate
            .reason
            .contains("it next opens at 2026-11-28 02:00:00 UTC"),
        "{window_gate:?}"
    );

    // A minute before the window: nothing reaches the agent.
    prod.clock.set(at(28, 1, 59));
    settle().await;
    assert!(
        offers.try_recv().is_err(),
        "offered before the window opened"
    );
    assert_eq!(prod.request(&id).await.state, "scheduled");

    // The window opens: the scheduler re-evaluates the gates and offers the job.
    prod.clock.set(at(28, 2, 0));
    let offer = next_offer(&mut offers).await;
    assert_eq!(offer.plan_id, plan().plan_id);
    prod.agent_applies(&offer).await;

    // The deploy's stream carried the rollout to its result.
    let (mut started, mut finished) = (None, None);
    while let Some(Ok(update)) = followed.next().await {
        match update.body {
            Some(Body::Started(s)) => started = Some(s.rollout_id),
            Some(Body::Finished(result)) => finished = Some(result),
            _ => {}
        }
    }
    assert_eq!(started.as_deref(), Some(offer.rollout_id.as_str()));
    assert_eq!(
        finished.expect("the follower saw the result").outcome,
        Outcome::Succeeded as i32
    );
    let status = prod.request(&id).await;
    assert_eq!(status.state, "started");
    assert_eq!(status.request_rollout_id, offer.rollout_id);
    let rollout = prod
        .controller
        .store
        .rollout_status(&offer.rollout_id)
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!(rollout.state, "succeeded");
    assert!(
        rollout.gates.iter().any(|g| g.gate == "maintenance_window"
            && g.passed
            && g.reason == "inside 02:00-04:00 UTC"),
        "the gate was evaluated again at fire time: {:?}",
        rollout.gates
    );
    let actions = prod.audit_actions().await;
    for expected in ["rollout.scheduled", "rollout.fired", "deploy.started"] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }
    prod.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_its_time_a_scheduled_rollout_runs_only_if_every_gate_still_passes() {
    let installation = Installation::new();
    let (first, _) = installation.controller("", at(27, 14, 30));
    let id = first.deploy().await.expect("scheduled").request_id;
    first.kill();

    // Restarted with approvals now required: at 02:00 the request does not
    // run; it waits for an approver again.
    let approvals = "require_approval = true";
    let (second, mut offers) = installation.controller(approvals, at(28, 2, 0));
    settle().await;
    let status = second.request(&id).await;
    assert_eq!(status.state, "awaiting_approval", "{status:?}");
    assert!(
        status.request_note.contains("waits for approvals again"),
        "{status:?}"
    );
    assert!(
        offers.try_recv().is_err(),
        "nothing ran without the approval"
    );
    assert!(second
        .audit_actions()
        .await
        .contains(&"rollout.fire_refused".to_owned()));

    // Approved after the window closed: approvals first, then the window.
    second.clock.set(at(28, 5, 0));
    let approver = Caller {
        name: "bob".into(),
        roles: vec![OperatorRole::Approver],
        verified: true,
    };
    let response = crate::engine::requests::decide(
        second.controller.clone(),
        &approver,
        &id,
        false,
        "reviewed",
        OperatorRole::Approver,
    )
    .await
    .expect("approval recorded");
    assert_eq!(response.state, "scheduled");
    assert!(
        response.message.contains("runs at 2026-11-29 02:00:00 UTC"),
        "{}",
        response.message
    );
    assert!(offers.try_recv().is_err());
    second.kill();

    // Restarted after its time, with the window closed again: rescheduled.
    let (third, mut offers) = installation.controller(approvals, at(29, 5, 0));
    settle().await;
    let status = third.request(&id).await;
    assert_eq!(status.state, request_state::SCHEDULED);
    assert_eq!(status.run_at_unix_ms, unix_ms(at(30, 2, 0)), "Monday 02:00");
    assert!(offers.try_recv().is_err(), "not run outside the window");
    assert!(third
        .audit_actions()
        .await
        .contains(&"rollout.rescheduled".to_owned()));
    third.kill();

    // Restarted after its time with the window still open: it runs at once.
    let (fourth, mut offers) = installation.controller(approvals, at(30, 3, 30));
    let offer = next_offer(&mut offers).await;
    fourth.agent_applies(&offer).await;
    let mut follower = fourth.controller.followers.follow(&id);
    while follower.recv().await.is_some() {}
    let status = fourth.request(&id).await;
    assert_eq!(status.state, "started");
    assert_eq!(status.request_rollout_id, offer.rollout_id);
    fourth.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_request_ends_the_stream_when_it_is_rejected() {
    let installation = Installation::new();
    let (prod, mut offers) = installation.controller("require_approval = true", at(28, 2, 30));
    let (parked, mut followed) = prod.deploy_and_follow(true).await.expect("parked");
    assert_eq!(parked.state, "awaiting_approval");
    let approver = Caller {
        name: "bob".into(),
        roles: vec![OperatorRole::Approver],
        verified: true,
    };
    crate::engine::requests::decide(
        prod.controller.clone(),
        &approver,
        &parked.request_id,
        true,
        "not this plan",
        OperatorRole::Approver,
    )
    .await
    .expect("rejection recorded");
    let mut last = None;
    while let Some(Ok(update)) = tokio::time::timeout(Duration::from_secs(10), followed.next())
        .await
        .expect("the stream ends")
    {
        last = update.body;
    }
    match last {
        Some(Body::Parked(p)) => {
            assert_eq!(p.state, "rejected");
            assert_eq!(p.message, "rejected by bob: not this plan");
        }
        other => panic!("expected the rejection last, got {other:?}"),
    }
    assert!(offers.try_recv().is_err());
    prod.kill();
}
