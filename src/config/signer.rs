//! `[credential.issuer.signer]`: the signer of self-made CSRs, raw as written and resolved
//! into one variant per signer type that carries exactly that type's fields.

use crate::units::Span;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSigner {
    #[serde(rename = "type")]
    type_: SignerType,
    ca_cert: Option<PathBuf>,
    ca_key: Option<PathBuf>,
    validity: Option<Span>,
    url: Option<String>,
    mount: Option<String>,
    role: Option<String>,
    verbatim: Option<bool>,
    token_file: Option<PathBuf>,
    approle: Option<AppRole>,
    namespace: Option<String>,
    ca_file: Option<PathBuf>,
    timeout: Option<Span>,
    argv: Option<Vec<String>>,
}

/// A signer of self-made CSRs: each type with exactly the fields it uses.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SignerConfig {
    LocalCa(LocalCaConfig),
    Vault(VaultConfig),
    Command(CommandConfig),
}

/// `local-ca`: a CA certificate and key on this host.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LocalCaConfig {
    /// The CA certificate (PEM; intermediates after it are sent along).
    pub ca_cert: PathBuf,
    /// The CA's private key (PEM).
    pub ca_key: PathBuf,
    /// Lifetime of signed certificates (default 7 days).
    pub validity: Option<Span>,
}

/// `vault`: a Vault / OpenBao PKI secrets engine.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VaultConfig {
    /// The server, e.g. `https://vault.example:8200` (https only).
    pub url: String,
    /// The PKI secrets engine's mount (default `pki`).
    pub mount: String,
    /// The role.
    pub role: String,
    /// `sign-verbatim` (keeps the CSR's whole subject) instead of `sign`.
    pub verbatim: bool,
    /// A file holding the token (else `VAULT_TOKEN`, else `approle`).
    pub token_file: Option<PathBuf>,
    pub approle: Option<AppRole>,
    /// `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// Extra CA certificates for the server (verification cannot be turned off).
    pub ca_file: Option<PathBuf>,
    /// Time limit of a call (default 30 s).
    pub timeout: Option<Span>,
    /// The `ttl` asked for (default the role's).
    pub validity: Option<Span>,
}

/// `command`: an external program, CSR PEM on stdin, chain PEM on stdout.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CommandConfig {
    /// argv, run without a shell; never empty.
    pub argv: Vec<String>,
    /// Time limit (default 60 s).
    pub timeout: Option<Span>,
}

impl SignerConfig {
    /// Its `signer.type`.
    pub fn type_(&self) -> SignerType {
        match self {
            SignerConfig::LocalCa(_) => SignerType::LocalCa,
            SignerConfig::Vault(_) => SignerType::Vault,
            SignerConfig::Command(_) => SignerType::Command,
        }
    }
}

impl RawSigner {
    /// Resolves to the fields its type uses; a field of another type, or a missing one, is
    /// an error `(field, message)`.
    pub(crate) fn resolve(self) -> Result<SignerConfig, (String, String)> {
        let e = |f: &str, m: &str| Err((format!("signer.{f}"), m.to_string()));
        if self.timeout.is_some_and(|t| t.0.is_zero()) {
            return e("timeout", "must be greater than zero");
        }
        let name = match self.type_ {
            SignerType::LocalCa => "local-ca",
            SignerType::Vault => "vault",
            SignerType::Command => "command",
        };
        let uses = |f: &str| match self.type_ {
            SignerType::LocalCa => ["ca_cert", "ca_key", "validity"].contains(&f),
            SignerType::Vault => !["ca_cert", "ca_key", "argv"].contains(&f),
            SignerType::Command => ["argv", "timeout"].contains(&f),
        };
        for (set, f) in [
            (self.ca_cert.is_some(), "ca_cert"),
            (self.ca_key.is_some(), "ca_key"),
            (self.validity.is_some(), "validity"),
            (self.url.is_some(), "url"),
            (self.mount.is_some(), "mount"),
            (self.role.is_some(), "role"),
            (self.verbatim.is_some(), "verbatim"),
            (self.token_file.is_some(), "token_file"),
            (self.approle.is_some(), "approle"),
            (self.namespace.is_some(), "namespace"),
            (self.ca_file.is_some(), "ca_file"),
            (self.timeout.is_some(), "timeout"),
            (self.argv.is_some(), "argv"),
        ] {
            if set && !uses(f) {
                return e(f, &format!("is not used by a {name} signer"));
            }
        }
        match self.type_ {
            SignerType::LocalCa => {
                let (Some(ca_cert), Some(ca_key)) = (self.ca_cert, self.ca_key) else {
                    return e("ca_cert", "a local-ca signer needs ca_cert and ca_key");
                };
                Ok(SignerConfig::LocalCa(LocalCaConfig {
                    ca_cert,
                    ca_key,
                    validity: self.validity,
                }))
            }
            SignerType::Vault => {
                let url = match self.url {
                    None => return e("url", "a vault signer needs url (https://…)"),
                    Some(u) if !u.starts_with("https://") => {
                        return e(
                            "url",
                            "must be an https URL: the token and the CSR travel over it",
                        );
                    }
                    Some(u) => u,
                };
                let Some(role) = self.role.filter(|r| !r.is_empty()) else {
                    return e("role", "a vault signer needs the PKI role");
                };
                Ok(SignerConfig::Vault(VaultConfig {
                    url,
                    mount: self.mount.unwrap_or_else(|| "pki".into()),
                    role,
                    verbatim: self.verbatim.unwrap_or(false),
                    token_file: self.token_file,
                    approle: self.approle,
                    namespace: self.namespace,
                    ca_file: self.ca_file,
                    timeout: self.timeout,
                    validity: self.validity,
                }))
            }
            SignerType::Command => match self.argv {
                Some(argv) if !argv.is_empty() && !argv[0].is_empty() => {
                    Ok(SignerConfig::Command(CommandConfig {
                        argv,
                        timeout: self.timeout,
                    }))
                }
                _ => e(
                    "argv",
                    "a command signer needs argv = [\"/path/to/program\", …]",
                ),
            },
        }
    }
}
