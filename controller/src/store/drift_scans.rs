//! The latest drift scan per environment and scope (issue 20, migration
//! 0012): what `pgrollout drift --cached` shows, and what a new scan's
//! findings are compared with to tell new drift (audited `drift.detected`).

use super::db::{self, params, OptionalExtension};
use pgrollout_shared::proto::DriftResponse;
use prost::Message;

use super::leases::{hold_fence, Fence};
use super::{decode_blob, Store, StoreError};

/// A stored scan: when, and what it found.
#[derive(Clone, Debug)]
pub struct StoredDriftScan {
    pub scanned_at: i64,
    pub response: DriftResponse,
}

impl Store {
    /// Keeps `response` as the latest scan of `environment` for `scope` and
    /// returns the one it replaces. The drift schedule passes its lease's
    /// `fence` (issue 18): the scan is kept only while it holds, checked in
    /// the transaction before the write (`hold_fence`); otherwise nothing is
    /// written and the answer is [`StoreError::FenceLost`]. An operator's
    /// scan passes none.
    pub async fn record_drift_scan(
        &self,
        environment: &str,
        scope: &str,
        response: &DriftResponse,
        at: i64,
        fence: Option<&Fence>,
    ) -> Result<Option<StoredDriftScan>, StoreError> {
        let (environment, scope) = (environment.to_owned(), scope.to_owned());
        let blob = response.encode_to_vec();
        let fence = fence.cloned();
        self.call(move |c| {
            let tx = c.immediate_transaction()?;
            if let Some(fence) = &fence {
                if let Err(lost) = hold_fence(&tx, fence)? {
                    return Ok(Err(lost));
                }
            }
            let previous = read(&tx, &environment, &scope)?;
            tx.execute(
                "INSERT INTO drift_scans (environment, scope, scanned_at, response) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (environment, scope) DO UPDATE SET scanned_at = ?3, response = ?4",
                params![environment, scope, at, blob],
            )?;
            tx.commit()?;
            Ok(Ok(previous))
        })
        .await?
        .map_err(StoreError::FenceLost)
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

/// What the metrics show of an environment's latest scan of all routines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriftGauge {
    pub environment: String,
    pub scanned_at: i64,
    /// Findings by kind (`changed`, `dropped`, `renamed`, `unmanaged`).
    pub findings: Vec<(String, u64)>,
}

impl Store {
    /// Each environment's latest scan of all its routines (a scan limited to
    /// some names is not the environment's state): one row per environment.
    pub async fn drift_gauges(&self) -> Result<Vec<DriftGauge>, StoreError> {
        self.call(|c| {
            let mut statement = c.prepare_cached(
                "SELECT environment, scanned_at, response FROM drift_scans WHERE scope = '' ORDER BY environment",
            )?;
            let rows = statement.query_map(params![], |row| {
                let environment: String = row.get(0)?;
                let blob: Vec<u8> = row.get(2)?;
                let response: DriftResponse = decode_blob(2, &blob, "DriftResponse", || {
                    format!("drift_scans ({environment}, \"\")")
                })?;
                let mut findings = std::collections::BTreeMap::<String, u64>::new();
                for finding in response.report.map(|r| r.findings).unwrap_or_default() {
                    *findings.entry(finding.kind).or_default() += 1;
                }
                Ok(DriftGauge {
                    environment,
                    scanned_at: row.get(1)?,
                    findings: findings.into_iter().collect(),
                })
            })?;
            rows.collect()
        })
        .await
    }
}

fn read(c: &db::Conn, environment: &str, scope: &str) -> db::Result<Option<StoredDriftScan>> {
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
