//! Deploy requests that are not rollouts yet (DESIGN §3: `awaiting_approval
//! → scheduled → running`). A request (`p-…`) waits for approvals, then for
//! its window; it becomes a rollout when the last approval comes in inside
//! the window, or when the scheduler finds its window open — re-evaluating
//! every gate first. It can be cancelled until then.
//!
//! Whoever starts a request first claims it (`starting`, compare-and-set),
//! so a cancel, an approval and the scheduler can never start it twice or
//! start a cancelled one.
//!
//! The whole lifecycle lives here, with one direction of dependency:
//! `verdict.rs` (the gates' answer: pass, refuse, wait for people, wait for
//! a window) and `start.rs` (claim a request and start its rollout) at the
//! bottom; `park.rs` (park or schedule, and what every step shares about a
//! waiting request) on `verdict.rs`; `approvals.rs` (decide), `fire.rs` (the
//! scheduler) and `cancel.rs` on those. The gRPC services call in through
//! this file and map `EngineError` to a status at the edge (`api/status.rs`).

mod approvals;
mod cancel;
mod fire;
mod park;
mod start;
mod verdict;

pub use crate::store::request_state;
pub use approvals::decide;
pub use cancel::cancel;
pub use fire::{run_scheduler, settle_interrupted_starts};
pub use park::{gate, parked_update, Gated, ParkOptions, Parked, RequestUpdates};
pub use verdict::{attachments, evaluate_everywhere, evaluate_now, DryRunContext, GateCheck};
