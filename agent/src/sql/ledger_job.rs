//! What the ledger recorded for one job, read back when an agent restarted
//! mid-job and the ledger decides what happened (`jobs/resolve.rs`): each
//! routine's change, and the backup the job wrote before changing anything.

use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::quote_identifier;

pub struct JobRecord {
    pub identity: String,
    /// created | replaced | recreated | unchanged | …
    pub change: String,
    pub new_sha256: String,
    /// The job's backup file and its SHA-256; none on rows it left untouched.
    pub backup: Option<(String, String)>,
}

/// The job's rows, oldest first (the caller knows the ledger exists: it
/// found the job there).
pub async fn job_record(
    client: &Client,
    schema: &str,
    job_id: &str,
) -> Result<Vec<JobRecord>, tokio_postgres::Error> {
    let table = format!("{}.ledger", quote_identifier(schema));
    let rows = client
        .query_typed(
            &format!(
                "SELECT identity, change, coalesce(new_sha256, ''), backup_path, backup_sha256 \
                 FROM {table} WHERE job_id = $1 ORDER BY id"
            ),
            &[(&job_id, Type::TEXT)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let path: Option<String> = row.get(3);
            let sha: Option<String> = row.get(4);
            JobRecord {
                identity: row.get(0),
                change: row.get(1),
                new_sha256: row.get(2),
                backup: path.zip(sha).filter(|(p, _)| !p.is_empty()),
            }
        })
        .collect())
}
