//! What the controller of the current session said it can do (its Welcome),
//! for the parts of the agent that shape what they send by it.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the controller puts compact existence-only smoke reports back
/// (`Welcome.expands_existence_only`). Until a controller says so, results
/// carry every report whole: a controller that does not know the compact
/// form would read it as no report at all.
static EXPANDS_EXISTENCE_ONLY: AtomicBool = AtomicBool::new(false);

/// Records what the controller's Welcome said.
pub fn welcomed(welcome: &pgrollout_shared::proto::Welcome) {
    EXPANDS_EXISTENCE_ONLY.store(welcome.expands_existence_only, Ordering::Relaxed);
}

/// See [`EXPANDS_EXISTENCE_ONLY`].
pub fn controller_expands_existence_only() -> bool {
    EXPANDS_EXISTENCE_ONLY.load(Ordering::Relaxed)
}
