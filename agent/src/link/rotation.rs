//! Which controller the agent dials next, and how long it waits first
//! (issue 18). The agent holds one stream to one controller at a time.
//!
//! A **round** is one attempt at each configured address in turn, starting
//! with the one after the address last used. Within a round an attempt that
//! fails moves to the next address at once; the jittered exponential backoff
//! (from 1 s, doubling up to `reconnect_max`) is waited between rounds, not
//! between addresses, so a dead controller early in the list costs one
//! refused connection, not a backoff. A link that was up (the controller
//! welcomed the agent) and drops starts a new round after one jittered base
//! delay: the agents of a controller that died spread out over it instead of
//! reaching the next controller in the same instant. A controller that refuses
//! the agent (identity, zone, a Hello it rejects) counts as a failed attempt:
//! the agent stops only when every address of one round refused it, so one
//! misconfigured or older controller does not stop an agent the others take.
//! With one address this is exactly the single-controller behaviour: every
//! attempt is a round, and a refusal stops the agent.

use std::time::Duration;

/// Where the backoff starts, and what a link that was up resets it to.
const BASE: Duration = Duration::from_secs(1);

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The link was up (the controller welcomed the agent), then dropped.
    Dropped,
    /// The controller could not be reached, or did not welcome the agent.
    Unreachable,
    /// The controller refused the agent: retrying it cannot help.
    Refused,
}

/// What to do after a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Dial the next address at once.
    Now,
    /// Dial it after this backoff bound, jittered by the caller (`jittered`).
    After(Duration),
    /// Every address of the round refused the agent: stop.
    GiveUp,
}

#[derive(Debug)]
pub struct Rotation {
    addresses: usize,
    cursor: usize,
    /// Attempts of the current round that failed so far, and how many of
    /// them were refusals.
    failed_in_round: usize,
    refused_in_round: usize,
    backoff: Duration,
    max: Duration,
}

impl Rotation {
    /// A rotation over `addresses` addresses (at least one), starting at the
    /// first; `max`: `[timeouts] reconnect_max`.
    pub fn new(addresses: usize, max: Duration) -> Rotation {
        Rotation {
            addresses: addresses.max(1),
            cursor: 0,
            failed_in_round: 0,
            refused_in_round: 0,
            backoff: BASE,
            max: max.max(BASE),
        }
    }

    /// The index of the address to dial now.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// The session with the address at the cursor ended so: moves to the
    /// next address and says when to dial it.
    pub fn after_session(&mut self, ended: Ended) -> Next {
        self.cursor = (self.cursor + 1) % self.addresses;
        if ended == Ended::Dropped {
            self.backoff = BASE;
            self.failed_in_round = 0;
            self.refused_in_round = 0;
            return Next::After(self.next_backoff());
        }
        self.failed_in_round += 1;
        if ended == Ended::Refused {
            self.refused_in_round += 1;
        }
        if self.failed_in_round < self.addresses {
            return Next::Now;
        }
        let all_refused = self.refused_in_round == self.addresses;
        self.failed_in_round = 0;
        self.refused_in_round = 0;
        if all_refused {
            return Next::GiveUp;
        }
        Next::After(self.next_backoff())
    }

    fn next_backoff(&mut self) -> Duration {
        let bound = self.backoff;
        self.backoff = (self.backoff * 2).min(self.max);
        bound
    }
}

/// Half to all of `bound`, at random: a zone's agents do not retry in step.
pub fn jittered(bound: Duration) -> Duration {
    bound.mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(8);

    /// (address dialled, wait in seconds after it failed — `None`: at once)
    /// for `attempts` unreachable addresses.
    fn failures(rotation: &mut Rotation, attempts: usize) -> Vec<(usize, Option<u64>)> {
        (0..attempts)
            .map(|_| {
                let address = rotation.cursor();
                match rotation.after_session(Ended::Unreachable) {
                    Next::Now => (address, None),
                    Next::After(bound) => (address, Some(bound.as_secs())),
                    Next::GiveUp => panic!("gave up on unreachable addresses"),
                }
            })
            .collect()
    }

    #[test]
    fn one_address_backs_off_after_every_attempt_as_before() {
        let mut rotation = Rotation::new(1, MAX);
        assert_eq!(
            failures(&mut rotation, 5),
            vec![
                (0, Some(1)),
                (0, Some(2)),
                (0, Some(4)),
                (0, Some(8)),
                (0, Some(8))
            ]
        );
        assert_eq!(rotation.after_session(Ended::Refused), Next::GiveUp);
    }

    #[test]
    fn several_addresses_back_off_per_round_not_per_address() {
        let mut rotation = Rotation::new(3, MAX);
        assert_eq!(
            failures(&mut rotation, 7),
            vec![
                (0, None),
                (1, None),
                (2, Some(1)),
                (0, None),
                (1, None),
                (2, Some(2)),
                (0, None),
            ]
        );
    }

    #[test]
    fn a_dropped_link_moves_to_the_next_address_after_the_base_delay() {
        let mut rotation = Rotation::new(2, MAX);
        failures(&mut rotation, 4); // backoff grew to 4 s
        assert_eq!(rotation.cursor(), 0);
        // Address 0 welcomed the agent, then died.
        assert_eq!(rotation.after_session(Ended::Dropped), Next::After(BASE));
        assert_eq!(rotation.cursor(), 1);
        // A new round: 1, then 0 at once, then the backoff, restarted.
        assert_eq!(failures(&mut rotation, 2), vec![(1, None), (0, Some(2))]);
    }

    #[test]
    fn the_agent_gives_up_only_when_a_whole_round_refused_it() {
        let mut rotation = Rotation::new(2, MAX);
        // One refuses, the other is down: keep trying.
        assert_eq!(rotation.after_session(Ended::Refused), Next::Now);
        assert_eq!(
            rotation.after_session(Ended::Unreachable),
            Next::After(BASE)
        );
        // Refused by one, welcomed by the other, which drops later.
        assert_eq!(rotation.after_session(Ended::Refused), Next::Now);
        assert_eq!(rotation.after_session(Ended::Dropped), Next::After(BASE));
        // Both refuse in one round: stop.
        assert_eq!(rotation.after_session(Ended::Refused), Next::Now);
        assert_eq!(rotation.after_session(Ended::Refused), Next::GiveUp);
    }

    #[test]
    fn jitter_stays_within_half_to_all_of_the_bound() {
        for _ in 0..100 {
            let delay = jittered(Duration::from_secs(2));
            assert!(delay >= Duration::from_secs(1) && delay <= Duration::from_secs(2));
        }
    }
}
