//! The second rollback source (SEED.md: "Git history (previous commit)"):
//! every version of a routine the controller holds from the plans it
//! deployed to an environment, keyed by the SHA-256 of the definition each
//! deploy recorded. The agent asks for a version by that hash, applies the
//! plan's CREATE statement and keeps it only if the hash matches, so a plan
//! is never mistaken for another version.

use std::collections::HashSet;

use pgrollout_shared::operations::{KnownVersion, MAX_KNOWN_VERSIONS};
use pgrollout_shared::proto::{self, JobResult, Plan};
use pgrollout_shared::routine::Routine;
use prost::Message;

use crate::store::{Store, StoreError};

/// How many of an environment's newest job results are searched.
const RESULTS_SEARCHED: usize = 2_000;
/// The catalogue rides in the job offer: keep it well inside a gRPC message.
const MAX_CATALOGUE_BYTES: usize = 8 * 1024 * 1024;

/// `schema.name` pairs whose versions are wanted (any schema when `None`).
pub struct Wanted {
    pub names: Vec<(Option<String>, String)>,
}

impl Wanted {
    fn covers(&self, routine: &proto::Routine) -> bool {
        self.names.iter().any(|(schema, name)| {
            *name == routine.name && schema.as_ref().is_none_or(|s| *s == routine.schema)
        })
    }
}

/// Every distinct version of the wanted routines deployed to `environment`,
/// newest first.
pub async fn known_versions(
    store: &Store,
    environment: &str,
    wanted: &Wanted,
) -> Result<Vec<KnownVersion>, StoreError> {
    let results = store.results_in(environment, RESULTS_SEARCHED).await?;
    let mut seen = HashSet::new();
    let mut versions = Vec::new();
    let mut bytes = 0;
    for stored in results {
        let (Ok(plan), Ok(result)) = (
            Plan::decode(stored.plan.as_slice()),
            JobResult::decode(stored.result.as_slice()),
        ) else {
            tracing::warn!(rollout_id = %stored.rollout_id, "undecodable plan or result skipped");
            continue;
        };
        for applied in &result.applied {
            if applied.new_sha256.len() != 64 || seen.contains(&applied.new_sha256) {
                continue;
            }
            let Some(routine) = plan.routines.iter().find(|r| {
                super::perf_baseline::identity_of(r) == applied.identity && wanted.covers(r)
            }) else {
                continue;
            };
            let Ok(routine) = Routine::try_from(routine.clone()) else {
                continue;
            };
            bytes += routine.create_sql.len();
            if versions.len() >= MAX_KNOWN_VERSIONS || bytes > MAX_CATALOGUE_BYTES {
                return Ok(versions);
            }
            seen.insert(applied.new_sha256.clone());
            versions.push(KnownVersion {
                definition_sha256: applied.new_sha256.clone(),
                plan_id: plan.plan_id.clone(),
                commit_sha: plan.commit_sha.clone(),
                routine,
            });
        }
    }
    Ok(versions)
}
