//! A local stand-in for the parts of the Kubernetes API server certrot's Secret target uses,
//! over TLS on 127.0.0.1 (rustls + hyper), with the API's semantics: Secrets
//! (`/api/v1/namespaces/<ns>/secrets[/<name>]`) and Leases
//! (`/apis/coordination.k8s.io/v1/namespaces/<ns>/leases[/<name>]`) — GET, POST (create),
//! PUT (replace; a `metadata.resourceVersion` that is not the current one → 409 Conflict),
//! PATCH (`application/merge-patch+json`, same precondition when the patch names a
//! resourceVersion), DELETE. `resourceVersion` is one counter over all objects, increased by
//! every write; `uid` and `creationTimestamp` are assigned on create; names must be DNS-1123
//! subdomains (else 422 Invalid); Secret `data` values must be base64 (else 400); errors are
//! `Status` objects shaped like the API server's. Requests need `Authorization: Bearer
//! <token>` (else 401). Tests can make the next writes conflict, as a concurrent writer would.

use super::ca::LocalCa;
use base64::Engine as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Default)]
struct State {
    /// (kind, namespace, name) → object.
    objects: BTreeMap<(String, String, String), Value>,
    resource_version: u64,
    /// Writes still to be answered with 409 Conflict.
    conflicts: usize,
    /// Reads still to be answered with this body (status 200) instead of the object.
    odd_reads: (usize, String),
    /// Object whose next replace that changes its `data` is applied, then answered with 500
    /// (an answer lost on the way back).
    lose_answer: Option<String>,
    /// `METHOD path` of every request, in order.
    calls: Vec<String>,
}

/// Why the stand-in could not start.
#[derive(Debug, thiserror::Error)]
#[error("sandbox kubernetes API: {0}")]
pub struct KubeError(String);

/// A running Kubernetes API stand-in.
pub struct KubeServer {
    /// `https://127.0.0.1:<port>`
    pub url: String,
    token: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KubeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `Status` bodies as the API server sends them.
fn status(
    code: u16,
    reason: &str,
    message: String,
    kind: &str,
    name: &str,
) -> Response<Full<Bytes>> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason,
        "details": {"name": name, "kind": kind}, "code": code,
    });
    reply(code, body)
}

fn reply(code: u16, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn random_uid() -> String {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
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

/// JSON merge patch (RFC 7386).
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl KubeServer {
    /// Starts on 127.0.0.1 (any port) with a server certificate from `ca`, accepting
    /// requests that carry `token`.
    pub async fn start(ca: &LocalCa, token: &str) -> Result<KubeServer, KubeError> {
        KubeServer::start_on(ca, token, 0).await
    }

    /// Like [`KubeServer::start`], on `port` of 127.0.0.1 (0 = any free one).
    pub async fn start_on(ca: &LocalCa, token: &str, port: u16) -> Result<KubeServer, KubeError> {
        let e = |m: &dyn std::fmt::Display| KubeError(m.to_string());
        let (chain, key) = ca.loopback_identity().map_err(|x| e(&x))?;
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|x| e(&x))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|x| e(&x))?;
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().map_err(|x| e(&x))?.port()
        );
        let state = Arc::new(Mutex::new(State::default()));
        let ctx = Arc::new((state.clone(), token.to_string()));
        let task = tokio::spawn(super::serve_https(
            listener,
            acceptor,
            ctx,
            |req, ctx: Arc<(Arc<Mutex<State>>, String)>| async move {
                handle(req, &ctx.0, &ctx.1).await
            },
        ));
        Ok(KubeServer {
            url,
            token: token.to_string(),
            state,
            task,
        })
    }

    /// A kubeconfig for this server: its CA (`ca_pem`, the CA it was started with), its
    /// token, and `namespace` as the context's default.
    pub fn kubeconfig(&self, ca_pem: &str, namespace: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\n\
             users:\n- name: certrot\n  user:\n    token: {}\n\
             contexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: certrot\n    namespace: {namespace}\n\
             current-context: sandbox\n",
            self.url, self.token
        )
    }

    /// Answers the next `n` writes with 409 Conflict (as if another writer got there first,
    /// which also bumps the object's resourceVersion).
    pub fn conflict_next_writes(&self, n: usize) {
        lock(&self.state).conflicts = n;
    }

    /// The object, if it exists (`kind` = `secrets` or `leases`).
    pub fn object(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        lock(&self.state)
            .objects
            .get(&(kind.to_string(), namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Merge-patches an object directly, as another writer would (a new resourceVersion).
    pub fn patch_object(&self, kind: &str, namespace: &str, name: &str, patch: &Value) -> bool {
        let mut s = lock(&self.state);
        s.resource_version += 1;
        let rv = s.resource_version.to_string();
        let key = (kind.to_string(), namespace.to_string(), name.to_string());
        let Some(o) = s.objects.get_mut(&key) else {
            return false;
        };
        merge_patch(o, patch);
        o["metadata"]["resourceVersion"] = json!(rv);
        true
    }

    /// Applies the next replace of object `name` that changes its `data` but answers it
    /// with 500 Internal Error, as when the answer is lost after etcd stored the write.
    pub fn lose_answer_to_data_write(&self, name: &str) {
        lock(&self.state).lose_answer = Some(name.to_string());
    }

    /// Answers the next `n` reads with `body` and status 200 (a misbehaving server or
    /// proxy: an oversized object, text that is not JSON).
    pub fn answer_next_reads(&self, n: usize, body: &str) {
        lock(&self.state).odd_reads = (n, body.to_string());
    }

    /// `METHOD path` of every request so far.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.state).calls.clone()
    }
}

async fn handle(req: Request<Incoming>, st: &Mutex<State>, token: &str) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    lock(st).calls.push(format!("{method} {path}"));
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == token);
    if !authorized {
        return status(401, "Unauthorized", "Unauthorized".into(), "", "");
    }
    if method == Method::GET {
        let mut s = lock(st);
        if s.odd_reads.0 > 0 {
            s.odd_reads.0 -= 1;
            let mut r = Response::new(Full::new(Bytes::from(s.odd_reads.1.clone())));
            r.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/json"),
            );
            return r;
        }
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (kind, ns, name) = match parts.as_slice() {
        ["api", "v1", "namespaces", ns, "secrets"] => ("secrets", *ns, None),
        ["api", "v1", "namespaces", ns, "secrets", name] => ("secrets", *ns, Some(*name)),
        [
            "apis",
            "coordination.k8s.io",
            "v1",
            "namespaces",
            ns,
            "leases",
        ] => ("leases", *ns, None),
        [
            "apis",
            "coordination.k8s.io",
            "v1",
            "namespaces",
            ns,
            "leases",
            name,
        ] => ("leases", *ns, Some(*name)),
        _ => {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource".into(),
                "",
                "",
            );
        }
    };
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match Limited::new(req.into_body(), 3 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return status(
                413,
                "RequestEntityTooLarge",
                "request entity too large".into(),
                kind,
                name.unwrap_or(""),
            );
        }
    };
    let parsed = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => v,
            Err(e) => {
                return status(
                    400,
                    "BadRequest",
                    format!("the body is not JSON: {e}"),
                    kind,
                    name.unwrap_or(""),
                );
            }
        }
    };
    let mut s = lock(st);
    let key = |n: &str| (kind.to_string(), ns.to_string(), n.to_string());
    let not_found = |n: &str| {
        status(
            404,
            "NotFound",
            format!("{kind} \"{n}\" not found"),
            kind,
            n,
        )
    };
    match (&method, name) {
        (&Method::GET, Some(n)) => match s.objects.get(&key(n)) {
            Some(o) => reply(200, o.clone()),
            None => not_found(n),
        },
        (&Method::GET, None) => {
            let items: Vec<Value> = s
                .objects
                .iter()
                .filter(|((k, n, _), _)| k == kind && n == ns)
                .map(|(_, o)| o.clone())
                .collect();
            reply(
                200,
                json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": s.resource_version.to_string()}, "items": items}),
            )
        }
        (&Method::POST, None) => {
            let n = parsed["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if let Err(r) = validate(kind, &n, &parsed) {
                return *r;
            }
            if s.objects.contains_key(&key(&n)) {
                return status(
                    409,
                    "AlreadyExists",
                    format!("{kind} \"{n}\" already exists"),
                    kind,
                    &n,
                );
            }
            let mut o = parsed;
            s.resource_version += 1;
            let meta = o["metadata"]
                .as_object_mut()
                .map(std::mem::take)
                .unwrap_or_default();
            let mut meta: Map<String, Value> = meta;
            meta.insert("namespace".into(), json!(ns));
            meta.insert("uid".into(), json!(random_uid()));
            meta.insert(
                "resourceVersion".into(),
                json!(s.resource_version.to_string()),
            );
            meta.insert("creationTimestamp".into(), json!(now()));
            o["metadata"] = Value::Object(meta);
            s.objects.insert(key(&n), o.clone());
            reply(201, o)
        }
        (&Method::PUT | &Method::PATCH, Some(n)) => {
            let Some(current) = s.objects.get(&key(n)).cloned() else {
                return not_found(n);
            };
            let current_rv = current["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if s.conflicts > 0 {
                s.conflicts -= 1;
                // Another writer got there first.
                s.resource_version += 1;
                let rv = s.resource_version.to_string();
                if let Some(o) = s.objects.get_mut(&key(n)) {
                    o["metadata"]["resourceVersion"] = json!(rv);
                }
                return conflict(kind, n);
            }
            let asked_rv = parsed["metadata"]["resourceVersion"].as_str();
            if method == Method::PUT && asked_rv.is_none() {
                return status(
                    422,
                    "Invalid",
                    format!(
                        "{kind} \"{n}\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
                    ),
                    kind,
                    n,
                );
            }
            if asked_rv.is_some_and(|rv| rv != current_rv) {
                return conflict(kind, n);
            }
            let mut o = if method == Method::PUT {
                if !content_type.starts_with("application/json") && !content_type.is_empty() {
                    return status(
                        415,
                        "UnsupportedMediaType",
                        format!("the body of the request was in an unknown format: {content_type}"),
                        kind,
                        n,
                    );
                }
                parsed
            } else {
                if !content_type.starts_with("application/merge-patch+json") {
                    return status(
                        415,
                        "UnsupportedMediaType",
                        format!(
                            "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json (got {content_type:?})"
                        ),
                        kind,
                        n,
                    );
                }
                let mut o = current.clone();
                merge_patch(&mut o, &parsed);
                o
            };
            if o["metadata"]["name"].as_str() != Some(n) {
                return status(
                    400,
                    "BadRequest",
                    format!(
                        "the name of the object ({:?}) does not match the name on the URL ({n:?})",
                        o["metadata"]["name"]
                    ),
                    kind,
                    n,
                );
            }
            if let Err(r) = validate(kind, n, &o) {
                return *r;
            }
            s.resource_version += 1;
            for k in ["uid", "creationTimestamp", "namespace"] {
                o["metadata"][k] = current["metadata"][k].clone();
            }
            o["metadata"]["resourceVersion"] = json!(s.resource_version.to_string());
            s.objects.insert(key(n), o.clone());
            if s.lose_answer.as_deref() == Some(n) && o["data"] != current["data"] {
                s.lose_answer = None;
                return status(
                    500,
                    "InternalError",
                    "Internal error occurred: etcdserver: request timed out".into(),
                    kind,
                    n,
                );
            }
            reply(200, o)
        }
        (&Method::DELETE, Some(n)) => match s.objects.remove(&key(n)) {
            Some(_) => {
                s.resource_version += 1;
                reply(
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {"name": n, "kind": kind}}),
                )
            }
            None => not_found(n),
        },
        _ => status(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported here"),
            kind,
            name.unwrap_or(""),
        ),
    }
}

fn conflict(kind: &str, n: &str) -> Response<Full<Bytes>> {
    status(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {kind} \"{n}\": the object has been modified; please apply your changes to the latest version and try again"
        ),
        kind,
        n,
    )
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Name and (for Secrets) base64 data, as the API server validates them.
fn validate(kind: &str, name: &str, o: &Value) -> Result<(), Box<Response<Full<Bytes>>>> {
    if !crate::is_dns1123_subdomain(name) {
        return Err(Box::new(status(
            422,
            "Invalid",
            format!(
                "{kind} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
            kind,
            name,
        )));
    }
    if kind == "secrets"
        && let Some(data) = o.get("data").and_then(Value::as_object)
    {
        for (k, v) in data {
            let ok = v
                .as_str()
                .is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok());
            if !ok {
                return Err(Box::new(status(
                    400,
                    "BadRequest",
                    format!(
                        "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at key {k:?}"
                    ),
                    kind,
                    name,
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_merge_patch() {
        assert!(crate::is_dns1123_subdomain("orders-cert"));
        assert!(crate::is_dns1123_subdomain("a.b-c"));
        for bad in ["", "Orders", "-a", "a-", "a_b", &"a".repeat(254)] {
            assert!(!crate::is_dns1123_subdomain(bad), "{bad}");
        }
        let mut o = json!({"metadata": {"name": "x", "annotations": {"a": "1", "b": "2"}}, "data": {"k": "dg=="}});
        merge_patch(
            &mut o,
            &json!({"metadata": {"annotations": {"a": null, "c": "3"}}, "data": {"k": "dw=="}}),
        );
        assert_eq!(
            o,
            json!({"metadata": {"name": "x", "annotations": {"b": "2", "c": "3"}}, "data": {"k": "dw=="}})
        );
    }
}
