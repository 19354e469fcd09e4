//! Drift (issue 20), judged once for every job that needs it: what counts
//! as drift (`compare.rs`), the unified diffs (`diff.rs`), and the deploy's
//! `no_drift` check (`guard.rs`).

mod compare;
mod diff;
mod guard;

pub use compare::{changed, findings};
pub use guard::refuse_drift;
