use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

/// 2026-11-27 is a Friday.
fn at(day_of_month: u64, hour: u64, minute: u64) -> SystemTime {
    let friday_27_nov_2026 = 1_795_737_600;
    UNIX_EPOCH
        + Duration::from_secs(
            friday_27_nov_2026 + (day_of_month - 27) * 86_400 + hour * 3600 + minute * 60,
        )
}

/// An instant written in UTC, `2026-03-29T01:00Z`.
fn utc(text: &str) -> SystemTime {
    let instant: Timestamp = text.parse().expect("an RFC 3339 instant");
    SystemTime::try_from(instant).expect("in range")
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

/// Opens at `open` and closes at `close` (UTC instants): in at both
/// minutes' starts inside, out the second before and at the close.
fn assert_open_between(window: &TimeWindow, open: &str, close: &str) {
    let (open, close) = (utc(open), utc(close));
    let second = Duration::from_secs(1);
    assert!(!window.contains(open - second), "{window} before {open:?}");
    assert!(window.contains(open), "{window} at {open:?}");
    assert!(window.contains(close - second), "{window} before {close:?}");
    assert!(!window.contains(close), "{window} at {close:?}");
}

#[test]
fn berlin_business_hours_follow_the_wall_clock_across_both_dst_changes() {
    let window = TimeWindow::parse("Mon-Fri 08:00-18:00 Europe/Berlin").expect("valid");
    // Spring: CET (+01) until Sunday 2026-03-29 02:00, CEST (+02) after.
    assert_open_between(&window, "2026-03-27T07:00Z", "2026-03-27T17:00Z");
    assert!(!window.contains(utc("2026-03-29T09:00Z")), "Sunday");
    assert_open_between(&window, "2026-03-30T06:00Z", "2026-03-30T16:00Z");
    assert_eq!(
        window.next_opening(utc("2026-03-27T17:00Z")),
        utc("2026-03-30T06:00Z"),
        "Friday 18:00 CET -> Monday 08:00 CEST"
    );
    // Autumn: CEST until Sunday 2026-10-25 03:00, CET after.
    assert_open_between(&window, "2026-10-23T06:00Z", "2026-10-23T16:00Z");
    assert_eq!(
        window.next_opening(utc("2026-10-23T16:00Z")),
        utc("2026-10-26T07:00Z"),
        "Friday 18:00 CEST -> Monday 08:00 CET"
    );
    assert_open_between(&window, "2026-10-26T07:00Z", "2026-10-26T17:00Z");
}

#[test]
fn a_night_window_on_the_dst_sundays_is_an_hour_shorter_or_longer() {
    let window = TimeWindow::parse("02:00-04:00 Europe/Berlin").expect("valid");
    // The Saturday before: 02:00-04:00 CET.
    assert_open_between(&window, "2026-03-28T01:00Z", "2026-03-28T03:00Z");
    // Sunday 2026-03-29: 02:00 CET is 03:00 CEST; open 03:00-04:00 CEST.
    assert_open_between(&window, "2026-03-29T01:00Z", "2026-03-29T02:00Z");
    assert_eq!(
        window.next_opening(utc("2026-03-28T12:00Z")),
        utc("2026-03-29T01:00Z")
    );
    // The Monday after: 02:00-04:00 CEST.
    assert_open_between(&window, "2026-03-30T00:00Z", "2026-03-30T02:00Z");
    // Sunday 2026-10-25: 02:00 CEST to 04:00 CET, the repeated hour twice.
    assert_open_between(&window, "2026-10-25T00:00Z", "2026-10-25T03:00Z");
    assert!(
        window.contains(utc("2026-10-25T01:30Z")),
        "02:30 CET, the second time"
    );
    assert_eq!(
        window.next_opening(utc("2026-10-24T12:00Z")),
        utc("2026-10-25T00:00Z")
    );
    assert_open_between(&window, "2026-10-26T01:00Z", "2026-10-26T03:00Z");
}

#[test]
fn a_window_in_the_skipped_hour_opens_when_the_clock_resumes_or_not_at_all() {
    let straddling = TimeWindow::parse("02:30-03:30 Europe/Berlin").expect("valid");
    assert_eq!(
        straddling.next_opening(utc("2026-03-28T12:00Z")),
        utc("2026-03-29T01:00Z"),
        "03:00 CEST, when the clock resumes"
    );
    assert_open_between(&straddling, "2026-03-29T01:00Z", "2026-03-29T01:30Z");
    let inside = TimeWindow::parse("02:15-02:45 Europe/Berlin").expect("valid");
    assert_eq!(
        inside.next_opening(utc("2026-03-28T12:00Z")),
        utc("2026-03-30T00:15Z"),
        "no 02:15 on 2026-03-29: Monday 02:15 CEST"
    );
}

#[test]
fn zones_are_named_and_an_unknown_one_is_refused_by_name() {
    let new_york = TimeWindow::parse("Mon-Fri 09:00-17:00 America/New_York").expect("valid");
    // EST (-05) on Friday 2026-11-27.
    assert!(new_york.contains(utc("2026-11-27T14:00Z")));
    assert!(!new_york.contains(utc("2026-11-27T13:59Z")));
    for bad in ["Mon-Fri 08:00-18:00 Europe/Berln", "02:00-04:00 CEST+1"] {
        let error = TimeWindow::parse(bad).expect_err(bad);
        let zone = bad.rsplit(' ').next().unwrap_or_default();
        assert!(
            error.contains(&format!("unknown time zone {zone:?}")) && error.contains("IANA"),
            "{error}"
        );
    }
}

#[test]
fn malformed_windows_say_what_is_expected() {
    for (bad, expected) in [
        ("02:00-04:00", "say which time zone"),
        ("2-4 UTC", "is not a window like"),
        ("Mon-Fry 08:00-18:00 UTC", "is not a window like"),
        ("08:00-08:00 UTC", "the window is empty"),
        ("25:00-26:00 UTC", "is not a window like"),
        (
            "Mon-Fri 08:00-18:00 Europe/Berlin extra",
            "is not a window like",
        ),
    ] {
        let error = TimeWindow::parse(bad).expect_err(bad);
        assert!(error.contains(expected), "{bad}: {error}");
    }
}
