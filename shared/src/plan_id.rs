//! The plan id: SHA-256 of a plan's routines in their canonical encoding.
//! One implementation for both sides: the controller recomputes it at its
//! edge, and an agent with an `[approvals]` policy recomputes it from the
//! routines a job carries before trusting a signature over it (issue 19).

use prost::Message;
use sha2::{Digest, Sha256};

use crate::proto;
use crate::routine::Routine;

/// SHA-256 over each routine's protobuf encoding, length-prefixed. prost
/// encodes fields in tag order and these messages have no maps, so the
/// encoding is deterministic. Label and commit are metadata, not content,
/// and so is the line a statement starts on (a comment added above it does
/// not change what is deployed). The routines must be in plan order (sorted
/// by identity): [`plan_id_of_job`] sorts a job's for it.
pub fn plan_id(routines: &[proto::Routine]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"pgrollout-plan-v1");
    for routine in routines {
        let bytes = if routine.source_line == 0 {
            routine.encode_to_vec()
        } else {
            proto::Routine {
                source_line: 0,
                ..routine.clone()
            }
            .encode_to_vec()
        };
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(&bytes);
    }
    hex::encode(hasher.finalize())
}

/// The plan id of routines as a job carries them (in deploy order): sorted
/// by identity first, as the plan that was hashed was.
pub fn plan_id_of_job(routines: &[Routine]) -> String {
    let mut sorted: Vec<&Routine> = routines.iter().collect();
    sorted.sort_by(|a, b| a.identity.cmp(&b.identity));
    let wire: Vec<proto::Routine> = sorted.into_iter().map(|r| r.clone().into()).collect();
    plan_id(&wire)
}
