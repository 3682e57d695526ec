//! How certrot reaches Service Manager: the access read from a service key (secret or x509
//! flavour) or from a managed credential's fields. Secrets never appear in `Debug`.

use super::*;

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

#[cfg(test)]
mod tests {
    use super::*;

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
