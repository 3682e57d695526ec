//! A local stand-in for the SAP Service Manager bindings API (`docs/sap-btp` section 3) on
//! 127.0.0.1, over TLS (rustls + hyper).
//!
//! Callers authenticate with a bearer token from the sandbox token endpoint (secret or mTLS
//! flavour) whose client was allowed with [`SmServer::allow_client`]. The API:
//! `POST /v1/service_bindings` (201 + binding, or 202 + relative `Location` of an operation,
//! chosen by `?async=` or the sandbox default), `GET /v1/service_bindings/<id>`,
//! `GET /v1/service_bindings/<id>/operations/<op>` (`in progress` → `succeeded`/`failed`),
//! `GET /v1/service_bindings` with `labelQuery`/`fieldQuery` (`eq`, `ne`, `in`, `notin`,
//! `and`; `''` escapes a quote) and `max_items`/`token` paging, and
//! `DELETE /v1/service_bindings/<id>` (200, or 202 + operation; 404 when gone).
//! 409 for a duplicate name on an instance, 422 `ConcurrentOperationInProgress` per
//! resource (a second delete of a binding being deleted; another binding's operation blocks
//! nothing), 422 `OperationInProgress` (instance not ready, injected), 502 `BrokerError` with
//! `broker_error`, the router's 404 with `X-Cf-RouterError`, a failed async create left
//! `ready: false`, 404 for the operation of a binding whose deletion finished, 429 + `Retry-After` (HTTP date) over a configurable rate, 400 for bad
//! parameters, the 1000-bindings-per-instance limit.
//!
//! Creating a binding of an `xsuaa` or `identity` instance issues a certificate from the
//! sandbox CA (validity from the parameters, days optionally scaled to seconds) and registers
//! it with the token endpoint; a provided certificate (self-managed) is accepted when it
//! chains to a trusted CA, registered by fingerprint or, with `certificate-pinning: false`,
//! by subject and issuer DN. Deleting a binding revokes its certificate there at once.

use super::ca::{KeyAlg, LocalCa, generate_key};
use super::token::TokenHandle;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// What kind of service an instance is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceKind {
    Xsuaa,
    Identity,
    /// A `service-manager` instance (plan `subaccount-admin`): XSUAA-style x509 bindings
    /// whose credentials also carry `sm_url`, i.e. Service Manager access.
    ServiceManager,
}

/// Behaviour of the stand-in.
#[derive(Clone, Debug)]
pub struct SmOptions {
    /// Mode when the caller does not say `?async=`: true = 202 + operation.
    pub async_default: bool,
    /// How long an asynchronous operation stays `in progress`.
    pub operation_delay: Duration,
    /// Seconds per day of `validity` (86400; tests scale days down to seconds).
    pub seconds_per_day: u64,
    /// At most this many binding calls per window, then 429.
    pub rate_limit: Option<(u32, Duration)>,
    /// Pre-generated RSA keys drawn on round-robin for RSA bindings (0 = a fresh key each
    /// time), so that benchmarks measure certrot rather than the stand-in's key generation.
    pub rsa_pool: usize,
    /// Issue keys of this algorithm whatever `key-length` says (a deviation from the real
    /// service, for benchmarks that want ECDSA service-managed credentials).
    pub key_override: Option<KeyAlg>,
}

impl Default for SmOptions {
    fn default() -> Self {
        SmOptions {
            async_default: false,
            operation_delay: Duration::from_millis(200),
            seconds_per_day: 86_400,
            rate_limit: None,
            rsa_pool: 0,
            key_override: None,
        }
    }
}

/// Which call a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmCall {
    Create,
    Get,
    List,
    Delete,
    Operation,
}

/// A fault injected into a Service Manager call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmFault {
    /// This HTTP status with an SM error body.
    Status(u16),
    /// 422 `ConcurrentOperationInProgress` (another operation on the same resource).
    Concurrent,
    /// 422 `OperationInProgress`: the instance is not ready (being created or deleted).
    InstanceNotReady,
    /// 502 `BrokerError`: the broker answered this status; with the `broker_error` object
    /// SAP's operator reads (`StatusCode`, `ErrorMessage`, `Description`).
    Broker(u16),
    /// 202 with this `Location` (an absolute URL elsewhere, say), nothing created.
    LocationTo(String),
    /// 404 from the Cloud Foundry router (`X-Cf-RouterError: unknown_route`, text body):
    /// Service Manager itself unreachable.
    RouterNotFound,
    /// 429 with `Retry-After: <value>`.
    RateLimited(String),
    /// The asynchronous create operation ends `failed` (Create only).
    OperationFails,
    /// The binding's `certificate` is not PEM (Create only).
    MalformedCredentials,
    /// The binding's credentials have no `clientid` (Create only).
    WithoutClientId,
    /// The binding is created, but the answer is this status (a lost answer; Create only).
    CreatedThenStatus(u16),
    /// Wait this long before answering.
    Latency(Duration),
}

/// A binding as tests see it.
#[derive(Clone, Debug)]
pub struct BindingView {
    pub id: String,
    pub name: String,
    pub instance_id: String,
    pub ready: bool,
    pub fingerprint: Option<String>,
    pub labels: BTreeMap<String, Vec<String>>,
    /// The parameters the binding was created with.
    pub parameters: Value,
}

struct Instance {
    id: String,
    kind: InstanceKind,
    client_id: String,
}

struct Binding {
    id: String,
    name: String,
    instance_id: String,
    labels: BTreeMap<String, Vec<String>>,
    parameters: Value,
    credentials: Option<Value>,
    fingerprint: Option<String>,
    /// Subject and issuer DN of the leaf (x509-parser's rendering).
    names: Option<(String, String)>,
    /// Registration deferred until an asynchronous create succeeds.
    pending_registration: Option<Registration>,
    ready: bool,
    created_at: String,
    last_operation: Value,
    seq: u64,
}

#[derive(Clone)]
enum Registration {
    Fingerprint(String, String),
    Dn(String, String, String),
}

struct Operation {
    id: String,
    kind: &'static str,
    binding_id: String,
    done_at: Instant,
    fails: bool,
    settled: Option<&'static str>,
}

#[derive(Default)]
struct State {
    clients: Vec<String>,
    instances: Vec<Instance>,
    bindings: Vec<Binding>,
    operations: Vec<Operation>,
    faults: VecDeque<(SmCall, SmFault, usize)>,
    calls: Vec<String>,
    window: Option<(Instant, u32)>,
    seq: u64,
    rsa_next: usize,
}

struct Shared {
    state: Mutex<State>,
    ca: Arc<LocalCa>,
    tokens: TokenHandle,
    trusted: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    opts: SmOptions,
    rsa_pool: Vec<rcgen::KeyPair>,
    /// This server's own base URL (`sm_url` of service-manager bindings).
    url: String,
}

/// Why the stand-in could not start.
#[derive(Debug, thiserror::Error)]
#[error("sandbox service manager: {0}")]
pub struct SmError(String);

/// A running Service Manager stand-in.
pub struct SmServer {
    /// `https://127.0.0.1:<port>`, the `sm_url` of a Service Manager service key.
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_be_bytes();
        b.copy_from_slice(&t);
    }
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl SmServer {
    /// Starts on 127.0.0.1 (any port) with a server certificate from `server_ca`. Bindings
    /// get certificates from `issuing_ca`, registered with `tokens`; provided certificates
    /// must chain to one of `trusted_roots_pem`.
    pub async fn start(
        server_ca: &LocalCa,
        issuing_ca: Arc<LocalCa>,
        tokens: TokenHandle,
        trusted_roots_pem: &[String],
        opts: SmOptions,
    ) -> Result<SmServer, SmError> {
        let e = |m: &dyn std::fmt::Display| SmError(m.to_string());
        let (chain, key) = server_ca.loopback_identity().map_err(|x| e(&x))?;
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|x| e(&x))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        for pem in trusted_roots_pem {
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(c.map_err(|x| e(&x))?).map_err(|x| e(&x))?;
            }
        }
        let trusted = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|x| e(&x))?;
        let rsa_pool = (0..opts.rsa_pool)
            .map(|_| generate_key(KeyAlg::Rsa2048))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|x| e(&x))?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|x| e(&x))?;
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().map_err(|x| e(&x))?.port()
        );
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            ca: issuing_ca,
            tokens,
            trusted,
            opts,
            rsa_pool,
            url: url.clone(),
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let task = tokio::spawn(super::serve_https(
            listener,
            acceptor,
            shared.clone(),
            |req, sh: Arc<Shared>| async move { handle(req, &sh).await },
        ));
        Ok(SmServer { url, shared, task })
    }

    /// Lets OAuth client `client_id` call the API.
    pub fn allow_client(&self, client_id: &str) {
        lock(&self.shared.state).clients.push(client_id.to_string());
    }

    /// Adds a service instance whose bindings authenticate as `client_id`; returns its id.
    pub fn add_instance(&self, kind: InstanceKind, client_id: &str) -> String {
        let id = random_id();
        lock(&self.shared.state).instances.push(Instance {
            id: id.clone(),
            kind,
            client_id: client_id.to_string(),
        });
        id
    }

    /// Every binding (ready or not), in creation order.
    pub fn bindings(&self) -> Vec<BindingView> {
        let mut s = lock(&self.shared.state);
        settle(&mut s, &self.shared);
        s.bindings
            .iter()
            .map(|b| BindingView {
                id: b.id.clone(),
                name: b.name.clone(),
                instance_id: b.instance_id.clone(),
                ready: b.ready,
                fingerprint: b.fingerprint.clone(),
                labels: b.labels.clone(),
                parameters: b.parameters.clone(),
            })
            .collect()
    }

    /// Deletes a binding behind certrot's back (as an administrator might).
    pub fn remove_binding(&self, id: &str) {
        let mut s = lock(&self.shared.state);
        if let Some(i) = s.bindings.iter().position(|b| b.id == id) {
            let b = s.bindings.remove(i);
            if let Some(fp) = b.fingerprint {
                self.shared.tokens.revoke(&fp);
            }
        }
    }

    /// Injects `fault` into the next `times` calls of kind `call`.
    pub fn inject(&self, call: SmCall, fault: SmFault, times: usize) {
        if times > 0 {
            lock(&self.shared.state)
                .faults
                .push_back((call, fault, times));
        }
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        lock(&self.shared.state).faults.clear();
    }

    /// `METHOD path` of every call received, in order (query strings included).
    pub fn calls(&self) -> Vec<String> {
        lock(&self.shared.state).calls.clone()
    }
}

/// Completes operations whose time has come.
fn settle(s: &mut State, sh: &Shared) {
    let now = Instant::now();
    let mut done = Vec::new();
    for op in s.operations.iter_mut() {
        if op.settled.is_none() && op.done_at <= now {
            op.settled = Some(if op.fails { "failed" } else { "succeeded" });
            done.push((op.kind, op.binding_id.clone(), op.fails, op.id.clone()));
        }
    }
    for (kind, id, fails, op_id) in done {
        let Some(i) = s.bindings.iter().position(|b| b.id == id) else {
            continue;
        };
        match (kind, fails) {
            ("create", false) => {
                let b = &mut s.bindings[i];
                b.ready = true;
                b.last_operation = operation_json(&op_id, "create", "succeeded", &id, None);
                if let Some(r) = b.pending_registration.take() {
                    register(&sh.tokens, &r);
                }
            }
            // A failed create stays behind, not ready, until someone deletes it (Service
            // Manager's orphan mitigation covers only broker 5xx and timeouts).
            ("create", true) => {
                let b = &mut s.bindings[i];
                b.ready = false;
                b.last_operation = operation_json(
                    &op_id,
                    "create",
                    "failed",
                    &id,
                    Some("the broker could not create the credentials"),
                );
                b.pending_registration = None;
            }
            ("delete", false) => {
                s.bindings.remove(i);
            }
            _ => {}
        }
    }
}

fn register(tokens: &TokenHandle, r: &Registration) {
    match r {
        Registration::Fingerprint(c, fp) => tokens.register(c, fp),
        Registration::Dn(c, subject, issuer) => tokens.register_dn(c, subject, issuer),
    }
}

fn operation_json(id: &str, kind: &str, state: &str, resource: &str, error: Option<&str>) -> Value {
    let mut v = json!({
        "id": id, "type": kind, "state": state, "resource_id": resource,
        "resource_type": "/v1/service_bindings", "updated_at": now_rfc3339(),
    });
    if let Some(e) = error {
        v["errors"] = json!([{"error": "BrokerError", "description": e}]);
    }
    v
}

fn reply(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn sm_error(status: u16, error: &str, description: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        json!({"error": error, "description": description}).to_string(),
    )
}

/// 502 `BrokerError` as Service Manager passes a broker's failure on: the broker's status in
/// the description, and the `broker_error` object SAP's operator reads.
fn broker_error(code: u16, message: &str) -> Response<Full<Bytes>> {
    let word = match code {
        422 => "ConcurrencyError",
        409 => "Conflict",
        _ => "BadRequest",
    };
    reply(
        502,
        json!({
            "error": "BrokerError",
            "description": format!(
                "Failed bind request: Status: {code}; ErrorMessage: {word}; Description: {message}"
            ),
            "broker_error": {"StatusCode": code, "ErrorMessage": word, "Description": message},
        })
        .to_string(),
    )
}

/// Subject and issuer DN of a chain's first certificate.
fn leaf_names(chain_pem: &str) -> Option<(String, String)> {
    let der = leaf_der(chain_pem)?;
    let (_, c) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some((c.subject().to_string(), c.issuer().to_string()))
}

/// Identity Authentication's limit of distinct certificate subjects per instance.
const IAS_MAX_SUBJECTS: usize = 20;

fn with_header(
    mut r: Response<Full<Bytes>>,
    name: &'static str,
    value: &str,
) -> Response<Full<Bytes>> {
    if let Ok(v) = hyper::header::HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
    r
}

/// Takes one use of the first fault for `call` that `pick` accepts.
fn take_fault(s: &mut State, call: SmCall, pick: impl Fn(&SmFault) -> bool) -> Option<SmFault> {
    let i = s
        .faults
        .iter()
        .position(|(c, f, _)| *c == call && pick(f))?;
    let f = s.faults[i].1.clone();
    s.faults[i].2 -= 1;
    if s.faults[i].2 == 0 {
        s.faults.remove(i);
    }
    Some(f)
}

fn query_params(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

async fn handle(req: Request<Incoming>, sh: &Shared) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let call_line = format!(
        "{method} {}",
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or(&path)
    );
    // Authentication: a bearer token from the sandbox token endpoint, for an allowed client.
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let client = bearer.and_then(|t| sh.tokens.verify_token(&t));
    {
        let mut s = lock(&sh.state);
        s.calls.push(call_line);
        if !client.as_ref().is_some_and(|c| s.clients.contains(c)) {
            return sm_error(
                401,
                "Unauthorized",
                "missing, invalid or expired bearer token",
            );
        }
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let call = match (&method, segments.as_slice()) {
        (&Method::POST, ["v1", "service_bindings"]) => SmCall::Create,
        (&Method::GET, ["v1", "service_bindings"]) => SmCall::List,
        (&Method::GET, ["v1", "service_bindings", _]) => SmCall::Get,
        (&Method::DELETE, ["v1", "service_bindings", _]) => SmCall::Delete,
        (&Method::GET, ["v1", "service_bindings", _, "operations", _]) => SmCall::Operation,
        _ => return sm_error(404, "NotFound", "no such endpoint"),
    };
    // Rate limit over the binding calls, as SM's 600/min.
    let (fault, limited) = {
        let mut s = lock(&sh.state);
        let mut limited = None;
        if let Some((max, window)) = sh.opts.rate_limit {
            let now = Instant::now();
            let (start, n) = match s.window {
                Some((start, n)) if now.duration_since(start) < window => (start, n + 1),
                _ => (now, 1),
            };
            s.window = Some((start, n));
            if n > max {
                // HTTP dates have whole seconds: round up, never tell a client to come early.
                let at = SystemTime::now()
                    + window.saturating_sub(now.duration_since(start))
                    + Duration::from_secs(1);
                limited = Some(httpdate::fmt_http_date(at));
            }
        }
        // Faults about the created binding apply to the next creation that gets that far.
        let fault = take_fault(&mut s, call, |f| {
            !matches!(
                f,
                SmFault::OperationFails
                    | SmFault::MalformedCredentials
                    | SmFault::WithoutClientId
                    | SmFault::CreatedThenStatus(_)
            )
        });
        (fault, limited)
    };
    if let Some(at) = limited {
        return with_header(
            sm_error(429, "TooManyRequests", "rate limit reached"),
            "retry-after",
            &at,
        );
    }
    match fault {
        Some(SmFault::Status(code)) => {
            return sm_error(code, "InjectedFault", &format!("injected HTTP {code}"));
        }
        Some(SmFault::Concurrent) => return concurrent_operation(),
        Some(SmFault::InstanceNotReady) => {
            return sm_error(
                422,
                "OperationInProgress",
                "creation of instance sandbox is still in progress or failed",
            );
        }
        Some(SmFault::Broker(code)) => return broker_error(code, "injected broker failure"),
        Some(SmFault::LocationTo(loc)) => return with_header(reply(202, "{}"), "location", &loc),
        Some(SmFault::RouterNotFound) => {
            let mut r = Response::new(Full::new(Bytes::from_static(
                b"404 Not Found: Requested route ('sm.sandbox') does not exist.\n",
            )));
            *r.status_mut() = hyper::StatusCode::NOT_FOUND;
            return with_header(r, "x-cf-routererror", "unknown_route");
        }
        Some(SmFault::RateLimited(v)) => {
            return with_header(
                sm_error(429, "TooManyRequests", "injected rate limit"),
                "retry-after",
                &v,
            );
        }
        Some(SmFault::Latency(d)) => tokio::time::sleep(d).await,
        Some(
            SmFault::OperationFails
            | SmFault::MalformedCredentials
            | SmFault::WithoutClientId
            | SmFault::CreatedThenStatus(_),
        )
        | None => {}
    }
    let params = query_params(&req);
    let async_mode = params
        .iter()
        .find(|(k, _)| k == "async")
        .map(|(_, v)| v == "true")
        .unwrap_or(sh.opts.async_default);
    match call {
        SmCall::Create => {
            let body = match Limited::new(req.into_body(), 256 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return sm_error(400, "BadRequest", "body too large"),
            };
            let Ok(body) = serde_json::from_slice::<Value>(&body) else {
                return sm_error(400, "BadRequest", "body is not JSON");
            };
            create(sh, &body, async_mode)
        }
        SmCall::Get => {
            let mut s = lock(&sh.state);
            settle(&mut s, sh);
            match s.bindings.iter().find(|b| b.id == segments[2]) {
                Some(b) => reply(200, binding_json(b, true).to_string()),
                None => sm_error(
                    404,
                    "NotFound",
                    &format!("binding {} not found", segments[2]),
                ),
            }
        }
        SmCall::Operation => {
            let mut s = lock(&sh.state);
            settle(&mut s, sh);
            match s
                .operations
                .iter()
                .find(|o| o.id == segments[4] && o.binding_id == segments[2])
            {
                // Once a deleted binding is gone, so is its operation: 404.
                Some(o) if o.kind == "delete" && o.settled == Some("succeeded") => {
                    sm_error(404, "NotFound", "could not find such operation")
                }
                Some(o) => {
                    let state = o.settled.unwrap_or("in progress");
                    let err = (state == "failed")
                        .then_some("the broker could not create the credentials");
                    reply(
                        200,
                        operation_json(&o.id, o.kind, state, &o.binding_id, err).to_string(),
                    )
                }
                None => sm_error(404, "NotFound", "operation not found"),
            }
        }
        SmCall::List => list(sh, &params),
        SmCall::Delete => delete(sh, segments[2], async_mode),
    }
}

fn binding_json(b: &Binding, with_credentials: bool) -> Value {
    let mut v = json!({
        "id": b.id, "name": b.name, "service_instance_id": b.instance_id,
        "labels": b.labels, "ready": b.ready, "created_at": b.created_at,
        "updated_at": b.created_at, "last_operation": b.last_operation,
        "parameters": b.parameters,
    });
    if with_credentials
        && b.ready
        && let Some(c) = &b.credentials
    {
        v["credentials"] = c.clone();
    }
    v
}

fn valid_labels(labels: &Value) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut out = BTreeMap::new();
    let Some(map) = labels.as_object() else {
        return if labels.is_null() {
            Ok(out)
        } else {
            Err("labels must be an object".into())
        };
    };
    for (k, v) in map {
        if k.is_empty()
            || k.len() > 100
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(format!("label key {k:?} is invalid"));
        }
        let vals: Vec<String> = v
            .as_array()
            .ok_or_else(|| format!("label {k:?} must be an array of strings"))?
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("label {k:?} must be an array of strings"))?;
        if vals.is_empty() || vals.iter().any(|x| x.is_empty() || x.len() > 255) {
            return Err(format!(
                "label {k:?}: values must be 1-255 characters, at least one"
            ));
        }
        out.insert(k.clone(), vals);
    }
    Ok(out)
}

/// What a binding request asks for, after validating its parameters.
enum Wanted {
    Generated {
        alg: KeyAlg,
        days: u64,
        cn: Option<String>,
    },
    Provided {
        chain_pem: String,
        pinning: bool,
    },
}

fn wanted(kind: InstanceKind, p: &Map<String, Value>) -> Result<Wanted, String> {
    let int = |v: Option<&Value>, name: &str, default: u64| -> Result<u64, String> {
        match v {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| format!("{name} must be a positive integer")),
        }
    };
    let alg = |bits: u64| match bits {
        2048 => Ok(KeyAlg::Rsa2048),
        4096 => Ok(KeyAlg::Rsa4096),
        8192 => Err("key-length 8192 is not available in the sandbox".to_string()),
        n => Err(format!("key-length {n} is not one of 2048, 4096, 8192")),
    };
    let days = |d: u64| {
        if (1..=30).contains(&d) {
            Ok(d)
        } else {
            Err(format!("validity {d} is outside 1..30 DAYS"))
        }
    };
    let vtype = |v: Option<&Value>| match v.and_then(Value::as_str) {
        None | Some("DAYS") => Ok(()),
        Some(o) => Err(format!("validity-type {o:?} is not supported (DAYS)")),
    };
    match kind {
        InstanceKind::Xsuaa | InstanceKind::ServiceManager => {
            let ct = p.get("credential-type").and_then(Value::as_str);
            if ct.is_some_and(|c| c != "x509") {
                return Err(format!(
                    "credential-type {:?} is not x509",
                    ct.unwrap_or("")
                ));
            }
            let x = p
                .get("x509")
                .and_then(Value::as_object)
                .ok_or("parameters need an x509 object")?;
            if let Some(cert) = x.get("certificate") {
                let chain_pem = cert.as_str().ok_or("x509.certificate must be a string")?;
                let pinning = x
                    .get("certificate-pinning")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                return Ok(Wanted::Provided {
                    chain_pem: chain_pem.to_string(),
                    pinning,
                });
            }
            vtype(x.get("validity-type"))?;
            Ok(Wanted::Generated {
                alg: alg(int(x.get("key-length"), "x509.key-length", 2048)?)?,
                days: days(int(x.get("validity"), "x509.validity", 7)?)?,
                cn: None,
            })
        }
        InstanceKind::Identity => match p.get("credential-type").and_then(Value::as_str) {
            Some("X509_GENERATED") => {
                vtype(p.get("validity-type"))?;
                let app = p.get("app-identifier").and_then(Value::as_str);
                if app.is_some_and(|a| a.is_empty() || a.len() > 20) {
                    return Err("app-identifier must be 1-20 characters".into());
                }
                let bits = int(p.get("key-length"), "key-length", 2048)?;
                if bits == 8192 {
                    return Err("key-length must be 2048 or 4096".into());
                }
                Ok(Wanted::Generated {
                    alg: alg(bits)?,
                    days: days(int(p.get("validity"), "validity", 30)?)?,
                    cn: app.map(str::to_string),
                })
            }
            Some("X509_PROVIDED") => Ok(Wanted::Provided {
                chain_pem: p
                    .get("certificate")
                    .and_then(Value::as_str)
                    .ok_or("X509_PROVIDED needs certificate")?
                    .to_string(),
                pinning: true,
            }),
            other => Err(format!(
                "credential-type {:?} is not X509_GENERATED or X509_PROVIDED",
                other.unwrap_or("")
            )),
        },
    }
}

fn create(sh: &Shared, body: &Value, async_mode: bool) -> Response<Full<Bytes>> {
    let name = body["name"].as_str().unwrap_or_default().to_string();
    let instance_id = body["service_instance_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if name.is_empty() || instance_id.is_empty() {
        return sm_error(
            400,
            "BadRequest",
            "name and service_instance_id are required",
        );
    }
    let labels = match valid_labels(&body["labels"]) {
        Ok(l) => l,
        Err(m) => return sm_error(400, "BadRequest", &m),
    };
    let params = body["parameters"].as_object().cloned().unwrap_or_default();
    let mut s = lock(&sh.state);
    settle(&mut s, sh);
    let Some(inst) = s.instances.iter().find(|i| i.id == instance_id) else {
        return sm_error(
            404,
            "NotFound",
            &format!("service instance {instance_id} not found"),
        );
    };
    let (kind, client_id) = (inst.kind, inst.client_id.clone());
    let on_instance = s.bindings.iter().filter(|b| b.instance_id == instance_id);
    if on_instance.clone().any(|b| b.name == name) {
        return sm_error(
            409,
            "Conflict",
            &format!("binding with name {name} already exists"),
        );
    }
    if on_instance.count() >= 1000 {
        return sm_error(
            400,
            "BadRequest",
            "the service instance has reached the limit of 1000 bindings",
        );
    }
    let want = match wanted(kind, &params) {
        Ok(w) => w,
        Err(m) => return sm_error(400, "BadRequest", &format!("invalid parameters: {m}")),
    };
    let fault = take_fault(&mut s, SmCall::Create, |f| {
        matches!(
            f,
            SmFault::OperationFails
                | SmFault::MalformedCredentials
                | SmFault::WithoutClientId
                | SmFault::CreatedThenStatus(_)
        )
    });
    let id = random_id();
    let unpinned =
        matches!(want, Wanted::Provided { pinning: false, .. }) && kind == InstanceKind::Xsuaa;
    let provided_chain = match &want {
        Wanted::Provided { chain_pem, .. } => Some(chain_pem.clone()),
        Wanted::Generated { .. } => None,
    };
    let (mut credentials, fingerprint, registration) = match want {
        Wanted::Generated { alg, days, cn } => {
            let now = time::OffsetDateTime::now_utc();
            let lifetime = time::Duration::seconds((days * sh.opts.seconds_per_day) as i64);
            // A little clock-skew allowance, never a noticeable share of a short lifetime.
            let backdate = (lifetime / 10_i32).min(time::Duration::seconds(5));
            let cn = cn.unwrap_or_else(|| id.clone());
            let alg = sh.opts.key_override.unwrap_or(alg);
            let issued = if alg == KeyAlg::Rsa2048 && !sh.rsa_pool.is_empty() {
                s.rsa_next = (s.rsa_next + 1) % sh.rsa_pool.len();
                sh.ca.issue_for_key(
                    &cn,
                    &sh.rsa_pool[s.rsa_next],
                    now - backdate,
                    now + lifetime,
                )
            } else {
                sh.ca.issue(&cn, alg, now - backdate, now + lifetime)
            };
            let Ok(issued) = issued else {
                return sm_error(500, "InternalError", "the sandbox CA failed");
            };
            let fp = leaf_fingerprint(&issued.chain_pem).unwrap_or_default();
            let creds = json!({
                "clientid": client_id, "certificate": issued.chain_pem,
                "key": issued.key_pem.as_str(),
            });
            (
                creds,
                Some(fp.clone()),
                Registration::Fingerprint(client_id.clone(), fp),
            )
        }
        Wanted::Provided { chain_pem, pinning } => {
            let ders: Vec<CertificateDer<'static>> =
                match CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(d) if !d.is_empty() => d,
                    _ => return sm_error(400, "BadRequest", "certificate is not PEM"),
                };
            if let Err(e) = sh
                .trusted
                .verify_client_cert(&ders[0], &ders[1..], UnixTime::now())
            {
                return sm_error(
                    400,
                    "BadRequest",
                    &format!("certificate is not trusted: {e}"),
                );
            }
            let fp = super::fingerprint(&ders[0]);
            if s.bindings
                .iter()
                .any(|b| b.instance_id == instance_id && b.fingerprint.as_deref() == Some(&fp))
            {
                return sm_error(
                    400,
                    "BadRequest",
                    "this certificate is already used on the instance",
                );
            }
            let reg = if pinning {
                Registration::Fingerprint(client_id.clone(), fp.clone())
            } else {
                let Ok((_, c)) = x509_parser::parse_x509_certificate(&ders[0]) else {
                    return sm_error(400, "BadRequest", "certificate does not parse");
                };
                Registration::Dn(
                    client_id.clone(),
                    c.subject().to_string(),
                    c.issuer().to_string(),
                )
            };
            (json!({"clientid": client_id}), Some(fp), reg)
        }
    };
    let chain = credentials
        .get("certificate")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or(provided_chain);
    let names = chain.as_deref().and_then(leaf_names);
    let live = || s.bindings.iter().filter(|b| b.instance_id == instance_id);
    // XSUAA, self-managed with pinning off: subject + issuer DN unique on the instance.
    if unpinned
        && let Some(n) = &names
        && live().any(|b| b.names.as_ref() == Some(n))
    {
        return broker_error(
            400,
            "The combination of subject and issuer DN must be unique among the bindings of the instance (certificate-pinning: false)",
        );
    }
    // Identity Authentication: at most 20 distinct certificate subjects per instance.
    if kind == InstanceKind::Identity
        && let Some((subject, _)) = &names
    {
        let mut subjects: std::collections::BTreeSet<&str> = live()
            .filter_map(|b| b.names.as_ref().map(|(s, _)| s.as_str()))
            .collect();
        subjects.insert(subject);
        if subjects.len() > IAS_MAX_SUBJECTS {
            return broker_error(
                400,
                "You can have a maximum of 20 different certificate subject DNs per service instance",
            );
        }
    }
    if kind == InstanceKind::ServiceManager {
        merge(&mut credentials, json!({"sm_url": sh.url}));
    }
    match kind {
        InstanceKind::Xsuaa | InstanceKind::ServiceManager => {
            let extra = json!({
                "certurl": sh.tokens.cert_base(), "url": sh.tokens.plain_base(),
                "uaadomain": "127.0.0.1", "credential-type": "x509",
                "xsappname": format!("{client_id}-app"), "identityzone": "sandbox",
                "certificate-pinning": true,
            });
            merge(&mut credentials, extra);
        }
        InstanceKind::Identity => {
            let extra = json!({
                "url": sh.tokens.ias_base(), "credential-type": "X509_GENERATED",
                "app_tid": "sandbox-tenant", "domains": ["127.0.0.1"],
            });
            merge(&mut credentials, extra);
        }
    }
    if fault == Some(SmFault::WithoutClientId)
        && let Some(c) = credentials.as_object_mut()
    {
        c.remove("clientid");
    }
    if fault == Some(SmFault::MalformedCredentials) {
        credentials["certificate"] = json!("not a certificate");
    }
    s.seq += 1;
    let seq = s.seq;
    let created_at = now_rfc3339();
    if async_mode {
        let op_id = random_id();
        s.operations.push(Operation {
            id: op_id.clone(),
            kind: "create",
            binding_id: id.clone(),
            done_at: Instant::now() + sh.opts.operation_delay,
            fails: fault == Some(SmFault::OperationFails),
            settled: None,
        });
        s.bindings.push(Binding {
            id: id.clone(),
            name,
            instance_id,
            labels,
            parameters: Value::Object(params),
            credentials: Some(credentials),
            fingerprint,
            names: names.clone(),
            pending_registration: Some(registration),
            ready: false,
            created_at,
            last_operation: operation_json(&op_id, "create", "in progress", &id, None),
            seq,
        });
        with_header(
            reply(202, "{}"),
            "location",
            &format!("/v1/service_bindings/{id}/operations/{op_id}"),
        )
    } else {
        register(&sh.tokens, &registration);
        let b = Binding {
            id: id.clone(),
            name,
            instance_id,
            labels,
            parameters: Value::Object(params),
            credentials: Some(credentials),
            fingerprint,
            names,
            pending_registration: None,
            ready: true,
            created_at,
            last_operation: operation_json(&random_id(), "create", "succeeded", &id, None),
            seq,
        };
        let body = binding_json(&b, true).to_string();
        s.bindings.push(b);
        if let Some(SmFault::CreatedThenStatus(code)) = fault {
            return sm_error(code, "InjectedFault", "created, but the answer was lost");
        }
        reply(201, body)
    }
}

/// 422 `ConcurrentOperationInProgress` while a deletion of this very binding is unfinished.
/// Concurrency is per resource: another binding's operation blocks nothing, and a delete
/// may overtake its binding's running create.
fn deletion_running(s: &State, binding_id: &str) -> Option<Response<Full<Bytes>>> {
    s.operations
        .iter()
        .any(|o| o.binding_id == binding_id && o.kind == "delete" && o.settled.is_none())
        .then(|| {
            sm_error(
                422,
                "ConcurrentOperationInProgress",
                "Deletion is currently in progress for this resource",
            )
        })
}

fn concurrent_operation() -> Response<Full<Bytes>> {
    sm_error(
        422,
        "ConcurrentOperationInProgress",
        "Another concurrent operation in progress for this resource",
    )
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), extra) {
        for (k, v) in b {
            a.entry(k).or_insert(v);
        }
    }
}

fn leaf_fingerprint(chain_pem: &str) -> Option<String> {
    Some(super::fingerprint(&leaf_der(chain_pem)?))
}

/// The DER of a chain's first certificate.
fn leaf_der(chain_pem: &str) -> Option<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()?
        .ok()
}

fn delete(sh: &Shared, id: &str, async_mode: bool) -> Response<Full<Bytes>> {
    let mut s = lock(&sh.state);
    settle(&mut s, sh);
    let Some(i) = s.bindings.iter().position(|b| b.id == id) else {
        return sm_error(404, "NotFound", &format!("binding {id} not found"));
    };
    if let Some(busy) = deletion_running(&s, id) {
        return busy;
    }
    // Revocation is immediate: the token endpoint stops accepting the certificate now.
    if let Some(fp) = &s.bindings[i].fingerprint {
        sh.tokens.revoke(fp);
    }
    if async_mode {
        let op_id = random_id();
        s.operations.push(Operation {
            id: op_id.clone(),
            kind: "delete",
            binding_id: id.to_string(),
            done_at: Instant::now() + sh.opts.operation_delay,
            fails: false,
            settled: None,
        });
        with_header(
            reply(202, "{}"),
            "location",
            &format!("/v1/service_bindings/{id}/operations/{op_id}"),
        )
    } else {
        s.bindings.remove(i);
        reply(200, "{}")
    }
}

/// One condition of a label or field query.
#[derive(Debug, PartialEq)]
struct Cond {
    key: String,
    op: String,
    values: Vec<String>,
}

/// Parses `key op value [and key op value]…`, values `'quoted'` (with `''` for a quote) or
/// a parenthesised list of them for `in` / `notin`.
fn parse_query(q: &str) -> Result<Vec<Cond>, String> {
    let mut out = Vec::new();
    let mut rest = q.trim();
    loop {
        let (key, r) = rest
            .split_once(' ')
            .ok_or_else(|| format!("query {q:?}: expected `key op value`"))?;
        let r = r.trim_start();
        let (op, r) = r
            .split_once(' ')
            .ok_or_else(|| format!("query {q:?}: expected an operator after {key}"))?;
        if !["eq", "ne", "in", "notin"].contains(&op) {
            return Err(format!("query {q:?}: unsupported operator {op:?}"));
        }
        let mut r = r.trim_start();
        let mut values = Vec::new();
        let list = r.starts_with('(');
        if list {
            r = &r[1..];
        }
        loop {
            r = r.trim_start();
            let (v, after) =
                quoted(r).ok_or_else(|| format!("query {q:?}: expected a quoted value"))?;
            values.push(v);
            r = after.trim_start();
            if list && r.starts_with(',') {
                r = &r[1..];
                continue;
            }
            if list {
                r = r
                    .strip_prefix(')')
                    .ok_or_else(|| format!("query {q:?}: unclosed list"))?;
            }
            break;
        }
        out.push(Cond {
            key: key.to_string(),
            op: op.to_string(),
            values,
        });
        let r = r.trim_start();
        if r.is_empty() {
            return Ok(out);
        }
        rest = r
            .strip_prefix("and ")
            .ok_or_else(|| format!("query {q:?}: expected `and`"))?
            .trim_start();
    }
}

fn quoted(s: &str) -> Option<(String, &str)> {
    let mut chars = s.strip_prefix('\'')?.char_indices();
    let body = s.get(1..)?;
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if body[i + 1..].starts_with('\'') {
                out.push('\'');
                chars.next();
                continue;
            }
            return Some((out, &body[i + 1..]));
        }
        out.push(c);
    }
    None
}

fn matches(conds: &[Cond], get: impl Fn(&str) -> Vec<String>) -> bool {
    conds.iter().all(|c| {
        let have = get(&c.key);
        let any = c.values.iter().any(|v| have.contains(v));
        match c.op.as_str() {
            "eq" | "in" => any,
            _ => !any,
        }
    })
}

fn list(sh: &Shared, params: &[(String, String)]) -> Response<Full<Bytes>> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let parse = |k: &str| get(k).map(parse_query).transpose();
    let (labels, fields) = match (parse("labelQuery"), parse("fieldQuery")) {
        (Ok(l), Ok(f)) => (l.unwrap_or_default(), f.unwrap_or_default()),
        (Err(m), _) | (_, Err(m)) => return sm_error(400, "BadRequest", &m),
    };
    let max = get("max_items")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, 100);
    let after: u64 = get("token").and_then(|t| t.parse().ok()).unwrap_or(0);
    let mut s = lock(&sh.state);
    settle(&mut s, sh);
    let mut hits = s.bindings.iter().filter(|b| {
        b.seq > after
            && matches(&labels, |k| b.labels.get(k).cloned().unwrap_or_default())
            && matches(&fields, |k| match k {
                "id" => vec![b.id.clone()],
                "name" => vec![b.name.clone()],
                "service_instance_id" => vec![b.instance_id.clone()],
                _ => Vec::new(),
            })
    });
    let page: Vec<&Binding> = hits.by_ref().take(max).collect();
    let more = hits.next().is_some();
    let mut body = json!({
        "num_items": page.len(),
        "items": page.iter().map(|b| binding_json(b, false)).collect::<Vec<_>>(),
    });
    if more && let Some(last) = page.last() {
        body["token"] = json!(last.seq.to_string());
    }
    reply(200, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_with_quotes_lists_and_and() {
        let q =
            parse_query("managed_by eq 'certrot' and certrot_credential in ('o''brien', 'x y')")
                .unwrap();
        assert_eq!(
            q,
            vec![
                Cond {
                    key: "managed_by".into(),
                    op: "eq".into(),
                    values: vec!["certrot".into()]
                },
                Cond {
                    key: "certrot_credential".into(),
                    op: "in".into(),
                    values: vec!["o'brien".into(), "x y".into()]
                },
            ]
        );
        assert!(parse_query("a eq b").is_err());
        assert!(parse_query("a like 'b'").is_err());
        assert!(parse_query("a in ('b'").is_err());
        assert!(parse_query("a eq 'b' or c eq 'd'").is_err());
        let labels = |k: &str| match k {
            "managed_by" => vec!["certrot".to_string()],
            _ => vec![],
        };
        assert!(matches(
            &parse_query("managed_by eq 'certrot'").unwrap(),
            labels
        ));
        assert!(!matches(
            &parse_query("managed_by ne 'certrot'").unwrap(),
            labels
        ));
        assert!(matches(&parse_query("other notin ('a')").unwrap(), labels));
    }

    #[test]
    fn parameters_are_validated_like_the_brokers() {
        let p = |v: Value| v.as_object().cloned().unwrap();
        assert!(matches!(
            wanted(
                InstanceKind::Xsuaa,
                &p(
                    json!({"credential-type": "x509", "x509": {"key-length": 2048, "validity": 7, "validity-type": "DAYS"}})
                )
            ),
            Ok(Wanted::Generated {
                alg: KeyAlg::Rsa2048,
                days: 7,
                ..
            })
        ));
        for bad in [
            json!({"x509": {"validity": 31}}),
            json!({"x509": {"key-length": 1024}}),
            json!({"x509": {"validity-type": "MONTHS"}}),
            json!({"credential-type": "binding-secret", "x509": {}}),
            json!({}),
        ] {
            assert!(
                wanted(InstanceKind::Xsuaa, &p(bad.clone())).is_err(),
                "{bad}"
            );
        }
        assert!(matches!(
            wanted(
                InstanceKind::Identity,
                &p(json!({"credential-type": "X509_GENERATED", "app-identifier": "orders"}))
            ),
            Ok(Wanted::Generated {
                days: 30,
                cn: Some(_),
                ..
            })
        ));
        assert!(
            wanted(
                InstanceKind::Identity,
                &p(json!({"credential-type": "SECRET"}))
            )
            .is_err()
        );
        assert!(wanted(InstanceKind::Identity, &p(json!({"credential-type": "X509_GENERATED", "app-identifier": "a-very-long-identifier-over-20"}))).is_err());
    }
}
