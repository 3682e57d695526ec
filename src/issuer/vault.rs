//! The `vault` signer: the Vault / OpenBao PKI HTTP API. `POST <url>/v1/<mount>/sign/<role>`
//! (or `sign-verbatim/<role>` to keep the CSR's whole subject) with `{"csr", "format":"pem",
//! "ttl"}`; the chain is `data.certificate` + `data.ca_chain` (or `issuing_ca`). The token
//! comes from `token_file`, else `VAULT_TOKEN` / `BAO_TOKEN`, else an AppRole login
//! (`role_id`, `secret_id_file`). `namespace` goes into `X-Vault-Namespace`. HTTPS only, the
//! server verified (system roots and `ca_file`), timeouts, 1 MiB responses; Vault's `errors`
//! array is carried into the message. The token never appears in an error.

use super::sign::{SignError, SignRequest};
use crate::config::{AppRole, VaultConfig};
use crate::net::{Limits, ServerTrust, classify_transport, http_client, read_limited_body};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::time::Duration;

/// A configured Vault / OpenBao signer.
pub struct VaultSigner {
    url: String,
    mount: String,
    role: String,
    verbatim: bool,
    token_file: Option<std::path::PathBuf>,
    approle: Option<AppRole>,
    namespace: Option<String>,
    ttl: Option<Duration>,
    client: reqwest::Client,
    limits: Limits,
}

fn vault_errors(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => match v.get("errors").and_then(Value::as_array) {
            Some(a) if !a.is_empty() => a
                .iter()
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join("; "),
            _ => "no error message".into(),
        },
        Err(_) => String::from_utf8_lossy(body).chars().take(200).collect(),
    }
}

impl VaultSigner {
    pub fn load(cfg: &VaultConfig) -> Result<VaultSigner, SignError> {
        let e = |m: String| SignError {
            signer: "vault".into(),
            message: m,
        };
        let url = cfg.url.trim_end_matches('/').to_string();
        let ca = match &cfg.ca_file {
            Some(p) => Some(crate::fsutil::read_input(p).map_err(e)?),
            None => None,
        };
        let limits = Limits {
            timeout: cfg.timeout.map_or(Duration::from_secs(30), |t| t.0),
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
        .map_err(|m| e(format!("{url}: {m}")))?;
        Ok(VaultSigner {
            url,
            mount: cfg.mount.clone(),
            role: cfg.role.clone(),
            verbatim: cfg.verbatim,
            token_file: cfg.token_file.clone(),
            approle: cfg.approle.clone(),
            namespace: cfg.namespace.clone(),
            ttl: cfg.validity.map(|v| v.0),
            client,
            limits,
        })
    }

    fn err(&self, m: String) -> SignError {
        SignError {
            signer: format!("vault {}", self.url),
            message: m,
        }
    }

    async fn post(
        &self,
        path: &str,
        token: Option<&SecretString>,
        body: &Value,
    ) -> Result<(u16, Vec<u8>), SignError> {
        let url = format!("{}/v1/{path}", self.url);
        let mut req = self
            .client
            .post(&url)
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t.expose_secret());
        }
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        let resp = req
            .send()
            .await
            .map_err(|x| self.err(classify_transport(&x, &url).to_string()))?;
        let status = resp.status().as_u16();
        let body = read_limited_body(resp, self.limits.max_response, &url)
            .await
            .map_err(|x| self.err(x.to_string()))?;
        Ok((status, body))
    }

    async fn token(&self) -> Result<SecretString, SignError> {
        if let Some(p) = &self.token_file {
            let t = zeroize::Zeroizing::new(crate::fsutil::read_input(p).map_err(|m| self.err(m))?);
            let t = String::from_utf8_lossy(&t).trim().to_string();
            if t.is_empty() {
                return Err(self.err(format!("{}: the token file is empty", p.display())));
            }
            return Ok(SecretString::from(t));
        }
        if let Some(a) = &self.approle {
            let secret = zeroize::Zeroizing::new(
                crate::fsutil::read_input(&a.secret_id_file).map_err(|m| self.err(m))?,
            );
            let secret = String::from_utf8_lossy(&secret).trim().to_string();
            let (status, body) = self
                .post(
                    &format!("auth/{}/login", a.mount),
                    None,
                    &json!({"role_id": a.role_id, "secret_id": secret}),
                )
                .await?;
            if status != 200 {
                return Err(self.err(format!(
                    "AppRole login: HTTP {status}: {}",
                    vault_errors(&body)
                )));
            }
            let v: Value = serde_json::from_slice(&body)
                .map_err(|_| self.err("AppRole login: the answer is not JSON".into()))?;
            let t = v["auth"]["client_token"]
                .as_str()
                .ok_or_else(|| self.err("AppRole login: no auth.client_token".into()))?;
            return Ok(SecretString::from(t.to_string()));
        }
        for var in ["VAULT_TOKEN", "BAO_TOKEN"] {
            if let Ok(t) = std::env::var(var)
                && !t.trim().is_empty()
            {
                return Ok(SecretString::from(t.trim().to_string()));
            }
        }
        Err(self.err("no token: set token_file, approle, or VAULT_TOKEN".into()))
    }

    pub async fn sign(&self, req: &SignRequest<'_>) -> Result<String, SignError> {
        let token = self.token().await?;
        let op = if self.verbatim {
            "sign-verbatim"
        } else {
            "sign"
        };
        let mut body = json!({"csr": req.csr_pem, "format": "pem"});
        if let Some(t) = self.ttl {
            body["ttl"] = json!(format!("{}s", t.as_secs()));
        }
        let path = format!("{}/{op}/{}", self.mount, self.role);
        let (status, resp) = self.post(&path, Some(&token), &body).await?;
        if !(200..300).contains(&status) {
            return Err(self.err(format!("{path}: HTTP {status}: {}", vault_errors(&resp))));
        }
        let v: Value = serde_json::from_slice(&resp)
            .map_err(|_| self.err(format!("{path}: the answer is not JSON")))?;
        let data = &v["data"];
        let cert = data["certificate"]
            .as_str()
            .ok_or_else(|| self.err(format!("{path}: no data.certificate in the answer")))?;
        let mut chain = format!("{}\n", cert.trim_end());
        let cas: Vec<&str> = match data["ca_chain"].as_array() {
            Some(a) if !a.is_empty() => a.iter().filter_map(Value::as_str).collect(),
            _ => data["issuing_ca"].as_str().into_iter().collect(),
        };
        for ca in cas {
            chain.push_str(ca.trim_end());
            chain.push('\n');
        }
        Ok(chain)
    }
}
