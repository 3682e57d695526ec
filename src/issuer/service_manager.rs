//! The SAP Service Manager API client: access from a Service Manager service key (secret or
//! x509 flavour), a cached bearer token (refreshed shortly before `expires_in`, and once on a
//! 401), and the binding calls certrot needs — create (201, or 202 + `Location` polled until
//! the operation ends), get, list (label and field queries, paging), delete (202 polled; 404
//! means already gone).
//!
//! Every call has connect and total timeouts and a response size limit. 429 (`Retry-After`
//! as seconds or HTTP date), 422 `ConcurrentOperation`, 5xx, timeouts and connection
//! failures are retried with bounded backoff; SM's `{"error","description"}` bodies are
//! carried into the error text. Secrets (client secret, private key, bearer token) never
//! appear in errors or `Debug` output.

use crate::generation::Generation;
use crate::net::{Limits, ServerTrust, classify_transport, http_client, read_limited_body};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

/// Why a Service Manager call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmErrorKind {
    /// The service key is unusable (missing fields, bad PEM).
    AccessKey,
    /// No token for the Service Manager client, or SM refused the token.
    Auth,
    NotFound,
    Conflict,
    /// 422 `ConcurrentOperation`, still after the retries.
    Concurrent,
    RateLimited,
    /// 400 and other client errors: SM refused the request.
    Rejected,
    ServerError,
    Timeout,
    Connect,
    /// A response certrot cannot use (not JSON, missing fields, oversize).
    BadResponse,
    /// The asynchronous operation ended `failed`, or did not end before the deadline.
    OperationFailed,
}

impl SmErrorKind {
    /// Stable label (logs, metrics, CLI summary).
    pub fn label(self) -> &'static str {
        match self {
            SmErrorKind::AccessKey => "sm-access-key",
            SmErrorKind::Auth => "sm-unauthorized",
            SmErrorKind::NotFound => "sm-not-found",
            SmErrorKind::Conflict => "sm-conflict",
            SmErrorKind::Concurrent => "sm-concurrent-operation",
            SmErrorKind::RateLimited => "sm-rate-limited",
            SmErrorKind::Rejected => "sm-rejected",
            SmErrorKind::ServerError => "sm-server-error",
            SmErrorKind::Timeout => "sm-timeout",
            SmErrorKind::Connect => "sm-connect",
            SmErrorKind::BadResponse => "sm-bad-response",
            SmErrorKind::OperationFailed => "sm-operation-failed",
        }
    }

    fn retryable(self) -> bool {
        matches!(
            self,
            SmErrorKind::Concurrent
                | SmErrorKind::RateLimited
                | SmErrorKind::ServerError
                | SmErrorKind::Timeout
                | SmErrorKind::Connect
        )
    }
}

/// A failed Service Manager call: kind, the URL (never a secret), and a plain message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} ({}): {message}", kind.label(), url)]
pub struct SmError {
    pub kind: SmErrorKind,
    pub url: String,
    pub message: String,
}

fn err(kind: SmErrorKind, url: &str, message: impl Into<String>) -> SmError {
    SmError {
        kind,
        url: url.to_string(),
        message: message.into(),
    }
}

/// How the Service Manager client proves itself to the token endpoint.
pub enum SmAuth {
    /// `clientsecret`: `POST <url>/oauth/token` with HTTP Basic.
    Secret { url: String, secret: SecretString },
    /// `certificate` + `key`: `POST <certurl>/oauth/token` over mTLS.
    X509 {
        certurl: String,
        generation: Box<Generation>,
    },
}

/// Access to one Service Manager: who to be and where to go.
pub struct SmAccess {
    pub client_id: String,
    pub sm_url: String,
    pub auth: SmAuth,
}

impl fmt::Debug for SmAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flavour = match &self.auth {
            SmAuth::Secret { url, .. } => format!("secret (token from {url}, secret redacted)"),
            SmAuth::X509 { certurl, .. } => format!("x509 (token from {certurl}, key redacted)"),
        };
        f.debug_struct("SmAccess")
            .field("client_id", &self.client_id)
            .field("sm_url", &self.sm_url)
            .field("auth", &flavour)
            .finish()
    }
}

impl SmAccess {
    /// Reads a Service Manager service key (flat, or under `credentials`); `source` names it
    /// in errors.
    pub fn from_service_key(text: &[u8], source: &str) -> Result<SmAccess, SmError> {
        let bad = |m: String| err(SmErrorKind::AccessKey, source, m);
        let v: Value = serde_json::from_slice(text)
            .map_err(|e| bad(format!("not a JSON service key: {e}")))?;
        let map = v
            .get("credentials")
            .and_then(Value::as_object)
            .or_else(|| v.as_object())
            .ok_or_else(|| bad("not a JSON object".into()))?;
        SmAccess::from_fields(map, None, source)
    }

    /// Builds access from credential fields; `generation` supplies the certificate when the
    /// access is itself a managed credential.
    pub fn from_fields(
        map: &Map<String, Value>,
        generation: Option<Generation>,
        source: &str,
    ) -> Result<SmAccess, SmError> {
        let bad = |m: String| err(SmErrorKind::AccessKey, source, m);
        let field = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_string);
        let client_id = field("clientid").ok_or_else(|| bad("clientid is missing".into()))?;
        let sm_url = field("sm_url").ok_or_else(|| bad("sm_url is missing".into()))?;
        if !sm_url.starts_with("https://") {
            return Err(bad(format!("sm_url {sm_url:?} is not an https URL")));
        }
        let https = |k: &str, u: String| {
            if u.starts_with("https://") {
                Ok(u)
            } else {
                Err(bad(format!("{k} {u:?} is not an https URL")))
            }
        };
        let auth = if let Some(secret) = field("clientsecret") {
            let url = field("url").ok_or_else(|| bad("url is missing".into()))?;
            SmAuth::Secret {
                url: https("url", url)?,
                secret: SecretString::from(secret),
            }
        } else {
            let certurl = field("certurl")
                .ok_or_else(|| bad("neither clientsecret nor certurl is present".into()))?;
            let g = match generation {
                Some(g) => g,
                None => {
                    let cert =
                        field("certificate").ok_or_else(|| bad("certificate is missing".into()))?;
                    let key = map
                        .get("key")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("key is missing".into()))?;
                    Generation::from_pem(
                        cert.as_bytes(),
                        &format!("{source}: certificate"),
                        key.as_bytes(),
                        &format!("{source}: key"),
                    )
                    .map_err(|e| bad(e.to_string()))?
                }
            };
            SmAuth::X509 {
                certurl: https("certurl", certurl)?,
                generation: Box::new(g),
            }
        };
        Ok(SmAccess {
            client_id,
            sm_url: sm_url.trim_end_matches('/').to_string(),
            auth,
        })
    }
}

/// Retries of one call.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all (≥ 1).
    pub attempts: u32,
    /// First backoff; doubles each time.
    pub base: Duration,
    /// No backoff of certrot's own is longer than this.
    pub max_delay: Duration,
    /// A wait Service Manager asks for (`Retry-After`) is honoured up to this, even beyond
    /// `max_delay`.
    pub max_server_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_server_wait: Duration::from_secs(300),
        }
    }
}

/// A binding as certrot needs it.
#[derive(Clone)]
pub struct Binding {
    pub id: String,
    pub name: String,
    pub instance_id: String,
    /// The binding's credentials (secret fields inside: never log them).
    pub credentials: Option<Map<String, Value>>,
    pub labels: Map<String, Value>,
    pub created_at: Option<String>,
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binding")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("instance_id", &self.instance_id)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .field("labels", &self.labels)
            .finish()
    }
}

impl Binding {
    /// A binding from Service Manager's JSON (from `url`, for errors).
    pub fn from_json(v: &Value, url: &str) -> Result<Binding, SmError> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let id = s("id").ok_or_else(|| {
            err(
                SmErrorKind::BadResponse,
                url,
                "the binding has no id".to_string(),
            )
        })?;
        Ok(Binding {
            id,
            name: s("name").unwrap_or_default(),
            instance_id: s("service_instance_id").unwrap_or_default(),
            credentials: v.get("credentials").and_then(Value::as_object).cloned(),
            labels: v
                .get("labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            created_at: s("created_at"),
        })
    }
}

/// One page of `GET /v1/service_bindings` (from `url`): its bindings and the token of the
/// next page, if any.
pub fn parse_list_page(body: &[u8], url: &str) -> Result<(Vec<Binding>, Option<String>), SmError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| err(SmErrorKind::BadResponse, url, "the response is not JSON"))?;
    let items = v
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| err(SmErrorKind::BadResponse, url, "the list has no items"))?;
    let bindings = items
        .iter()
        .map(|i| Binding::from_json(i, url))
        .collect::<Result<Vec<_>, _>>()?;
    let next = v
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    Ok((bindings, next))
}

/// What to create.
#[derive(Clone, Debug)]
pub struct BindingRequest {
    pub name: String,
    pub instance_id: String,
    pub parameters: Value,
    pub labels: Vec<(String, String)>,
}

/// Whether SM should answer synchronously, asynchronously, or as it likes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Auto,
    Sync,
    Async,
}

tokio::task_local! {
    /// The latest instant a wait Service Manager asks for may end (see [`bound_waits`]).
    static WAIT_BOUND: std::cell::Cell<Option<Instant>>;
}

/// Runs `f` so that [`bound_waits`] inside it bounds the server-asked waits of every call.
pub async fn with_wait_bound<F: std::future::Future>(f: F) -> F::Output {
    WAIT_BOUND.scope(std::cell::Cell::new(None), f).await
}

/// Within [`with_wait_bound`]: a wait Service Manager asks for (`Retry-After`) that would
/// end after `until` (the credential's critical point) is not waited; the call fails at once
/// and the credential's own backoff, which is short near its critical point, takes over.
pub fn bound_waits(until: Instant) {
    let _ = WAIT_BOUND.try_with(|b| b.set(Some(until)));
}

fn wait_bound() -> Option<Instant> {
    WAIT_BOUND.try_with(std::cell::Cell::get).ok().flatten()
}

/// Pages of a binding list certrot reads at most.
const MAX_LIST_PAGES: usize = 100;

/// A single-quoted query value with `'` escaped as `''`.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `Retry-After` relative to `now`, in each form Service Manager is known to send: seconds
/// (the BTP service operator's documentation), an HTTP date (SAP's "Rate Limiting" page),
/// or Go's `time.Time` text `2006-01-02 15:04:05[.fff] -0700 MST` (what the operator's own
/// code parses).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = match httpdate::parse_http_date(v) {
        Ok(at) => at,
        Err(_) => go_time(v)?,
    };
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Go's `time.Time.String()`: `2006-01-02 15:04:05[.fraction] -0700 MST` (the zone name,
/// and a monotonic `m=+…` suffix, are ignored: the offset is authoritative).
fn go_time(v: &str) -> Option<SystemTime> {
    let mut parts = v.split_whitespace();
    let (date, clock, offset) = (parts.next()?, parts.next()?, parts.next()?);
    let date_fmt = time::macros::format_description!("[year]-[month]-[day]");
    let clock_fmt =
        time::macros::format_description!("[hour]:[minute]:[second][optional [.[subsecond]]]");
    let offset_fmt =
        time::macros::format_description!("[offset_hour sign:mandatory][offset_minute]");
    let at = time::PrimitiveDateTime::new(
        time::Date::parse(date, &date_fmt).ok()?,
        time::Time::parse(clock, &clock_fmt).ok()?,
    )
    .assume_offset(time::UtcOffset::parse(offset, &offset_fmt).ok()?);
    Some(SystemTime::from(at))
}

/// SM's error body as text: `Error: description`, plus the broker's own answer when there
/// is one, or a short excerpt.
fn describe_body(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let e = v.get("error").and_then(Value::as_str);
        let d = v.get("description").and_then(Value::as_str);
        let mut text = match (e, d) {
            (Some(e), Some(d)) => format!("{e}: {d}"),
            (Some(x), None) | (None, Some(x)) => x.to_string(),
            _ => String::new(),
        };
        if let Some(Value::Object(b)) = v.get("broker_error") {
            let field = |name: &str| {
                b.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .and_then(|(_, v)| v.as_str())
            };
            let said: Vec<&str> = [field("ErrorMessage"), field("Description")]
                .into_iter()
                .flatten()
                .collect();
            let status = broker_status(body).map_or(String::new(), |s| format!("HTTP {s}"));
            text.push_str(&format!(
                " (the broker answered {status} {})",
                said.join(": ")
            ));
        }
        if !text.is_empty() {
            return text.chars().take(500).collect();
        }
    }
    let text = String::from_utf8_lossy(body);
    let t: String = text.chars().take(200).collect();
    if t.is_empty() {
        "(empty body)".into()
    } else {
        t
    }
}

/// The `error` word of a Service Manager error body.
fn error_word(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("error").and_then(Value::as_str).map(str::to_string)
}

/// The broker's own status behind a 502 `BrokerError`: the `broker_error` object's
/// `StatusCode` (any letter case, as Go's decoder in SAP's operator matches it), else the
/// `Status: NNN` that Service Manager writes into the description.
pub fn broker_status(body: &[u8]) -> Option<u16> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if let Some(Value::Object(b)) = v.get("broker_error")
        && let Some(code) = b
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("statuscode"))
            .and_then(|(_, c)| c.as_u64())
    {
        return u16::try_from(code).ok();
    }
    let d = v.get("description").and_then(Value::as_str)?;
    let at = d.find("Status: ")? + "Status: ".len();
    d[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// Classifies an error answer. `router_error`: the `X-Cf-RouterError` header (Cloud
/// Foundry's router found no route: Service Manager unreachable, whatever the status).
fn kind_of_status(status: u16, body: &[u8], router_error: bool) -> SmErrorKind {
    if router_error {
        return SmErrorKind::ServerError;
    }
    let word = error_word(body).unwrap_or_default();
    match status {
        401 | 403 => SmErrorKind::Auth,
        404 | 410 => SmErrorKind::NotFound,
        409 => SmErrorKind::Conflict,
        // ConcurrentOperationInProgress (another operation on this resource),
        // OperationInProgress (the instance is not ready or being deleted).
        422 if word.contains("ConcurrentOperation") || word == "OperationInProgress" => {
            SmErrorKind::Concurrent
        }
        412 if word == "ConcurrentResourceUpdate" => SmErrorKind::Concurrent,
        429 => SmErrorKind::RateLimited,
        502 if word == "BrokerError" => match broker_status(body) {
            Some(422) if String::from_utf8_lossy(body).contains("ConcurrencyError") => {
                SmErrorKind::Concurrent
            }
            Some(429) => SmErrorKind::RateLimited,
            Some(400..=499) => SmErrorKind::Rejected,
            _ => SmErrorKind::ServerError,
        },
        500..=599 => SmErrorKind::ServerError,
        _ => SmErrorKind::Rejected,
    }
}

struct CachedToken {
    token: SecretString,
    refresh_at: Instant,
}

/// A Service Manager client for one access key.
pub struct SmClient {
    access: SmAccess,
    api: reqwest::Client,
    token_client: reqwest::Client,
    limits: Limits,
    retry: RetryPolicy,
    /// How long an asynchronous operation may take.
    pub operation_timeout: Duration,
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

/// A raw answer: status, `Retry-After`, `Location`, `X-Cf-RouterError`, body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    location: Option<String>,
    router_error: Option<String>,
    body: Vec<u8>,
}

impl SmClient {
    pub fn new(
        access: SmAccess,
        trust: ServerTrust<'_>,
        limits: Limits,
        retry: RetryPolicy,
    ) -> Result<SmClient, SmError> {
        let url = access.sm_url.clone();
        let c = |m: String| err(SmErrorKind::Connect, &url, m);
        let api = http_client(None, trust, limits, true).map_err(c)?;
        let identity = match &access.auth {
            SmAuth::X509 { generation, .. } => {
                Some(crate::net::identity_of(generation).map_err(c)?)
            }
            SmAuth::Secret { .. } => None,
        };
        // The token client presents the certificate: no pooling, as for the check.
        let token_client = http_client(identity, trust, limits, false).map_err(c)?;
        Ok(SmClient {
            access,
            api,
            token_client,
            limits,
            retry,
            operation_timeout: Duration::from_secs(300),
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// The Service Manager base URL.
    pub fn sm_url(&self) -> &str {
        &self.access.sm_url
    }

    /// Drops the cached token (the next call fetches a new one).
    pub async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    async fn bearer(&self) -> Result<SecretString, SmError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref()
            && Instant::now() < t.refresh_at
        {
            return Ok(t.token.clone());
        }
        let (url, req) = match &self.access.auth {
            SmAuth::Secret { url, secret } => {
                let u = format!("{}/oauth/token", url.trim_end_matches('/'));
                let r = self
                    .token_client
                    .post(&u)
                    .basic_auth(&self.access.client_id, Some(secret.expose_secret()))
                    .form(&[("grant_type", "client_credentials")]);
                (u, r)
            }
            SmAuth::X509 { certurl, .. } => {
                let u = format!("{}/oauth/token", certurl.trim_end_matches('/'));
                let r = self.token_client.post(&u).form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", self.access.client_id.as_str()),
                ]);
                (u, r)
            }
        };
        let resp = req
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| from_check(classify_transport(&e, &url), &url))?;
        let status = resp.status().as_u16();
        let body = read_limited_body(resp, self.limits.max_response, &url)
            .await
            .map_err(|e| from_check(e, &url))?;
        if status != 200 {
            let kind = match kind_of_status(status, &body, false) {
                SmErrorKind::Rejected => SmErrorKind::Auth,
                k => k,
            };
            return Err(err(
                kind,
                &url,
                format!(
                    "the Service Manager client got no token: HTTP {status}: {}",
                    describe_body(&body)
                ),
            ));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            err(
                SmErrorKind::BadResponse,
                &url,
                "the token response is not JSON",
            )
        })?;
        let token = v
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| err(SmErrorKind::BadResponse, &url, "no access_token"))?;
        let life = v.get("expires_in").and_then(Value::as_u64).unwrap_or(300);
        // Refresh a minute early, or at half-life for short tokens.
        let refresh_in = Duration::from_secs(life.saturating_sub(60).max(life / 2));
        let token = SecretString::from(token.to_string());
        *cached = Some(CachedToken {
            token: token.clone(),
            refresh_at: Instant::now() + refresh_in,
        });
        Ok(token)
    }

    /// One request with retries; a 401 refreshes the token once.
    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Answer, SmError> {
        let mut refreshed = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = self.once(method.clone(), url, body).await;
            let (kind, wait_hint, e) = match result {
                Ok(a) if a.status < 400 && a.router_error.is_none() => return Ok(a),
                Ok(a) => {
                    let kind = kind_of_status(a.status, &a.body, a.router_error.is_some());
                    if kind == SmErrorKind::Auth && a.status == 401 && !refreshed {
                        refreshed = true;
                        self.forget_token().await;
                        attempt -= 1;
                        continue;
                    }
                    let hint = a
                        .retry_after
                        .as_deref()
                        .and_then(|v| parse_retry_after(v, SystemTime::now()));
                    let mut msg = format!("HTTP {}: {}", a.status, describe_body(&a.body));
                    if let Some(r) = &a.router_error {
                        msg = format!(
                            "HTTP {} from the Cloud Foundry router (X-Cf-RouterError: {}): Service Manager is not reachable",
                            a.status,
                            r.chars().take(40).collect::<String>()
                        );
                    }
                    if let Some(r) = &a.retry_after {
                        msg.push_str(&format!(" (Retry-After: {r})"));
                    }
                    (kind, hint, err(kind, url, msg))
                }
                Err(e) => (e.kind, None, e),
            };
            if !kind.retryable() || attempt >= self.retry.attempts {
                let mut e = e;
                if attempt > 1 {
                    e.message.push_str(&format!(" (after {attempt} attempts)"));
                }
                return Err(e);
            }
            let backoff = self
                .retry
                .base
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(self.retry.max_delay);
            // Never sooner than the server asks, nor than our own backoff; our own backoff
            // stays within `max_delay`, a wait the server asks for within `max_server_wait`.
            let wait = match wait_hint {
                Some(h) if h > backoff => {
                    // Never sooner than the server asks: a wait beyond what certrot waits,
                    // or past the credential's critical point, ends the attempt now.
                    let why = if h > self.retry.max_server_wait {
                        Some(format!(
                            "more than the {}s certrot waits in one call",
                            self.retry.max_server_wait.as_secs()
                        ))
                    } else if wait_bound().is_some_and(|b| Instant::now() + h > b) {
                        Some("past the credential's critical point".to_string())
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        let mut e = e;
                        e.message.push_str(&format!(
                            " (Service Manager asks to wait {}s, {why}: not waiting)",
                            h.as_secs()
                        ));
                        return Err(e);
                    }
                    tracing::info!(
                        url,
                        label = kind.label(),
                        wait_s = h.as_secs(),
                        "service manager asks to wait (Retry-After); waiting"
                    );
                    h
                }
                _ => backoff,
            };
            tracing::debug!(
                url,
                label = kind.label(),
                attempt,
                wait_ms = wait.as_millis() as u64,
                "service manager call retried"
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn once(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Answer, SmError> {
        let token = self.bearer().await?;
        let mut req = self
            .api
            .request(method, url)
            .bearer_auth(token.expose_secret())
            .header("Accept", "application/json");
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| from_check(classify_transport(&e, url), url))?;
        let status = resp.status().as_u16();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (retry_after, location) = (header("retry-after"), header("location"));
        let router_error = header("x-cf-routererror");
        let body = read_limited_body(resp, self.limits.max_response, url)
            .await
            .map_err(|e| from_check(e, url))?;
        Ok(Answer {
            status,
            retry_after,
            location,
            router_error,
            body,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.access.sm_url)
    }

    fn json(a: &Answer, url: &str) -> Result<Value, SmError> {
        serde_json::from_slice(&a.body)
            .map_err(|_| err(SmErrorKind::BadResponse, url, "the response is not JSON"))
    }

    /// Creates a binding and returns it with its credentials, following a 202 operation to
    /// its end. On an error after SM accepted the request, the error message names the
    /// binding id so the caller can still delete it.
    pub async fn create_binding(
        &self,
        req: &BindingRequest,
        mode: Mode,
    ) -> Result<Binding, SmError> {
        let q = match mode {
            Mode::Auto => "",
            Mode::Sync => "?async=false",
            Mode::Async => "?async=true",
        };
        let url = self.url(&format!("/v1/service_bindings{q}"));
        let mut labels = Map::new();
        for (k, v) in &req.labels {
            labels.insert(k.clone(), json!([v]));
        }
        let body = json!({
            "name": req.name, "service_instance_id": req.instance_id,
            "parameters": req.parameters, "labels": labels,
        });
        let a = self.call(reqwest::Method::POST, &url, Some(&body)).await?;
        match a.status {
            201 | 200 => Binding::from_json(&Self::json(&a, &url)?, &url),
            202 => {
                let loc = a.location.ok_or_else(|| {
                    err(
                        SmErrorKind::BadResponse,
                        &url,
                        "202 without a Location header",
                    )
                })?;
                let id = binding_id_of_location(&loc).ok_or_else(|| {
                    err(
                        SmErrorKind::BadResponse,
                        &url,
                        format!("unexpected Location {loc:?}"),
                    )
                })?;
                self.wait_operation(&loc, false).await.map_err(|mut e| {
                    e.message.push_str(&format!(" (binding {id})"));
                    e
                })?;
                self.get_binding(&id).await?.ok_or_else(|| {
                    err(
                        SmErrorKind::OperationFailed,
                        &url,
                        format!("binding {id} is gone after its operation succeeded"),
                    )
                })
            }
            s => Err(err(
                SmErrorKind::BadResponse,
                &url,
                format!("unexpected HTTP {s}"),
            )),
        }
    }

    /// The URL of an operation named by `Location`: a path on Service Manager, or an
    /// absolute URL with Service Manager's own origin — never another host, which would be
    /// sent the bearer token.
    fn operation_url(&self, location: &str) -> Result<String, SmError> {
        let bad = |why: &str| {
            err(
                SmErrorKind::BadResponse,
                &self.access.sm_url,
                format!("Location {:?} {why}", crate::text::printable(location, 200)),
            )
        };
        // A path (`/v1/…`, or `v1/…`): on Service Manager itself.
        if !location.starts_with("//") && !location.contains("://") {
            return Ok(self.url(&format!("/{}", location.trim_start_matches('/'))));
        }
        let (Ok(loc), Ok(sm)) = (
            reqwest::Url::parse(location),
            reqwest::Url::parse(&self.access.sm_url),
        ) else {
            return Err(bad("is neither a path nor a URL"));
        };
        let origin = |u: &reqwest::Url| {
            (
                u.scheme().to_string(),
                u.host_str().map(str::to_ascii_lowercase),
                u.port_or_known_default(),
            )
        };
        if origin(&loc) != origin(&sm) {
            return Err(bad("points away from Service Manager; not followed"));
        }
        Ok(loc.to_string())
    }

    /// Polls an operation (`Location`, relative or absolute) with backoff until it ends.
    /// `deleting`: the operation of a DELETE, where 404 (or 410) means the binding is gone —
    /// done (the BTP service operator's `Status`).
    async fn wait_operation(&self, location: &str, deleting: bool) -> Result<(), SmError> {
        let url = self.operation_url(location)?;
        let deadline = Instant::now() + self.operation_timeout;
        let mut delay = Duration::from_millis(100);
        loop {
            let a = match self.call(reqwest::Method::GET, &url, None).await {
                Err(e) if deleting && e.kind == SmErrorKind::NotFound => return Ok(()),
                other => other?,
            };
            let v = Self::json(&a, &url)?;
            match v.get("state").and_then(Value::as_str) {
                Some("succeeded") => return Ok(()),
                Some("failed") => {
                    let why = operation_errors(&v);
                    return Err(err(
                        SmErrorKind::OperationFailed,
                        &url,
                        format!("the operation failed: {why}"),
                    ));
                }
                Some(_) => {}
                None => {
                    return Err(err(
                        SmErrorKind::BadResponse,
                        &url,
                        "the operation has no state",
                    ));
                }
            }
            if Instant::now() + delay > deadline {
                return Err(err(
                    SmErrorKind::OperationFailed,
                    &url,
                    format!(
                        "the operation did not finish within {}",
                        humantime::format_duration(self.operation_timeout)
                    ),
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// `/v1/service_bindings/<id>` for an id that is one (from state or from Service
    /// Manager: `../service_instances/X` must never become another resource's path).
    fn binding_url(&self, id: &str) -> Result<String, SmError> {
        if is_resource_id(id) {
            Ok(self.url(&format!("/v1/service_bindings/{id}")))
        } else {
            Err(err(
                SmErrorKind::BadResponse,
                &self.access.sm_url,
                format!(
                    "{:?} is not a binding id (letters, digits, '-', '_'); nothing was sent",
                    crate::text::printable(id, 100)
                ),
            ))
        }
    }

    /// The binding with `id`, or `None` when SM does not know it.
    pub async fn get_binding(&self, id: &str) -> Result<Option<Binding>, SmError> {
        let url = self.binding_url(id)?;
        match self.call(reqwest::Method::GET, &url, None).await {
            Ok(a) => Ok(Some(Binding::from_json(&Self::json(&a, &url)?, &url)?)),
            Err(e) if e.kind == SmErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every binding matching the queries (all pages).
    pub async fn list_bindings(
        &self,
        label_query: &str,
        field_query: &str,
    ) -> Result<Vec<Binding>, SmError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        // An instance holds at most 1000 bindings (10 pages of 100); a list that goes on
        // past 100 pages, or past the operation timeout, is not one certrot can act on.
        let deadline = Instant::now() + self.operation_timeout;
        for _ in 0..MAX_LIST_PAGES {
            if Instant::now() > deadline {
                return Err(err(
                    SmErrorKind::Timeout,
                    &self.access.sm_url,
                    format!(
                        "the binding list did not end within {} ({} bindings so far)",
                        humantime::format_duration(self.operation_timeout),
                        out.len()
                    ),
                ));
            }
            let query = {
                let mut q = form_urlencoded::Serializer::new(String::new());
                if !label_query.is_empty() {
                    q.append_pair("labelQuery", label_query);
                }
                if !field_query.is_empty() {
                    q.append_pair("fieldQuery", field_query);
                }
                q.append_pair("max_items", "100");
                if let Some(t) = &token {
                    q.append_pair("token", t);
                }
                q.finish()
            };
            let url = self.url(&format!("/v1/service_bindings?{query}"));
            let a = self.call(reqwest::Method::GET, &url, None).await?;
            let (items, next) = parse_list_page(&a.body, &url)?;
            let empty = items.is_empty();
            out.extend(items);
            match next {
                Some(t) if !empty => token = Some(t),
                _ => return Ok(out),
            }
        }
        Err(err(
            SmErrorKind::BadResponse,
            &self.access.sm_url,
            format!("the binding list does not end after {MAX_LIST_PAGES} pages"),
        ))
    }

    /// Deletes a binding; `Ok(false)` when it was already gone.
    pub async fn delete_binding(&self, id: &str) -> Result<bool, SmError> {
        let url = self.binding_url(id)?;
        match self.call(reqwest::Method::DELETE, &url, None).await {
            Ok(a) if a.status == 202 => {
                if let Some(loc) = a.location {
                    self.wait_operation(&loc, true).await?;
                }
                Ok(true)
            }
            Ok(_) => Ok(true),
            Err(e) if e.kind == SmErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn operation_errors(v: &Value) -> String {
    match v.get("errors") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|e| describe_body(e.to_string().as_bytes()))
            .collect::<Vec<_>>()
            .join("; "),
        Some(o @ Value::Object(_)) => describe_body(o.to_string().as_bytes()),
        _ => "no reason given".into(),
    }
}

/// `/v1/service_bindings/<id>/operations/<op>` → `<id>`.
fn binding_id_of_location(loc: &str) -> Option<String> {
    let path = loc.split("/v1/service_bindings/").nth(1)?;
    let id = path.split('/').next()?;
    is_resource_id(id).then(|| id.to_string())
}

/// A Service Manager resource id (a GUID in practice): letters, digits, '-', '_'.
pub fn is_resource_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn from_check(e: crate::net::CheckFailure, url: &str) -> SmError {
    use crate::net::FailureKind as F;
    let kind = match e.kind {
        F::Timeout => SmErrorKind::Timeout,
        F::TlsRejected | F::Connect => SmErrorKind::Connect,
        _ => SmErrorKind::BadResponse,
    };
    err(kind, url, e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_single_quotes() {
        assert_eq!(quote("orders"), "'orders'");
        assert_eq!(quote("o'brien"), "'o''brien'");
    }

    #[test]
    fn retry_after_as_seconds_or_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        // Go's time.Time text, as SAP's operator parses it.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_731_337_173); // 2024-11-11 14:59:33Z
        assert_eq!(
            parse_retry_after("2024-11-11 15:00:03 +0000 UTC", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("2024-11-11 16:00:13.25 +0100 CET", now),
            Some(Duration::from_millis(40_250))
        );
        assert_eq!(parse_retry_after("2024-11-11 15:00:03", now), None);
    }

    #[test]
    fn locations_and_error_bodies() {
        assert_eq!(
            binding_id_of_location("/v1/service_bindings/abc/operations/op1").as_deref(),
            Some("abc")
        );
        assert_eq!(binding_id_of_location("/v1/other"), None);
        assert_eq!(
            describe_body(br#"{"error":"Conflict","description":"exists"}"#),
            "Conflict: exists"
        );
        assert_eq!(describe_body(b""), "(empty body)");
        for (status, body, router, want) in [
            (422, &br#"{"error":"ConcurrentOperation"}"#[..], false, SmErrorKind::Concurrent),
            (422, br#"{"error":"ConcurrentOperationInProgress","description":"Another concurrent operation in progress for this resource"}"#, false, SmErrorKind::Concurrent),
            (422, br#"{"error":"OperationInProgress","description":"creation of instance x is still in progress or failed"}"#, false, SmErrorKind::Concurrent),
            (412, br#"{"error":"ConcurrentResourceUpdate"}"#, false, SmErrorKind::Concurrent),
            (422, br#"{"error":"Other"}"#, false, SmErrorKind::Rejected),
            (410, b"", false, SmErrorKind::NotFound),
            // A 404 from the Cloud Foundry router: Service Manager unreachable, not "gone".
            (404, b"404 Not Found: Requested route does not exist.", true, SmErrorKind::ServerError),
            (502, br#"{"error":"BrokerError","description":"x","broker_error":{"StatusCode":400,"ErrorMessage":"BadRequest","Description":"bad x509 parameters"}}"#, false, SmErrorKind::Rejected),
            (502, br#"{"error":"BrokerError","broker_error":{"statusCode":422,"ErrorMessage":"ConcurrencyError"}}"#, false, SmErrorKind::Concurrent),
            (502, br#"{"error":"BrokerError","broker_error":{"StatusCode":503}}"#, false, SmErrorKind::ServerError),
            (502, br#"{"error":"BrokerError","description":"Failed bind request: Status: 409; ErrorMessage: <nil>"}"#, false, SmErrorKind::Rejected),
            (502, br#"{"error":"BrokerError","description":"broker timed out"}"#, false, SmErrorKind::ServerError),
            (502, b"<html>bad gateway</html>", false, SmErrorKind::ServerError),
        ] {
            assert_eq!(
                kind_of_status(status, body, router),
                want,
                "{status} {}",
                String::from_utf8_lossy(body)
            );
        }
        let d = describe_body(
            br#"{"error":"BrokerError","description":"Failed bind","broker_error":{"StatusCode":400,"ErrorMessage":"BadRequest","Description":"validity must be 1-30"}}"#,
        );
        assert!(
            d.contains("HTTP 400") && d.contains("validity must be 1-30"),
            "{d}"
        );
    }

    #[test]
    fn access_keys_of_both_flavours_and_redacted_debug() {
        let secret = br#"{"clientid":"sm","clientsecret":"s3cr3t-value","url":"https://a.authentication.x","sm_url":"https://sm.x/"}"#;
        let a = SmAccess::from_service_key(secret, "sm.json").unwrap();
        assert_eq!(a.sm_url, "https://sm.x");
        let dbg = format!("{a:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        let e = SmAccess::from_service_key(br#"{"clientid":"sm","url":"https://a"}"#, "sm.json")
            .unwrap_err();
        assert!(
            e.to_string().contains("sm.json") && e.to_string().contains("sm_url"),
            "{e}"
        );
        let e = SmAccess::from_service_key(br#"{"clientid":"sm","sm_url":"https://s"}"#, "sm.json")
            .unwrap_err();
        assert!(
            e.to_string().contains("neither clientsecret nor certurl"),
            "{e}"
        );
        let e = SmAccess::from_service_key(
            br#"{"clientid":"sm","sm_url":"http://s","clientsecret":"x","url":"https://a"}"#,
            "sm.json",
        )
        .unwrap_err();
        assert!(e.to_string().contains("not an https URL"), "{e}");
    }
}
