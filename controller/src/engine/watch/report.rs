//! A stored watch as `alert create|list|cancel` show it: its state (ended
//! and cancelled follow from the times), the comparison of its latest sample
//! with the baseline, and what it cannot see.

use pgrollout_shared::proto::WatchStatus;

use super::assess;
use crate::store::WatchRecord;

pub fn status_of(watch: &WatchRecord, now: i64) -> WatchStatus {
    let latest = watch.last_sample.as_ref().unwrap_or(&watch.baseline);
    let state = match (&watch.cancelled_at, watch.is_live(now)) {
        (Some(_), _) => "cancelled".to_owned(),
        (None, false) => "ended".to_owned(),
        (None, true) => watch.state.clone(),
    };
    WatchStatus {
        watch_id: watch.id.clone(),
        environment: watch.environment.clone(),
        procedure: watch.procedure.clone(),
        names: watch
            .spec
            .names
            .iter()
            .map(|n| format!("{}.{}", n.schema, n.name))
            .collect(),
        created_by: watch.created_by.clone(),
        created_at_unix_ms: watch.created_at,
        ends_at_unix_ms: watch.cancelled_at.unwrap_or(watch.ends_at),
        every_ms: watch.every_ms,
        threshold_percent: watch.threshold_percent,
        min_calls: watch.min_calls,
        min_increase_us: watch.min_increase_us,
        max_time_us: watch.max_time_us,
        state,
        reason: watch.reason.clone(),
        baseline: Some(watch.baseline.clone()),
        last_sample: watch.last_sample.clone(),
        samples: watch.samples,
        routines: assess::compare(&watch.baseline, latest, assess::Limits::of(watch)),
        notes: assess::notes(watch, latest),
        cancelled_by: watch.cancelled_by.clone().unwrap_or_default(),
        sample_error: if watch.failed_samples > 0 {
            watch.sample_error.clone()
        } else {
            String::new()
        },
    }
}
