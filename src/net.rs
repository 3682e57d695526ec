//! HTTPS for every peer certrot talks to — token endpoints, Service Manager, Vault: one way
//! to build a client (rustls, server verification always on, https only, no redirects,
//! timeouts), bounded response bodies, the client identity of a generation built in memory,
//! and transport errors told apart (timeout, TLS rejected, connection) with stable labels.

use crate::generation::Generation;

/// Why a check failed; the label is stable (logs, metrics `step`/`reason` labels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    TlsRejected,
    Unauthorized,
    RateLimited,
    ServerError,
    Timeout,
    Connect,
    BadResponse,
    Discovery,
}

impl FailureKind {
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::TlsRejected => "tls-rejected",
            FailureKind::Unauthorized => "unauthorized",
            FailureKind::RateLimited => "rate-limited",
            FailureKind::ServerError => "server-error",
            FailureKind::Timeout => "timeout",
            FailureKind::Connect => "connect",
            FailureKind::BadResponse => "bad-response",
            FailureKind::Discovery => "discovery",
        }
    }
}

/// A failed check: its kind and a plain-language message naming the URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} ({}): {message}", kind.label(), url)]
pub struct CheckFailure {
    pub kind: FailureKind,
    pub url: String,
    pub message: String,
}

pub(crate) fn fail(kind: FailureKind, url: &str, message: impl Into<String>) -> CheckFailure {
    CheckFailure {
        kind,
        url: url.to_string(),
        message: message.into(),
    }
}

/// Time and size limits of one HTTPS exchange.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub connect_timeout: std::time::Duration,
    pub timeout: std::time::Duration,
    pub max_response: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout: std::time::Duration::from_secs(10),
            timeout: std::time::Duration::from_secs(30),
            max_response: 1 << 20,
        }
    }
}

/// What verifies the server's certificate. Verification cannot be turned off.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerTrust<'a> {
    /// Trust the system's roots (the default for real SAP endpoints).
    pub system_roots: bool,
    /// Extra CA certificates (PEM), e.g. a `ca_file`.
    pub extra_ca_pem: Option<&'a [u8]>,
}

fn rustls_error_in(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r.to_string());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(r.to_string());
        }
        cur = err.source();
    }
    None
}

/// Classifies a transport error from reqwest.
pub(crate) fn classify_transport(e: &reqwest::Error, url: &str) -> CheckFailure {
    if e.is_timeout() {
        return fail(FailureKind::Timeout, url, "no answer within the time limit");
    }
    if let Some(tls) = rustls_error_in(e) {
        return fail(
            FailureKind::TlsRejected,
            url,
            format!("TLS handshake failed: {tls}"),
        );
    }
    let mut msg = e.to_string();
    let mut last = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        last = s.to_string();
        msg.push_str(": ");
        msg.push_str(&last);
        src = s.source();
    }
    // rustls errors sometimes arrive only as text through the connector's boxed errors.
    const TLS_MARKERS: [&str; 5] = [
        "invalid peer certificate",
        "received fatal alert",
        "peer is incompatible",
        "peer misbehaved",
        "handshake",
    ];
    if TLS_MARKERS.iter().any(|m| last.contains(m)) {
        return fail(
            FailureKind::TlsRejected,
            url,
            format!("TLS handshake failed: {last}"),
        );
    }
    fail(FailureKind::Connect, url, msg)
}

pub(crate) async fn read_limited_body(
    mut resp: reqwest::Response,
    limit: usize,
    url: &str,
) -> Result<Vec<u8>, CheckFailure> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| classify_transport(&e, url))?
    {
        if body.len() + chunk.len() > limit {
            return Err(fail(
                FailureKind::BadResponse,
                url,
                format!("the response is larger than {} KiB", limit / 1024),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The client identity (chain + key) of generation `g`, built in memory.
pub(crate) fn identity_of(g: &Generation) -> Result<reqwest::Identity, String> {
    let mut identity_pem = zeroize::Zeroizing::new(Vec::new());
    identity_pem.extend_from_slice(g.chain_pem().as_bytes());
    identity_pem.extend_from_slice(g.key_pem().as_bytes());
    reqwest::Identity::from_pem(&identity_pem).map_err(|e| format!("client identity: {e}"))
}

/// An HTTPS client with server verification always on, redirects off, https only, timeouts;
/// `pooled` keeps idle connections (for API clients, never for the check).
pub(crate) fn http_client(
    identity: Option<reqwest::Identity>,
    trust: ServerTrust<'_>,
    limits: Limits,
    pooled: bool,
) -> Result<reqwest::Client, String> {
    let extra = match trust.extra_ca_pem {
        Some(pem) => reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("CA certificates: {e}"))?,
        None => Vec::new(),
    };
    let mut builder = reqwest::Client::builder()
        .pool_max_idle_per_host(if pooled { 8 } else { 0 })
        .tcp_nodelay(true)
        .connect_timeout(limits.connect_timeout)
        .timeout(limits.timeout)
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(id) = identity {
        builder = builder.identity(id);
    }
    // The system's roots come from one read per run (`system_roots`): the same roots the
    // platform verifier would read at every client.
    let mut roots = extra;
    if trust.system_roots {
        roots.extend(crate::system_roots::system_roots().iter().cloned());
    }
    if trust.system_roots && roots.is_empty() {
        // As the platform verifier refused to build without a root.
        return Err(
            "TLS client: no CA certificates were loaded from the system \
                    (SSL_CERT_FILE, SSL_CERT_DIR or the distribution's store) and none is given"
                .into(),
        );
    }
    builder
        .tls_certs_only(roots)
        .build()
        .map_err(|e| format!("TLS client: {e}"))
}
