//! The latest drift scan per environment and scope (issue 20, migration
//! 0012): what `pgrollout drift --cached` shows, and what a new scan's
//! findings are compared with to tell new drift (audited `drift.detected`).

use pgrollout_shared::proto::DriftResponse;
use prost::Message;
use rusqlite::{params, OptionalExtension};

use super::{decode_blob, Store, StoreError};

/// A stored scan: when, and what it found.
#[derive(Clone, Debug)]
pub struct StoredDriftScan {
    pub scanned_at: i64,
    pub response: DriftResponse,
}

impl Store {
    /// Keeps `response` as the latest scan of `environment` for `scope` and
    /// returns the one it replaces.
    pub async fn record_drift_scan(
        &self,
        environment: &str,
        scope: &str,
        response: &DriftResponse,
        at: i64,
    ) -> Result<Option<StoredDriftScan>, StoreError> {
        let (environment, scope) = (environment.to_owned(), scope.to_owned());
        let blob = response.encode_to_vec();
        self.call(move |c| {
            let tx = c.transaction()?;
            let previous = read(&tx, &environment, &scope)?;
            tx.execute(
                "INSERT INTO drift_scans (environment, scope, scanned_at, response) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (environment, scope) DO UPDATE SET scanned_at = ?3, response = ?4",
                params![environment, scope, at, blob],
            )?;
            tx.commit()?;
            Ok(previous)
        })
        .await
    }

    /// The latest scan of `environment` for `scope`, if any was recorded.
    pub async fn latest_drift_scan(
        &self,
        environment: &str,
        scope: &str,
    ) -> Result<Option<StoredDriftScan>, StoreError> {
        let (environment, scope) = (environment.to_owned(), scope.to_owned());
        self.call(move |c| read(c, &environment, &scope)).await
    }
}

fn read(
    c: &rusqlite::Connection,
    environment: &str,
    scope: &str,
) -> rusqlite::Result<Option<StoredDriftScan>> {
    c.query_row(
        "SELECT scanned_at, response FROM drift_scans WHERE environment = ?1 AND scope = ?2",
        params![environment, scope],
        |row| {
            let blob: Vec<u8> = row.get(1)?;
            Ok(StoredDriftScan {
                scanned_at: row.get(0)?,
                response: decode_blob(1, &blob, "DriftResponse", || {
                    format!("drift_scans ({environment}, {scope:?})")
                })?,
            })
        },
    )
    .optional()
}
