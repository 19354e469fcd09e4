//! Time windows in IANA time zones (issue 21, item 9) with the real
//! binaries: a window written in a zone's wall clock schedules a deploy for
//! the UTC instant that wall-clock time is, and a misspelt zone stops the
//! controller at start naming it. The daylight-saving rules themselves are
//! tested at the engine level with fixed instants (`config::window` tests);
//! Asia/Kolkata is used here because its offset (+05:30, no DST) cannot be
//! mistaken for UTC or a whole-hour shift whatever the date the test runs.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use pgrollout_tests::{serve_with, Stack, StackOptions};

/// `HH:MM` of a minute of the day.
fn hh_mm(minute: i64) -> String {
    let minute = minute.rem_euclid(24 * 60);
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

#[tokio::test]
async fn a_window_in_a_named_zone_schedules_for_that_zones_wall_clock() -> Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    // Twelve hours from now in UTC, written as Kolkata's wall clock.
    let opens_utc = (now / 60 + 12 * 60).rem_euclid(24 * 60);
    let kolkata = opens_utc + 5 * 60 + 30;
    let window = format!("{}-{} Asia/Kolkata", hh_mm(kolkata), hh_mm(kolkata + 1));
    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into()],
        environment_extra: vec![("dev".into(), format!("maintenance_window = \"{window}\""))],
        ..StackOptions::default()
    })
    .await?;
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains(&format!(
            "{}:00 UTC (window maintenance_window {window})",
            hh_mm(opens_utc)
        )),
        "scheduled for {} UTC:\n{out}",
        hh_mm(opens_utc)
    );
    Ok(())
}

#[tokio::test]
async fn a_misspelt_zone_is_refused_at_start_by_name() -> Result<()> {
    let out = serve_with(
        "window-zone",
        "[environments.qa]\nzone = \"qa\"\n\
             gates = [\"business_hours\"]\nbusiness_hours = \"Mon-Fri 08:00-18:00 Europe/Berln\"\n",
    )
    .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(
            "environments.qa.business_hours: \"Mon-Fri 08:00-18:00 Europe/Berln\": unknown time zone \
             \"Europe/Berln\"; use UTC or an IANA name such as Europe/Berlin"
        ),
        "{out}"
    );
    Ok(())
}
