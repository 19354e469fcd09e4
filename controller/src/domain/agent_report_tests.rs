//! The checks on what an agent sends: a sound report converts with nothing
//! lost, a malformed one names its field and still carries the key the
//! agent's outbox needs acknowledged.

use pgrollout_shared::proto::{self, agent_message::Body, AgentMessage};

use super::*;

fn event() -> proto::JobEvent {
    proto::JobEvent {
        job_id: "j-18c0-0001".into(),
        attempt: 2,
        seq: 3,
        step: "apply".into(),
        status: proto::StepStatus::Failed as i32,
        message: "ERROR 42601: syntax error".into(),
        duration_ms: 12,
        at_unix_ms: 1_700_000_000_000,
        smoke: vec![proto::SmokeReport {
            routine: "public.f()".into(),
            passed: true,
            ..Default::default()
        }],
        done: 4,
        total: 9,
    }
}

fn result() -> proto::JobResult {
    proto::JobResult {
        job_id: "j-18c0-0001".into(),
        attempt: 1,
        seq: 7,
        outcome: proto::Outcome::SmokeFailed as i32,
        message: "smoke failed".into(),
        ledger_ids: vec![4, 5],
        ..Default::default()
    }
}

fn hello() -> proto::Hello {
    proto::Hello {
        agent_name: "dev-1".into(),
        agent_version: "1.0".into(),
        claimed_zone: "dev".into(),
        targets: vec![proto::TargetInfo {
            name: "main".into(),
            dbname: "app".into(),
            ..Default::default()
        }],
        in_flight: vec![proto::InFlightJob {
            job_id: "j-1".into(),
            attempt: 1,
            last_seq: 4,
            finished: true,
        }],
        draining: false,
    }
}

#[test]
fn a_sound_event_converts_and_goes_back_to_the_wire_unchanged() {
    let checked = ReportedEvent::try_from(event()).expect("a sound event");
    assert_eq!(checked.status, StepStatus::Failed);
    assert_eq!(
        checked.job,
        JobRef {
            id: "j-18c0-0001".into(),
            attempt: 2
        }
    );
    assert_eq!(proto::JobEvent::from(checked), event());
}

#[test]
fn an_event_with_an_unknown_status_names_the_field_and_keeps_its_outbox_key() {
    for status in [proto::StepStatus::Unspecified as i32, 42] {
        let error = ReportedEvent::try_from(proto::JobEvent { status, ..event() })
            .expect_err("no such status");
        assert_eq!(error.what, "event");
        assert_eq!(error.field, "status");
        assert!(error.reason.contains(&status.to_string()), "{error}");
        assert_eq!(
            error.outbox_key,
            Some(OutboxKey {
                job_id: "j-18c0-0001".into(),
                attempt: 2,
                seq: 3
            })
        );
        assert_eq!(error.job.map(|job| job.attempt), Some(2));
    }
}

#[test]
fn a_report_without_a_usable_job_or_sequence_is_malformed_but_still_acknowledgeable() {
    let cases = [
        (
            proto::JobEvent {
                job_id: String::new(),
                ..event()
            },
            "job_id",
        ),
        (
            proto::JobEvent {
                job_id: "j 1".into(),
                ..event()
            },
            "job_id",
        ),
        (
            proto::JobEvent {
                job_id: "j".repeat(129),
                ..event()
            },
            "job_id",
        ),
        (
            proto::JobEvent {
                attempt: 0,
                ..event()
            },
            "attempt",
        ),
        (proto::JobEvent { seq: 0, ..event() }, "seq"),
    ];
    for (wire, field) in cases {
        let key = OutboxKey {
            job_id: wire.job_id.clone(),
            attempt: wire.attempt,
            seq: wire.seq,
        };
        let error = ReportedEvent::try_from(wire).expect_err(field);
        assert_eq!(error.field, field);
        assert_eq!(error.outbox_key, Some(key), "acknowledged as sent");
        // Only a sound job id and attempt name a job to settle.
        assert_eq!(error.job.is_some(), field == "seq", "{field}");
    }
}

#[test]
fn a_sound_result_keeps_everything_the_agent_reported() {
    let checked = ReportedResult::try_from(result()).expect("a sound result");
    assert_eq!(checked.outcome, Outcome::SmokeFailed);
    assert_eq!(checked.outcome.exit_code().code(), 3);
    assert_eq!(checked.seq, 7);
    assert_eq!(checked.payload.message, "smoke failed");
    assert_eq!(checked.payload.ledger_ids, vec![4, 5]);
    assert_eq!(checked.payload.backup, None, "no path, no backup");
    assert_eq!(checked.into_wire(), result());
}

/// What the store and the audit read is converted once, typed: the backup
/// as one value, the applied and restored versions, a probe's baseline as
/// an `Option` (none when the routine is new or the probe failed).
#[test]
fn a_results_payload_is_read_once_into_the_controllers_types() {
    let checked = ReportedResult::try_from(proto::JobResult {
        outcome: proto::Outcome::Succeeded as i32,
        backup_path: "/backups/j.sql".into(),
        backup_sha256: "ab".repeat(32),
        applied: vec![proto::AppliedRoutine {
            identity: "public.f(integer)".into(),
            change: "replaced".into(),
            new_sha256: "cd".repeat(32),
            previous_sha256: String::new(),
        }],
        restored: vec![proto::RestoredRoutine {
            identity: "g(integer)".into(),
            sha256: "ef".repeat(32),
            ..Default::default()
        }],
        perf: vec![
            proto::PerfReport {
                routine: "public.f(integer)".into(),
                has_baseline: true,
                old_median_us: 90,
                new_median_us: 100,
                ..Default::default()
            },
            proto::PerfReport {
                routine: "public.new(integer)".into(),
                has_baseline: false,
                old_median_us: 0,
                new_median_us: 100,
                ..Default::default()
            },
        ],
        ..result()
    })
    .expect("a sound result");
    let payload = &checked.payload;
    let backup = payload.backup.as_ref().expect("a backup");
    assert_eq!(
        (backup.path.as_str(), backup.sha256.len()),
        ("/backups/j.sql", 64)
    );
    assert_eq!(payload.applied.len(), 1);
    assert!(payload.applied[0].has_digest());
    assert_eq!(payload.restored[0].identity, "g(integer)");
    let baselines: Vec<Option<u64>> = payload.perf.iter().map(|p| p.old_median_us).collect();
    assert_eq!(baselines, vec![Some(90), None]);
}

#[test]
fn a_result_without_a_known_outcome_names_the_field() {
    for outcome in [proto::Outcome::Unspecified as i32, 9] {
        let error = ReportedResult::try_from(proto::JobResult {
            outcome,
            ..result()
        })
        .expect_err("no such outcome");
        assert_eq!((error.what, error.field.as_str()), ("result", "outcome"));
        assert_eq!(
            error.to_string(),
            format!("malformed result (field outcome: {outcome} is not an outcome)")
        );
        assert_eq!(error.job.map(|job| job.id), Some("j-18c0-0001".to_owned()));
        assert_eq!(error.outbox_key.map(|key| key.seq), Some(7));
    }
}

#[test]
fn compact_existence_only_reports_are_put_back_or_the_result_refused() {
    let compact = |positions: Vec<u32>| proto::ExistenceOnlyReports {
        phase: "post-commit".into(),
        schema: "lib".into(),
        routines: vec!["lib.a()".into()],
        positions,
    };
    let tested = proto::SmokeReport {
        routine: "lib.t()".into(),
        test: "one".into(),
        phase: "post-commit".into(),
        passed: true,
        ..Default::default()
    };
    let checked = ReportedResult::try_from(proto::JobResult {
        smoke: vec![tested.clone()],
        existence_only: vec![compact(vec![0])],
        ..result()
    })
    .expect("a sound compact form");
    let routines: Vec<&str> = checked
        .wire()
        .smoke
        .iter()
        .map(|r| r.routine.as_str())
        .collect();
    assert_eq!(routines, ["lib.a()", "lib.t()"], "back at its position");
    assert!(checked.wire().existence_only.is_empty());

    let error = ReportedResult::try_from(proto::JobResult {
        smoke: vec![tested],
        existence_only: vec![compact(vec![5])],
        ..result()
    })
    .expect_err("a position past the end");
    assert_eq!(
        (error.what, error.field.as_str()),
        ("result", "existence_only")
    );
    assert_eq!(
        error.outbox_key.map(|key| key.seq),
        Some(7),
        "still acknowledged"
    );
}

#[test]
fn accept_and_decline_need_a_job_and_an_attempt() {
    let accept = AgentMessage {
        body: Some(Body::Accept(proto::Accept {
            job_id: "j-1".into(),
            attempt: 0,
        })),
    };
    let error = AgentReport::try_from(accept).expect_err("attempt 0");
    assert_eq!((error.what, error.field.as_str()), ("accept", "attempt"));
    assert_eq!(error.outbox_key, None, "an accept is not kept for replay");
    let decline = AgentMessage {
        body: Some(Body::Decline(proto::Decline {
            job_id: "j-1".into(),
            attempt: 1,
            reason: "busy".into(),
        })),
    };
    match AgentReport::try_from(decline) {
        Ok(AgentReport::Declined { job, reason }) => {
            assert_eq!(
                (job.id.as_str(), job.attempt, reason.as_str()),
                ("j-1", 1, "busy")
            )
        }
        other => panic!("expected a decline, got {other:?}"),
    }
}

#[test]
fn a_sound_hello_converts() {
    let checked = AgentHello::try_from(hello()).expect("a sound Hello");
    assert_eq!(checked.name, "dev-1");
    assert_eq!(
        checked.targets,
        vec![AgentTarget {
            name: "main".into(),
            dbname: "app".into(),
            labels: Default::default(),
        }]
    );
    assert_eq!(checked.in_flight[0].job.id, "j-1");
    assert!(checked.in_flight[0].finished);
}

#[test]
fn a_malformed_hello_names_the_field() {
    let cases = [
        (
            proto::Hello {
                agent_name: String::new(),
                ..hello()
            },
            "agent_name",
        ),
        (
            proto::Hello {
                claimed_zone: "z".repeat(300),
                ..hello()
            },
            "claimed_zone",
        ),
        (
            proto::Hello {
                targets: vec![proto::TargetInfo::default()],
                ..hello()
            },
            "targets[0].name",
        ),
        (
            proto::Hello {
                in_flight: vec![proto::InFlightJob {
                    job_id: "j-1".into(),
                    attempt: 0,
                    ..Default::default()
                }],
                ..hello()
            },
            "in_flight[0].attempt",
        ),
    ];
    for (wire, field) in cases {
        let error = AgentHello::try_from(wire).expect_err(field);
        assert_eq!((error.what, error.field.as_str()), ("Hello", field));
    }
}
