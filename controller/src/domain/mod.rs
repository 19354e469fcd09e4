//! The controller's own types for what crosses its edges (issue 14, item 4):
//! what an agent reports (`agent_report.rs`, a result's payload in
//! `result_payload.rs`) and a checked plan (`plan.rs`).
//! Each is converted from its wire message once, at the edge that received
//! it, and back to a wire message only where one is written (an offer, a
//! stream to the operator, a stored blob). This folder imports nothing of
//! the controller: `api`, `engine` and `store` all depend on it.

pub mod agent_report;
pub mod plan;
pub mod result_payload;
