//! `GET /metrics` in Prometheus text format, on its own listener.
//!
//! hyper's HTTP/1.1 server (already in the controller's tree under tonic)
//! rather than a hand-written responder: request parsing, keep-alive and
//! limits are its job, and the surface here is one route. Requests are
//! bounded (16 KiB of headers, 5 s to send them), connections are capped,
//! and a busy controller answers the scrape from the store like any reader.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::prometheus::{self, Scrape};
use crate::engine::Controller;
use crate::store::StoreError;

/// Scrapers connected at once; further connections are closed at once.
const MAX_CONNECTIONS: usize = 16;
/// Time a client has to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted (hyper's minimum is 8 KiB).
const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// A kept-alive connection is closed after this, so none is held forever.
const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    controller: Arc<Controller>,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, listener = "metrics", "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "metrics: too many connections; closing this one");
            continue;
        };
        let controller = controller.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(controller.clone(), request));
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            // Past its lifetime the connection is simply dropped.
            let ended = tokio::time::timeout(MAX_CONNECTION_LIFETIME, connection).await;
            if let Ok(Err(error)) = ended {
                tracing::debug!(%peer, %error, "metrics connection ended");
            }
            drop(permit);
        });
    }
}

async fn respond(
    controller: Arc<Controller>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/metrics" {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "not found; try GET /metrics\n",
        ));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    Ok(match scrape(&controller).await {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(prometheus::CONTENT_TYPE),
            );
            response
        }
        Err(error) => {
            tracing::error!(error = %anyhow::Error::from(error), "metrics: reading the store failed");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the controller could not read its store; see its log\n",
            )
        }
    })
}

/// The whole exposition: figures from the store, agents from the registry.
pub async fn scrape(controller: &Controller) -> Result<String, StoreError> {
    let figures = super::figures(&controller.store, "", "").await?;
    let rollouts = controller.store.rollouts_by_state().await?;
    let mut agents_by_zone: BTreeMap<String, u64> = controller
        .config
        .environments
        .keys()
        .filter_map(|environment| controller.config.zone_of(environment))
        .map(|zone| (zone, 0))
        .collect();
    for agent in controller.registry.all() {
        *agents_by_zone.entry(agent.zone.clone()).or_default() += 1;
    }
    Ok(prometheus::render(&Scrape {
        figures: &figures,
        agents_by_zone: &agents_by_zone,
        rollouts: &rollouts,
    }))
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
