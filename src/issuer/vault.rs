//! The `vault` signer: the Vault / OpenBao PKI HTTP API. `POST <url>/v1/<mount>/sign/<role>`
//! (or `sign-verbatim/<role>` to keep the CSR's whole subject) with `{"csr", "format":"pem",
//! "ttl"}`; the chain is `data.certificate` + `data.ca_chain` (or `issuing_ca`). The token
//! comes from `token_file`, else `VAULT_TOKEN` / `BAO_TOKEN`, else an AppRole login
//! (`role_id`, `secret_id_file`). `namespace` goes into `X-Vault-Namespace`. The HTTP side
//! (HTTPS, verification, limits, login) is [`crate::vault`]'s.

use super::sign::{SignError, SignRequest};
use crate::config::VaultConfig;
use crate::vault::{VaultClient, VaultSettings, vault_errors};
use serde_json::{Value, json};
use std::time::Duration;

/// A configured Vault / OpenBao signer.
pub struct VaultSigner {
    mount: String,
    role: String,
    verbatim: bool,
    ttl: Option<Duration>,
    api: VaultClient,
}

impl VaultSigner {
    pub fn load(cfg: &VaultConfig) -> Result<VaultSigner, SignError> {
        let api = VaultClient::new(&VaultSettings {
            url: &cfg.url,
            token_file: cfg.token_file.as_ref(),
            approle: cfg.approle.as_ref(),
            namespace: cfg.namespace.as_deref(),
            ca_file: cfg.ca_file.as_ref(),
            timeout: cfg.timeout.map(|t| t.0),
        })
        .map_err(|m| SignError {
            signer: "vault".into(),
            message: m,
        })?;
        Ok(VaultSigner {
            mount: cfg.mount.clone(),
            role: cfg.role.clone(),
            verbatim: cfg.verbatim,
            ttl: cfg.validity.map(|v| v.0),
            api,
        })
    }

    fn err(&self, m: String) -> SignError {
        SignError {
            signer: format!("vault {}", self.api.url()),
            message: m,
        }
    }

    pub async fn sign(&self, req: &SignRequest<'_>) -> Result<String, SignError> {
        let token = self.api.token().await.map_err(|m| self.err(m))?;
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
        let (status, resp) = self
            .api
            .call(reqwest::Method::POST, &path, Some(&token), Some(&body))
            .await
            .map_err(|m| self.err(m))?;
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
