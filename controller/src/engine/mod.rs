//! The rollout engine: which agents are connected (registry), where each
//! job's updates go (router), and how one rollout runs (rollout).

pub mod registry;
pub mod rollout;
pub mod router;

use std::sync::Arc;

use crate::config::ControllerConfig;
use crate::store::Store;

/// Everything the gRPC services share.
pub struct Controller {
    pub config: ControllerConfig,
    pub store: Store,
    pub registry: registry::Registry,
    pub router: router::JobRouter,
}

impl Controller {
    pub fn new(config: ControllerConfig, store: Store) -> Arc<Self> {
        Arc::new(Controller {
            config,
            store,
            registry: registry::Registry::default(),
            router: router::JobRouter::default(),
        })
    }
}

/// A new sortable, unique id such as `r-18c3f2a9b10-7f3a`.
pub fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}-{:x}-{:04x}",
        pgrollout_shared::job::now_unix_ms(),
        fastrand::u16(..)
    )
}
