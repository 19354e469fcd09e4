//! The `Watches` service: `pgrollout alert create|list|cancel`. Creating and
//! cancelling need the deployer role, listing the viewer role; every
//! request is validated here, at the edge (a refusal is exit 1, nothing
//! created), and creating or cancelling is audited by the engine.

use std::sync::Arc;
use std::time::Duration;

use pgrollout_shared::job::now_unix_ms;
use pgrollout_shared::proto::{
    watches_server::Watches, CancelWatchRequest, CreateWatchRequest, ListWatchesRequest,
    ListWatchesResponse, WatchStatus,
};
use pgrollout_shared::routine::routines_from_wire;
use tonic::{Request, Response, Status};

use super::operator::ControlService;
use crate::config::{ControllerConfig, OperatorRole};
use crate::engine::approved_sql;
use crate::engine::watch::{self, CreateWatch};
use crate::engine::Controller;

/// Shortest and longest sampling interval.
const EVERY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
/// Longest watch.
const MAX_DURATION: Duration = Duration::from_secs(31 * 24 * 3600);
/// Most watches one listing returns.
const LIST_LIMIT: u32 = 500;
/// Ended and cancelled watches a listing shows without `include_ended`: a
/// day's worth, so a "Monitor (24h)" that ended overnight is still there.
const RECENTLY_ENDED_MS: i64 = 24 * 3600 * 1000;

pub struct WatchService {
    pub controller: Arc<Controller>,
}

impl WatchService {
    async fn authorize<T>(
        &self,
        request: &Request<T>,
        role: OperatorRole,
        to: &str,
    ) -> Result<String, Status> {
        let control = ControlService {
            controller: self.controller.clone(),
        };
        Ok(control.authorize(request, role, to).await?.actor())
    }
}

#[tonic::async_trait]
impl Watches for WatchService {
    async fn create_watch(
        &self,
        request: Request<CreateWatchRequest>,
    ) -> Result<Response<WatchStatus>, Status> {
        let actor = self
            .authorize(
                &request,
                OperatorRole::Deployer,
                "create post-deploy watches",
            )
            .await?;
        let mut create = validate(&self.controller.config, request.into_inner(), actor)?;
        let (probes, sources, note) =
            approved_sql::new_watch_probes(&self.controller, &create.environment, &create.routines)
                .await?;
        create.probes = probes;
        create.sources = sources;
        let watch = watch::create(self.controller.clone(), create).await?;
        let mut status = watch::status_of(&watch, now_unix_ms());
        status.notes.extend(note);
        Ok(Response::new(status))
    }

    async fn list_watches(
        &self,
        request: Request<ListWatchesRequest>,
    ) -> Result<Response<ListWatchesResponse>, Status> {
        self.authorize(&request, OperatorRole::Viewer, "list post-deploy watches")
            .await?;
        let request = request.into_inner();
        let now = now_unix_ms();
        let watches = self
            .controller
            .store
            .list_watches(
                &request.environment,
                if request.include_ended {
                    0
                } else {
                    now - RECENTLY_ENDED_MS
                },
                LIST_LIMIT,
            )
            .await
            .map_err(|e| {
                tracing::error!(error = %pgrollout_shared::errors::error_chain(&e), "listing watches failed");
                Status::internal("the controller could not read its store; see its log")
            })?;
        Ok(Response::new(ListWatchesResponse {
            watches: watches.iter().map(|w| watch::status_of(w, now)).collect(),
        }))
    }

    async fn cancel_watch(
        &self,
        request: Request<CancelWatchRequest>,
    ) -> Result<Response<WatchStatus>, Status> {
        let actor = self
            .authorize(
                &request,
                OperatorRole::Deployer,
                "cancel post-deploy watches",
            )
            .await?;
        let id = request.into_inner().watch_id;
        if id.trim().is_empty() {
            return Err(Status::invalid_argument("no watch id given"));
        }
        let watch = watch::cancel(&self.controller, &actor, id.trim()).await?;
        Ok(Response::new(watch::status_of(&watch, now_unix_ms())))
    }
}

/// The request as the engine takes it, or exactly what is wrong with it.
fn validate(
    config: &ControllerConfig,
    request: CreateWatchRequest,
    actor: String,
) -> Result<CreateWatch, Status> {
    let invalid = |message: String| Err(Status::invalid_argument(message));
    if !config.environments.contains_key(&request.environment) {
        let known: Vec<&str> = config.environments.keys().map(String::as_str).collect();
        return invalid(format!(
            "unknown environment {:?}; known environments: {}",
            request.environment,
            known.join(", ")
        ));
    }
    let procedure = request.procedure.trim().to_owned();
    if procedure.is_empty() || procedure.len() > 256 {
        return invalid("the procedure must be 1 to 256 bytes".into());
    }
    if request.routines.is_empty() {
        return invalid(format!("no routine named {procedure} to watch"));
    }
    let max_routines = config
        .limits
        .max_routines_per_plan
        .min(pgrollout_shared::watch::MAX_WATCHED_NAMES);
    if request.routines.len() > max_routines {
        return invalid(format!(
            "{} routines to watch, over the limit of {max_routines}",
            request.routines.len()
        ));
    }
    let routines = routines_from_wire(request.routines)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    // The probes are smoke calls: the same rule as a plan's, at the edge.
    crate::project::hostile_sql::check_routines(&routines).map_err(Status::invalid_argument)?;
    let every = Duration::from_millis(request.every_ms);
    if every < EVERY.0 || every > EVERY.1 {
        return invalid(format!(
            "--every {}: sample between every 1s and every 1h",
            humantime::format_duration(every)
        ));
    }
    let duration = Duration::from_millis(request.duration_ms);
    if duration < every || duration > MAX_DURATION {
        return invalid(format!(
            "--for {}: a watch lasts at least one interval ({}) and at most 31 days",
            humantime::format_duration(duration),
            humantime::format_duration(every)
        ));
    }
    if !(101..=100_000).contains(&request.threshold_percent) {
        return invalid(format!(
            "--threshold {}%: give a percentage of the baseline above 100, e.g. 120%",
            request.threshold_percent
        ));
    }
    if request.min_calls == 0 || request.min_calls > 1_000_000_000 {
        return invalid("--min-calls must be between 1 and 1000000000".into());
    }
    let min_increase = Duration::from_micros(request.min_increase_us);
    if min_increase > EVERY.1 {
        return invalid("--min-increase must be at most 1h".into());
    }
    let max_time = (request.max_time_us > 0).then(|| Duration::from_micros(request.max_time_us));
    if max_time.is_some_and(|t| t > EVERY.1) {
        return invalid("--max-time must be at most 1h per call".into());
    }
    Ok(CreateWatch {
        environment: request.environment,
        procedure,
        probes: routines.clone(),
        sources: Vec::new(),
        routines,
        duration,
        every,
        threshold_percent: request.threshold_percent,
        min_calls: request.min_calls,
        min_increase,
        max_time,
        agent_wait: Duration::from_millis(request.agent_wait_ms),
        actor,
    })
}
