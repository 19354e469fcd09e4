//! Issue 19 with issue 24: a fleet's statements are signed once for its whole
//! set of targets — zone `*`, target `fleet:<hash of the members>` — and each
//! member's job carries the member list. Through a hostile controller (a
//! valid controller certificate, the real prod agent dialling it): a job
//! signed for a fleet runs on a member; the list altered (a target added or
//! removed), the statements replayed to a target not in it, or without the
//! list, and a failed target run again without the operator's signed
//! `resume`, are each refused with the database unchanged; the refusals
//! reach the real controller's audit log. The real controller and CLI sign
//! and run a fleet's deploy, resume and rollback in `signed_fleet_tour.rs`.

mod signed_support;

use anyhow::Result;
use pgrollout_shared::job::Job;
use pgrollout_shared::proto::{self, Outcome};
use pgrollout_shared::routine::Routine;
use pgrollout_shared::signing::{action, fleet, role, Signer, Statement};
use signed_support::*;

/// The fleet the statements are signed for: this agent's `prod/main` and two
/// targets of another zone (their agents are elsewhere; the hash covers them).
const MEMBERS: [&str; 3] = ["prod/main", "prod-us/t1", "prod-us/t2"];

fn list(members: &[&str]) -> Vec<String> {
    members.iter().map(|m| (*m).to_owned()).collect()
}

/// What `role` signs for `job` as a fleet's: zone `*`, the members' hash,
/// and a request id of its own for each plan (a request runs once a target).
fn fleet_statement(job: &Job, role: &str) -> Statement {
    Statement {
        zone: fleet::ZONE.into(),
        target: fleet::target_of(&list(&MEMBERS)),
        request_id: request_of(job),
        ..statement(job, role)
    }
}

fn request_of(job: &Job) -> String {
    format!("req-{}", &job.plan_id[..12])
}

/// `job` signed by alice (requester), bob and carol (approvers) for the
/// fleet, carrying `members` as the controller sends them.
fn fleet_job(job: Job, signers: [&Signer; 3], members: &[&str]) -> Result<Job> {
    let [alice, bob, carol] = signers;
    let mut job = signed(
        job.clone(),
        &[
            (alice, fleet_statement(&job, role::REQUESTER)),
            (bob, fleet_statement(&job, role::APPROVER)),
            (carol, fleet_statement(&job, role::APPROVER)),
        ],
    )?;
    job.approvals.request_id = request_of(&job);
    job.approvals.fleet_members = list(members);
    Ok(job)
}

fn succeeded(what: &str, result: &proto::JobResult, steps: &[String]) {
    assert_eq!(
        result.outcome(),
        Outcome::Succeeded,
        "{what}: {} {steps:?}",
        result.message
    );
}

#[tokio::test]
async fn a_fleets_statements_run_on_its_members_only_and_a_failed_target_needs_a_signed_resume(
) -> Result<()> {
    let mut s = Scenario::start().await?;
    let (alice, bob, carol) = (s.signer("alice")?, s.signer("bob")?, s.signer("carol")?);
    let signers = [&alice, &bob, &carol];

    // The control: signed once for the fleet, run on this member.
    let job = deploy(vec![routine("signed_probe", 1)], "main");
    let (result, steps) = s.run(fleet_job(job, signers, &MEMBERS)?).await?;
    succeeded("a member's job", &result, &steps);
    assert!(
        steps
            .iter()
            .any(|s| s.contains("requested by alice and approved by bob, carol")),
        "{steps:?}"
    );
    assert_eq!(s.call("signed_probe").await?, Some(1));

    // The member list altered by the controller: a target added, one removed.
    let job = deploy(vec![routine("fleet_altered", 1)], "main");
    let added = ["prod/main", "prod-us/t1", "prod-us/t2", "prod/second"];
    s.refused(
        "a target added to the member list",
        fleet_job(job.clone(), signers, &added)?,
        "signed for target",
        "fleet_altered",
    )
    .await?;
    s.refused(
        "a target removed from the member list",
        fleet_job(job.clone(), signers, &MEMBERS[..2])?,
        "signed for target",
        "fleet_altered",
    )
    .await?;
    // The fleet's statements sent as a one-target job's (no member list).
    s.refused(
        "a fleet's statements without its members",
        fleet_job(job.clone(), signers, &[])?,
        "signed for zone \"*\"",
        "fleet_altered",
    )
    .await?;

    // Replayed to a target of this agent that is not in the fleet.
    let mut elsewhere = fleet_job(job, signers, &MEMBERS)?;
    elsewhere.target = "second".into();
    s.refused(
        "a fleet's job replayed to a target not in it",
        elsewhere,
        "target prod/second is not a member of the fleet",
        "fleet_altered",
    )
    .await?;

    // A target where the fleet's deploy failed (its body reads a table that
    // is not there yet: nothing changed, the request is given back) …
    let gated = vec![Routine {
        create_sql: "CREATE OR REPLACE FUNCTION public.fleet_gated() RETURNS int LANGUAGE sql \
                     AS 'select count(*)::int from public.fleet_gate'"
            .into(),
        ..routine("fleet_gated", 0)
    }];
    let job = fleet_job(deploy(gated, "main"), signers, &MEMBERS)?;
    let (result, steps) = s.run(job.clone()).await?;
    assert_ne!(
        result.outcome(),
        Outcome::Succeeded,
        "{} {steps:?}",
        result.message
    );
    assert_eq!(s.call("fleet_gated").await?, None);
    s.pg()
        .execute_sql("CREATE TABLE public.fleet_gate (id int)")
        .await?;
    // … is not run again by the controller alone: `resume` is signed.
    s.refused(
        "a failed target run again without a signed resume",
        job.clone(),
        "only with the resume signed by the operator",
        "fleet_gated",
    )
    .await?;
    let resume = |fleet_rollout: &str, request: &str| -> Result<Job> {
        let statement = Statement {
            action: action::RESUME.into(),
            role: role::REQUESTER.into(),
            plan_id: fleet::resume_subject(fleet_rollout, &job.plan_id),
            request_id: request.into(),
            ..fleet_statement(&job, role::REQUESTER)
        };
        let mut resumed = job.clone();
        resumed.approvals.signatures.push(alice.sign(&statement)?);
        resumed.approvals.fleet_rollout = "f-fleet-1".into();
        Ok(resumed)
    };
    s.refused(
        "a resume signed for another fleet rollout",
        resume("f-fleet-other", "resume-1")?,
        "the resume: signature 1 (alice): signed for plan id",
        "fleet_gated",
    )
    .await?;
    let (result, steps) = s.run(resume("f-fleet-1", "resume-2")?).await?;
    succeeded("the signed resume", &result, &steps);
    assert_eq!(s.call("fleet_gated").await?, Some(0));

    // Every refusal reaches the real controller's audit log.
    reconnect_to_the_real_controller(&mut s).await?;
    let entries = refused_job_entries(&s.stack)?.join("\n");
    for expected in [
        "is not a member of the fleet",
        "signed for target",
        "only with the resume signed by the operator",
        "the resume: signature 1 (alice)",
    ] {
        assert!(entries.contains(expected), "{expected:?} in {entries}");
    }
    Ok(())
}
