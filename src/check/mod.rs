//! The check: proof that a generation works, by an OAuth2 `client_credentials` token request
//! over mTLS ([`request_token`]) or, for `kind = "generic"`, an mTLS probe of a service URL
//! whose answer status shows the certificate was accepted ([`probe`]): a fresh rustls
//! client per check with the generation's identity built from memory, no connection pool (so no session can be resumed with an older
//! certificate), server verification always on, timeouts and a response size limit. The
//! pure rules around the request live in [`rules`].

mod rules;

pub use crate::net::{CheckFailure, FailureKind, Limits, ServerTrust};
pub use rules::{
    TokenUrlSource, classify_status, judge_token_response, token_url_by_kind,
    token_url_from_discovery,
};

use crate::config::Kind;
use crate::generation::Generation;
use crate::net::{classify_transport, fail, http_client, identity_of, read_limited_body};
use serde_json::{Map, Value};
use time::OffsetDateTime;

/// A new HTTPS client: no pooled connections (so no session outlives the call), no
/// redirects, https only, timeouts, server verification always on.
fn fresh_client(
    identity: Option<reqwest::Identity>,
    trust: ServerTrust<'_>,
    limits: Limits,
) -> Result<reqwest::Client, String> {
    http_client(identity, trust, limits, false)
}

/// Requests a token with generation `g` at `url`; `Ok` carries the request's duration.
/// A new client is built for every call: nothing is pooled or resumed.
pub async fn request_token(
    g: &Generation,
    url: &str,
    client_id: &str,
    extra_form: &[(&str, &str)],
    trust: ServerTrust<'_>,
    limits: Limits,
) -> Result<std::time::Duration, CheckFailure> {
    if !url.starts_with("https://") {
        return Err(fail(
            FailureKind::Connect,
            url,
            "the token URL must be https",
        ));
    }
    let identity = identity_of(g).map_err(|m| fail(FailureKind::Connect, url, m))?;
    let client = fresh_client(Some(identity), trust, limits)
        .map_err(|m| fail(FailureKind::Connect, url, m))?;
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
    ];
    form.extend_from_slice(extra_form);
    let started = std::time::Instant::now();
    let resp = client
        .post(url)
        .header("Accept", "application/json")
        .form(&form)
        .send()
        .await
        .map_err(|e| classify_transport(&e, url))?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = read_limited_body(resp, limits.max_response, url).await?;
    if status != 200 {
        let mut f = classify_status(status, &body, url);
        if let Some(r) = retry_after.filter(|_| status == 429) {
            f.message.push_str(&format!(" (Retry-After: {r})"));
        }
        return Err(f);
    }
    judge_token_response(&body, url, client_id, OffsetDateTime::now_utc())?;
    Ok(started.elapsed())
}

/// Requests `url` with generation `g` as client certificate; `Ok` (the duration) when the
/// answer's status is one of `accept`. The body is read (bounded) and dropped.
pub async fn probe(
    g: &Generation,
    url: &str,
    cfg: &crate::config::CheckConfig,
    trust: ServerTrust<'_>,
    limits: Limits,
) -> Result<std::time::Duration, CheckFailure> {
    let accept = &cfg.accept_status;
    if !url.starts_with("https://") {
        return Err(fail(
            FailureKind::Connect,
            url,
            "the probe URL must be https",
        ));
    }
    let identity = identity_of(g).map_err(|m| fail(FailureKind::Connect, url, m))?;
    let client = fresh_client(Some(identity), trust, limits)
        .map_err(|m| fail(FailureKind::Connect, url, m))?;
    let method = match cfg.probe_method {
        crate::config::ProbeMethod::Get => reqwest::Method::GET,
        crate::config::ProbeMethod::Head => reqwest::Method::HEAD,
        crate::config::ProbeMethod::Post => reqwest::Method::POST,
        crate::config::ProbeMethod::Put => reqwest::Method::PUT,
    };
    let mut req = client.request(method, url);
    for (name, value) in &cfg.probe_headers {
        req = req.header(name.as_str(), value.as_str());
    }
    if let Some(body) = &cfg.probe_body {
        let json = serde_json::from_str::<Value>(body).is_ok();
        req = req
            .header(
                "Content-Type",
                if json {
                    "application/json"
                } else {
                    "text/plain"
                },
            )
            .body(body.clone());
    }
    let started = std::time::Instant::now();
    let resp = req.send().await.map_err(|e| classify_transport(&e, url))?;
    let status = resp.status().as_u16();
    let body = read_limited_body(resp, limits.max_response, url).await?;
    if accept.contains(&status) {
        return Ok(started.elapsed());
    }
    let mut f = classify_status(status, &body, url);
    if f.kind == FailureKind::BadResponse {
        f.message = format!("HTTP {status}, not one of check.accept_status {accept:?}");
    }
    Err(f)
}

/// Proves generation `g` of credential `cred`, using the credential's `[credential.check]`
/// settings: a token request (token URL: `check.token_url`, else the kind's rule), or for
/// `kind = "generic"` a probe of `check.probe_url`.
pub async fn validate(
    cred: &crate::config::Credential,
    g: &Generation,
) -> Result<std::time::Duration, CheckFailure> {
    let cfg = &cred.check;
    let ca = match &cfg.ca_file {
        Some(p) => {
            Some(crate::fsutil::read_input(p).map_err(|e| fail(FailureKind::Connect, "-", e))?)
        }
        None => None,
    };
    let trust = ServerTrust {
        system_roots: cfg.system_roots,
        extra_ca_pem: ca.as_deref(),
    };
    let limits = Limits {
        connect_timeout: cfg.connect_timeout.0,
        timeout: cfg.timeout.0,
        ..Limits::default()
    };
    if cred.kind == Kind::Generic {
        let template = cfg.probe_url.as_deref().unwrap_or_default();
        let url = crate::config::expand_probe_url(template, g.credentials())
            .map_err(|m| fail(FailureKind::Discovery, template, m))?;
        let r = probe(g, &url, cfg, trust, limits).await;
        match &r {
            Ok(d) => {
                tracing::debug!(credential = %cred.name, url = %url, ms = d.as_millis() as u64, "mTLS probe passed")
            }
            Err(e) => {
                tracing::debug!(credential = %cred.name, label = e.kind.label(), error = %e, "mTLS probe failed")
            }
        }
        return r;
    }
    let url = match (&cfg.token_url, &cfg.discovery_url) {
        (Some(u), _) => u.clone(),
        (None, Some(d)) => {
            discover(d, trust, limits, cred.kind, g.credentials())
                .await?
                .0
        }
        (None, None) => token_url_by_kind(cred.kind, g.credentials()).ok_or_else(|| {
            fail(
                FailureKind::Discovery,
                "-",
                "no token URL: set check.token_url or check.discovery_url, or import credentials with certurl/url",
            )
        })?,
    };
    let client_id = cfg
        .client_id
        .clone()
        .or_else(|| g.client_id().map(str::to_string))
        .ok_or_else(|| {
            fail(
                FailureKind::BadResponse,
                &url,
                "no client id: set check.client_id or import credentials with clientid",
            )
        })?;
    let extra: Vec<(&str, &str)> = cfg
        .app_tid
        .as_deref()
        .map(|t| vec![("app_tid", t)])
        .unwrap_or_default();
    let r = request_token(g, &url, &client_id, &extra, trust, limits).await;
    match &r {
        Ok(d) => {
            tracing::debug!(credential = %cred.name, url = %url, ms = d.as_millis() as u64, "token check passed")
        }
        Err(e) => {
            tracing::debug!(credential = %cred.name, label = e.kind.label(), error = %e, "token check failed")
        }
    }
    r
}

/// Fetches an OIDC discovery document (server verified, no client certificate, size- and
/// time-limited) and returns the token endpoint it names.
pub async fn discover(
    discovery_url: &str,
    trust: ServerTrust<'_>,
    limits: Limits,
    kind: Kind,
    fields: &Map<String, Value>,
) -> Result<(String, TokenUrlSource), CheckFailure> {
    let d = |m: String| fail(FailureKind::Discovery, discovery_url, m);
    let client = fresh_client(None, trust, limits).map_err(d)?;
    let resp = client
        .get(discovery_url)
        .header("Accept", "application/json")
        .send()
        .await
        .map_err(|e| {
            let t = classify_transport(&e, discovery_url);
            d(format!("{}: {}", t.kind.label(), t.message))
        })?;
    let status = resp.status().as_u16();
    let body = read_limited_body(resp, limits.max_response, discovery_url)
        .await
        .map_err(|e| d(e.message))?;
    if status != 200 {
        return Err(d(format!("HTTP {status}")));
    }
    token_url_from_discovery(&body, discovery_url, kind, fields)
}
