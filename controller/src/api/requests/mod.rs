//! The service side of deploy requests that are not rollouts yet: following
//! one (`follow.rs`) and showing one as `status` and `rollouts` do
//! (`view.rs`). Their lifecycle — park, approve, schedule, fire, cancel —
//! is the engine's (`engine/requests/`).

mod follow;
#[cfg(test)]
mod tests;
mod view;

pub use follow::follow;
pub use view::{list_with_requests, request_status};
