//! The second rollback source (SEED.md: "Git history (previous commit)"):
//! every version of a routine the controller holds from the plans it
//! deployed to an environment, keyed by the SHA-256 of the definition each
//! deploy recorded. The agent asks for a version by that hash, applies the
//! plan's CREATE statement and keeps it only if the hash matches, so a plan
//! is never mistaken for another version.

use pgrollout_shared::operations::{KnownVersion, MAX_KNOWN_VERSIONS};
use pgrollout_shared::proto;
use pgrollout_shared::routine::Routine;
use prost::Message;

use crate::store::{Store, StoreError};

/// The catalogue rides in the job offer: keep it well inside a gRPC message.
const MAX_CATALOGUE_BYTES: usize = 8 * 1024 * 1024;

/// `schema.name` pairs whose versions are wanted (any schema when `None`).
pub struct Wanted {
    pub names: Vec<(Option<String>, String)>,
}

/// Every distinct version of the wanted routines deployed to `environment`,
/// newest first: an indexed lookup by name (`store/history_index.rs`), so its
/// cost follows the versions of these routines, not the store's history.
pub async fn known_versions(
    store: &Store,
    environment: &str,
    wanted: &Wanted,
) -> Result<Vec<KnownVersion>, StoreError> {
    let indexed = store
        .indexed_versions(environment, wanted.names.clone(), MAX_KNOWN_VERSIONS)
        .await?;
    let mut versions = Vec::new();
    let mut bytes = 0;
    for version in indexed {
        let Ok(routine) = proto::Routine::decode(version.routine.as_slice()) else {
            tracing::warn!(plan_id = %version.plan_id, "undecodable indexed routine skipped");
            continue;
        };
        let Ok(routine) = Routine::try_from(routine) else {
            continue;
        };
        bytes += routine.create_sql.len();
        if versions.len() >= MAX_KNOWN_VERSIONS || bytes > MAX_CATALOGUE_BYTES {
            return Ok(versions);
        }
        versions.push(KnownVersion {
            definition_sha256: version.definition_sha256,
            plan_id: version.plan_id,
            commit_sha: version.commit_sha,
            routine,
        });
    }
    Ok(versions)
}
