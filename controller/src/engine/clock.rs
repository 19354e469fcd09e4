//! Wall-clock time as the controller's gates and scheduler see it. Time
//! windows are about the wall clock (UTC), so this is `SystemTime`, not a
//! monotonic instant; it is injected so tests can stand at any hour and move
//! time forward without waiting (DESIGN §10).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

/// Longest a real sleep lasts before the caller re-checks: the wall clock
/// can jump (NTP, a suspended VM), and a scheduled rollout must not fire
/// hours late because a sleep was computed before the jump.
const LONGEST_SLEEP: Duration = Duration::from_secs(30);

pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;

    /// Resolves at `deadline` by this clock, or earlier: callers re-check
    /// the time and sleep again, so an early wake-up is harmless.
    fn sleep_until(&self, deadline: SystemTime) -> Sleep<'_>;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep_until(&self, deadline: SystemTime) -> Sleep<'_> {
        let wait = deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(LONGEST_SLEEP);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that stands still until the test moves it.
#[cfg(test)]
pub struct ManualClock {
    now: tokio::sync::watch::Sender<SystemTime>,
}

#[cfg(test)]
impl ManualClock {
    pub fn at(now: SystemTime) -> std::sync::Arc<Self> {
        std::sync::Arc::new(ManualClock {
            now: tokio::sync::watch::channel(now).0,
        })
    }

    /// Moves time to `now`, waking every sleeper whose deadline passed.
    pub fn set(&self, now: SystemTime) {
        self.now.send_replace(now);
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline: SystemTime) -> Sleep<'_> {
        let mut changes = self.now.subscribe();
        Box::pin(async move {
            let _ = changes.wait_for(|now| *now >= deadline).await;
        })
    }
}
