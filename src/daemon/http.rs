//! The daemon's HTTP endpoints (hyper, plain HTTP on `[daemon] listen`): `GET /metrics`
//! (OpenMetrics text), `/healthz` (200 while the scheduler loop is alive), `/readyz` (200
//! only when every credential is valid, outside `critical_before`, and its last token check
//! passed; otherwise 503 naming the ones that are not).

use super::liveness::Liveness;
use crate::health::Metrics;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::sync::Arc;

fn reply(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

/// Connections served at once; more are closed as they arrive.
pub const MAX_CONNECTIONS: usize = 64;
/// A client has this long to send its request head.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// No connection lives longer than this.
const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30);

/// Binds `listen` and serves until the returned task is dropped or aborted. No local client
/// can stall the daemon: at most [`MAX_CONNECTIONS`] connections (the rest are closed at
/// once), a request head within 5 s, a connection for 30 s at most, and an accept error
/// (say, out of file descriptors) makes the loop pause instead of spin. Nothing of the
/// scheduler or the pipeline ever waits for this task.
pub async fn serve(
    listen: &str,
    metrics: Arc<Metrics>,
    liveness: Arc<Liveness>,
) -> Result<(std::net::SocketAddr, AbortOnDrop), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("[daemon] listen {listen:?}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("[daemon] listen {listen:?}: {e}"))?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        let mut pause = std::time::Duration::from_millis(10);
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => {
                    pause = std::time::Duration::from_millis(10);
                    tcp
                }
                Err(e) => {
                    tracing::warn!(
                        "metrics listener: accept: {e}; pausing {} ms",
                        pause.as_millis()
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(1));
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(tcp);
                continue;
            };
            let (metrics, liveness) = (metrics.clone(), liveness.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (metrics, liveness) = (metrics.clone(), liveness.clone());
                    async move { Ok::<_, hyper::Error>(route(&req, metrics, &liveness).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(tcp), svc);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            });
        }
    });
    Ok((addr, AbortOnDrop(task)))
}

async fn route(
    req: &Request<Incoming>,
    metrics: Arc<Metrics>,
    liveness: &Liveness,
) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET {
        return reply(405, "text/plain", "GET only\n");
    }
    match req.uri().path() {
        // A large fleet's exposition takes tens of milliseconds to encode: on the blocking
        // pool, so that no runtime worker (the scheduler's, a rotation's) waits for it.
        "/metrics" => match tokio::task::spawn_blocking(move || metrics.openmetrics_cached()).await
        {
            Ok(text) => reply(
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            ),
            Err(_) => reply(500, "text/plain", "the metrics could not be encoded\n"),
        },
        "/healthz" => {
            if let Some(late) = liveness.overdue(time::OffsetDateTime::now_utc()) {
                reply(
                    503,
                    "text/plain",
                    format!(
                        "the scheduler loop is {late} s past the time it planned to run again\n"
                    ),
                )
            } else {
                reply(200, "text/plain", "ok\n")
            }
        }
        "/readyz" => match metrics.not_ready() {
            None => reply(200, "text/plain", "ready\n"),
            Some(why) => reply(503, "text/plain", format!("not ready:\n{why}\n")),
        },
        _ => reply(404, "text/plain", "not found\n"),
    }
}

/// A server task that stops when dropped.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
