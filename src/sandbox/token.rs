//! A local stand-in for XSUAA's `authentication.cert` host: an HTTPS token endpoint on
//! 127.0.0.1 (rustls + hyper) that asks for a client certificate, verifies it against the
//! configured client CAs, and issues a JWT-shaped token only to a registered
//! (client id, certificate fingerprint) pair. It serves its own OIDC discovery document,
//! records the fingerprint of every client certificate it saw, and injects faults on demand.
//!
//! The server task is owned by [`TokenServer`] and stops when it is dropped.

use super::ca::LocalCa;
use base64::Engine as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

/// A fault to inject into the next request(s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and an OAuth error body.
    Status(u16),
    /// 429 with `Retry-After`.
    RateLimited { retry_after: String },
    /// Wait this long before answering.
    Latency(std::time::Duration),
    /// 200 with a body that is not JSON.
    Malformed,
    /// 200 with a 2 MiB body.
    Oversize,
    /// Close the TCP connection before the TLS handshake.
    Reset,
}

#[derive(Default)]
struct State {
    registered: Vec<(String, String)>,
    seen: Vec<String>,
    faults: VecDeque<Fault>,
}

/// Why the sandbox could not start.
#[derive(Debug, thiserror::Error)]
#[error("sandbox token endpoint: {0}")]
pub struct SandboxError(String);

/// A running token endpoint.
pub struct TokenServer {
    /// `https://127.0.0.1:<port>/oauth/token`
    pub url: String,
    /// `https://127.0.0.1:<port>/.well-known/openid-configuration`
    pub discovery_url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TokenServer {
    /// Starts on 127.0.0.1 (port 0 = any) with a server certificate from `server_ca`,
    /// accepting client certificates that chain to any of `client_roots_pem`.
    pub async fn start(
        server_ca: &LocalCa,
        client_roots_pem: &[String],
        port: u16,
    ) -> Result<TokenServer, SandboxError> {
        let e = |m: &dyn std::fmt::Display| SandboxError(m.to_string());
        let server = server_ca
            .issue_server(&["127.0.0.1", "localhost"])
            .map_err(|x| e(&x))?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(server.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|x| e(&x))?;
        let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).map_err(|x| e(&x))?;
        let mut roots = rustls::RootCertStore::empty();
        for pem in client_roots_pem {
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(c.map_err(|x| e(&x))?).map_err(|x| e(&x))?;
            }
        }
        // Optional at the TLS layer so that a missing certificate gets an HTTP 401, as XSUAA.
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .allow_unauthenticated()
            .build()
            .map_err(|x| e(&x))?;
        let mut cfg = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|x| e(&x))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|x| e(&x))?;
        let port = listener.local_addr().map_err(|x| e(&x))?.port();
        let base = format!("https://127.0.0.1:{port}");
        let url = format!("{base}/oauth/token");
        let discovery = serde_json::json!({
            "issuer": base,
            "token_endpoint": format!("{base}/oauth/token"),
            "mtls_endpoint_aliases": {"token_endpoint": url},
            "token_endpoint_auth_methods_supported": ["tls_client_auth"],
        })
        .to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let fault = lock(&st).faults.front().cloned();
                if fault == Some(Fault::Reset) {
                    lock(&st).faults.pop_front();
                    drop(tcp);
                    continue;
                }
                let (acceptor, st, discovery) = (acceptor.clone(), st.clone(), discovery.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let fp = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| crate::x509::fingerprint(c));
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (fp, st, discovery) = (fp.clone(), st.clone(), discovery.clone());
                        async move { Ok::<_, hyper::Error>(handle(req, fp, &st, discovery).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Ok(TokenServer {
            discovery_url: format!("{base}/.well-known/openid-configuration"),
            url,
            state,
            task,
        })
    }

    /// Registers a client certificate (by SHA-256 fingerprint) for `client_id`.
    pub fn register(&self, client_id: &str, fingerprint: &str) {
        lock(&self.state)
            .registered
            .push((client_id.to_string(), fingerprint.to_string()));
    }

    /// Revokes every registration of `fingerprint` (as deleting a binding does).
    pub fn revoke(&self, fingerprint: &str) {
        lock(&self.state)
            .registered
            .retain(|(_, f)| f != fingerprint);
    }

    /// Fingerprints of the client certificates presented to token requests, in order.
    pub fn seen(&self) -> Vec<String> {
        lock(&self.state).seen.clone()
    }

    /// Injects `fault` into the next `times` requests (or connections, for `Reset`).
    pub fn inject(&self, fault: Fault, times: usize) {
        let mut s = lock(&self.state);
        for _ in 0..times {
            s.faults.push_back(fault.clone());
        }
    }
}

fn reply(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        serde_json::json!({"error": error, "error_description": description}).to_string(),
    )
}

async fn handle(
    req: Request<Incoming>,
    fp: Option<String>,
    st: &Mutex<State>,
    discovery: String,
) -> Response<Full<Bytes>> {
    if req.uri().path() == "/.well-known/openid-configuration" {
        return reply(200, discovery);
    }
    if req.uri().path() != "/oauth/token" || req.method() != hyper::Method::POST {
        return oauth_error(404, "not_found", "no such endpoint");
    }
    let Ok(body) = Limited::new(req.into_body(), 64 * 1024).collect().await else {
        return oauth_error(400, "invalid_request", "body too large");
    };
    let body = body.to_bytes();
    let client = url_decode_field(&body, "client_id").unwrap_or_default();
    let grant = url_decode_field(&body, "grant_type").unwrap_or_default();
    let fault = lock(st).faults.pop_front();
    match fault {
        Some(Fault::Status(s)) => return oauth_error(s, "server_error", "injected fault"),
        Some(Fault::RateLimited { retry_after }) => {
            let mut r = oauth_error(429, "too_many_requests", "injected fault");
            if let Ok(v) = hyper::header::HeaderValue::from_str(&retry_after) {
                r.headers_mut().insert("retry-after", v);
            }
            return r;
        }
        Some(Fault::Latency(d)) => tokio::time::sleep(d).await,
        Some(Fault::Malformed) => return reply(200, "<html>gateway</html>"),
        Some(Fault::Oversize) => return reply(200, vec![b' '; 2 << 20]),
        Some(Fault::Reset) | None => {}
    }
    if grant != "client_credentials" {
        return oauth_error(400, "unsupported_grant_type", "only client_credentials");
    }
    let Some(fp) = fp else {
        return oauth_error(401, "unauthorized", "Unsupported instance credential");
    };
    let ok = {
        let mut s = lock(st);
        s.seen.push(fp.clone());
        s.registered.iter().any(|(c, f)| *c == client && *f == fp)
    };
    if !ok {
        return oauth_error(401, "invalid_client", "Bad credentials");
    }
    let e = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = serde_json::json!({
        "cid": client, "client_id": client, "iat": now, "exp": now + 43_199,
        "cnf": {"x5t#S256": fp.replace(':', "")},
    });
    let jwt = format!(
        "{}.{}.{}",
        e(br#"{"alg":"none","typ":"JWT"}"#),
        e(claims.to_string().as_bytes()),
        e(b"sandbox")
    );
    reply(
        200,
        serde_json::json!({"access_token": jwt, "token_type": "bearer", "expires_in": 43_199})
            .to_string(),
    )
}

/// One `application/x-www-form-urlencoded` field, decoded.
fn url_decode_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
