//! The daemon's HTTP endpoints (hyper, plain HTTP on `[daemon] listen`): `GET /metrics`
//! (OpenMetrics text), `/healthz` (200 while the scheduler loop is alive), `/readyz` (200
//! only when every credential is valid, outside `critical_before`, and its last token check
//! passed; otherwise 503 naming the ones that are not).

use crate::health::Metrics;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

fn reply(status: u16, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

/// Binds `listen` and serves until the returned task is dropped or aborted.
pub async fn serve(
    listen: &str,
    metrics: Arc<Metrics>,
    beat: Arc<AtomicI64>,
    liveness_secs: i64,
) -> Result<(std::net::SocketAddr, AbortOnDrop), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("[daemon] listen {listen:?}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("[daemon] listen {listen:?}: {e}"))?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (metrics, beat) = (metrics.clone(), beat.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (metrics, beat) = (metrics.clone(), beat.clone());
                    async move { Ok::<_, hyper::Error>(route(&req, &metrics, &beat, liveness_secs)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok((addr, AbortOnDrop(task)))
}

fn route(
    req: &Request<Incoming>,
    metrics: &Metrics,
    beat: &AtomicI64,
    liveness_secs: i64,
) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET {
        return reply(405, "text/plain", "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => reply(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.openmetrics(),
        ),
        "/healthz" => {
            let age =
                time::OffsetDateTime::now_utc().unix_timestamp() - beat.load(Ordering::Relaxed);
            if age <= liveness_secs {
                reply(200, "text/plain", "ok\n".into())
            } else {
                reply(
                    503,
                    "text/plain",
                    format!("the scheduler loop has not run for {age} s\n"),
                )
            }
        }
        "/readyz" => match metrics.not_ready() {
            None => reply(200, "text/plain", "ready\n".into()),
            Some(why) => reply(503, "text/plain", format!("not ready:\n{why}\n")),
        },
        _ => reply(404, "text/plain", "not found\n".into()),
    }
}

/// A server task that stops when dropped.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
