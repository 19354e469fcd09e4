//! The small plain-HTTP listener both programs run for scrapers and health
//! checkers: the controller's `/metrics`, `/healthz` and `/readyz`, the
//! agent's `/healthz`, `/readyz` and `/metrics`.
//!
//! hyper's HTTP/1.1 server (already in the tree under tonic) rather than a
//! hand-written responder: request parsing, keep-alive and limits are its
//! job. Requests are bounded (16 KiB of headers, 5 s to send them),
//! connections are capped, and a kept-alive connection ends after 5 minutes.

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

/// Clients connected at once; further connections are closed at once.
const MAX_CONNECTIONS: usize = 16;
/// Time a client has to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted (hyper's minimum is 8 KiB).
const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// A kept-alive connection is closed after this, so none is held forever.
const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

pub type HttpResponse = Response<Full<Bytes>>;

/// Serves `respond` on `listener` until `shutdown` resolves. `name` labels
/// the listener in log lines.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    name: &'static str,
    respond: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
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
                tracing::warn!(%error, listener = name, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, listener = name, "too many connections; closing this one");
            continue;
        };
        let respond = respond.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(request);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            // Past its lifetime the connection is simply dropped.
            let ended = tokio::time::timeout(MAX_CONNECTION_LIFETIME, connection).await;
            if let Ok(Err(error)) = ended {
                tracing::debug!(%peer, %error, listener = name, "connection ended");
            }
            drop(permit);
        });
    }
}

/// `None` for GET and HEAD; otherwise the 405 to answer with.
pub fn only_get(request: &Request<Incoming>) -> Option<HttpResponse> {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return None;
    }
    let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    Some(response)
}

/// A plain-text response.
pub fn plain(status: StatusCode, text: String) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A Prometheus exposition (`crate::metrics::render`'s text).
pub fn prometheus(text: String) -> HttpResponse {
    let mut response = plain(StatusCode::OK, text);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    response
}

/// A readiness answer: 200 with `ready` when every check passed, 503 with
/// one line per failed check otherwise (what an orchestrator's probe log
/// shows).
pub fn readiness(failures: &[String]) -> HttpResponse {
    if failures.is_empty() {
        return plain(StatusCode::OK, "ready\n".into());
    }
    let mut text = String::from("not ready\n");
    for failure in failures {
        text.push_str(failure);
        text.push('\n');
    }
    plain(StatusCode::SERVICE_UNAVAILABLE, text)
}

/// The liveness answer: the process runs and its runtime answers.
pub fn alive() -> HttpResponse {
    plain(StatusCode::OK, "ok\n".into())
}
