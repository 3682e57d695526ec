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

mod access;
mod answers;
mod bindings;
mod error;
mod wait;

pub use access::{SmAccess, SmAuth};
pub use answers::{
    Binding, BindingRequest, broker_status, is_resource_id, parse_list_page, parse_retry_after,
    quote,
};
use answers::{binding_id_of_location, describe_body, kind_of_status, operation_errors};
use error::err;
pub use error::{SmError, SmErrorKind};
use wait::wait_bound;
pub use wait::{bound_waits, with_wait_bound};

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

/// Whether SM should answer synchronously, asynchronously, or as it likes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Auto,
    Sync,
    Async,
}

/// Pages of a binding list certrot reads at most.
const MAX_LIST_PAGES: usize = 100;

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
    /// Whether its binding calls ask for `?async=` (`Auto`: as Service Manager likes).
    pub mode: Mode,
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
            mode: Mode::Auto,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// Drops the cached token (the next call fetches a new one).
    pub async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    /// Fetches the token ahead of the first call (while the caller does other work, e.g. a
    /// durable state write). A failure is left for that call to meet again, with its retries.
    pub async fn fetch_token_ahead(&self) {
        if let Err(e) = self.bearer().await {
            tracing::debug!("the Service Manager token fetched ahead: {e}");
        }
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
