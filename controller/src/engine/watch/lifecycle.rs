//! A watch's life: created with its baseline sample (before the deploy),
//! sampled by its task until `--for` runs out or an operator cancels it;
//! the task runs on the watches' leader only (issue 18), which picks every
//! live watch up when it takes the lease (a restart, a change of leader)
//! and each new one, whichever controller created it.

use std::sync::Arc;
use std::time::Duration;

use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::routine::Routine;
use pgrollout_shared::watch::WatchSampleSpec;

use super::assess::{self, format_ms, TRACK_FUNCTIONS_FIX, TRACK_FUNCTIONS_OFF};
use super::{run, sample};
use crate::engine::error::EngineError;
use crate::engine::{new_id, Controller};
use crate::store::leases::Fence;
use crate::store::{covers_any, AuditEntry, StoreError, WatchRecord};

/// A validated `alert create`.
pub struct CreateWatch {
    pub environment: String,
    /// The operator's `<procedure>`.
    pub procedure: String,
    /// The project's routines of that name: what is watched.
    pub routines: Vec<Routine>,
    /// The routines whose smoke tests probe it: the working copy's, or where
    /// approval is required the deployed ones (`engine/approved_sql.rs`).
    pub probes: Vec<Routine>,
    /// The deployed plans the probes come from, sent with the baseline
    /// sample (issue 19); each later sample looks them up again.
    pub sources: Vec<pgrollout_shared::signing::sources::SourcePlan>,
    pub duration: Duration,
    pub every: Duration,
    pub threshold_percent: u32,
    pub min_calls: u64,
    pub min_increase: Duration,
    /// `--max-time`: a bound on the mean time per call that needs no baseline.
    pub max_time: Option<Duration>,
    pub agent_wait: Duration,
    pub actor: String,
}

fn store_failure(error: StoreError) -> EngineError {
    EngineError::store("read or record the watch")(error)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Takes the baseline, refuses a watch that would see nothing, records the
/// watch and starts its task.
pub async fn create(
    controller: Arc<Controller>,
    request: CreateWatch,
) -> Result<WatchRecord, EngineError> {
    let now = now_unix_ms();
    let id = new_id("w");
    let spec = WatchSampleSpec::with_probes(id.clone(), &request.routines, request.probes);
    // Checked here to fail fast, before the baseline is sampled, and again
    // when the watch is written.
    let live = controller
        .store
        .live_watches(Some(&request.environment), now)
        .await
        .map_err(store_failure)?;
    let candidate = WatchRecord {
        spec: spec.clone().into(),
        ..Default::default()
    };
    if let Some(existing) = live.iter().find(|w| covers_any(w, &candidate)) {
        return Err(already_watched(existing, &request.environment));
    }

    let wait = request
        .agent_wait
        .min(controller.config.deployment.max_agent_wait);
    let baseline_spec = WatchSampleSpec {
        sources: request.sources,
        ..spec.clone()
    };
    let baseline = sample::take(
        &controller,
        &request.environment,
        &request.procedure,
        &baseline_spec,
        wait,
        sample::sample_timeout(request.every),
    )
    .await
    .map_err(|error| {
        EngineError::Unavailable(format!(
            "no watch was created: the baseline sample could not be taken: {error}"
        ))
    })?;
    let names = spec
        .names
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if baseline.track_functions == "none" {
        let message = format!(
            "{TRACK_FUNCTIONS_OFF} of {} (PostgreSQL counts no calls of {names}), so a watch would see nothing; \
             {TRACK_FUNCTIONS_FIX}, then run this again. No watch was created",
            request.environment
        );
        controller
            .audit(AuditEntry {
                actor: request.actor.clone(),
                action: "watch.refused".into(),
                outcome: "refused".into(),
                environment: Some(request.environment.clone()),
                procedure: Some(request.procedure.clone()),
                details: message.clone(),
                ..Default::default()
            })
            .await;
        return Err(EngineError::Refused(message));
    }

    let mut watch = WatchRecord {
        id: id.clone(),
        environment: request.environment,
        procedure: request.procedure,
        spec: spec.into(),
        threshold_percent: request.threshold_percent,
        every_ms: millis(request.every),
        min_calls: request.min_calls,
        min_increase_us: u64::try_from(request.min_increase.as_micros()).unwrap_or(u64::MAX),
        max_time_us: request
            .max_time
            .map_or(0, |t| u64::try_from(t.as_micros()).unwrap_or(u64::MAX)),
        created_by: request.actor,
        created_at: now,
        ends_at: now.saturating_add(i64::try_from(millis(request.duration)).unwrap_or(i64::MAX)),
        baseline,
        state: assess::WATCHING.into(),
        reason: "baseline taken before the deploy; nothing to compare yet".into(),
        ..Default::default()
    };
    // The baseline's passing probes count as "passed before".
    watch.probes_passed = assess::assess_sample(&watch, &watch.baseline).probes_passed;
    if let Some(existing) = controller
        .store
        .insert_watch(&watch)
        .await
        .map_err(store_failure)?
    {
        return Err(already_watched(&existing, &watch.environment));
    }
    controller
        .audit(AuditEntry {
            actor: watch.created_by.clone(),
            action: "watch.created".into(),
            outcome: "ok".into(),
            environment: Some(watch.environment.clone()),
            procedure: Some(watch.procedure.clone()),
            details: format!(
                "watch {id} of {names} every {} until {}, threshold {}%, min {} call(s), min increase {}; baseline: {}",
                humantime::format_duration(request.every),
                utc(watch.ends_at),
                watch.threshold_percent,
                watch.min_calls,
                humantime::format_duration(request.min_increase),
                baseline_summary(&watch)
            ),
            ..Default::default()
        })
        .await;
    tracing::info!(watch_id = %id, environment = %watch.environment, names = %names, "watch created");
    // Sampled by the watches' leader only (issue 18): this controller, if
    // it leads, at once; otherwise the leader finds it within `PICK_UP`.
    controller.watches.created.notify_one();
    Ok(watch)
}

fn already_watched(existing: &WatchRecord, environment: &str) -> EngineError {
    EngineError::AlreadyExists(format!(
        "watch {} already watches {} in {environment} until {}; cancel it first (`pgrollout alert cancel {}`)",
        existing.id,
        assess::names(existing),
        utc(existing.ends_at),
        existing.id
    ))
}

/// `public.f(integer) 40 call(s), 0.012 ms per call; …`.
fn baseline_summary(watch: &WatchRecord) -> String {
    let routines: Vec<String> = watch
        .baseline
        .functions
        .iter()
        .map(|f| match f.calls {
            calls if f.has_stats && calls > 0 => format!(
                "{} {calls} call(s), {} per call",
                f.identity,
                format_ms(f.total_time_ms / calls as f64)
            ),
            _ => format!("{} no calls recorded", f.identity),
        })
        .collect();
    if routines.is_empty() {
        "no routine of the names exists yet".into()
    } else {
        routines.join("; ")
    }
}

/// Ends a live watch now.
pub async fn cancel(
    controller: &Controller,
    actor: &str,
    watch_id: &str,
) -> Result<WatchRecord, EngineError> {
    let now = now_unix_ms();
    let watch = controller
        .store
        .watch(watch_id)
        .await
        .map_err(store_failure)?
        .ok_or_else(|| {
            EngineError::NotFound(format!(
                "no watch {watch_id:?}; `pgrollout alert list --all` lists them"
            ))
        })?;
    if !watch.is_live(now)
        || !controller
            .store
            .cancel_watch(watch_id, actor, now)
            .await
            .map_err(store_failure)?
    {
        let how = match &watch.cancelled_by {
            Some(by) => format!("was cancelled by {by}"),
            None => format!("ended at {}", utc(watch.ends_at)),
        };
        return Err(EngineError::Refused(format!(
            "watch {watch_id} {how}; nothing to cancel"
        )));
    }
    controller.watches.stop(watch_id);
    controller
        .audit(AuditEntry {
            actor: actor.to_owned(),
            action: "watch.cancelled".into(),
            outcome: "ok".into(),
            environment: Some(watch.environment.clone()),
            procedure: Some(watch.procedure.clone()),
            details: format!("watch {watch_id} cancelled in state {}", watch.state),
            ..Default::default()
        })
        .await;
    controller
        .store
        .watch(watch_id)
        .await
        .map_err(store_failure)?
        .ok_or_else(|| EngineError::Internal("the cancelled watch vanished from the store".into()))
}

/// How often the watches' leader looks for watches created through
/// another controller (one created through this one wakes it at once).
pub const PICK_UP: Duration = Duration::from_secs(1);

/// The watches' leader (issue 18), while it holds the lease `fence`:
/// starts the task of every live watch — they outlive a controller restart
/// and a change of leader — then of each watch created since, through this
/// controller or another, until aborted with the lease.
pub async fn lead(controller: Arc<Controller>, fence: Fence) {
    let mut first = true;
    loop {
        let started = pick_up(&controller, &fence).await;
        if started > 0 {
            let what = if first {
                "watches resumed"
            } else {
                "watches picked up"
            };
            tracing::info!(count = started, token = fence.token, "{what}");
        }
        first = false;
        tokio::select! {
            _ = controller.watches.created.notified() => {}
            _ = tokio::time::sleep(PICK_UP) => {}
        }
    }
}

/// Starts a task for each live watch that has none here; how many.
async fn pick_up(controller: &Arc<Controller>, fence: &Fence) -> usize {
    match controller.store.live_watches(None, now_unix_ms()).await {
        Ok(watches) => {
            let mut started = 0;
            for watch in watches {
                if !controller.watches.is_running(&watch.id) {
                    run::spawn(controller.clone(), watch.id, Some(fence.clone()));
                    started += 1;
                }
            }
            started
        }
        Err(error) => {
            tracing::error!(error = %pgrollout_shared::errors::error_chain(&error), "reading the live watches failed; trying again");
            0
        }
    }
}

/// `2025-11-13 14:30:00 UTC`.
pub fn utc(unix_ms: i64) -> String {
    let since_epoch = Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    pgrollout_shared::tls::format_utc(std::time::UNIX_EPOCH + since_epoch)
}
