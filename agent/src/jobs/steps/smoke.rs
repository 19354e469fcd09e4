//! The smoke step, once for every job that verifies routines inside its
//! transaction: a deploy, a batch routine, the post-commit check, a retire.

use std::ops::Range;
use std::sync::Mutex;
use std::time::Instant;

use pgrollout_shared::proto::{SmokeReport, StepStatus};
use pgrollout_shared::routine::Routine;

use super::apply::smoke_summary;
use crate::jobs::context::{millis, txn_seal, JobContext, JobFailure};
use crate::jobs::smoke::{run_smoke_tests_at, Counted};
use crate::sql::TargetConnection;

/// Runs the smoke tests of `routines` as one step and reports them. `oids`
/// holds the routines' oids when they are known (or is empty).
pub async fn smoke_step(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    routines: &[Routine],
    oids: &[u32],
    step: &str,
    phase: &str,
) -> Result<Vec<SmokeReport>, JobFailure> {
    smoke_step_across(ctx, std::slice::from_mut(conn), routines, oids, step, phase).await
}

/// [`smoke_step`] with the routines spread over `sessions`, each already in
/// a sealed transaction of its own (the post-commit check's: the routines
/// are committed, so every session sees them). Each session takes a run of
/// routines holding about as many calls as the others; the reports come back
/// in the routines' order, as from one session.
pub async fn smoke_step_across(
    ctx: &JobContext,
    sessions: &mut [TargetConnection],
    routines: &[Routine],
    oids: &[u32],
    step: &str,
    phase: &str,
) -> Result<Vec<SmokeReport>, JobFailure> {
    ctx.event(step, StepStatus::Started, "", 0, Vec::new());
    let started = Instant::now();
    if sessions.is_empty() {
        // No session would mean no check at all: never a pass.
        let failure = JobFailure::deploy("no database session to run the smoke tests on");
        ctx.failed(step, &failure, 0);
        return Err(failure);
    }
    let calls: Vec<usize> = routines.iter().map(|r| r.smoke_tests.len()).collect();
    let shares = shares(&calls, sessions.len());
    // Each session's (calls done, calls), summed into one bar.
    let counts = Mutex::new(
        shares
            .iter()
            .map(|share| (0, calls[share.clone()].iter().sum()))
            .collect::<Vec<(usize, usize)>>(),
    );
    let runs = sessions
        .iter_mut()
        .zip(&shares)
        .enumerate()
        .map(|(index, (conn, share))| {
            let counts = &counts;
            // Every oid or none is known; a shorter list is looked up by
            // signature rather than sliced out of range.
            let oids = oids.get(share.clone()).unwrap_or_default();
            async move {
                // Every caller runs this inside a transaction: the deploy's own
                // calls are kept out of the statistics a post-deploy watch
                // compares (issue 23). A bar on the operator's terminal for the
                // calls too: on a large batch they take seconds (issue 16).
                let ran = run_smoke_tests_at(
                    conn,
                    &routines[share.clone()],
                    oids,
                    phase,
                    Counted::Not,
                    |done, total| {
                        let (done, total) = {
                            let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
                            counts[index] = (done, total);
                            counts
                                .iter()
                                .fold((0, 0), |(d, t), (done, total)| (d + done, t + total))
                        };
                        ctx.progress(step, done, total)
                    },
                )
                .await;
                // The calls are the project's SQL: is the transaction still the agent's?
                let confirmed = txn_seal::confirm_after_calls(conn).await;
                (ran, confirmed)
            }
        });
    let mut reports = Vec::with_capacity(routines.len());
    for (ran, confirmed) in futures_util::future::join_all(runs).await {
        if let Err(why) = confirmed {
            let failure = JobFailure::deploy(txn_seal::escaped_message("a smoke test call", &why));
            ctx.failed(step, &failure, millis(started.elapsed()));
            return Err(failure);
        }
        reports.extend(ran.map_err(|e| JobFailure::database("smoke test could not run", e))?);
    }
    ctx.add_smoke_times(&reports);
    let status = if reports.iter().all(|r| r.passed) {
        StepStatus::Succeeded
    } else {
        StepStatus::Failed
    };
    ctx.smoke_event(
        step,
        status,
        smoke_summary(&reports),
        millis(started.elapsed()),
        &reports,
    );
    Ok(reports)
}

/// The routines, given as their numbers of smoke calls, cut into `sessions`
/// consecutive runs (at least one) of about as many calls each; a run may
/// be empty.
fn shares(calls: &[usize], sessions: usize) -> Vec<Range<usize>> {
    let sessions = sessions.max(1);
    let total: usize = calls.iter().sum();
    let mut shares = Vec::with_capacity(sessions);
    let (mut start, mut so_far) = (0, 0);
    for (index, routine_calls) in calls.iter().enumerate() {
        // Run k ends once it holds its part of the calls.
        let k = shares.len();
        if k + 1 < sessions && so_far >= total * (k + 1) / sessions && so_far > 0 {
            shares.push(start..index);
            start = index;
        }
        so_far += routine_calls;
    }
    shares.push(start..calls.len());
    while shares.len() < sessions {
        shares.push(calls.len()..calls.len());
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::shares;

    fn calls_of(calls: &[usize], share: &std::ops::Range<usize>) -> usize {
        calls[share.clone()].iter().sum()
    }

    #[test]
    fn the_calls_are_shared_about_evenly_in_order_and_every_routine_once() {
        let calls = [1, 0, 0, 1, 1, 0, 1, 1, 0, 1];
        let two = shares(&calls, 2);
        assert_eq!(two, vec![0..5, 5..10]);
        assert_eq!(
            (calls_of(&calls, &two[0]), calls_of(&calls, &two[1])),
            (3, 3)
        );
        assert_eq!(shares(&calls, 1), vec![0..10]);
        let three = shares(&calls, 3);
        assert_eq!(three.len(), 3);
        assert_eq!(three[0].start, 0);
        assert_eq!(three[2].end, 10);
        assert!(three.windows(2).all(|w| w[0].end == w[1].start));
        let many = [1; 150];
        let halves = shares(&many, 2);
        assert_eq!(halves, vec![0..75, 75..150]);
    }

    #[test]
    fn more_sessions_than_routines_leave_some_empty() {
        assert_eq!(shares(&[2], 3), vec![0..1, 1..1, 1..1]);
        assert_eq!(shares(&[], 2), vec![0..0, 0..0]);
        assert_eq!(shares(&[0, 0, 5], 2), vec![0..3, 3..3]);
    }
}
