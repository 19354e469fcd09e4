//! Issue 19: the prod agent runs only changes its operators signed. A
//! hostile controller — holding a valid controller certificate, so the real
//! agent dials it and takes its offers — forges, replays, strips and alters
//! approvals; each time the agent refuses before touching the database, and
//! catalog and ledger are asserted unchanged. A correctly signed job, first,
//! proves the same agent does run what its operators signed.

mod signed_support;

use anyhow::Result;
use pgrollout_shared::job::{Job, JobKind};
use pgrollout_shared::operations::{RollbackScope, RollbackSpec, RollbackTarget, RoutineSelector};
use pgrollout_shared::proto::Outcome;
use pgrollout_shared::signing::{action, role, Signer, Statement};
use signed_support::*;

#[tokio::test]
async fn a_hostile_controller_cannot_make_the_prod_agent_change_anything() -> Result<()> {
    let mut s = Scenario::start().await?;
    let (alice, bob, carol, dave) = (
        s.signer("alice")?,
        s.signer("bob")?,
        s.signer("carol")?,
        s.signer("dave")?,
    );
    // The control: requested by alice, approved by bob and carol, runs.
    let job = deploy(vec![routine("signed_probe", 1)], "main");
    let good = signed(
        job.clone(),
        &[
            (&alice, statement(&job, role::REQUESTER)),
            (&bob, statement(&job, role::APPROVER)),
            (&carol, statement(&job, role::APPROVER)),
        ],
    )?;
    let (result, steps) = s.run(good.clone()).await?;
    assert_eq!(
        result.outcome(),
        Outcome::Succeeded,
        "{} {steps:?}",
        result.message
    );
    assert!(
        steps
            .iter()
            .any(|s| s.contains("requested by alice and approved by bob, carol")),
        "{steps:?}"
    );
    assert_eq!(s.call("signed_probe").await?, Some(1));

    // Replayed unchanged to the target it was signed for, as a new job (say,
    // after a rollback): its request already ran there.
    s.refused(
        "the completed job replayed",
        good.clone(),
        "was already run on target main",
        "none",
    )
    .await?;

    // Re-ordered and re-labelled statements (issue 19, item 4).
    reordering_attacks(&mut s, [&alice, &bob, &carol]).await?;

    // A check (the syntax gate's dry run) runs a plan's SQL, rolled back: its
    // content must be the plan its requester signed.
    let job = deploy(vec![routine("checked", 1)], "main");
    let as_check = |mut job: Job, answer| {
        job.kind = JobKind::Check {
            routines: vec![routine("checked", answer)],
        };
        job
    };
    let requested = signed(job.clone(), &[(&alice, statement(&job, role::REQUESTER))])?;
    s.refused(
        "a check of altered content",
        as_check(requested.clone(), 2),
        "its content was changed",
        "checked",
    )
    .await?;
    s.refused(
        "an unsigned check",
        as_check(job, 1),
        "carries no signed statements",
        "checked",
    )
    .await?;
    let (result, steps) = s.run(as_check(requested, 1)).await?;
    assert_eq!(
        result.outcome(),
        Outcome::Succeeded,
        "{} {steps:?}",
        result.message
    );

    // Forged: the controller writes its own bytes where a signature goes.
    let job = deploy(vec![routine("forged", 1)], "main");
    let mut forged = signed(
        job.clone(),
        &[
            (&alice, statement(&job, role::REQUESTER)),
            (&bob, statement(&job, role::APPROVER)),
            (&carol, statement(&job, role::APPROVER)),
        ],
    )?;
    let last = forged.approvals.signatures[2].signature.len() - 1;
    forged.approvals.signatures[2].signature[last] ^= 1;
    s.refused(
        "forged signature",
        forged,
        "does not match the statement",
        "forged",
    )
    .await?;

    // Forged with a certificate the controller can get: the operator
    // certificate of its own CA (the one that issued its TLS certificate).
    let controller_ca_operator = {
        let dir = s.stack.ca_dir.to_string_lossy().to_string();
        let out = s
            .stack
            .bins
            .run_cli(
                ["ca", "issue", "operator", "--dir", &dir, "--name", "bob"],
                &[],
            )
            .await?;
        anyhow::ensure!(out.code == 0, "{out}");
        signer_in(&s.stack.ca_dir, "bob")?
    };
    let job = deploy(vec![routine("minted", 1)], "main");
    let minted = signed(
        job.clone(),
        &[
            (&alice, statement(&job, role::REQUESTER)),
            (&controller_ca_operator, statement(&job, role::APPROVER)),
            (&carol, statement(&job, role::APPROVER)),
        ],
    )?;
    s.refused(
        "a certificate of another CA",
        minted,
        "not one the operator CA issued",
        "minted",
    )
    .await?;

    // Replayed: the approvals of the good plan attached to another plan.
    let mut replayed = deploy(vec![routine("replayed", 1)], "main");
    replayed.approvals = good.approvals.clone();
    s.refused(
        "approvals of another plan",
        replayed,
        "signed for plan id",
        "replayed",
    )
    .await?;

    // Replayed from another environment: approved for qa, offered to prod.
    let job = deploy(vec![routine("from_qa", 1)], "main");
    let qa = |role| Statement {
        environment: "qa".into(),
        ..statement(&job, role)
    };
    let from_qa = signed(
        job.clone(),
        &[
            (&alice, qa(role::REQUESTER)),
            (&bob, qa(role::APPROVER)),
            (&carol, qa(role::APPROVER)),
        ],
    )?;
    s.refused(
        "approvals for qa",
        from_qa,
        "signed for environment \"qa\"",
        "from_qa",
    )
    .await?;

    // Stripped: one approval removed leaves one approver of the two required.
    let job = deploy(vec![routine("stripped", 1)], "main");
    let stripped = signed(
        job.clone(),
        &[
            (&alice, statement(&job, role::REQUESTER)),
            (&bob, statement(&job, role::APPROVER)),
        ],
    )?;
    s.refused(
        "a stripped approval",
        stripped,
        "needs 2 distinct approver(s)",
        "stripped",
    )
    .await?;

    // The requester's own approval, and a second copy of one approver's, do
    // not count.
    let job = deploy(vec![routine("self_approved", 1)], "main");
    let self_approved = signed(
        job.clone(),
        &[
            (&alice, statement(&job, role::REQUESTER)),
            (&alice, statement(&job, role::APPROVER)),
            (&bob, statement(&job, role::APPROVER)),
            (&bob, statement(&job, role::APPROVER)),
        ],
    )?;
    s.refused("self-approval", self_approved, "1 signed", "self_approved")
        .await?;

    // One byte of a routine changed after approval (the plan id it names is
    // the approved one).
    let approved = deploy(vec![routine("signed_probe", 2)], "main");
    let statements = [
        (&alice, statement(&approved, role::REQUESTER)),
        (&bob, statement(&approved, role::APPROVER)),
        (&carol, statement(&approved, role::APPROVER)),
    ];
    let mut altered = signed(approved.clone(), &statements)?;
    if let JobKind::Deploy { routines, .. } = &mut altered.kind {
        routines[0].create_sql = routines[0].create_sql.replace("select 2", "select 3");
    }
    s.refused(
        "a routine altered after approval",
        altered,
        "its content was changed",
        "none",
    )
    .await?;
    // …and with the plan id recomputed to match, the signatures no longer do.
    let mut rehashed = deploy(vec![routine("signed_probe", 3)], "main");
    rehashed.approvals = signed(approved.clone(), &statements)?.approvals;
    s.refused(
        "an altered routine, plan id recomputed",
        rehashed,
        "signed for plan id",
        "none",
    )
    .await?;

    // A valid job replayed to a second target of the zone.
    let job = deploy(vec![routine("twin", 1)], "main");
    let mut to_second = signed(
        job.clone(),
        &[
            (&alice, statement(&job, role::REQUESTER)),
            (&bob, statement(&job, role::APPROVER)),
            (&carol, statement(&job, role::APPROVER)),
        ],
    )?;
    to_second.target = "second".into();
    s.refused(
        "replayed to a second target",
        to_second,
        "signed for target \"main\"",
        "twin",
    )
    .await?;

    // Another request's approvals (the request id the job names is not theirs).
    let job = deploy(vec![routine("other_request", 1)], "main");
    let mut other_request = signed(
        job.clone(),
        &[
            (&alice, statement(&job, role::REQUESTER)),
            (&bob, statement(&job, role::APPROVER)),
            (&carol, statement(&job, role::APPROVER)),
        ],
    )?;
    other_request.approvals.request_id = "req-other".into();
    s.refused(
        "another request's approvals",
        other_request,
        "signed for request",
        "other_request",
    )
    .await?;

    // Expired approvals.
    let job = deploy(vec![routine("stale", 1)], "main");
    let old = |role| Statement {
        expires_unix_ms: pgrollout_shared::job::now_unix_ms() - 60_000,
        ..statement(&job, role)
    };
    let stale = signed(
        job.clone(),
        &[
            (&alice, old(role::REQUESTER)),
            (&bob, old(role::APPROVER)),
            (&carol, old(role::APPROVER)),
        ],
    )?;
    s.refused("expired approvals", stale, "expired", "stale")
        .await?;

    // A revoked approver.
    let mallory = s.signer("mallory")?;
    let job = deploy(vec![routine("revoked", 1)], "main");
    let revoked = signed(
        job.clone(),
        &[
            (&alice, statement(&job, role::REQUESTER)),
            (&bob, statement(&job, role::APPROVER)),
            (&mallory, statement(&job, role::APPROVER)),
        ],
    )?;
    s.refused("a revoked approver", revoked, "is revoked", "revoked")
        .await?;

    // No signatures at all: what today's controller sends.
    let unsigned = deploy(vec![routine("unsigned", 1)], "main");
    s.refused(
        "an unsigned job",
        unsigned,
        "carries no signed statements",
        "unsigned",
    )
    .await?;

    // An emergency rollback signed by an approver, not an admin (dave).
    let mut rollback = deploy(vec![routine("unused", 1)], "main");
    rollback.kind = JobKind::Rollback(RollbackSpec {
        scope: RollbackScope::Routines(RoutineSelector {
            schema: Some("public".into()),
            name: "signed_probe".into(),
            arg_types: None,
        }),
        target: RollbackTarget::Previous,
        emergency: Some("prod is down".into()),
        known_versions: vec![],
    });
    rollback.label = "signed_probe".into();
    let subject = pgrollout_shared::signing::subject::of_operation(&rollback.kind)
        .map(|(_, subject)| subject)
        .unwrap_or_default();
    let emergency = |role| Statement {
        action: action::EMERGENCY_ROLLBACK.into(),
        plan_id: subject.clone(),
        reason: "prod is down".into(),
        request_id: "req-emergency".into(),
        ..statement(&rollback, role)
    };
    // Its own request: the deploy's request already ran on main.
    let signed = |job: Job, statements: &[(&Signer, Statement)]| -> Result<Job> {
        let mut job = signed(job, statements)?;
        job.approvals.request_id = "req-emergency".into();
        Ok(job)
    };
    let by_approver = signed(rollback.clone(), &[(&bob, emergency(role::ADMIN))])?;
    s.refused(
        "an emergency rollback without an admin",
        by_approver,
        "needs the signature of an admin",
        "unused",
    )
    .await?;
    // Signed by the admin with a reason, it runs (and finds nothing to undo
    // but the first deploy, which it restores: the function is dropped).
    let by_admin = signed(rollback.clone(), &[(&dave, emergency(role::ADMIN))])?;
    let (result, steps) = s.run(by_admin).await?;
    assert!(
        steps
            .iter()
            .any(|s| s.contains("emergency action signed by admin dave")),
        "{} {steps:?}",
        result.message
    );
    Ok(())
}

/// Valid signatures re-ordered, duplicated, swapped or re-labelled: none
/// makes a job the policy would refuse pass.
async fn reordering_attacks(s: &mut Scenario, [alice, bob, carol]: [&Signer; 3]) -> Result<()> {
    let job = deploy(vec![routine("reordered", 1)], "main");
    let statements = [
        (alice, statement(&job, role::REQUESTER)),
        (bob, statement(&job, role::APPROVER)),
        (carol, statement(&job, role::APPROVER)),
    ];
    let valid = signed(job.clone(), &statements)?;

    // An approver's statement moved into the requester's place: roles are
    // signed, so there is still no requester.
    let mut no_requester = valid.clone();
    no_requester.approvals.signatures = vec![
        valid.approvals.signatures[1].clone(),
        valid.approvals.signatures[2].clone(),
    ];
    s.refused(
        "an approval presented as the request",
        no_requester,
        "no requester signed this change",
        "reordered",
    )
    .await?;

    // One approver's signature twice, in different places: counted once.
    let mut duplicated = valid.clone();
    duplicated.approvals.signatures = vec![
        valid.approvals.signatures[1].clone(),
        valid.approvals.signatures[0].clone(),
        valid.approvals.signatures[1].clone(),
    ];
    s.refused(
        "one approval duplicated",
        duplicated,
        "needs 2 distinct approver(s) other than the requester, 1 signed",
        "reordered",
    )
    .await?;

    // Signatures swapped between two statements.
    let mut swapped = valid.clone();
    let (first, second) = (
        valid.approvals.signatures[1].signature.clone(),
        valid.approvals.signatures[2].signature.clone(),
    );
    swapped.approvals.signatures[1].signature = second;
    swapped.approvals.signatures[2].signature = first;
    s.refused(
        "signatures swapped",
        swapped,
        "does not match the statement",
        "reordered",
    )
    .await?;

    // Bob's approval under carol's certificate, to count it twice.
    let mut recertified = valid.clone();
    recertified.approvals.signatures[2] = pgrollout_shared::proto::SignedStatement {
        certificate: valid.approvals.signatures[2].certificate.clone(),
        ..valid.approvals.signatures[1].clone()
    };
    s.refused(
        "an approval under another operator's certificate",
        recertified,
        "does not match the statement",
        "reordered",
    )
    .await?;

    // The requester's statement re-labelled as an approval (and bob's as the
    // request): the bytes change, the signatures no longer match.
    let mut relabelled = valid.clone();
    for (index, role) in [(0, role::APPROVER), (1, role::REQUESTER)] {
        let mut statement = Statement::decode(&valid.approvals.signatures[index].statement)?;
        statement.role = role.into();
        relabelled.approvals.signatures[index].statement = statement.encode();
    }
    s.refused(
        "roles re-labelled",
        relabelled,
        "does not match the statement",
        "reordered",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_refusal_of_a_hostile_controllers_job_reaches_the_real_controllers_audit() -> Result<()> {
    let mut s = Scenario::start().await?;
    let (alice, bob, carol) = (s.signer("alice")?, s.signer("bob")?, s.signer("carol")?);
    // signed_probe exists, as `refused` expects.
    let job = deploy(vec![routine("signed_probe", 1)], "main");
    let statements = [
        (&alice, statement(&job, role::REQUESTER)),
        (&bob, statement(&job, role::APPROVER)),
        (&carol, statement(&job, role::APPROVER)),
    ];
    let (result, _) = s.run(signed(job.clone(), &statements)?).await?;
    assert_eq!(result.outcome(), Outcome::Succeeded, "{}", result.message);
    // The hostile controller's forgery, refused; it keeps the result to itself.
    let mut forged = deploy(vec![routine("forged", 1)], "main");
    forged.approvals = signed(job, &statements)?.approvals;
    let claimed_plan = forged.plan_id.clone();
    s.refused("forged", forged, "signed for plan id", "forged")
        .await?;
    assert!(refused_job_entries(&s.stack)?.is_empty());

    reconnect_to_the_real_controller(&mut s).await?;
    let entries = refused_job_entries(&s.stack)?;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    for expected in [
        "|refused|agent prod/prod-1|",
        "refused job signed-2 (attempt 1, deploy on target main",
        &format!("claiming plan id {claimed_plan}"),
        &format!(
            "offered while connected to https://127.0.0.1:{}",
            s.hostile.port
        ),
        "signed for plan id",
    ] {
        assert!(entry.contains(expected), "{expected:?} in {entry}");
    }
    let audit = s.stack.cli(&["audit"]).await?;
    assert!(audit.stdout.contains("agent.refused_job"), "{audit}");
    let verify = s.stack.cli(&["audit", "verify"]).await?;
    assert_eq!(verify.code, 0, "{verify}");

    // Reported again on every connection, recorded once.
    reconnect_to_the_real_controller(&mut s).await?;
    assert_eq!(refused_job_entries(&s.stack)?.len(), 1);
    Ok(())
}
