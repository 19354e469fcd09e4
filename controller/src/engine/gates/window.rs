//! When several time windows are open together. The window itself (its
//! parsing, time zone and daylight-saving rules) is the config's
//! (`config/window.rs`); everything here takes the time as an argument, so
//! the engine can be handed any clock in tests.

use std::time::{Duration, SystemTime};

pub use crate::config::window::TimeWindow;

/// The first moment at or after `now` when every window is open at once
/// (business hours and a maintenance window both configured), or `None`
/// if they never overlap. Each step jumps to the next opening of a window
/// that is closed, so the search ends within a few steps when an answer
/// exists; windows repeat weekly, so a fortnight is past any answer.
pub fn common_opening(windows: &[TimeWindow], now: SystemTime) -> Option<SystemTime> {
    let horizon = now + Duration::from_secs(14 * 86_400);
    let mut candidate = now;
    while candidate <= horizon {
        match windows.iter().find(|w| !w.contains(candidate)) {
            None => return Some(candidate),
            Some(closed) => {
                let opening = closed.next_opening(candidate);
                // Already inside a window that closes before the other opens:
                // move past this minute and look again.
                candidate = if opening > candidate {
                    opening
                } else {
                    candidate + Duration::from_secs(60)
                };
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    /// 2026-11-27 is a Friday.
    fn at(day_of_month: u64, hour: u64, minute: u64) -> SystemTime {
        let friday_27_nov_2026 = 1_795_737_600;
        UNIX_EPOCH
            + Duration::from_secs(
                friday_27_nov_2026 + (day_of_month - 27) * 86_400 + hour * 3600 + minute * 60,
            )
    }

    #[test]
    fn two_windows_open_together_at_their_first_overlap_or_never() {
        let business = TimeWindow::parse("Mon-Fri 08:00-18:00 UTC").expect("valid");
        let change = TimeWindow::parse("17:00-19:00 UTC").expect("valid");
        let both = [business.clone(), change];
        assert_eq!(common_opening(&both, at(27, 9, 0)), Some(at(27, 17, 0)));
        assert_eq!(
            common_opening(&both, at(27, 18, 30)),
            Some(at(30, 17, 0)),
            "Friday evening -> Monday 17:00"
        );
        assert_eq!(common_opening(&both, at(27, 17, 30)), Some(at(27, 17, 30)));
        let night = TimeWindow::parse("02:00-04:00 UTC").expect("valid");
        assert_eq!(common_opening(&[business, night], at(27, 9, 0)), None);
    }
}
