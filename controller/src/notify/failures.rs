//! The notification-failure counter: a process-wide handle kept from
//! start-up (a restart resets it, which `rate()` handles) that the metrics
//! scrape registers. It lives with the notifications that count into it, so
//! notify never depends on the metrics module (which depends on the engine).

use std::sync::OnceLock;

use pgrollout_shared::metrics::Labels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// `pgrollout_notification_failures_total{channel}`: notifications given up
/// on after their last attempt. Channels are the configured ones, so the
/// series are bounded.
pub fn notification_failures() -> &'static Family<Labels, Counter> {
    static FAILURES: OnceLock<Family<Labels, Counter>> = OnceLock::new();
    FAILURES.get_or_init(Family::default)
}

/// Counts one notification to `channel` that was not delivered.
pub fn count_notification_failure(channel: &str) {
    notification_failures()
        .get_or_create(&vec![("channel", channel.to_owned())])
        .inc();
}

/// Makes `channel`'s series exist at 0, so `rate()` sees its first failure.
pub fn declare_notification_channel(channel: &str) {
    let _ = notification_failures().get_or_create(&vec![("channel", channel.to_owned())]);
}
