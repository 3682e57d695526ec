//! The issuer part of the configuration: `[service_manager.<name>]` access entries and each
//! credential's `[credential.issuer]` (with its signer for self-managed certificates), raw
//! as written and resolved with defaults, validated with field paths.

use crate::units::Span;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// How certrot reaches one Service Manager.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceManagerConfig {
    /// A Service Manager service key (JSON, secret or x509 flavour).
    pub service_key: Option<PathBuf>,
    /// Or: a managed credential whose current generation is the access (x509 flavour).
    pub credential: Option<String>,
    /// Extra CA certificates for the Service Manager and its token endpoint.
    pub ca_file: Option<PathBuf>,
    #[serde(default = "yes")]
    pub system_roots: bool,
    /// `auto` lets Service Manager choose; `sync` / `async` force `?async=`.
    #[serde(default)]
    pub mode: SmMode,
    #[serde(default = "five_minutes")]
    pub operation_timeout: Span,
    #[serde(default = "ten_seconds")]
    pub connect_timeout: Span,
    #[serde(default = "thirty_seconds")]
    pub timeout: Span,
    /// Attempts per call for 422/429/5xx/timeouts.
    #[serde(default = "five")]
    pub attempts: u32,
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

/// `signer.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignerType {
    LocalCa,
    /// Vault / OpenBao PKI: `POST /v1/<mount>/sign/<role>` (or `sign-verbatim/<role>`).
    Vault,
    /// An external program: CSR PEM on stdin, certificate chain PEM on stdout.
    Command,
}

/// AppRole login for the `vault` signer.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppRole {
    pub role_id: String,
    pub secret_id_file: PathBuf,
    /// Mount of the AppRole auth method. Default `approle`.
    #[serde(default = "approle")]
    pub mount: String,
}

fn approle() -> String {
    "approle".into()
}

/// `[credential.issuer.signer]` as written.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SignerConfig {
    #[serde(rename = "type")]
    pub type_: SignerType,
    /// `local-ca`: the CA certificate (PEM; intermediates after it are sent along).
    pub ca_cert: Option<PathBuf>,
    /// `local-ca`: the CA's private key (PEM).
    pub ca_key: Option<PathBuf>,
    /// Lifetime of signed certificates (`local-ca` default 7 days; `vault`: the `ttl` asked
    /// for, default the role's).
    pub validity: Option<Span>,
    /// `vault`: the server, e.g. `https://vault.example:8200`.
    pub url: Option<String>,
    /// `vault`: the PKI secrets engine's mount. Default `pki`.
    pub mount: Option<String>,
    /// `vault`: the role.
    pub role: Option<String>,
    /// `vault`: `sign-verbatim` (keeps the CSR's whole subject) instead of `sign`.
    #[serde(default)]
    pub verbatim: bool,
    /// `vault`: a file holding the token (else `VAULT_TOKEN`, else `approle`).
    pub token_file: Option<PathBuf>,
    /// `vault`: AppRole login.
    pub approle: Option<AppRole>,
    /// `vault`: `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// `vault`: extra CA certificates for the server (verification cannot be turned off).
    pub ca_file: Option<PathBuf>,
    /// `vault` / `command`: time limit (default 30 s / 60 s).
    pub timeout: Option<Span>,
    /// `command`: argv, run without a shell.
    pub argv: Option<Vec<String>>,
}

impl SignerConfig {
    /// Checks the fields each signer type needs; `(field, message)` on error.
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        let e = |f: &str, m: &str| Err((format!("signer.{f}"), m.to_string()));
        match self.type_ {
            SignerType::LocalCa => {
                if self.ca_cert.is_none() || self.ca_key.is_none() {
                    return e("ca_cert", "a local-ca signer needs ca_cert and ca_key");
                }
            }
            SignerType::Vault => {
                match &self.url {
                    None => return e("url", "a vault signer needs url (https://…)"),
                    Some(u) if !u.starts_with("https://") => {
                        return e(
                            "url",
                            "must be an https URL: the token and the CSR travel over it",
                        );
                    }
                    _ => {}
                }
                if self.role.as_deref().is_none_or(str::is_empty) {
                    return e("role", "a vault signer needs the PKI role");
                }
            }
            SignerType::Command => match &self.argv {
                Some(a) if !a.is_empty() && !a[0].is_empty() => {}
                _ => {
                    return e(
                        "argv",
                        "a command signer needs argv = [\"/path/to/program\", …]",
                    );
                }
            },
        }
        if self.timeout.is_some_and(|t| t.0.is_zero()) {
            return e("timeout", "must be greater than zero");
        }
        Ok(())
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
    signer: Option<SignerConfig>,
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
    /// Bindings are named `<binding_prefix>-<UTC yyyymmddThhmmssZ>`.
    pub binding_prefix: String,
    pub key_length: u32,
    pub validity_days: u32,
    pub app_identifier: Option<String>,
    pub certificate: CertificateMode,
    pub key_type: KeyType,
    pub certificate_pinning: bool,
    pub signer: Option<SignerConfig>,
    /// Extra binding parameters, passed through.
    pub parameters: Map<String, Value>,
}

/// How new generations of a credential are obtained.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Issuer {
    ServiceManager(SmIssuer),
    Csr(CsrIssuer),
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
        managers: &std::collections::BTreeMap<String, ServiceManagerConfig>,
    ) -> Result<Issuer, (String, String)> {
        let e = |f: &str, m: String| Err((format!("issuer.{f}"), m));
        if let Some(s) = &self.signer {
            s.validate().map_err(|(f, m)| (format!("issuer.{f}"), m))?;
        }
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
            let Some(signer) = self.signer else {
                return e(
                    "signer",
                    "a csr issuer needs a signer (local-ca, vault or command)".into(),
                );
            };
            return Ok(Issuer::Csr(CsrIssuer {
                subject,
                sans: self.sans.unwrap_or_default(),
                key_type: self.key_type,
                rotate_key: self.rotate_key.unwrap_or_default(),
                signer,
            }));
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
        let key_length = self.key_length.unwrap_or(2048);
        let allowed: &[u32] = match kind {
            super::Kind::Xsuaa => &[2048, 4096, 8192],
            super::Kind::Identity => &[2048, 4096],
        };
        if !allowed.contains(&key_length) {
            return e(
                "key_length",
                format!("{key_length} is not one of {allowed:?} for {kind}"),
            );
        }
        let validity_days = self.validity_days.unwrap_or(match kind {
            super::Kind::Xsuaa => 7,
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
        if self.certificate == CertificateMode::SelfManaged {
            if self.signer.is_none() {
                return e(
                    "signer",
                    "certificate = \"self-managed\" needs a signer (e.g. signer = { type = \"local-ca\", ca_cert = …, ca_key = … })".into(),
                );
            }
        } else if self.signer.is_some() {
            return e(
                "signer",
                "a signer is used only with certificate = \"self-managed\"".into(),
            );
        }
        Ok(Issuer::ServiceManager(SmIssuer {
            service_manager,
            instance_id,
            binding_prefix,
            key_length,
            validity_days,
            app_identifier: self.app_identifier,
            certificate: self.certificate,
            key_type: self.key_type,
            certificate_pinning: self.certificate_pinning.unwrap_or(true),
            signer: self.signer,
            parameters: self.parameters.unwrap_or_default(),
        }))
    }
}

/// Validates the `[service_manager.*]` entries against the credential names.
pub(crate) fn validate_managers(
    managers: &std::collections::BTreeMap<String, ServiceManagerConfig>,
    credential_names: &[&str],
) -> Result<(), (String, String)> {
    for (name, m) in managers {
        let f = |k: &str| format!("service_manager.{name}.{k}");
        match (&m.service_key, &m.credential) {
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
            _ => {}
        }
        if m.attempts == 0 {
            return Err((f("attempts"), "must be at least 1".into()));
        }
        if m.timeout.0.is_zero() || m.connect_timeout.0.is_zero() || m.operation_timeout.0.is_zero()
        {
            return Err((f("timeout"), "timeouts must be greater than zero".into()));
        }
    }
    Ok(())
}
