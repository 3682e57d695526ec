//! The `vault-kv` replica: a Vault / OpenBao KV version 2 secret holding each generation as
//! one version, its data the service-key object certrot writes to `credentials.json`
//! (`certificate`, `key`, `clientid`, `certurl`, …), so an application or Vault Agent reads it
//! as it would read a service key. Writes use check-and-set (`options.cas` = the version
//! just read): a version written by someone else meanwhile is never overwritten blindly,
//! the write fails and is retried on the next run. API: `GET`/`POST /v1/<mount>/data/<path>`
//! (OpenBao's and Vault's KV v2 documentation).

use super::TargetError;
use crate::config::VaultKvTarget;
use crate::generation::Generation;
use crate::vault::{VaultClient, VaultSettings, vault_errors};
use serde_json::{Map, Value, json};

/// One KV v2 secret.
pub struct VaultKvStore {
    cfg: VaultKvTarget,
    api: VaultClient,
}

impl std::fmt::Debug for VaultKvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKvStore")
            .field("place", &self.place())
            .finish_non_exhaustive()
    }
}

/// What the secret holds now: its latest version (0: never written) and, unless that version
/// is deleted or destroyed, its data.
struct Latest {
    version: u64,
    data: Option<Map<String, Value>>,
}

impl VaultKvStore {
    pub fn new(cfg: &VaultKvTarget) -> Result<VaultKvStore, TargetError> {
        let api = VaultClient::new(&VaultSettings {
            url: &cfg.url,
            token_file: cfg.token_file.as_ref(),
            approle: cfg.approle.as_ref(),
            namespace: cfg.namespace.as_deref(),
            ca_file: cfg.ca_file.as_ref(),
            timeout: cfg.timeout.map(|t| t.0),
        })
        .map_err(|reason| TargetError::Vault {
            place: format!("vault-kv {}", cfg.url),
            reason,
        })?;
        Ok(VaultKvStore {
            cfg: cfg.clone(),
            api,
        })
    }

    /// `vault-kv <url>/v1/<mount>/data/<path>`, for messages.
    pub fn place(&self) -> String {
        crate::config::Replica::VaultKv(self.cfg.clone()).to_string()
    }

    fn fail(&self, reason: String) -> TargetError {
        TargetError::Vault {
            place: self.place(),
            reason,
        }
    }

    fn data_path(&self) -> String {
        format!("{}/data/{}", self.cfg.mount, self.cfg.path)
    }

    async fn latest(&self, token: &secrecy::SecretString) -> Result<Latest, TargetError> {
        let (status, body) = self
            .api
            .call(reqwest::Method::GET, &self.data_path(), Some(token), None)
            .await
            .map_err(|m| self.fail(m))?;
        let parsed = || -> Result<Value, TargetError> {
            serde_json::from_slice(&body).map_err(|e| {
                self.fail(format!(
                    "the answer is not JSON: {}",
                    crate::x509::json_error(&e)
                ))
            })
        };
        match status {
            200 => {
                let v = parsed()?;
                let version = v["data"]["metadata"]["version"].as_u64().unwrap_or(0);
                let data = v["data"]["data"].as_object().cloned();
                Ok(Latest { version, data })
            }
            // No secret, or its latest version deleted: the body may still name the version.
            404 => {
                let version = parsed()
                    .ok()
                    .and_then(|v| v["data"]["metadata"]["version"].as_u64())
                    .unwrap_or(0);
                Ok(Latest {
                    version,
                    data: None,
                })
            }
            _ => Err(self.fail(format!("reading: HTTP {status}: {}", vault_errors(&body)))),
        }
    }

    /// The generation the secret serves now, `None` when it holds none.
    pub async fn read_current(&self) -> Result<Option<Generation>, TargetError> {
        let token = self.api.token().await.map_err(|m| self.fail(m))?;
        let Some(data) = self.latest(&token).await?.data else {
            return Ok(None);
        };
        let field = |k: &str| data.get(k).and_then(Value::as_str);
        let (Some(cert), Some(key)) = (field("certificate"), field("key")) else {
            return Err(self.fail(
                "the secret has no `certificate` and `key` fields: it is not certrot's (nothing is written over it)".into(),
            ));
        };
        let key = zeroize::Zeroizing::new(key.as_bytes().to_vec());
        let place = self.place();
        let g = Generation::from_pem(
            cert.as_bytes(),
            &format!("{place} field certificate"),
            &key,
            &format!("{place} field key"),
        )?;
        Ok(Some(g.with_credentials(data)))
    }

    /// Writes `g` as the secret's next version, check-and-set on the version read; returns
    /// the version written.
    pub async fn commit(&self, g: &Generation) -> Result<String, TargetError> {
        let token = self.api.token().await.map_err(|m| self.fail(m))?;
        let latest = self.latest(&token).await?;
        if let Some(d) = &latest.data
            && !(d.contains_key("certificate") && d.contains_key("key"))
        {
            return Err(self.fail(
                "the secret holds other data (no `certificate` and `key` fields): not overwritten"
                    .into(),
            ));
        }
        let data = Value::Object(g.library_fields());
        let body = json!({"options": {"cas": latest.version}, "data": data});
        let (status, resp) = self
            .api
            .call(
                reqwest::Method::POST,
                &self.data_path(),
                Some(&token),
                Some(&body),
            )
            .await
            .map_err(|m| self.fail(m))?;
        if !(200..300).contains(&status) {
            let why = vault_errors(&resp);
            return Err(self.fail(if why.contains("check-and-set") {
                format!(
                    "another writer changed the secret after version {} was read: not overwritten ({why})",
                    latest.version
                )
            } else {
                format!("writing: HTTP {status}: {why}")
            }));
        }
        let v: Value = serde_json::from_slice(&resp).unwrap_or(Value::Null);
        Ok(format!(
            "version {}",
            v["data"]["version"]
                .as_u64()
                .unwrap_or(latest.version.saturating_add(1))
        ))
    }
}
