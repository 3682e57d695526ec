//! The pure rules around a token check: which token URL to use (by service kind, or from an
//! OIDC discovery document), when a token response counts as success (and for which
//! client), and how an HTTP status maps to a stable failure label. No I/O.

use crate::config::Kind;
use crate::net::{CheckFailure, FailureKind, fail};
use base64::Engine as _;
use serde_json::{Map, Value};
use std::fmt;
use time::OffsetDateTime;

/// Where the token URL came from, for logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenUrlSource {
    DiscoveryMtlsAlias,
    DiscoveryTokenEndpoint,
    KindRule,
}

impl fmt::Display for TokenUrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenUrlSource::DiscoveryMtlsAlias => "discovery mtls_endpoint_aliases.token_endpoint",
            TokenUrlSource::DiscoveryTokenEndpoint => "discovery token_endpoint",
            TokenUrlSource::KindRule => "credential fields",
        })
    }
}

/// The token endpoint for a certificate, from an OIDC discovery document (RFC 8414 /
/// RFC 8705): the mTLS alias when present. Without one: Identity Authentication serves mTLS
/// at its `token_endpoint` (one host); XSUAA's `token_endpoint` is the secrets host, which
/// answers a certificate with 401, so the kind's rule applies (`certurl`, else the
/// `authentication.` → `authentication.cert.` host of the token endpoint, as SAP's
/// libraries derive it).
pub fn token_url_from_discovery(
    doc: &[u8],
    discovery_url: &str,
    kind: Kind,
    fields: &Map<String, Value>,
) -> Result<(String, TokenUrlSource), CheckFailure> {
    let v: Value = serde_json::from_slice(doc).map_err(|e| {
        fail(
            FailureKind::Discovery,
            discovery_url,
            format!("not a JSON document: {e}"),
        )
    })?;
    let https = |s: &str| s.starts_with("https://");
    if let Some(alias) = v
        .get("mtls_endpoint_aliases")
        .and_then(|a| a.get("token_endpoint"))
        .and_then(Value::as_str)
    {
        if !https(alias) {
            return Err(fail(
                FailureKind::Discovery,
                discovery_url,
                format!("mtls_endpoint_aliases.token_endpoint {alias:?} is not an https URL"),
            ));
        }
        return Ok((alias.to_string(), TokenUrlSource::DiscoveryMtlsAlias));
    }
    if kind == Kind::Xsuaa
        && let Some(u) = token_url_by_kind(kind, fields)
    {
        return Ok((u, TokenUrlSource::KindRule));
    }
    match v.get("token_endpoint").and_then(Value::as_str) {
        Some(t) if https(t) && kind == Kind::Identity => {
            Ok((t.to_string(), TokenUrlSource::DiscoveryTokenEndpoint))
        }
        Some(t) if https(t) && t.contains(".authentication.cert.") => {
            Ok((t.to_string(), TokenUrlSource::DiscoveryTokenEndpoint))
        }
        Some(t) if https(t) && t.contains(".authentication.") => Ok((
            t.replacen(".authentication.", ".authentication.cert.", 1),
            TokenUrlSource::DiscoveryTokenEndpoint,
        )),
        Some(t) if https(t) => Err(fail(
            FailureKind::Discovery,
            discovery_url,
            format!(
                "lists no mtls_endpoint_aliases.token_endpoint, and its token_endpoint {t:?} is XSUAA's host for secrets; set check.token_url or give the credential a certurl"
            ),
        )),
        Some(t) => Err(fail(
            FailureKind::Discovery,
            discovery_url,
            format!("token_endpoint {t:?} is not an https URL"),
        )),
        None => Err(fail(
            FailureKind::Discovery,
            discovery_url,
            "has neither mtls_endpoint_aliases.token_endpoint nor token_endpoint",
        )),
    }
}

fn trim_slash(s: &str) -> &str {
    s.trim_end_matches('/')
}

/// The token URL by the kind's rule: xsuaa `certurl` + `/oauth/token` (or `url` with
/// `authentication.` → `authentication.cert.`), identity `url` + `/oauth2/token`.
pub fn token_url_by_kind(kind: Kind, fields: &Map<String, Value>) -> Option<String> {
    let field = |k: &str| {
        fields
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    match kind {
        Kind::Xsuaa => {
            if let Some(certurl) = field("certurl") {
                return Some(format!("{}/oauth/token", trim_slash(certurl)));
            }
            let url = field("url")?;
            if url.contains(".authentication.cert.") {
                return Some(format!("{}/oauth/token", trim_slash(url)));
            }
            url.contains(".authentication.").then(|| {
                format!(
                    "{}/oauth/token",
                    trim_slash(&url.replacen(".authentication.", ".authentication.cert.", 1))
                )
            })
        }
        Kind::Identity => field("url").map(|u| format!("{}/oauth2/token", trim_slash(u))),
        // Proven by an mTLS probe, not a token.
        Kind::Generic => None,
    }
}

/// Judges a 200 token response: JSON with `access_token` and `token_type`; a JWT's `exp` must
/// be in the future and the client it names ([`token_client`]) equal `client_id`.
/// The token is not kept and never appears in the error.
pub fn judge_token_response(
    body: &[u8],
    url: &str,
    client_id: &str,
    now: OffsetDateTime,
) -> Result<(), CheckFailure> {
    let bad = |m: String| fail(FailureKind::BadResponse, url, m);
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the response is not JSON: {e}")))?;
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("the response has no access_token".into()))?;
    if v.get("token_type").and_then(Value::as_str).is_none() {
        return Err(bad("the response has no token_type".into()));
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Ok(()); // opaque token: nothing more to verify offline
    }
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1].trim_end_matches('='))
        .map_err(|_| {
            bad("the access token looks like a JWT but its payload is not base64url".into())
        })?;
    let claims: Value = serde_json::from_slice(&payload)
        .map_err(|_| bad("the access token's JWT payload is not JSON".into()))?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("the access token has no numeric exp claim".into()))?;
    if exp <= now.unix_timestamp() {
        return Err(bad(format!(
            "the access token expired at {exp} (unix time)"
        )));
    }
    match token_client(&claims) {
        Some(c) if c == client_id => Ok(()),
        Some(c) => Err(bad(format!(
            "the access token was issued to client {c:?}, not {client_id:?}"
        ))),
        None => Err(bad(
            "the access token names no client (azp, cid, client_id, a single aud, or sub)".into(),
        )),
    }
}

/// The client a token was issued to, as SAP's libraries read it (`Token.getClientId` in the
/// Java library, `Token.clientId` in @sap/xssec): `azp`; XSUAA's `cid` / `client_id`; else a
/// single-valued `aud` (Identity Authentication's client-credentials tokens carry only `sub`
/// and `aud`); else `sub`.
fn token_client(claims: &Value) -> Option<&str> {
    let text = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let single_aud = match claims.get("aud") {
        Some(Value::String(a)) if !a.is_empty() => Some(a.as_str()),
        Some(Value::Array(a)) if a.len() == 1 => a[0].as_str().filter(|s| !s.is_empty()),
        _ => None,
    };
    text("azp")
        .or_else(|| text("cid"))
        .or_else(|| text("client_id"))
        .or(single_aud)
        .or_else(|| text("sub"))
}

/// Classifies an HTTP error status (with the server's `error`/`error_description`).
pub fn classify_status(status: u16, body: &[u8], url: &str) -> CheckFailure {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        v.as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(|s| s.chars().take(200).collect::<String>())
    };
    let detail = match (field("error"), field("error_description")) {
        (Some(e), Some(d)) => format!(": {e}: {d}"),
        (Some(e), None) => format!(": {e}"),
        (None, Some(d)) => format!(": {d}"),
        (None, None) => String::new(),
    };
    let kind = match status {
        401 | 403 => FailureKind::Unauthorized,
        400 if field("error").as_deref() == Some("invalid_client") => FailureKind::Unauthorized,
        429 => FailureKind::RateLimited,
        500..=599 => FailureKind::ServerError,
        _ => FailureKind::BadResponse,
    };
    fail(kind, url, format!("HTTP {status}{detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn kind_rules() {
        let x = map(
            json!({"certurl": "https://t.authentication.cert.eu10.hana.ondemand.com/", "url": "https://t.authentication.eu10.hana.ondemand.com"}),
        );
        assert_eq!(
            token_url_by_kind(Kind::Xsuaa, &x).unwrap(),
            "https://t.authentication.cert.eu10.hana.ondemand.com/oauth/token"
        );
        let only_url = map(json!({"url": "https://t.authentication.eu10.hana.ondemand.com"}));
        assert_eq!(
            token_url_by_kind(Kind::Xsuaa, &only_url).unwrap(),
            "https://t.authentication.cert.eu10.hana.ondemand.com/oauth/token"
        );
        assert_eq!(
            token_url_by_kind(Kind::Xsuaa, &map(json!({"url": "https://idp.example"}))),
            None
        );
        let ias = map(json!({"url": "https://tenant.accounts.ondemand.com"}));
        assert_eq!(
            token_url_by_kind(Kind::Identity, &ias).unwrap(),
            "https://tenant.accounts.ondemand.com/oauth2/token"
        );
    }

    #[test]
    fn discovery_prefers_mtls_alias() {
        let d = br#"{"token_endpoint":"https://a/oauth/token","mtls_endpoint_aliases":{"token_endpoint":"https://a.cert/oauth/token"}}"#;
        assert_eq!(
            token_url_from_discovery(d, "https://a/.well-known", Kind::Xsuaa, &Map::new()).unwrap(),
            (
                "https://a.cert/oauth/token".to_string(),
                TokenUrlSource::DiscoveryMtlsAlias
            )
        );
        // No alias: Identity Authentication serves mTLS at its token_endpoint …
        let none = Map::new();
        let ias = br#"{"token_endpoint":"https://t.accounts.ondemand.com/oauth2/token"}"#;
        assert_eq!(
            token_url_from_discovery(ias, "d", Kind::Identity, &none).unwrap(),
            (
                "https://t.accounts.ondemand.com/oauth2/token".to_string(),
                TokenUrlSource::DiscoveryTokenEndpoint
            )
        );
        // … XSUAA's token_endpoint is the secrets host: the cert host instead.
        let xs =
            br#"{"token_endpoint":"https://s.authentication.eu10.hana.ondemand.com/oauth/token"}"#;
        assert_eq!(
            token_url_from_discovery(xs, "d", Kind::Xsuaa, &none)
                .unwrap()
                .0,
            "https://s.authentication.cert.eu10.hana.ondemand.com/oauth/token"
        );
        let certurl = map(json!({"certurl": "https://s.authentication.cert.x"}));
        assert_eq!(
            token_url_from_discovery(xs, "d", Kind::Xsuaa, &certurl).unwrap(),
            (
                "https://s.authentication.cert.x/oauth/token".to_string(),
                TokenUrlSource::KindRule
            )
        );
        let other = br#"{"token_endpoint":"https://idp.example/token"}"#;
        let e = token_url_from_discovery(other, "d", Kind::Xsuaa, &none).unwrap_err();
        assert!(e.message.contains("check.token_url"), "{e}");
        let e = token_url_from_discovery(b"<html>", "https://a/.well-known", Kind::Xsuaa, &none)
            .unwrap_err();
        assert_eq!(e.kind.label(), "discovery");
        assert!(
            e.to_string()
                .starts_with("discovery (https://a/.well-known): not a JSON document")
        );
        let e = token_url_from_discovery(
            br#"{"token_endpoint":"http://a/t"}"#,
            "d",
            Kind::Identity,
            &none,
        )
        .unwrap_err();
        assert!(e.message.contains("is not an https URL"), "{e}");
    }

    fn jwt(claims: Value) -> String {
        let e = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.{}",
            e(br#"{"alg":"ES256"}"#),
            e(claims.to_string().as_bytes()),
            e(b"sig")
        )
    }

    #[test]
    fn token_response_rules() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let ok = |claims: Value| {
            let body = json!({"access_token": jwt(claims), "token_type": "bearer"}).to_string();
            judge_token_response(body.as_bytes(), "https://t/oauth/token", "sb-app", now)
        };
        assert!(ok(json!({"cid": "sb-app", "exp": 1_800_000_100})).is_ok());
        assert!(ok(json!({"azp": "sb-app", "exp": 1_800_000_100})).is_ok());
        let e = ok(json!({"cid": "other", "exp": 1_800_000_100})).unwrap_err();
        assert_eq!(e.kind, FailureKind::BadResponse);
        assert!(e.message.contains("issued to client \"other\""));
        assert!(
            ok(json!({"cid": "sb-app", "exp": 1_700_000_000}))
                .unwrap_err()
                .message
                .contains("expired")
        );
        assert!(ok(json!({"exp": 1_800_000_100})).is_err());
        // Identity Authentication: the client in aud (single) and sub, no cid or azp.
        let ias = |aud: Value, sub: &str| {
            ok(json!({"aud": aud, "sub": sub, "iss": "https://t", "exp": 1_800_000_100}))
        };
        assert!(ias(json!("sb-app"), "sb-app").is_ok());
        assert!(ias(json!(["sb-app"]), "sb-app").is_ok());
        assert!(
            ias(json!("other"), "sb-app").is_err(),
            "aud names another client"
        );
        assert!(
            ias(json!(["x", "y"]), "sb-app").is_ok(),
            "several aud: sub decides"
        );
        assert!(ias(json!(["x", "y"]), "other").is_err());
        assert!(ok(json!({"azp": "other", "aud": "sb-app", "exp": 1_800_000_100})).is_err());
        let secret = jwt(json!({"cid": "other", "exp": 1}));
        let body = json!({"access_token": secret, "token_type": "bearer"}).to_string();
        let e = judge_token_response(body.as_bytes(), "u", "sb-app", now).unwrap_err();
        assert!(
            !e.to_string().contains(&secret),
            "token leaked into the error"
        );
        assert!(judge_token_response(br#"{"token_type":"bearer"}"#, "u", "c", now).is_err());
        assert!(judge_token_response(b"not json", "u", "c", now).is_err());
        // Opaque tokens are accepted as they are.
        assert!(
            judge_token_response(
                br#"{"access_token":"opaque","token_type":"bearer"}"#,
                "u",
                "c",
                now
            )
            .is_ok()
        );
    }

    #[test]
    fn status_classification() {
        let e = classify_status(
            401,
            br#"{"error":"invalid_client","error_description":"Unsupported instance credential"}"#,
            "u",
        );
        assert_eq!(
            e.to_string(),
            "unauthorized (u): HTTP 401: invalid_client: Unsupported instance credential"
        );
        assert_eq!(
            classify_status(400, br#"{"error":"invalid_client"}"#, "u").kind,
            FailureKind::Unauthorized
        );
        assert_eq!(
            classify_status(400, br#"{"error":"invalid_request"}"#, "u").kind,
            FailureKind::BadResponse
        );
        assert_eq!(classify_status(429, b"", "u").kind.label(), "rate-limited");
        assert_eq!(
            classify_status(503, b"<html>", "u").kind.label(),
            "server-error"
        );
    }
}
