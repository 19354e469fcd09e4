//! Which PostgreSQL a target runs, and what the agent does differently for
//! it (issue 22). Read once per connection from the `server_version` the
//! server reports while the session starts, so knowing it costs no query.
//!
//! What differs across the supported majors, and where it is handled:
//! - `client_connection_check_interval` exists from 14: set on 14 and later
//!   only (`connection.rs`). On 13 a backend whose agent died while a
//!   statement was running (e.g. waiting on a lock) notices only when that
//!   statement ends — at the latest at the agent's `lock_timeout` or
//!   `statement_timeout` — and only then rolls back and frees its locks.
//! - From 16, `SET ROLE` needs membership with the SET option, which
//!   `pg_has_role(…, 'SET')` answers; before 16 any membership allows it
//!   (`pg_has_role(…, 'MEMBER')`, the only one those servers know).
//!
//! - Before 15, call counts reach `pg_stat_user_functions` through the
//!   statistics collector: a session sends them at most every 500 ms, when
//!   a transaction ends, so a watch's sample can miss the latest calls.
//!
//! Everything else the agent reads — `pg_get_functiondef` (which prints
//! SQL-standard bodies, `prosqlbody`, from 14), `prokind`, `proacl` with
//! `aclexplode`/`acldefault`, `pg_depend`, `pg_stat_user_functions` and
//! `track_functions` — means the same on every supported major.

use std::ops::RangeInclusive;

/// The PostgreSQL majors pgrollout is tested against and accepts.
pub const SUPPORTED_MAJORS: RangeInclusive<u32> = 13..=18;

/// A target's PostgreSQL major version, checked to be supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerVersion {
    major: u32,
}

/// A server outside [`SUPPORTED_MAJORS`], or one that did not say.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "PostgreSQL {reported} is not supported: pgrollout supports PostgreSQL {} to {}",
    SUPPORTED_MAJORS.start(),
    SUPPORTED_MAJORS.end()
)]
pub struct UnsupportedVersion {
    /// What the server reported, as it said it (`"(not reported)"` when it did not).
    pub reported: String,
}

impl ServerVersion {
    /// Checks the `server_version` parameter status: `"13.23"`, `"18beta1"`,
    /// `"15.4 (Debian 15.4-1.pgdg120+1)"`; its leading number is the major
    /// from 10 on (a `"9.6.24"` reads as 9, refused like any other).
    pub fn from_reported(reported: Option<&str>) -> Result<Self, UnsupportedVersion> {
        let text = reported.unwrap_or("(not reported)");
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        match digits.parse::<u32>() {
            Ok(major) if SUPPORTED_MAJORS.contains(&major) => Ok(Self { major }),
            _ => Err(UnsupportedVersion {
                reported: text.to_owned(),
            }),
        }
    }

    pub fn major(self) -> u32 {
        self.major
    }

    /// Whether `client_connection_check_interval` exists (14 and later).
    pub fn has_connection_check(self) -> bool {
        self.major >= 14
    }

    /// The `pg_has_role` privilege that says whether this session may
    /// `SET ROLE` to a role.
    pub fn set_role_privilege(self) -> &'static str {
        if self.major >= 16 {
            "SET"
        } else {
            "MEMBER"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_major_is_read_whatever_follows_it() {
        for (reported, major) in [
            ("13.23", 13),
            ("14.0", 14),
            ("15.4 (Debian 15.4-1.pgdg120+1)", 15),
            ("16.14", 16),
            ("17.10", 17),
            ("18beta1", 18),
            ("18.4", 18),
        ] {
            let version = ServerVersion::from_reported(Some(reported)).expect(reported);
            assert_eq!(version.major(), major, "{reported}");
        }
    }

    #[test]
    fn a_version_outside_the_range_is_refused_naming_the_range() {
        for reported in ["12.22", "9.6.24", "19devel", "", "x"] {
            let error = ServerVersion::from_reported(Some(reported)).expect_err(reported);
            assert_eq!(
                error.to_string(),
                format!(
                    "PostgreSQL {reported} is not supported: pgrollout supports PostgreSQL 13 to 18"
                )
            );
        }
        let silent = ServerVersion::from_reported(None).expect_err("none");
        assert!(silent.to_string().contains("(not reported)"), "{silent}");
    }

    #[test]
    fn settings_and_privileges_follow_the_major() {
        let v = |text| ServerVersion::from_reported(Some(text)).expect(text);
        assert!(!v("13.1").has_connection_check());
        assert!(v("14.1").has_connection_check());
        assert_eq!(v("15.1").set_role_privilege(), "MEMBER");
        assert_eq!(v("16.1").set_role_privilege(), "SET");
    }
}
