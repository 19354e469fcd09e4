//! The notices a target sends on a connection, kept for the smoke checks
//! (a WARNING fails a test; any notice is attributed to its call) — within
//! bounds. Project SQL is hostile input: `SELECT noisy() FROM
//! generate_series(1, 10000000)` raises ten million notices, and an
//! unbounded buffer would hold them all in the zone's agent. Past
//! [`MAX_NOTICE_BYTES`] the inbox keeps nothing more and says so once, and
//! the connection's task cancels the statement that is flooding it, so a
//! smoke test fails instead of passing with notices it never saw.

use std::sync::Mutex;

use tokio_postgres::error::DbError;

/// What one connection keeps of its notices between two reads: far more
/// than any test's messages, far less than an agent's memory.
pub const MAX_NOTICE_BYTES: usize = 4 * 1024 * 1024;

/// What a notice costs to keep (its texts, plus the struct).
pub trait NoticeSize {
    fn kept_bytes(&self) -> usize;
}

impl NoticeSize for DbError {
    fn kept_bytes(&self) -> usize {
        128 + self.message().len()
            + self.detail().map_or(0, str::len)
            + self.hint().map_or(0, str::len)
            + self.where_().map_or(0, str::len)
    }
}

/// A connection's notices since the last [`NoticeInbox::take`].
pub struct NoticeInbox<T = DbError> {
    inner: Mutex<Inbox<T>>,
}

struct Inbox<T> {
    kept: Vec<T>,
    bytes: usize,
    overflowed: bool,
}

impl<T: NoticeSize> Default for NoticeInbox<T> {
    fn default() -> Self {
        NoticeInbox {
            inner: Mutex::new(Inbox {
                kept: Vec::new(),
                bytes: 0,
                overflowed: false,
            }),
        }
    }
}

impl<T: NoticeSize> NoticeInbox<T> {
    /// Keeps `notice` if there is room. `true` exactly when this notice is
    /// the first one refused since the last take: the caller then stops the
    /// statement that sends them.
    pub fn push(&self, notice: T) -> bool {
        let mut inbox = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let size = notice.kept_bytes();
        if !inbox.overflowed && inbox.bytes.saturating_add(size) <= MAX_NOTICE_BYTES {
            inbox.bytes += size;
            inbox.kept.push(notice);
            return false;
        }
        let first = !inbox.overflowed;
        inbox.overflowed = true;
        first
    }

    /// The notices kept since the last take, and whether any were refused.
    pub fn take(&self) -> (Vec<T>, bool) {
        let mut inbox = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inbox.bytes = 0;
        let overflowed = std::mem::take(&mut inbox.overflowed);
        (std::mem::take(&mut inbox.kept), overflowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(usize);

    impl NoticeSize for Fake {
        fn kept_bytes(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn a_flood_is_cut_at_the_bound_and_said_once() {
        let inbox = NoticeInbox::<Fake>::default();
        let each = 1024;
        let fits = MAX_NOTICE_BYTES / each;
        for _ in 0..fits {
            assert!(!inbox.push(Fake(each)));
        }
        assert!(
            inbox.push(Fake(each)),
            "the first refused notice is reported"
        );
        assert!(!inbox.push(Fake(each)), "only once");
        let (kept, overflowed) = inbox.take();
        assert_eq!(kept.len(), fits);
        assert!(overflowed);
        // A new read starts empty and with room again.
        assert!(!inbox.push(Fake(each)));
        let (kept, overflowed) = inbox.take();
        assert_eq!((kept.len(), overflowed), (1, false));
    }

    #[test]
    fn one_notice_larger_than_the_bound_is_refused() {
        let inbox = NoticeInbox::<Fake>::default();
        assert!(inbox.push(Fake(MAX_NOTICE_BYTES + 1)));
        assert_eq!(inbox.take().0.len(), 0);
    }
}
