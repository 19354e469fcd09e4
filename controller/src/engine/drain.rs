//! Draining on SIGTERM (issue 21): from the signal on no new job is offered,
//! and the controller waits — bounded by `[deployment] drain_timeout` — for
//! the jobs already out to report, so their operators see the real outcome
//! instead of a cut stream.
//!
//! Every job offered to an agent holds an [`InFlight`] guard from before its
//! agent is picked until its result was relayed; `begin` refuses new guards,
//! `settled` waits for the last one to drop. Taking a guard and starting the
//! drain are decided under one lock, so no job slips in after the count was
//! read.

use std::time::Duration;

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct State {
    draining: bool,
    in_flight: usize,
}

pub struct Drain {
    state: watch::Sender<State>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            state: watch::channel(State::default()).0,
        }
    }
}

/// One job between its offer and its relayed result; dropping it ends that.
pub struct InFlight {
    state: watch::Sender<State>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.send_modify(|s| s.in_flight -= 1);
    }
}

/// Why a job was not offered.
pub const DRAINING: &str =
    "the controller is shutting down (draining its in-flight jobs) and takes no new \
                            rollouts; try again once it (or its replacement) is back";

impl Drain {
    /// A guard for a new job, or `Err` when the controller is draining.
    pub fn enter(&self) -> Result<InFlight, super::error::EngineError> {
        let mut admitted = false;
        self.state.send_if_modified(|s| {
            admitted = !s.draining;
            if admitted {
                s.in_flight += 1;
            }
            admitted
        });
        if admitted {
            Ok(InFlight {
                state: self.state.clone(),
            })
        } else {
            Err(super::error::EngineError::Unavailable(DRAINING.into()))
        }
    }

    /// Stops admitting jobs; returns how many are in flight now.
    pub fn begin(&self) -> usize {
        self.state.send_modify(|s| s.draining = true);
        self.state.borrow().in_flight
    }

    /// Resolves once the drain has begun.
    pub async fn started(&self) {
        let mut state = self.state.subscribe();
        let _ = state.wait_for(|s| s.draining).await;
    }

    pub fn is_draining(&self) -> bool {
        self.state.borrow().draining
    }

    /// Waits until no job is in flight, at most `limit`; returns how many
    /// are still out when it gives up (0 when all settled).
    pub async fn settled(&self, limit: Duration) -> usize {
        let mut state = self.state.subscribe();
        let settled = tokio::time::timeout(limit, state.wait_for(|s| s.in_flight == 0))
            .await
            .is_ok();
        if settled {
            0
        } else {
            self.state.borrow().in_flight
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_drain_waits_for_admitted_jobs_and_refuses_new_ones() {
        let drain = Drain::default();
        let job = drain.enter().expect("admitted before the drain");
        assert_eq!(drain.begin(), 1);
        assert!(drain.enter().is_err(), "no new job while draining");
        assert_eq!(drain.settled(Duration::from_millis(10)).await, 1);
        let settled = tokio::spawn(async move {
            let drain = drain;
            drain.settled(Duration::from_secs(30)).await
        });
        drop(job);
        assert_eq!(settled.await.expect("joined"), 0);
    }
}
