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

mod create;
mod params;
mod query;
mod routes;
mod spec;

use create::*;
use params::*;
use query::*;
use routes::*;

/// What kind of service an instance is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceKind {
    Xsuaa,
    Identity,
    /// A `service-manager` instance (plan `subaccount-admin`): XSUAA-style x509 bindings
    /// whose credentials also carry `sm_url`, i.e. Service Manager access.
    ServiceManager,
    /// SAP Cloud Logging: bindings carry `ingest-mtls-endpoint` (host, no scheme),
    /// `ingest-mtls-cert`, `ingest-mtls-key` and `server-ca`; `ingest.certValidityDays`
    /// (1 to 180, default 90); deleting a binding does not revoke its certificate.
    CloudLogging,
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
    /// Port of the API on 127.0.0.1 (0 = any free one).
    pub port: u16,
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
            port: 0,
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
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port))
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
            let revokes = s
                .instances
                .iter()
                .find(|x| x.id == b.instance_id)
                .is_none_or(|x| x.kind != InstanceKind::CloudLogging);
            if let Some(fp) = b.fingerprint.filter(|_| revokes) {
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
