//! The issuer part of the configuration: `[service_manager.<name>]` access entries and each
//! credential's `[credential.issuer]` (with its signer for self-managed certificates), raw
//! as written and resolved with defaults, validated with field paths.

use super::signer::{RawSigner, SignerConfig};
use crate::units::Span;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// `[service_manager.<name>]` as written.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServiceManager {
    service_key: Option<PathBuf>,
    credential: Option<String>,
    /// Extra CA certificates for the Service Manager and its token endpoint.
    ca_file: Option<PathBuf>,
    #[serde(default = "yes")]
    system_roots: bool,
    /// `auto` lets Service Manager choose; `sync` / `async` force `?async=`.
    #[serde(default)]
    mode: SmMode,
    #[serde(default = "five_minutes")]
    operation_timeout: Span,
    #[serde(default = "ten_seconds")]
    connect_timeout: Span,
    #[serde(default = "thirty_seconds")]
    timeout: Span,
    /// Attempts per call for 422/429/5xx/timeouts.
    #[serde(default = "five")]
    attempts: u32,
}

/// Where the access to a Service Manager comes from: exactly one of the two.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SmAccessSource {
    /// A Service Manager service key (JSON, secret or x509 flavour).
    ServiceKey(PathBuf),
    /// A managed credential whose current generation is the access (x509 flavour).
    Credential(String),
}

/// How certrot reaches one Service Manager, resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceManagerConfig {
    pub access: SmAccessSource,
    /// Extra CA certificates for the Service Manager and its token endpoint.
    pub ca_file: Option<PathBuf>,
    pub system_roots: bool,
    /// `auto` lets Service Manager choose; `sync` / `async` force `?async=`.
    pub mode: SmMode,
    pub operation_timeout: Span,
    pub connect_timeout: Span,
    pub timeout: Span,
    /// Attempts per call for 422/429/5xx/timeouts.
    pub attempts: u32,
}

impl ServiceManagerConfig {
    /// The managed credential that is this Service Manager's access, if it is one.
    pub fn access_credential(&self) -> Option<&str> {
        match &self.access {
            SmAccessSource::Credential(c) => Some(c),
            SmAccessSource::ServiceKey(_) => None,
        }
    }
}

fn yes() -> bool {
    true
}
fn five() -> u32 {
    5
}
fn five_minutes() -> Span {
    Span::secs(300)
}
fn ten_seconds() -> Span {
    Span::secs(10)
}
fn thirty_seconds() -> Span {
    Span::secs(30)
}

/// `[service_manager.*] mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmMode {
    #[default]
    Auto,
    Sync,
    Async,
}

/// `[credential.issuer] type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssuerType {
    #[default]
    ServiceManager,
    /// No Service Manager: a new certificate for the same subject and issuer, accepted by
    /// the service on the existing registration (XSUAA with `certificate-pinning: false`,
    /// RFC 8705 `tls_client_auth`).
    Csr,
}

/// Whether a self-made key is renewed with each certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RotateKey {
    #[default]
    Always,
    /// Reuse the current key (only the certificate changes).
    Never,
}

/// Who makes the key pair of a new generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertificateMode {
    /// The service generates key and certificate (the binding's credentials carry them).
    #[default]
    ServiceManaged,
    /// certrot generates the key and a CSR; a signer signs; the key never leaves the host.
    SelfManaged,
}

/// Who makes a Service Manager binding's certificate, resolved: a self-managed one always has
/// its signer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum SmCertificate {
    /// The service generates key and certificate.
    ServiceManaged,
    /// certrot makes the key and CSR; `signer` signs.
    SelfManaged { signer: Box<SignerConfig> },
}

impl SmCertificate {
    /// The signer of a self-managed certificate.
    pub fn signer(&self) -> Option<&SignerConfig> {
        match self {
            SmCertificate::ServiceManaged => None,
            SmCertificate::SelfManaged { signer } => Some(signer),
        }
    }
}

/// Key algorithm of self-made keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    #[default]
    EcdsaP256,
    EcdsaP384,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

impl KeyType {
    /// The configuration spelling (`ecdsa-p256`, `rsa-2048`, …).
    pub fn name(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }
}

/// `[credential.issuer]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIssuer {
    #[serde(rename = "type", default)]
    type_: IssuerType,
    service_manager: Option<String>,
    instance_id: Option<String>,
    binding_prefix: Option<String>,
    key_length: Option<u32>,
    validity_days: Option<u32>,
    app_identifier: Option<String>,
    #[serde(default)]
    certificate: CertificateMode,
    #[serde(default)]
    key_type: KeyType,
    certificate_pinning: Option<bool>,
    signer: Option<RawSigner>,
    parameters: Option<Map<String, Value>>,
    subject: Option<String>,
    sans: Option<Vec<String>>,
    rotate_key: Option<RotateKey>,
}

/// A resolved `csr` issuer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CsrIssuer {
    /// RFC 4514 subject, e.g. `CN=orders,OU=apps,O=ACME,C=DE`.
    pub subject: String,
    /// DNS names (or IP addresses) for the subjectAltName extension.
    pub sans: Vec<String>,
    pub key_type: KeyType,
    pub rotate_key: RotateKey,
    pub signer: SignerConfig,
}

/// A resolved `service-manager` issuer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SmIssuer {
    pub service_manager: String,
    pub instance_id: String,
    /// Bindings are named `<binding_prefix>-<UTC yyyymmddThhmmss.mmmZ>`.
    pub binding_prefix: String,
    pub key_length: u32,
    pub validity_days: u32,
    pub app_identifier: Option<String>,
    pub certificate: SmCertificate,
    pub key_type: KeyType,
    pub certificate_pinning: bool,
    /// Extra binding parameters, passed through.
    pub parameters: Map<String, Value>,
}

/// How new generations of a credential are obtained.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Issuer {
    ServiceManager(SmIssuer),
    /// Boxed: twice the size of the other, and rarer in a fleet.
    Csr(Box<CsrIssuer>),
}

fn label_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 80
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl RawIssuer {
    /// Resolves against the configured Service Managers; errors are `(field, message)`.
    pub(crate) fn resolve(
        self,
        credential: &str,
        kind: super::Kind,
        managers: &std::collections::BTreeMap<String, RawServiceManager>,
    ) -> Result<Issuer, (String, String)> {
        let e = |f: &str, m: String| Err((format!("issuer.{f}"), m));
        let signer = match self.signer {
            Some(s) => Some(s.resolve().map_err(|(f, m)| (format!("issuer.{f}"), m))?),
            None => None,
        };
        if self.type_ == IssuerType::Csr {
            for (set, f) in [
                (self.service_manager.is_some(), "service_manager"),
                (self.instance_id.is_some(), "instance_id"),
                (self.binding_prefix.is_some(), "binding_prefix"),
                (self.key_length.is_some(), "key_length"),
                (self.validity_days.is_some(), "validity_days"),
                (self.parameters.is_some(), "parameters"),
                (self.certificate_pinning.is_some(), "certificate_pinning"),
            ] {
                if set {
                    return e(
                        f,
                        "belongs to the service-manager issuer, not to type = \"csr\"".into(),
                    );
                }
            }
            let Some(subject) = self.subject.filter(|s| !s.trim().is_empty()) else {
                return e(
                    "subject",
                    "a csr issuer needs the subject DN (RFC 4514, e.g. \"CN=orders,O=ACME\"); it stays the same across rotations".into(),
                );
            };
            if let Err(m) = crate::dn::parse_dn(&subject) {
                return e("subject", m);
            }
            let Some(signer) = signer else {
                return e(
                    "signer",
                    "a csr issuer needs a signer (local-ca, vault or command)".into(),
                );
            };
            return Ok(Issuer::Csr(Box::new(CsrIssuer {
                subject,
                sans: self.sans.unwrap_or_default(),
                key_type: self.key_type,
                rotate_key: self.rotate_key.unwrap_or_default(),
                signer,
            })));
        }
        for (set, f) in [
            (self.subject.is_some(), "subject"),
            (self.sans.is_some(), "sans"),
            (self.rotate_key.is_some(), "rotate_key"),
        ] {
            if set {
                return e(f, "belongs to type = \"csr\"".into());
            }
        }
        let service_manager = match (self.service_manager, managers.len()) {
            (Some(n), _) if managers.contains_key(&n) => n,
            (Some(n), _) => {
                return e(
                    "service_manager",
                    format!("no [service_manager.{n}] is configured"),
                );
            }
            (None, 1) => managers.keys().next().cloned().unwrap_or_default(),
            (None, 0) => {
                return e(
                    "service_manager",
                    "a service-manager issuer needs a [service_manager.<name>] section".into(),
                );
            }
            (None, _) => {
                return e(
                    "service_manager",
                    "several Service Managers are configured: name one".into(),
                );
            }
        };
        let Some(instance_id) = self.instance_id.filter(|s| !s.trim().is_empty()) else {
            return e(
                "instance_id",
                "the service instance id is required (btp list services/instance)".into(),
            );
        };
        // Service Manager's query grammar keeps backslashes and cannot end a value in one;
        // instance ids are GUIDs.
        if !instance_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return e(
                "instance_id",
                format!(
                    "{instance_id:?} is not a Service Manager instance id (letters, digits, '-', '_', '.')"
                ),
            );
        }
        let binding_prefix = self
            .binding_prefix
            .unwrap_or_else(|| credential.to_string());
        if !label_safe(&binding_prefix) {
            return e(
                "binding_prefix",
                format!("{binding_prefix:?}: use 1-80 characters of A-Z a-z 0-9 . _ -"),
            );
        }
        if kind == super::Kind::Generic {
            for (set, f) in [
                (self.key_length.is_some(), "key_length"),
                (self.validity_days.is_some(), "validity_days"),
                (self.app_identifier.is_some(), "app_identifier"),
                (self.certificate_pinning.is_some(), "certificate_pinning"),
                (
                    self.certificate == CertificateMode::SelfManaged,
                    "certificate",
                ),
            ] {
                if set {
                    return e(
                        f,
                        "is for xsuaa and identity; a generic service takes its own binding \
                         parameters, as it documents them, in issuer.parameters"
                            .into(),
                    );
                }
            }
        }
        let key_length = self.key_length.unwrap_or(2048);
        let allowed: &[u32] = match kind {
            super::Kind::Xsuaa | super::Kind::Generic => &[2048, 4096, 8192],
            super::Kind::Identity => &[2048, 4096],
        };
        if !allowed.contains(&key_length) {
            return e(
                "key_length",
                format!("{key_length} is not one of {allowed:?} for {kind}"),
            );
        }
        let validity_days = self.validity_days.unwrap_or(match kind {
            super::Kind::Xsuaa | super::Kind::Generic => 7,
            super::Kind::Identity => 30,
        });
        if !(1..=30).contains(&validity_days) {
            return e(
                "validity_days",
                format!("{validity_days} is outside 1..30 (the services' range)"),
            );
        }
        if let Some(a) = &self.app_identifier
            && (a.is_empty() || a.len() > 20)
        {
            return e("app_identifier", format!("{a:?} must be 1-20 characters"));
        }
        let certificate = match (self.certificate, signer) {
            (CertificateMode::SelfManaged, Some(signer)) => SmCertificate::SelfManaged {
                signer: Box::new(signer),
            },
            (CertificateMode::SelfManaged, None) => {
                return e(
                    "signer",
                    "certificate = \"self-managed\" needs a signer (e.g. signer = { type = \"local-ca\", ca_cert = …, ca_key = … })".into(),
                );
            }
            (CertificateMode::ServiceManaged, None) => SmCertificate::ServiceManaged,
            (CertificateMode::ServiceManaged, Some(_)) => {
                return e(
                    "signer",
                    "a signer is used only with certificate = \"self-managed\"".into(),
                );
            }
        };
        Ok(Issuer::ServiceManager(SmIssuer {
            service_manager,
            instance_id,
            binding_prefix,
            key_length,
            validity_days,
            app_identifier: self.app_identifier,
            certificate,
            key_type: self.key_type,
            certificate_pinning: self.certificate_pinning.unwrap_or(true),
            parameters: self.parameters.unwrap_or_default(),
        }))
    }
}

/// Resolves the `[service_manager.*]` entries, checked against the credential names.
pub(crate) fn resolve_managers(
    managers: std::collections::BTreeMap<String, RawServiceManager>,
    credential_names: &[&str],
) -> Result<std::collections::BTreeMap<String, ServiceManagerConfig>, (String, String)> {
    let mut out = std::collections::BTreeMap::new();
    for (name, m) in managers {
        let f = |k: &str| format!("service_manager.{name}.{k}");
        let access = match (m.service_key, m.credential) {
            (Some(_), Some(_)) => {
                return Err((
                    f("credential"),
                    "set service_key or credential, not both".into(),
                ));
            }
            (None, None) => {
                return Err((
                    f("service_key"),
                    "set service_key (a JSON service key) or credential (a managed credential)"
                        .into(),
                ));
            }
            (None, Some(c)) if !credential_names.contains(&c.as_str()) => {
                return Err((f("credential"), format!("no credential named {c:?}")));
            }
            (None, Some(c)) => SmAccessSource::Credential(c),
            (Some(k), None) => SmAccessSource::ServiceKey(k),
        };
        if m.attempts == 0 {
            return Err((f("attempts"), "must be at least 1".into()));
        }
        if m.timeout.0.is_zero() || m.connect_timeout.0.is_zero() || m.operation_timeout.0.is_zero()
        {
            return Err((f("timeout"), "timeouts must be greater than zero".into()));
        }
        out.insert(
            name,
            ServiceManagerConfig {
                access,
                ca_file: m.ca_file,
                system_roots: m.system_roots,
                mode: m.mode,
                operation_timeout: m.operation_timeout,
                connect_timeout: m.connect_timeout,
                timeout: m.timeout,
                attempts: m.attempts,
            },
        );
    }
    Ok(out)
}
