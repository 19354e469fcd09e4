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

#[cfg(test)]
mod tests {
    use super::*;

    fn routine() -> proto::Routine {
        proto::Routine {
            schema: "app".into(),
            name: "tbl_count".into(),
            arg_types: vec!["regclass".into()],
            create_sql: "CREATE OR REPLACE FUNCTION app.tbl_count(t regclass) RETURNS bigint LANGUAGE sql AS 'SELECT 1'".into(),
            source_path: "procedures/tbl_count.sql".into(),
            source_line: 3,
            search_path: vec!["app".into()],
            ..Default::default()
        }
    }

    #[test]
    fn companion_statements_count_only_when_there_are_any() {
        // Computed by the code before companion statements existed (main at
        // 740a3ff): a plan without them keeps its id, so approvals and
        // promotion gates over existing plans stay valid.
        assert_eq!(
            plan_id(&[routine()]),
            "de3d1fc5622d5b5748d8b587a4210879052a9f03bf84cc5b003b876e11478936"
        );
        let with = |comment: &str| proto::Routine {
            companion_sql: vec![
                "REVOKE ALL ON FUNCTION app.tbl_count(regclass) FROM PUBLIC".into(),
                format!("COMMENT ON FUNCTION app.tbl_count(regclass) IS '{comment}'"),
            ],
            ..routine()
        };
        let id = plan_id(&[with("rows")]);
        assert_ne!(id, plan_id(&[routine()]));
        // Another COMMENT is another plan.
        assert_ne!(id, plan_id(&[with("rows of a table")]));
    }
}
