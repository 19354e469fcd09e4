//! Time windows relative to now, for tests of window gates and scheduling.

use std::time::{SystemTime, UNIX_EPOCH};

/// `HH:MM-HH:MM UTC` from `start` minutes after now, `length` minutes long
/// (negative start: it opened that long ago).
pub fn window_from_now(start: i64, length: i64) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let minute = |offset: i64| ((now / 60) + offset).rem_euclid(24 * 60);
    let (from, to) = (minute(start), minute(start + length));
    Ok(format!(
        "{:02}:{:02}-{:02}:{:02} UTC",
        from / 60,
        from % 60,
        to / 60,
        to % 60
    ))
}
