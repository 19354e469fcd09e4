//! Who follows a parked request. A request (`p-…`) becomes a rollout later,
//! on another task (the last approval, or the scheduler when its window
//! opens); operators who asked to follow it (`deploy --follow`, `approve
//! --follow`, `status --follow`) get what happens to it from here: its
//! parked states, then the rollout's updates to the result.
//!
//! Each request keeps the updates published so far, so a follower that
//! arrives late (an approver whose approval started the rollout a moment
//! ago) sees the rollout from its start. Ended requests are kept for a
//! while, then forgotten; the store answers for them after that.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use pgrollout_shared::proto::RolloutUpdate;
use tokio::sync::mpsc;

use super::updates::Update;

/// How many ended requests keep their updates for late followers.
const ENDED_KEPT: usize = 64;

pub type FollowerReceiver = mpsc::UnboundedReceiver<Update>;
type FollowerSender = mpsc::UnboundedSender<Update>;

#[derive(Default)]
struct Entry {
    history: Vec<RolloutUpdate>,
    followers: Vec<FollowerSender>,
    ended: bool,
}

#[derive(Default)]
pub struct Followers {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    ended_order: VecDeque<String>,
}

impl Followers {
    /// Follows `request_id`: everything published so far, then what comes.
    /// The receiver ends when the request ends (its rollout's result, or a
    /// final parked state).
    pub fn follow(&self, request_id: &str) -> FollowerReceiver {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        let entry = inner.entries.entry(request_id.to_owned()).or_default();
        for update in &entry.history {
            let _ = sender.send(Ok(update.clone()));
        }
        if !entry.ended {
            entry.followers.push(sender);
        }
        receiver
    }

    /// Whether anything was published for the request since this
    /// controller started.
    pub fn has_history(&self, request_id: &str) -> bool {
        self.lock()
            .entries
            .get(request_id)
            .is_some_and(|e| !e.history.is_empty())
    }

    /// Hands `update` to every follower and keeps it for later ones.
    pub fn publish(&self, request_id: &str, update: RolloutUpdate) {
        let mut inner = self.lock();
        let entry = inner.entries.entry(request_id.to_owned()).or_default();
        entry
            .followers
            .retain(|follower| follower.send(Ok(update.clone())).is_ok());
        entry.history.push(update);
    }

    /// The request ended: followers' streams close after what they have.
    pub fn end(&self, request_id: &str) {
        let mut inner = self.lock();
        let entry = inner.entries.entry(request_id.to_owned()).or_default();
        entry.ended = true;
        entry.followers.clear();
        inner.ended_order.push_back(request_id.to_owned());
        while inner.ended_order.len() > ENDED_KEPT {
            if let Some(oldest) = inner.ended_order.pop_front() {
                inner.entries.remove(&oldest);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrollout_shared::proto::{rollout_update::Body, RequestParked};

    fn parked(state: &str) -> RolloutUpdate {
        RolloutUpdate {
            body: Some(Body::Parked(RequestParked {
                state: state.into(),
                ..Default::default()
            })),
        }
    }

    fn state(update: Option<Update>) -> Option<String> {
        match update?.ok()?.body? {
            Body::Parked(p) => Some(p.state),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_late_follower_sees_everything_and_the_stream_ends_with_the_request() {
        let followers = Followers::default();
        let mut early = followers.follow("p-1");
        followers.publish("p-1", parked("scheduled"));
        let mut late = followers.follow("p-1");
        followers.publish("p-1", parked("starting"));
        followers.end("p-1");
        for receiver in [&mut early, &mut late] {
            assert_eq!(state(receiver.recv().await).as_deref(), Some("scheduled"));
            assert_eq!(state(receiver.recv().await).as_deref(), Some("starting"));
            assert!(receiver.recv().await.is_none(), "ended");
        }
        let mut after_the_end = followers.follow("p-1");
        assert_eq!(
            state(after_the_end.recv().await).as_deref(),
            Some("scheduled")
        );
        assert_eq!(
            state(after_the_end.recv().await).as_deref(),
            Some("starting")
        );
        assert!(after_the_end.recv().await.is_none());
    }
}
