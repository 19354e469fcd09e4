//! The smoke tests themselves, in one direction: `runner.rs` (a set of
//! routines) → `pipeline.rs` (the calls sent ahead of their answers) →
//! `checks.rs` (each check, and a call on its own). The step that runs them
//! in a job is `steps/smoke.rs`; the `pgrollout smoke` job kind is
//! `smoke_job.rs`.

mod checks;
mod pipeline;
mod runner;

pub use runner::{run_smoke_tests, run_smoke_tests_at, Counted};
