//! Local stand-ins for the services certrot talks to, used by `certrot demo`, the tests and
//! the benchmarks. Everything here listens on, or writes to, local places only.

pub mod ca;
pub mod fixtures;
pub mod kube;
pub mod run;
pub mod sm;
pub mod stack;
pub mod token;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use std::future::Future;
use std::sync::Arc;

/// Serves HTTP/1.1 over TLS on `listener` until the task is aborted: every accepted
/// connection (with `TCP_NODELAY`) gets `handle` for each request, with `ctx` shared.
pub(crate) async fn serve_https<C, F, Fut>(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    ctx: Arc<C>,
    handle: F,
) where
    C: Send + Sync + 'static,
    F: Fn(Request<Incoming>, Arc<C>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, ctx) = (acceptor.clone(), ctx.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let ctx = ctx.clone();
                async move { Ok::<_, hyper::Error>(handle(req, ctx).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
        });
    }
}
