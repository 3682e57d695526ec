//! The configuration file: TOML schema (serde, `deny_unknown_fields`), defaults, and
//! validation into an effective [`Config`] in which every credential carries its resolved
//! settings.
//!
//! Every error names the file, the line and column where known, and the field path
//! (`credential[1].renew_before`), and is returned, never panicked.

mod hook;
mod include;
mod issuer;
mod probe;
mod report;
mod schedule;
mod sections;
mod signer;
mod target;
mod validate;

pub use probe::expand_probe_url;
pub use schedule::*;
pub use target::*;
use validate::*;

pub use hook::{Hook, HookAction, HookOn};
pub use issuer::{
    CsrIssuer, Issuer, KeyType, RotateKey, ServiceManagerConfig, SmAccessSource, SmCertificate,
    SmIssuer, SmMode,
};
pub use signer::{AppRole, CommandConfig, LocalCaConfig, SignerConfig, SignerType, VaultConfig};

use crate::units::{FileMode, Jitter, RenewBefore, Span};
use serde::{Deserialize, Deserializer, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where the configuration is read from when neither `--config` nor `CERTROT_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/certrot/certrot.toml";
/// Where per-credential state lives unless `state_dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/certrot";
/// Configuration files (the main one and each included one) above this size are refused:
/// room for 100,000 credentials of a few hundred bytes each.
pub const MAX_CONFIG_BYTES: u64 = 64 << 20;

/// A configuration that could not be loaded. The message names file, position and field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the configuration is {size} bytes, over the 64 MiB limit")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path}: the configuration is not UTF-8 text")]
    NotUtf8 { path: PathBuf },
    #[error("{}", format_invalid(path, *position, field, message))]
    Invalid {
        path: PathBuf,
        /// 1-based line and column, when the error points at a place in the file.
        position: Option<(usize, usize)>,
        /// Field path such as `credential[1].renew_before`; empty for syntax errors.
        field: String,
        message: String,
    },
}

fn format_invalid(
    path: &Path,
    position: Option<(usize, usize)>,
    field: &str,
    message: &str,
) -> String {
    let mut s = path.display().to_string();
    if let Some((line, col)) = position {
        s.push_str(&format!(":{line}:{col}"));
    }
    s.push_str(": ");
    if !field.is_empty() {
        s.push_str(field);
        s.push_str(": ");
    }
    s.push_str(message);
    s
}

/// The kind of SAP service a credential authenticates against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// SAP Authorization and Trust Management (XSUAA): token at `<certurl>/oauth/token`.
    #[default]
    Xsuaa,
    /// SAP Cloud Identity Services: token at `<url>/oauth2/token`.
    Identity,
    /// Any other service with X.509 bindings (Cloud Logging, Credential Store, …): binding
    /// parameters passed through, proven by an mTLS probe (`check.probe_url`).
    Generic,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Xsuaa => "xsuaa",
            Kind::Identity => "identity",
            Kind::Generic => "generic",
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    name: String,
    #[serde(default)]
    kind: Kind,
    renew_before: Option<RenewBefore>,
    critical_before: Option<Span>,
    jitter: Option<Jitter>,
    retire_after: Option<Span>,
    keep_generations: Option<u32>,
    window: Option<Vec<Window>>,
    target: RawTargets,
    #[serde(default)]
    check: CheckConfig,
    issuer: Option<issuer::RawIssuer>,
    #[serde(default)]
    hook: Vec<hook::RawHook>,
    #[serde(default)]
    fields: serde_json::Map<String, serde_json::Value>,
    certificate_field: Option<String>,
    key_field: Option<String>,
}

impl RawCredential {
    fn policy(&self) -> RawPolicy {
        RawPolicy {
            renew_before: self.renew_before,
            critical_before: self.critical_before,
            jitter: self.jitter,
            retire_after: self.retire_after,
            keep_generations: self.keep_generations,
            window: self.window.clone(),
        }
    }
}

/// One managed credential with every setting resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Credential {
    pub name: String,
    pub kind: Kind,
    /// Shared with the credential before it when the same (a fleet's are mostly the
    /// defaults): one copy, not one per credential.
    pub policy: std::sync::Arc<Policy>,
    /// The first target: it holds the state and the lock, and `rollback` acts on it first.
    pub target: Target,
    /// Further targets (`[[credential.target]]` after the first): each committed generation
    /// is copied to them, and a replaced binding is retired only once all of them serve the
    /// new generation.
    pub replicas: Vec<Replica>,
    /// Shared with the credential before it when the same, like `policy`.
    pub check: std::sync::Arc<CheckConfig>,
    /// How new generations are obtained; `None` for credentials that are only imported.
    pub issuer: Option<Issuer>,
    pub hooks: Vec<Hook>,
    /// `[credential.fields]`: service-key fields (`certurl`, `url`, `xsappname`, …) every
    /// generation carries; the issuer's answer wins where it has the field.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// The credential fields holding the certificate chain and the private key (`kind =
    /// "generic"` may name others, e.g. Cloud Logging's `ingest-mtls-cert`).
    pub pem_fields: PemFields,
}

/// Names of the certificate and key fields of a credential's service key and bindings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PemFields {
    pub certificate: Cow<'static, str>,
    pub key: Cow<'static, str>,
}

impl Default for PemFields {
    fn default() -> Self {
        PemFields {
            certificate: Cow::Borrowed("certificate"),
            key: Cow::Borrowed("key"),
        }
    }
}

/// How an mTLS probe calls its URL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ProbeMethod {
    #[default]
    Get,
    Head,
    Post,
    Put,
}

impl ProbeMethod {
    pub fn name(self) -> &'static str {
        match self {
            ProbeMethod::Get => "GET",
            ProbeMethod::Head => "HEAD",
            ProbeMethod::Post => "POST",
            ProbeMethod::Put => "PUT",
        }
    }
}

/// `[credential.check]`: how the token check reaches the token endpoint.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckConfig {
    /// Token endpoint; default: from `discovery_url`, else by kind from the credential fields.
    pub token_url: Option<String>,
    /// OIDC discovery document naming the token endpoint (`mtls_endpoint_aliases` first).
    pub discovery_url: Option<String>,
    /// OAuth client id; default: the credential's `clientid`.
    pub client_id: Option<String>,
    /// Extra CA certificates (PEM) that verify the token endpoint's server certificate.
    pub ca_file: Option<PathBuf>,
    /// Also trust the system's roots (default true). Verification itself cannot be disabled.
    pub system_roots: bool,
    /// `app_tid` form parameter (identity).
    pub app_tid: Option<String>,
    pub connect_timeout: Span,
    pub timeout: Span,
    /// Token requests with a new generation before it counts as failed (propagation delay).
    pub attempts: u32,
    /// ... spread over this span.
    pub retry_for: Span,
    /// `kind = "generic"`: the URL an mTLS probe requests with the generation; `{field}`
    /// stands for a string credential field (e.g. `"https://{ingest-mtls-endpoint}/"`).
    pub probe_url: Option<String>,
    /// The probe's method: `GET`, `HEAD`, `POST` or `PUT`.
    pub probe_method: ProbeMethod,
    /// The body of a `POST` or `PUT` probe (sent as `application/json` when it parses as
    /// JSON, else as `text/plain`); none by default.
    pub probe_body: Option<String>,
    /// Extra request headers of the probe (e.g. `sapcp-credstore-namespace`).
    pub probe_headers: std::collections::BTreeMap<String, String>,
    /// HTTP statuses that prove the credential (default `[200]`).
    pub accept_status: Vec<u16>,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            token_url: None,
            discovery_url: None,
            client_id: None,
            ca_file: None,
            system_roots: true,
            app_tid: None,
            connect_timeout: Span::secs(10),
            timeout: Span::secs(30),
            attempts: 5,
            retry_for: Span::secs(30),
            probe_url: None,
            probe_method: ProbeMethod::Get,
            probe_body: None,
            probe_headers: std::collections::BTreeMap::new(),
            accept_status: vec![200],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Drop-in files with more `[[credential]]` tables: `"conf.d/*.toml"` or a list.
    #[serde(default)]
    include: include::Patterns,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    daemon: Daemon,
    #[serde(default)]
    defaults: RawPolicy,
    #[serde(default)]
    service_manager: std::collections::BTreeMap<String, issuer::RawServiceManager>,
    /// Boxed: each is freed as soon as it is validated, not with the whole list.
    #[serde(default)]
    #[allow(clippy::vec_box)] // 1 KB each: the list holds pointers, freed one by one
    credential: Vec<Box<RawCredential>>,
}

/// The whole, validated configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    #[serde(skip)]
    pub path: PathBuf,
    /// How many of the credentials came from `include`d files.
    #[serde(skip)]
    pub included: usize,
    pub state_dir: PathBuf,
    pub daemon: Daemon,
    pub defaults: Policy,
    pub service_managers: std::collections::BTreeMap<String, ServiceManagerConfig>,
    /// Shared, so that a rotation, a probe round or an inspection share takes its
    /// credentials without copying them (a fleet's configuration is most of its memory).
    pub credentials: Vec<std::sync::Arc<Credential>>,
}

/// Reads one configuration file: a regular file only (a FIFO would hang, /dev/zero never
/// end), at most [`MAX_CONFIG_BYTES`], UTF-8.
fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let (mut f, meta) = crate::fsutil::open_regular(path, true).map_err(read_err)?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
        });
    }
    let bytes =
        crate::fsutil::read_opened(&mut f, &meta, MAX_CONFIG_BYTES as usize).map_err(|_| {
            ConfigError::TooLarge {
                path: path.to_path_buf(),
                size: MAX_CONFIG_BYTES + 1,
            }
        })?;
    String::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_config_file(path)?;
        Config::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` is used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let whole = || from_toml::<RawConfig>(text, path, 0, |f, m| (f, m));
        // A fleet's file one credential section at a time (`sections`), each validated as
        // soon as it is parsed; else the whole document at once.
        let (mut raw, sections) = match sections::split(text) {
            Some(split) => {
                let raw = from_toml::<RawConfig>(&split.rest, path, 0, |f, m| (f, m))?;
                if raw.credential.is_empty() {
                    (raw, split.credentials)
                } else {
                    // `credential = [...]` outside the sections.
                    (whole()?, Vec::new())
                }
            }
            None => (whole()?, Vec::new()),
        };
        let written = std::mem::take(&mut raw.credential);
        let include = std::mem::take(&mut raw.include);
        let count = written.len() + sections.len();
        // The main file's credentials, then each included file's, in name order.
        let mut sources = include::Sources::new(path, text, count);
        let mut validator = Validator::new(raw, &sources, count)?;
        for raw in written {
            validator.add(*raw, &sources)?;
        }
        for (i, s) in sections.iter().enumerate() {
            let one = |f: String, m| match f.strip_prefix("credential[0]") {
                Some(rest) => (format!("credential[{i}]{rest}"), m),
                None => (f, m),
            };
            let section: include::Fragment = from_toml(s.text, path, s.first_line, one)?;
            for raw in section.credential {
                validator.add(*raw, &sources)?;
            }
        }
        for pattern in include.0 {
            for file in include::expand(path, &pattern)? {
                let text = read_config_file(&file)?;
                let fragment = include::parse_fragment(&file, &text)?;
                sources.add(&file, text.into(), fragment.credential.len());
                for raw in fragment.credential {
                    validator.add(*raw, &sources)?;
                }
            }
        }
        validator.finish(&sources)
    }

    /// The credentials named in `names`, or all when `names` is empty. Unknown names are an error.
    pub fn select(&self, names: &[String]) -> Result<Vec<&std::sync::Arc<Credential>>, String> {
        if names.is_empty() {
            return Ok(self.credentials.iter().collect());
        }
        names
            .iter()
            .map(|n| {
                self.credentials
                    .iter()
                    .find(|c| &c.name == n)
                    .ok_or_else(|| {
                        format!(
                            "{}: no credential named {n:?} (configured: {})",
                            self.path.display(),
                            self.credentials
                                .iter()
                                .map(|c| c.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })
            })
            .collect()
    }
}

/// Deserializes TOML `text` that starts at line `first_line + 1` of `path`; an error names
/// its line and column there, and its field and message as `adjust(field, message)` words
/// them.
fn from_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
    first_line: usize,
    adjust: impl Fn(String, String) -> (String, String),
) -> Result<T, ConfigError> {
    let invalid = |span, field: String, message: String| {
        let (field, message) = adjust(field, message);
        ConfigError::Invalid {
            path: path.to_path_buf(),
            position: position_of(text, span).map(|(line, col)| (line + first_line, col)),
            field,
            message,
        }
    };
    let de = toml::Deserializer::parse(text)
        .map_err(|e| invalid(e.span(), String::new(), e.message().to_string()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let field = if field == "." { String::new() } else { field };
        invalid(inner.span(), field, inner.message().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("c.toml")).map_err(|e| e.to_string())
    }

    /// A file parsed one credential section at a time gives the error (line, column,
    /// field, message) the whole-document parse gives, for a file with one error.
    #[test]
    fn sections_parsed_apart_err_like_the_whole_document() {
        let head = "state_dir = \"/s\"\n[daemon]\nlisten = \"\"\n\n[[credential]]\nname = \"a\"\n\
                    target.path = \"/t/a\"\n[credential.check]\ntoken_url = \"https://t/x\"\n\n";
        for tail in [
            "[[credential]]\nname = \"b\"\ntarget.path = \"/t/b\"\nkind = \"nope\"\n",
            "[[credential]]\nname = \"b\"\ntarget.path = \"/t/b\"\nbogus = 1\n",
            "[[credential]]\nname = \"b\"\ntarget.path = \"/t/b\"\n[credential.check]\nattempts = \"x\"\n",
            "[[credential]]\nname = \"b\"\ntarget.path = \"/t/b\"\nrenew_before = \n",
            "[[credential]]\nname = \"b\"\ntarget.path = \"/t/b\"\nname = \"c\"\n",
            "[[credential]]\nname = \"b\"\ntarget.path = \"/t/b\"\n[daemon]\nlisten = 5\n",
            "[defaults]\nrenew_before = []\n[[credential]]\nname = \"b\"\ntarget.path = \"/t/b\"\n",
            "  [[credential]]\n  name = \"b\"\n",
        ] {
            let text = format!("{head}{tail}");
            assert!(sections::split(&text).is_some(), "{text}");
            let whole = from_toml::<RawConfig>(&text, Path::new("c.toml"), 0, |f, m| (f, m))
                .map(|_| ())
                .map_err(|e| e.to_string());
            let apart = parse(&text).map(|_| ());
            assert!(whole.is_err(), "{text}");
            assert_eq!(apart, whole, "{text}");
        }
    }

    #[test]
    fn the_summary_speaks_the_configurations_words() {
        let c = parse(
            "[daemon]\nlisten = \"\"\n[[credential]]\nname = \"orders\"\ntarget.path = \"/srv/o\"\n\
             window = [{ cron = \"0 2 * * Mon-Fri\", duration = \"2h\" }]\n\
             issuer.type = \"csr\"\nissuer.subject = \"CN=orders\"\nissuer.rotate_key = \"never\"\n\
             issuer.signer = { type = \"local-ca\", ca_cert = \"/c.pem\", ca_key = \"/c.key\" }\n\
             check.client_id = \"c\"\ncheck.token_url = \"https://t.example/oauth/token\"\n\
             [[credential.hook]]\non = \"failure\"\nsignal = \"HUP\"\npid_file = \"/run/app.pid\"\n",
        )
        .unwrap();
        let s = c.summary();
        for want in [
            "daemon: no metrics listener, check_schedule \"0 */5 * * * *\"",
            "(rotate_key \"never\"), signer \"local-ca\"",
            "check: token request, token_url https://t.example/oauth/token",
            "window: opens \"0 2 * * Mon-Fri\" for 2h",
            "hook on \"failure\": signal HUP to the pid in /run/app.pid",
            "layout \"files\"",
        ] {
            assert!(s.contains(want), "{want}\n{s}");
        }
        for debug in ["Some(", "LocalCa", "Never", "Files", "Failure"] {
            assert!(!s.contains(debug), "a Debug form {debug:?} in\n{s}");
        }
    }

    const ONE: &str = r#"
state_dir = "/tmp/s"
[[credential]]
name = "orders"
[credential.target]
path = "/tmp/orders"
"#;

    #[test]
    fn minimal_gets_defaults() {
        let c = parse(ONE).unwrap();
        assert_eq!(c.credentials.len(), 1);
        let cred = &c.credentials[0];
        assert_eq!(cred.kind, Kind::Xsuaa);
        assert_eq!(*cred.policy, Policy::default());
        assert_eq!(c.daemon.listen, "127.0.0.1:9464");
    }

    /// A fleet's credentials with the same policy and check settings hold one copy of each;
    /// one that differs holds its own, and the next ones share again.
    #[test]
    fn equal_settings_of_neighbouring_credentials_are_shared() {
        let c = parse(
            r#"
state_dir = "/s"
[[credential]]
name = "a"
target.path = "/t/a"
check.attempts = 3
[[credential]]
name = "b"
target.path = "/t/b"
check.attempts = 3
[[credential]]
name = "c"
target.path = "/t/c"
renew_before = "50%"
check.attempts = 4
[[credential]]
name = "d"
target.path = "/t/d"
renew_before = "50%"
check.attempts = 4
"#,
        )
        .unwrap();
        let [a, b, cc, d] = &c.credentials[..] else {
            panic!("four credentials")
        };
        let same = |x: &Credential, y: &Credential| {
            (
                std::sync::Arc::ptr_eq(&x.policy, &y.policy),
                std::sync::Arc::ptr_eq(&x.check, &y.check),
            )
        };
        assert_eq!(same(a, b), (true, true));
        assert_eq!(same(b, cc), (false, false));
        assert_eq!(same(cc, d), (true, true));
        assert_eq!((a.check.attempts, cc.check.attempts), (3, 4));
        assert_eq!(*a.policy, Policy::default());
        assert_ne!(*cc.policy, Policy::default());
        // The usual PEM field names are not stored per credential.
        assert!(matches!(
            a.pem_fields.certificate,
            Cow::Borrowed("certificate")
        ));
    }

    /// A credential stays small: a fleet holds thousands (docs/performance.md, "A fleet's
    /// rotate holds what is in flight"). A large setting belongs behind a `Box` or an `Arc`.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_credential_is_at_most_456_bytes_before_its_strings() {
        assert!(
            std::mem::size_of::<Credential>() <= 456,
            "{}",
            std::mem::size_of::<Credential>()
        );
    }

    #[test]
    fn credential_overrides_defaults() {
        let c = parse(
            r#"
[defaults]
renew_before = "48h"
critical_before = "12h"
[[credential]]
name = "a"
target.path = "/tmp/a"
[[credential]]
name = "b"
renew_before = "50%"
target.path = "/tmp/b"
"#,
        )
        .unwrap();
        assert_eq!(c.credentials[0].policy.renew_before.to_string(), "2d");
        assert_eq!(c.credentials[1].policy.renew_before.to_string(), "50%");
        assert_eq!(c.credentials[1].policy.critical_before, Span::hours(12));
    }

    #[test]
    fn bad_duration_names_field_and_line() {
        let e = parse(
            "[[credential]]\nname = \"a\"\ntarget.path = \"/x\"\n[[credential]]\nname = \"b\"\nrenew_before = \"-3h\"\ntarget.path = \"/y\"\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with("c.toml:6:16: credential[1].renew_before: \"-3h\" is not a duration"),
            "{e}"
        );
    }

    #[test]
    fn warnings_name_contradictions_and_missing_files() {
        let c = parse(
            r#"
[[credential]]
name = "orders"
critical_before = "8d"
target.path = "/tmp/orders"
issuer.type = "csr"
issuer.subject = "CN=orders"
issuer.signer = { type = "local-ca", ca_cert = "/nonexistent/ca.pem", ca_key = "/nonexistent/ca.key" }
check.token_url = "https://t.example/oauth/token"
check.client_id = "sb-orders"
fields.certurl = "https://t.example"
[[credential]]
name = "login"
renew_before = "12h"
target.path = "/tmp/login"
issuer.type = "csr"
issuer.subject = "CN=login"
issuer.signer = { type = "local-ca", ca_cert = "/nonexistent/ca.pem", ca_key = "/nonexistent/ca.key", validity = "7d" }
check.token_url = "https://t.example/oauth/token"
check.client_id = "sb-login"
fields.certurl = "https://t.example"
"#,
        )
        .unwrap();
        let w = c.warnings();
        let has = |cred: &str, words: &str| {
            w.iter()
                .any(|l| l.contains(&format!("{cred:?}")) && l.contains(words))
        };
        assert!(has("orders", "CRITICAL for its whole life"), "{w:#?}");
        assert!(has("login", "turns CRITICAL before each renewal"), "{w:#?}");
        assert!(
            has(
                "orders",
                "issuer.signer.ca_key /nonexistent/ca.key does not exist"
            ),
            "{w:#?}"
        );
        // The defaults (a third of 7 days, critical 24 h) contradict nothing; files that
        // exist are not mentioned.
        let here = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let fine = parse(&format!(
            r#"
[[credential]]
name = "orders"
target.path = "/tmp/orders"
issuer.type = "csr"
issuer.subject = "CN=orders"
issuer.signer = {{ type = "local-ca", ca_cert = "{here}", ca_key = "{here}" }}
check.token_url = "https://t.example/oauth/token"
check.client_id = "sb-orders"
fields.certurl = "https://t.example"
"#
        ))
        .unwrap();
        assert_eq!(fine.warnings(), Vec::<String>::new());
    }

    #[test]
    fn cron_numeric_weekday_refused() {
        assert!(
            CronSpec::parse("0 3 * * 1-5")
                .unwrap_err()
                .contains("names")
        );
        assert!(CronSpec::parse("0 3 * * Mon-Fri").is_ok());
        assert!(CronSpec::parse("0 0 3 * * Mon-Fri").is_ok());
        assert!(CronSpec::parse("@daily").is_ok());
        assert!(CronSpec::parse("0 3 *").is_err());
    }
}
