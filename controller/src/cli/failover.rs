//! Following a rollout across a controller's death (issue 18): with several
//! controllers listed in `--controller`, a command whose stream broke before
//! the result — the controller it asked was killed, say — reconnects to
//! another one of the same store and follows the rollout there
//! (`FollowRollout`, or `FollowRequest` for a request not started yet) to
//! the result whichever controller records it, then reports as it would
//! have. One address keeps the old behaviour: exit 2 naming `pgrollout
//! status <id>`.

use std::time::Duration;

use pgrollout_shared::proto::{FollowRequestRequest, FollowRolloutRequest, RolloutUpdate};
use tokio::time::Instant;
use tonic::Streaming;

use super::connect::{self, OperatorTls};

/// The first wait before trying the list again, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What was being followed when the stream broke.
pub enum Lost {
    /// A rollout (`r-…`), whose events up to `after_seq` were printed.
    Rollout { id: String, after_seq: u64 },
    /// A request (`p-…`) still waiting for its approvals or window.
    Request { id: String },
}

impl Lost {
    fn id(&self) -> &str {
        match self {
            Lost::Rollout { id, .. } | Lost::Request { id } => id,
        }
    }
}

/// Where a followed stream can be picked up again: the controllers listed,
/// the one in use, and until when to keep trying.
pub struct Failover<'a> {
    list: &'a str,
    current: String,
    tls: &'a OperatorTls,
    /// Set when the first controller is lost: the moment to give up.
    deadline: Option<Instant>,
}

impl<'a> Failover<'a> {
    /// `current`: the listed address the command's stream is on.
    pub fn new(list: &'a str, current: String, tls: &'a OperatorTls) -> Self {
        Self {
            list,
            current,
            tls,
            deadline: None,
        }
    }

    /// Whether another controller is listed to fail over to.
    pub fn has_others(&self) -> bool {
        connect::addresses(self.list).len() > 1
    }

    /// When a stream picked up elsewhere stops being waited on; `None`
    /// until a controller was lost.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Starts the `--follow-timeout` clock if it is not running: a rollout
    /// in doubt is waited on only so long, lost controller or not.
    pub fn start_clock(&mut self) {
        self.deadline
            .get_or_insert_with(|| Instant::now() + self.tls.follow_timeout());
    }

    /// How long this command follows after losing a controller.
    pub fn timeout(&self) -> Duration {
        self.tls.follow_timeout()
    }

    /// Opens a stream following `lost` on another listed controller (the
    /// lost one last: it may be back), trying the list again with a growing
    /// pause until the deadline. Says on stderr which controller was lost
    /// and which follows on; `None` (said why) when none would.
    pub async fn reopen(&mut self, lost: &Lost, why: &str) -> Option<Streaming<RolloutUpdate>> {
        let deadline = *self
            .deadline
            .get_or_insert_with(|| Instant::now() + self.tls.follow_timeout());
        let mut pause = FIRST_BACKOFF;
        loop {
            match self.try_once(lost).await {
                Ok((stream, reached)) => {
                    eprintln!(
                        "pgrollout: lost the controller at {} ({why}); following {} on the controller at {reached}",
                        self.current,
                        lost.id()
                    );
                    self.current = reached;
                    return Some(stream);
                }
                // The controller refused the call itself (no such rollout in
                // its store, not allowed): another try would get the same.
                Err(Attempt::Refused(message)) => {
                    eprintln!(
                        "pgrollout: lost the controller at {} ({why}); the others cannot follow {}: {message}",
                        self.current,
                        lost.id()
                    );
                    return None;
                }
                Err(Attempt::Unreachable(message)) => {
                    if Instant::now() + pause > deadline {
                        eprintln!(
                            "pgrollout: lost the controller at {} ({why}); no other controller answered within {}: \
                             {message}",
                            self.current,
                            humantime::format_duration(self.tls.follow_timeout())
                        );
                        return None;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn try_once(&self, lost: &Lost) -> Result<(Streaming<RolloutUpdate>, String), Attempt> {
        let (mut client, reached) =
            connect::controller_after_losing(self.list, &self.current, self.tls)
                .await
                .map_err(|(_, message)| Attempt::Unreachable(message))?;
        let response = match lost {
            Lost::Rollout { id, after_seq } => {
                client
                    .follow_rollout(FollowRolloutRequest {
                        rollout_id: id.clone(),
                        after_seq: *after_seq,
                    })
                    .await
            }
            Lost::Request { id } => {
                client
                    .follow_request(FollowRequestRequest {
                        request_id: id.clone(),
                    })
                    .await
            }
        };
        match response {
            Ok(response) => Ok((response.into_inner(), reached)),
            Err(status) => {
                let (code, message) = connect::refusal(&status, &reached);
                // A controller going away as it answered is one more that
                // did not answer; anything else is its refusal.
                if code == pgrollout_shared::exit_code::ExitCode::DeploymentFailed
                    && matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                    )
                {
                    Err(Attempt::Unreachable(message))
                } else {
                    Err(Attempt::Refused(message))
                }
            }
        }
    }
}

/// Why one round over the list did not give a stream.
enum Attempt {
    Unreachable(String),
    Refused(String),
}
