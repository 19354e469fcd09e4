//! Each step of a job, once, used by every job kind: connect, the deploy
//! lock and the idempotency check (`session.rs`), the single-statement
//! runner (`statement.rs`), backup writing (`backup.rs`), the pieces of a
//! deploy inside its transaction (`apply.rs`, `replace.rs`, `unchanged.rs`),
//! the smoke step (`smoke.rs`), what an exact restore reads before its
//! transaction (`exact_privileges.rs`), the connection opened ahead for the
//! post-commit check (`preopen.rs`), pgTAP files (`pgtap.rs`) and the timed
//! perf calls (`perf.rs`), drift judged and refused (`drift/`). Steps import `context/`, `smoke/` and `sql/`,
//! never a job kind.

pub mod apply;
pub mod backup;
pub mod companions;
pub mod drift;
mod exact_privileges;
pub mod perf;
pub mod pgtap;
pub mod preopen;
pub mod replace;
mod session;
mod smoke;
mod statement;
#[cfg(test)]
pub(crate) mod test_routine;
mod unchanged;

pub use backup::backup;
pub use exact_privileges::privileges_ahead;
pub use session::{already_done, connect, lock, own_deadline, take_deploy_lock, Replayed};
pub use smoke::{smoke_step, smoke_step_across};
pub use statement::{database, refused, simple, Stopped};
