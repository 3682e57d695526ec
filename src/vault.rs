//! The Vault / OpenBao HTTP API as both users of it need it (the `vault` signer and the
//! `vault-kv` target): HTTPS only with the server verified (system roots and `ca_file`),
//! timeouts and size-limited answers, the token from `token_file`, an AppRole login
//! (`role_id`, `secret_id_file`) or `VAULT_TOKEN` / `BAO_TOKEN`, `X-Vault-Namespace`, and
//! Vault's `errors` array carried into messages. The token never appears in an error.

use crate::config::AppRole;
use crate::net::{Limits, ServerTrust, classify_transport, http_client, read_limited_body};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach and log in to one Vault / OpenBao server.
pub struct VaultSettings<'a> {
    pub url: &'a str,
    pub token_file: Option<&'a PathBuf>,
    pub approle: Option<&'a AppRole>,
    pub namespace: Option<&'a str>,
    pub ca_file: Option<&'a PathBuf>,
    pub timeout: Option<Duration>,
}

/// A client of one server; errors are plain messages without the server's name (callers
/// say which signer or target they were).
pub struct VaultClient {
    url: String,
    token_file: Option<PathBuf>,
    approle: Option<AppRole>,
    namespace: Option<String>,
    client: reqwest::Client,
    limits: Limits,
}

/// Vault's `errors` array as one line (or the start of a body that is not Vault's JSON).
pub fn vault_errors(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => match v.get("errors").and_then(Value::as_array) {
            Some(a) if !a.is_empty() => a
                .iter()
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join("; "),
            _ => "no error message".into(),
        },
        Err(_) => crate::text::printable(&String::from_utf8_lossy(body), 200),
    }
}

impl VaultClient {
    pub fn new(s: &VaultSettings<'_>) -> Result<VaultClient, String> {
        let url = s.url.trim_end_matches('/').to_string();
        let ca = match s.ca_file {
            Some(p) => Some(crate::fsutil::read_input(p)?),
            None => None,
        };
        let limits = Limits {
            timeout: s.timeout.unwrap_or(Duration::from_secs(30)),
            ..Limits::default()
        };
        let client = http_client(
            None,
            ServerTrust {
                system_roots: true,
                extra_ca_pem: ca.as_deref(),
            },
            limits,
            true,
        )
        .map_err(|m| format!("{url}: {m}"))?;
        Ok(VaultClient {
            url,
            token_file: s.token_file.cloned(),
            approle: s.approle.cloned(),
            namespace: s.namespace.map(str::to_string),
            client,
            limits,
        })
    }

    /// The server's address, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `method /v1/<path>` with a JSON `body` (none for GET); the status and the body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&SecretString>,
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>), String> {
        let url = format!("{}/v1/{path}", self.url);
        let mut req = self.client.request(method, &url);
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t.expose_secret());
        }
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        let resp = req
            .send()
            .await
            .map_err(|x| classify_transport(&x, &url).to_string())?;
        let status = resp.status().as_u16();
        let body = read_limited_body(resp, self.limits.max_response, &url)
            .await
            .map_err(|x| x.to_string())?;
        Ok((status, body))
    }

    /// A token: from `token_file`, else an AppRole login, else `VAULT_TOKEN` / `BAO_TOKEN`.
    pub async fn token(&self) -> Result<SecretString, String> {
        if let Some(p) = &self.token_file {
            let t = zeroize::Zeroizing::new(crate::fsutil::read_input(p)?);
            let t = String::from_utf8_lossy(&t).trim().to_string();
            if t.is_empty() {
                return Err(format!("{}: the token file is empty", p.display()));
            }
            return Ok(SecretString::from(t));
        }
        if let Some(a) = &self.approle {
            let secret = zeroize::Zeroizing::new(crate::fsutil::read_input(&a.secret_id_file)?);
            let secret =
                zeroize::Zeroizing::new(String::from_utf8_lossy(&secret).trim().to_string());
            let (status, body) = self
                .call(
                    reqwest::Method::POST,
                    &format!("auth/{}/login", a.mount),
                    None,
                    Some(&json!({"role_id": a.role_id, "secret_id": secret.as_str()})),
                )
                .await?;
            if status != 200 {
                return Err(format!(
                    "AppRole login: HTTP {status}: {}",
                    vault_errors(&body)
                ));
            }
            let v: Value = serde_json::from_slice(&body)
                .map_err(|_| "AppRole login: the answer is not JSON".to_string())?;
            let t = v["auth"]["client_token"]
                .as_str()
                .ok_or_else(|| "AppRole login: no auth.client_token".to_string())?;
            return Ok(SecretString::from(t.to_string()));
        }
        for var in ["VAULT_TOKEN", "BAO_TOKEN"] {
            if let Ok(t) = std::env::var(var)
                && !t.trim().is_empty()
            {
                return Ok(SecretString::from(t.trim().to_string()));
            }
        }
        Err("no token: set token_file, approle, or VAULT_TOKEN".into())
    }
}
