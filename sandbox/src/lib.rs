//! certrot-sandbox: local stand-ins for the services certrot talks to (SAP Service Manager,
//! the XSUAA and Identity token hosts, the Kubernetes API, a CA), used by `certrot demo`,
//! `certrot sandbox`, the tests and the benchmarks. Everything here listens on, or writes
//! to, local places only. This crate depends on nothing of certrot's.
//!
//! The stand-ins judge certrot with rules of their own, written from the services'
//! documented behaviour (certificate fingerprints, Kubernetes name rules, query parsing,
//! token claims), never with certrot's: a bug in certrot's rule must not be shared by its
//! judge. See docs/sap-services.md.

pub mod ca;
pub mod fixtures;
pub mod kube;
pub mod sm;
pub mod stack;
pub mod token;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use std::future::Future;
use std::sync::Arc;

/// SHA-256 of a certificate's DER, as `AB:CD:…` (the form services and `openssl x509
/// -fingerprint -sha256` print).
pub fn fingerprint(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Kubernetes' `IsDNS1123Subdomain`: at most 253 characters; dot-separated labels of lower
/// case alphanumerics and '-', each starting and ending with an alphanumeric.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    };
    name.len() <= 253 && name.split('.').all(label_ok)
}

/// Writes `data` to `path` readable by the owner only (`0600`, also when the file existed
/// with a wider mode): the sandbox's files hold private keys and client secrets.
pub fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(data)
}

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
