//! Time windows in UTC: `02:00-04:00 UTC` (every day) or
//! `Mon-Fri 08:00-18:00 UTC` (some weekdays). Computed from Unix time, so the
//! engine can be handed any clock in tests.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A daily window on some weekdays; it may cross midnight (`22:00-02:00`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeWindow {
    /// Monday = 0 … Sunday = 6; the day the window *opens* on.
    days: [bool; 7],
    start_minute: u32,
    end_minute: u32,
    text: String,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl TimeWindow {
    /// Parses `[Mon-Fri|Sat,Sun|…] HH:MM-HH:MM UTC`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let explain = || {
            format!(
                "{text:?} is not a window like \"02:00-04:00 UTC\" or \"Mon-Fri 08:00-18:00 UTC\""
            )
        };
        let mut words: Vec<&str> = text.split_whitespace().collect();
        if words.last().map(|w| w.eq_ignore_ascii_case("utc")) != Some(true) {
            return Err(format!("{}: windows are in UTC and must say so", explain()));
        }
        words.pop();
        let (days, times) = match words.as_slice() {
            [times] => ([true; 7], *times),
            [days, times] => (parse_days(days).ok_or_else(explain)?, *times),
            _ => return Err(explain()),
        };
        let (start, end) = times.split_once('-').ok_or_else(explain)?;
        let (start_minute, end_minute) = (
            parse_time(start).ok_or_else(explain)?,
            parse_time(end).ok_or_else(explain)?,
        );
        if start_minute == end_minute {
            return Err(format!("{}: the window is empty", explain()));
        }
        Ok(TimeWindow {
            days,
            start_minute,
            end_minute,
            text: text.to_owned(),
        })
    }

    /// Whether `now` falls inside the window.
    pub fn contains(&self, now: SystemTime) -> bool {
        let (day, minute) = day_and_minute(now);
        if self.start_minute < self.end_minute {
            self.days[day] && (self.start_minute..self.end_minute).contains(&minute)
        } else {
            // Crossing midnight: open late on an allowed day, or early on the
            // day after one.
            (self.days[day] && minute >= self.start_minute)
                || (self.days[(day + 6) % 7] && minute < self.end_minute)
        }
    }

    /// When the window next opens at or after `now` (`now` itself if open).
    pub fn next_opening(&self, now: SystemTime) -> SystemTime {
        if self.contains(now) {
            return now;
        }
        let (day, minute) = day_and_minute(now);
        let midnight = now - Duration::from_secs(u64::from(minute) * 60 + seconds_into_minute(now));
        (0..8u64)
            .map(|offset| (offset, (day + offset as usize) % 7))
            .filter(|(_, weekday)| self.days[*weekday])
            .map(|(offset, _)| {
                midnight + Duration::from_secs(offset * 86_400 + u64::from(self.start_minute) * 60)
            })
            .find(|opening| *opening >= now)
            .unwrap_or(now)
    }
}

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

impl fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_days(text: &str) -> Option<[bool; 7]> {
    let index = |name: &str| DAYS.iter().position(|d| d.eq_ignore_ascii_case(name));
    let mut days = [false; 7];
    for part in text.split(',') {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (index(from)?, index(to)?);
                let mut day = from;
                loop {
                    days[day] = true;
                    if day == to {
                        break;
                    }
                    day = (day + 1) % 7;
                }
            }
            None => days[index(part)?] = true,
        }
    }
    Some(days)
}

fn parse_time(text: &str) -> Option<u32> {
    let (hours, minutes) = text.split_once(':')?;
    let (hours, minutes): (u32, u32) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours < 24 && minutes < 60 && text.len() == 5).then_some(hours * 60 + minutes)
}

/// Monday-based weekday and minute of the day, in UTC.
fn day_and_minute(now: SystemTime) -> (usize, u32) {
    let seconds = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = seconds / 86_400;
    // 1970-01-01 was a Thursday (Monday-based index 3).
    let weekday = ((days + 3) % 7) as usize;
    (weekday, ((seconds % 86_400) / 60) as u32)
}

fn seconds_into_minute(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() % 60)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
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
    fn a_daily_maintenance_window() {
        let window = TimeWindow::parse("02:00-04:00 UTC").expect("valid");
        assert!(!window.contains(at(27, 1, 59)));
        assert!(window.contains(at(27, 2, 0)));
        assert!(window.contains(at(27, 3, 59)));
        assert!(!window.contains(at(27, 4, 0)));
        assert_eq!(window.next_opening(at(27, 14, 30)), at(28, 2, 0));
        assert_eq!(window.next_opening(at(27, 1, 0)), at(27, 2, 0));
        assert_eq!(window.next_opening(at(27, 2, 30)), at(27, 2, 30));
    }

    #[test]
    fn business_hours_skip_the_weekend() {
        let window = TimeWindow::parse("Mon-Fri 08:00-18:00 UTC").expect("valid");
        assert!(window.contains(at(27, 9, 0)), "Friday morning");
        assert!(!window.contains(at(28, 9, 0)), "Saturday");
        assert_eq!(
            window.next_opening(at(27, 18, 0)),
            at(30, 8, 0),
            "Friday evening -> Monday"
        );
    }

    #[test]
    fn a_window_may_cross_midnight() {
        let window = TimeWindow::parse("Fri 22:00-02:00 UTC").expect("valid");
        assert!(window.contains(at(27, 23, 0)));
        assert!(
            window.contains(at(28, 1, 0)),
            "Saturday early belongs to Friday's window"
        );
        assert!(!window.contains(at(28, 23, 0)));
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

    #[test]
    fn malformed_windows_say_what_is_expected() {
        for bad in [
            "02:00-04:00",
            "2-4 UTC",
            "Mon-Fry 08:00-18:00 UTC",
            "08:00-08:00 UTC",
            "25:00-26:00 UTC",
        ] {
            let error = TimeWindow::parse(bad).expect_err(bad);
            assert!(
                error.contains("is not a window like") || error.contains("UTC"),
                "{error}"
            );
        }
    }
}
