//! [`Generation`]: one issued instance of a credential — ordered chain, private key and the
//! service-key shaped credential fields.
//!
//! A `Generation` can only be built through inspection, so one whose key does not match its
//! leaf cannot exist. Its `Debug` output never shows the key or any credential value.

use crate::x509::{self, CertInfo, InspectError, Inspected};
use serde_json::{Map, Value};
use std::fmt;
use zeroize::Zeroizing;

/// Credential fields whose values are never shown (anything else may still be sensitive, so
/// `Debug` prints field names only).
pub const SECRET_FIELDS: &[&str] = &["key", "clientsecret", "client_secret", "password"];

/// Fields that earlier certrot versions added to `credentials.json` although no SAP library
/// defines them; they are never carried into a new generation.
pub const INVENTED_FIELDS: &[&str] = &["token_url"];

/// Fields a generation always takes from its own chain and key, whatever its sources say.
pub const PEM_FIELDS: [&str; 2] = ["certificate", "key"];

/// The credential fields of a new generation: every field of the `previous` generation,
/// overlaid by the `configured` ones (`[credential.fields]`), overlaid by the issuer's
/// answer (`issued`): a later source wins where it has a field. Invented fields are dropped;
/// `certificate` and `key` are replaced by the generation's own when it is rendered.
pub fn merge_fields(
    previous: Option<&Map<String, Value>>,
    configured: &Map<String, Value>,
    issued: &Map<String, Value>,
) -> Map<String, Value> {
    let mut out = previous.cloned().unwrap_or_default();
    for source in [configured, issued] {
        for (k, v) in source {
            out.insert(k.clone(), v.clone());
        }
    }
    for k in INVENTED_FIELDS {
        out.remove(*k);
    }
    out
}

/// One generation of a credential.
pub struct Generation {
    inspected: Inspected,
    /// The credential fields as received (service key, binding), or synthesised.
    credentials: Map<String, Value>,
}

impl Generation {
    /// Inspects chain and key; fails unless the key matches one certificate (the leaf).
    pub fn from_pem(
        chain: &[u8],
        chain_source: &str,
        key: &[u8],
        key_source: &str,
    ) -> Result<Generation, InspectError> {
        Ok(Generation {
            inspected: x509::inspect(chain, chain_source, key, key_source)?,
            credentials: Map::new(),
        })
    }

    /// Attaches the credential fields (`clientid`, `certurl`, …) this generation came with.
    pub fn with_credentials(mut self, credentials: Map<String, Value>) -> Generation {
        self.credentials = credentials;
        self
    }

    pub fn leaf(&self) -> &CertInfo {
        self.inspected.leaf()
    }
    pub fn chain(&self) -> impl Iterator<Item = &CertInfo> {
        self.inspected.chain.iter().map(|c| &c.info)
    }
    pub fn chain_linked(&self) -> bool {
        self.inspected.chain_linked
    }
    pub fn key_type(&self) -> &str {
        &self.inspected.key.key_type
    }
    /// DER of the leaf certificate.
    pub fn leaf_der(&self) -> &[u8] {
        &self.inspected.chain[0].der
    }
    /// DER of every certificate, leaf first.
    pub fn chain_der(&self) -> impl Iterator<Item = &[u8]> {
        self.inspected.chain.iter().map(|c| c.der.as_slice())
    }
    /// The private key as PKCS#8 DER.
    pub fn key_pkcs8_der(&self) -> &[u8] {
        self.inspected.key.pkcs8_der()
    }
    /// The OAuth client id, from the credential fields.
    pub fn client_id(&self) -> Option<&str> {
        self.credentials.get("clientid").and_then(Value::as_str)
    }
    /// A credential field as text.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.credentials.get(name).and_then(Value::as_str)
    }
    pub fn credentials(&self) -> &Map<String, Value> {
        &self.credentials
    }

    /// The fields as an SAP library reads them: the credential fields with `certificate` and
    /// `key` set to this generation's chain (leaf first) and key (PKCS#8), and no field
    /// certrot invented.
    pub fn library_fields(&self) -> Map<String, Value> {
        let mut map = self.credentials.clone();
        for k in INVENTED_FIELDS {
            map.remove(*k);
        }
        map.insert("certificate".into(), Value::String(self.chain_pem()));
        map.insert("key".into(), Value::String(self.key_pem().to_string()));
        map
    }

    /// `cert.pem`: leaf first, then its issuers.
    pub fn chain_pem(&self) -> String {
        self.inspected.chain_pem()
    }
    /// `key.pem`: the key as PKCS#8.
    pub fn key_pem(&self) -> Zeroizing<String> {
        self.inspected.key.pkcs8_pem()
    }
    /// `bundle.pem`: key and chain in one file, so one read gives a consistent pair.
    pub fn bundle_pem(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::new());
        s.push_str(&self.key_pem());
        s.push_str(&self.chain_pem());
        s
    }
    /// `credentials.json`: the service-key shaped object of [`Generation::library_fields`].
    pub fn credentials_json(&self) -> Zeroizing<String> {
        let map = self.library_fields();
        let out = serde_json::to_string_pretty(&map).unwrap_or_default();
        Zeroizing::new(out + "\n")
    }
}

impl fmt::Debug for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let leaf = self.leaf();
        f.debug_struct("Generation")
            .field("subject", &leaf.subject)
            .field("serial", &leaf.serial)
            .field("not_after", &leaf.not_after)
            .field("client_id", &self.client_id())
            .field("key", &"[REDACTED]")
            .field(
                "credential_fields",
                &self.credentials.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}
