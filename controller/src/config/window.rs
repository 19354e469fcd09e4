//! Time windows: `02:00-04:00 UTC` (every day), `Mon-Fri 08:00-18:00
//! Europe/Berlin` (some weekdays), `Fri 22:00-02:00 UTC` (across midnight).
//! The last word is the time zone: `UTC` or any IANA name. Days and times
//! are the zone's wall clock, so business hours stay 08:00-18:00 local
//! across daylight-saving changes (jiff, with the tz database).
//!
//! Daylight-saving edges, where the wall clock skips or repeats an hour:
//! a window opening inside a skipped hour opens when the clock resumes (one
//! from 02:30 on a spring-forward night in Berlin opens at 03:00 local); a
//! window wholly inside a skipped hour does not open that day; a repeated
//! hour is inside the window both times.
//!
//! Here, with the config, so the config is a leaf; the gates use it
//! (`engine/gates/window.rs`).

use std::fmt;
use std::time::SystemTime;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};

/// A daily window on some weekdays; it may cross midnight (`22:00-02:00`).
#[derive(Clone, Debug, PartialEq)]
pub struct TimeWindow {
    /// Monday = 0 … Sunday = 6; the day the window *opens* on.
    days: [bool; 7],
    start_minute: u32,
    end_minute: u32,
    zone: TimeZone,
    text: String,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl TimeWindow {
    /// Parses `[Mon-Fri|Sat,Sun|…] HH:MM-HH:MM <UTC|IANA zone>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let explain = || {
            format!(
                "{text:?} is not a window like \"02:00-04:00 UTC\" or \"Mon-Fri 08:00-18:00 Europe/Berlin\""
            )
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let (days, times, zone) = match words.as_slice() {
            [times, zone] => ([true; 7], *times, *zone),
            [days, times, zone] => (parse_days(days).ok_or_else(explain)?, *times, *zone),
            [only] if parse_times(only).is_some() => {
                return Err(format!(
                    "{}: say which time zone it is in (UTC, or an IANA name such as Europe/Berlin)",
                    explain()
                ))
            }
            _ => return Err(explain()),
        };
        let (start_minute, end_minute) = parse_times(times).ok_or_else(explain)?;
        if start_minute == end_minute {
            return Err(format!("{}: the window is empty", explain()));
        }
        let zone = parse_zone(zone).map_err(|_| {
            format!(
                "{text:?}: unknown time zone {zone:?}; use UTC or an IANA name such as Europe/Berlin \
                 (as in /usr/share/zoneinfo)"
            )
        })?;
        Ok(TimeWindow {
            days,
            start_minute,
            end_minute,
            zone,
            text: text.to_owned(),
        })
    }

    /// Whether `now` falls inside the window.
    pub fn contains(&self, now: SystemTime) -> bool {
        let local = self.local(now);
        let day = local.weekday().to_monday_zero_offset() as usize;
        let minute = local.hour() as u32 * 60 + local.minute() as u32;
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
        let today = self.local(now).date();
        // A fortnight: a weekly window whose day's opening falls in a
        // skipped hour opens the week after.
        (0..15i64)
            .filter_map(|offset| today.checked_add(jiff::Span::new().days(offset)).ok())
            .filter(|date| self.days[date.weekday().to_monday_zero_offset() as usize])
            .filter_map(|date| self.opening_on(date))
            // An opening in a skipped hour that the window does not outlast
            // is no opening.
            .find(|opening| *opening >= now && self.contains(*opening))
            .unwrap_or(now)
    }

    /// The instant the window opens on local `date`: the wall-clock start,
    /// moved past a skipped hour, the first of a repeated one.
    fn opening_on(&self, date: Date) -> Option<SystemTime> {
        let (hour, minute) = (self.start_minute / 60, self.start_minute % 60);
        let local = date.at(hour as i8, minute as i8, 0, 0);
        let zoned = local.to_zoned_datetime(self.zone.clone()).ok()?;
        let mut opening = zoned.timestamp();
        if zoned.datetime() != local {
            // In a skipped hour: jiff moved the time forward by the gap; the
            // window opens when the clock resumes, at the transition.
            // `preceding` looks strictly before its argument; the transition
            // may be exactly at `opening` (a window starting on the hour).
            let just_after = opening
                .checked_add(jiff::SignedDuration::from_secs(1))
                .unwrap_or(opening);
            if let Some(transition) = self.zone.preceding(just_after).next() {
                opening = transition.timestamp();
            }
        }
        SystemTime::try_from(opening).ok()
    }

    /// `now` on the zone's wall clock.
    fn local(&self, now: SystemTime) -> ZonedDateTime {
        let instant = Timestamp::try_from(now).unwrap_or(Timestamp::UNIX_EPOCH);
        instant.to_zoned_datetime(self.zone.clone())
    }
}

impl fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `UTC` in any case, or an IANA name from the tz database.
fn parse_zone(name: &str) -> Result<TimeZone, jiff::Error> {
    if name.eq_ignore_ascii_case("utc") {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name)
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

fn parse_times(text: &str) -> Option<(u32, u32)> {
    let (start, end) = text.split_once('-')?;
    Some((parse_time(start)?, parse_time(end)?))
}

fn parse_time(text: &str) -> Option<u32> {
    let (hours, minutes) = text.split_once(':')?;
    let (hours, minutes): (u32, u32) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours < 24 && minutes < 60 && text.len() == 5).then_some(hours * 60 + minutes)
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
