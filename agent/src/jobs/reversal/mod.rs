//! Putting earlier definitions back, shared by `pgrollout rollback` and a
//! deploy's automatic restore: the ledger as a version stack
//! (`versions.rs`), what to restore (`plan.rs`), where each definition comes
//! from (`sources.rs`: backup → controller plan → ledger), the transaction
//! (`apply.rs`), the checks after it (`verify.rs`), the automatic restore of
//! a deploy's backup (`restore.rs`) and what a timeout says (`progress.rs`).
//! Imports `steps/`, `smoke/` and `context/`, never a job kind.

pub mod apply;
pub mod plan;
pub mod progress;
pub mod restore;
pub mod sources;
pub mod verify;
pub mod versions;
