//! The configuration file: TOML schema (serde, `deny_unknown_fields`), defaults, and
//! validation into an effective [`Config`] in which every credential carries its resolved
//! settings.
//!
//! Every error names the file, the line and column where known, and the field path
//! (`credential[1].renew_before`), and is returned, never panicked.

mod hook;
mod issuer;

pub use hook::{Hook, HookAction, HookOn};
pub use issuer::{
    AppRole, CertificateMode, CsrIssuer, Issuer, KeyType, RotateKey, ServiceManagerConfig,
    SignerConfig, SignerType, SmIssuer, SmMode,
};

use crate::units::{FileMode, Jitter, RenewBefore, Span};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where the configuration is read from when neither `--config` nor `CERTROT_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/certrot/certrot.toml";
/// Where per-credential state lives unless `state_dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/certrot";
/// Configuration files above this size are refused.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A configuration that could not be loaded. The message names file, position and field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the configuration is {size} bytes, over the 1 MiB limit")]
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
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Xsuaa => "xsuaa",
            Kind::Identity => "identity",
        })
    }
}

/// How files are laid out in a directory target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// `cert.pem`, `key.pem`, `bundle.pem`, `credentials.json`.
    #[default]
    Files,
    /// One file per credential field, `type`, `label`, `tags` and `.metadata`
    /// (servicebinding.io, as `@sap/xsenv` reads it); certrot's own files only on request.
    Servicebinding,
}

/// How the `servicebinding` layout presents a credential.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceBinding {
    /// The binding's `type`, `label` and tag: the credential's kind.
    #[serde(rename = "type")]
    pub type_: String,
    /// certrot's own files shown beside the fields (`target.show_files`); none by default.
    pub show_files: Vec<String>,
}

impl Default for ServiceBinding {
    fn default() -> Self {
        ServiceBinding {
            type_: "xsuaa".into(),
            show_files: Vec::new(),
        }
    }
}

/// A cron expression (`sec min hour day month weekday [year]`, or the 5-field Unix form,
/// which gets `0` seconds prepended). Numeric weekdays are refused: dialects disagree on them.
#[derive(Clone)]
pub struct CronSpec {
    text: String,
    schedule: cron::Schedule,
}

impl CronSpec {
    pub fn parse(text: &str) -> Result<CronSpec, String> {
        let t = text.trim();
        let fields: Vec<&str> = t.split_whitespace().collect();
        let normalised = if t.starts_with('@') {
            t.to_string()
        } else {
            let (full, dow) = match fields.len() {
                5 => (format!("0 {t}"), fields[4]),
                6 | 7 => (fields.join(" "), fields[5]),
                n => {
                    return Err(format!(
                        "{text:?} is not a cron expression: {n} fields (expected 5, 6 or 7)"
                    ));
                }
            };
            if dow.bytes().any(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "{text:?}: write days of the week as names (Mon-Fri), not numbers: \
                     cron dialects number them differently"
                ));
            }
            full
        };
        let schedule = cron::Schedule::from_str(&normalised)
            .map_err(|e| format!("{text:?} is not a cron expression: {e}"))?;
        Ok(CronSpec {
            text: t.to_string(),
            schedule,
        })
    }
    pub fn schedule(&self) -> &cron::Schedule {
        &self.schedule
    }
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for CronSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSpec({:?})", self.text)
    }
}

impl PartialEq for CronSpec {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<'de> Deserialize<'de> for CronSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CronSpec::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for CronSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// A maintenance window: renewals prefer to start inside one.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// When a window opens.
    pub cron: CronSpec,
    /// How long it stays open.
    pub duration: Span,
}

/// `[daemon]`: settings of `certrot run`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Daemon {
    /// Address of the metrics and health endpoints; empty disables them.
    pub listen: String,
    /// When to re-inspect every target and refresh metrics.
    pub check_schedule: CronSpec,
    /// When to prove the current generation with a token request.
    pub probe_schedule: CronSpec,
    /// How many rotations may run at once.
    pub max_parallel: u32,
}

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            listen: "127.0.0.1:9464".into(),
            check_schedule: CronSpec::parse("0 */5 * * * *").expect("built-in schedule parses"), // ok: constant
            probe_schedule: CronSpec::parse("0 17 * * * *").expect("built-in schedule parses"), // ok: constant
            max_parallel: 8,
        }
    }
}

/// Renewal settings shared by `[defaults]` and each `[[credential]]` (which may override them).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    renew_before: Option<RenewBefore>,
    critical_before: Option<Span>,
    jitter: Option<Jitter>,
    retire_after: Option<Span>,
    keep_generations: Option<u32>,
    window: Option<Vec<Window>>,
}

/// The effective renewal policy of one credential.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Policy {
    /// Renew this long (or this share of the lifetime) before `not_after`. Default 33.33%.
    pub renew_before: RenewBefore,
    /// Inside this span before `not_after` a credential is CRITICAL. Default 24h.
    pub critical_before: Span,
    /// Renew up to this share of the lifetime earlier, fixed per certificate. Default 5%.
    pub jitter: Jitter,
    /// Keep a replaced binding this long before deleting it. Default 1h.
    pub retire_after: Span,
    /// Old generation directories kept for rollback. Default 3.
    pub keep_generations: u32,
    /// Preferred renewal windows; none by default.
    pub windows: Vec<Window>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            renew_before: RenewBefore::DEFAULT,
            critical_before: Span::hours(24),
            jitter: Jitter(
                crate::units::Fraction::new(0.05).unwrap_or(crate::units::Fraction::ONE_THIRD),
            ),
            retire_after: Span::hours(1),
            keep_generations: 3,
            windows: Vec::new(),
        }
    }
}

impl Policy {
    fn overlay(&self, raw: &RawPolicy) -> Policy {
        Policy {
            renew_before: raw.renew_before.unwrap_or(self.renew_before),
            critical_before: raw.critical_before.unwrap_or(self.critical_before),
            jitter: raw.jitter.unwrap_or(self.jitter),
            retire_after: raw.retire_after.unwrap_or(self.retire_after),
            keep_generations: raw.keep_generations.unwrap_or(self.keep_generations),
            windows: raw.window.clone().unwrap_or_else(|| self.windows.clone()),
        }
    }
}

/// Where a credential's current generation is kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetType {
    #[default]
    Directory,
    KubernetesSecret,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    #[serde(rename = "type", default)]
    type_: TargetType,
    path: Option<PathBuf>,
    mode: Option<FileMode>,
    owner: Option<String>,
    group: Option<String>,
    layout: Option<Layout>,
    show_files: Option<Vec<String>>,
    namespace: Option<String>,
    name: Option<String>,
    kubeconfig: Option<PathBuf>,
    lease: Option<bool>,
    lease_duration: Option<Span>,
}

/// A Kubernetes Secret target (`type = "kubernetes-secret"`): the generation in one Secret,
/// certrot's state in its annotations, the previous generation in `<name>-previous`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KubernetesSecretTarget {
    /// `None`: the namespace of the service account (in-cluster) or of the kubeconfig context.
    pub namespace: Option<String>,
    pub name: String,
    /// Kubeconfig file; `None`: `KUBECONFIG`, else the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    pub layout: Layout,
    pub binding: ServiceBinding,
    /// Take a `coordination.k8s.io` Lease named `certrot-<name>` for each run.
    pub lease: bool,
    /// How long a Lease holds if its holder dies without releasing it.
    pub lease_duration: Span,
}

/// A directory target (`type = "directory"`), laid out as in `docs/architecture.md`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DirectoryTarget {
    pub path: PathBuf,
    /// Mode of the files; directories get the same bits plus search (`x`) where read is set.
    pub mode: FileMode,
    /// Owner and group (numeric ids), applied when running as root.
    pub owner: Option<u32>,
    pub group: Option<u32>,
    pub layout: Layout,
    pub binding: ServiceBinding,
}

/// The effective target of a credential.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Target {
    Directory(DirectoryTarget),
    KubernetesSecret(KubernetesSecretTarget),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Directory(d) => write!(f, "{}", d.path.display()),
            Target::KubernetesSecret(k) => write!(
                f,
                "secret {}/{}",
                k.namespace.as_deref().unwrap_or("<default namespace>"),
                k.name
            ),
        }
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
    target: RawTarget,
    #[serde(default)]
    check: CheckConfig,
    issuer: Option<issuer::RawIssuer>,
    #[serde(default)]
    hook: Vec<hook::RawHook>,
    #[serde(default)]
    fields: serde_json::Map<String, serde_json::Value>,
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
    pub policy: Policy,
    pub target: Target,
    pub check: CheckConfig,
    /// How new generations are obtained; `None` for credentials that are only imported.
    pub issuer: Option<Issuer>,
    pub hooks: Vec<Hook>,
    /// `[credential.fields]`: service-key fields (`certurl`, `url`, `xsappname`, …) every
    /// generation carries; the issuer's answer wins where it has the field.
    pub fields: serde_json::Map<String, serde_json::Value>,
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
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<PathBuf>,
    #[serde(default)]
    daemon: Daemon,
    #[serde(default)]
    defaults: RawPolicy,
    #[serde(default)]
    service_manager: std::collections::BTreeMap<String, ServiceManagerConfig>,
    #[serde(default)]
    credential: Vec<RawCredential>,
}

/// The whole, validated configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    #[serde(skip)]
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub daemon: Daemon,
    pub defaults: Policy,
    pub service_managers: std::collections::BTreeMap<String, ServiceManagerConfig>,
    pub credentials: Vec<Credential>,
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        // A regular file only (a FIFO would hang, /dev/zero never end), read with the limit.
        let mut f = crate::fsutil::open_regular(path, true).map_err(read_err)?;
        let meta = f.metadata().map_err(read_err)?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
            });
        }
        let bytes =
            crate::fsutil::read_limited(&mut f, MAX_CONFIG_BYTES as usize).map_err(|_| {
                ConfigError::TooLarge {
                    path: path.to_path_buf(),
                    size: MAX_CONFIG_BYTES + 1,
                }
            })?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8 {
            path: path.to_path_buf(),
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` is used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |position, field: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            position,
            field: field.to_string(),
            message,
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| invalid(position_of(text, e.span()), "", e.message().to_string()))?;
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let field = if field == "." { String::new() } else { field };
            invalid(
                position_of(text, inner.span()),
                &field,
                inner.message().to_string(),
            )
        })?;
        raw.validate(path, text)
    }

    /// The credentials named in `names`, or all when `names` is empty. Unknown names are an error.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Credential>, String> {
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

    /// Settings that are valid but will likely hurt (for `config check`), one line each.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.credentials {
            let csr = matches!(c.issuer, Some(Issuer::Csr(_)));
            if c.kind == Kind::Xsuaa && csr && !c.fields.contains_key("certurl") {
                out.push(format!(
                    "credential {:?}: its csr-issued generations carry `certurl` only if the \
                     current generation has it (from `certrot import`); SAP's libraries need it \
                     for an X.509 credential: set it in [credential.fields]",
                    c.name
                ));
            }
            if let Some(Issuer::ServiceManager(i)) = &c.issuer
                && c.kind == Kind::Identity
                && i.certificate == CertificateMode::ServiceManaged
                && i.app_identifier.is_none()
            {
                out.push(format!(
                    "credential {:?}: without issuer.app_identifier every rotation gives the \
                     certificate a new subject, and Identity Authentication allows 20 distinct \
                     subjects per instance: set app_identifier",
                    c.name
                ));
            }
        }
        out
    }

    /// A normalised TOML rendering of the effective configuration (for `config check`).
    pub fn summary(&self) -> String {
        let mut out = format!(
            "configuration {} is valid\nstate_dir = {}\n{} credential(s)\n",
            self.path.display(),
            self.state_dir.display(),
            self.credentials.len()
        );
        for c in &self.credentials {
            let p = &c.policy;
            let target = match &c.target {
                Target::Directory(t) => format!(
                    "target directory {} (mode {}, layout {:?}, keep {} generations)",
                    t.path.display(),
                    t.mode,
                    t.layout,
                    p.keep_generations
                ),
                Target::KubernetesSecret(k) => format!(
                    "target {} (layout {:?}, lease {})",
                    c.target, k.layout, k.lease
                ),
            };
            out.push_str(&format!(
                "- {} ({}): renew_before {}, critical_before {}, jitter {}, retire_after {}, \
                 {} window(s); {target}\n",
                c.name,
                c.kind,
                p.renew_before,
                p.critical_before,
                p.jitter.0,
                p.retire_after,
                p.windows.len(),
            ));
            match &c.issuer {
                None => out.push_str("  issuer: none (import only)\n"),
                Some(Issuer::Csr(_)) => {}
                Some(Issuer::ServiceManager(i)) => {
                    let keys = match i.certificate {
                        CertificateMode::ServiceManaged => {
                            format!("service-managed {}-bit RSA", i.key_length)
                        }
                        CertificateMode::SelfManaged => format!(
                            "self-managed {} key signed by {:?}",
                            i.key_type.name(),
                            i.signer.as_ref().map(|s| s.type_)
                        ),
                    };
                    out.push_str(&format!(
                        "  issuer: service-manager {:?}, instance {}, {keys}, {} day(s), bindings {}-<UTC time>\n",
                        i.service_manager, i.instance_id, i.validity_days, i.binding_prefix
                    ));
                }
            }
            if let Some(Issuer::Csr(i)) = &c.issuer {
                out.push_str(&format!(
                    "  issuer: csr, subject {:?}, {} key ({:?}), signer {:?}\n",
                    i.subject,
                    i.key_type.name(),
                    i.rotate_key,
                    i.signer.type_
                ));
            }
            if !c.hooks.is_empty() {
                out.push_str(&format!("  {} hook(s)\n", c.hooks.len()));
            }
        }
        for (name, m) in &self.service_managers {
            out.push_str(&format!(
                "service_manager {name}: {}, mode {:?}\n",
                match (&m.service_key, &m.credential) {
                    (Some(k), _) => format!("service key {}", k.display()),
                    (None, Some(c)) => format!("managed credential {c:?}"),
                    (None, None) => "no access".into(),
                },
                m.mode
            ));
        }
        out
    }
}

/// Converts a byte span into a 1-based (line, column).
fn position_of(text: &str, span: Option<std::ops::Range<usize>>) -> Option<(usize, usize)> {
    let start = span?.start.min(text.len());
    let before = text.get(..start)?;
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(start, |i| start - i - 1) + 1;
    Some((line, col))
}

/// Finds the line of the `n`-th `[[credential]]` header, for errors found after parsing.
fn credential_position(text: &str, n: usize) -> Option<(usize, usize)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[credential]]"))
        .nth(n)
        .map(|(i, _)| (i + 1, 1))
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

/// Refuses a `retire_after` over a year (it would outlive any certificate, and time
/// arithmetic on it must not overflow).
fn too_long_retirement(span: Span) -> Option<String> {
    (span.0 > std::time::Duration::from_secs(366 * 86_400)).then(|| {
        format!(
            "{span} is longer than a year; a replaced binding would outlive its certificate by far"
        )
    })
}

/// The settings of a `kubernetes-secret` target; `Err((field, message))`.
/// The `servicebinding` presentation of a credential of `kind`: `show_files` only with that
/// layout, and only certrot's own files (`allowed`).
fn service_binding(
    kind: Kind,
    t: &RawTarget,
    allowed: &[&str],
) -> Result<ServiceBinding, (&'static str, String)> {
    let show_files = t.show_files.clone().unwrap_or_default();
    if !show_files.is_empty() && t.layout != Some(Layout::Servicebinding) {
        return Err((
            "show_files",
            "is for layout = \"servicebinding\" (the files layout shows every file)".into(),
        ));
    }
    if let Some(f) = show_files.iter().find(|f| !allowed.contains(&f.as_str())) {
        return Err((
            "show_files",
            format!(
                "{f:?} is not one of certrot's files here ({})",
                allowed.join(", ")
            ),
        ));
    }
    Ok(ServiceBinding {
        type_: kind.to_string(),
        show_files,
    })
}

fn kubernetes_target(
    t: RawTarget,
    kind: Kind,
) -> Result<KubernetesSecretTarget, (&'static str, String)> {
    // tls.crt and tls.key (the Secret type's keys) are always there.
    let binding = service_binding(kind, &t, &["bundle.pem", "credentials.json"])?;
    for (field, set) in [
        ("path", t.path.is_some()),
        ("mode", t.mode.is_some()),
        ("owner", t.owner.is_some()),
        ("group", t.group.is_some()),
    ] {
        if set {
            return Err((
                field,
                format!(
                    "`{field}` is for directory targets; a kubernetes-secret target has `namespace` and `name`"
                ),
            ));
        }
    }
    let Some(name) = t.name else {
        return Err((
            "name",
            "a kubernetes-secret target needs `name` (the Secret's name)".into(),
        ));
    };
    // `<name>-previous` must be a valid name, too.
    let previous = format!("{name}{}", crate::names::PREVIOUS_SUFFIX);
    if !crate::names::is_dns_subdomain(&previous) {
        return Err((
            "name",
            format!(
                "{name:?} is not a valid Secret name (lower-case a-z 0-9 - ., starting and ending alphanumeric, at most {} characters)",
                253 - crate::names::PREVIOUS_SUFFIX.len()
            ),
        ));
    }
    if let Some(ns) = &t.namespace
        && !crate::names::is_dns_label(ns)
    {
        return Err((
            "namespace",
            format!(
                "{ns:?} is not a valid namespace (lower-case a-z 0-9 -, at most 63 characters)"
            ),
        ));
    }
    if let Some(k) = &t.kubeconfig
        && !k.is_absolute()
    {
        return Err((
            "kubeconfig",
            format!("{:?} must be an absolute path", k.display().to_string()),
        ));
    }
    let lease_duration = t.lease_duration.unwrap_or(Span::secs(15 * 60));
    if lease_duration.0 < std::time::Duration::from_secs(10)
        || lease_duration.0.as_secs() > i32::MAX as u64
    {
        return Err((
            "lease_duration",
            format!("{lease_duration} is out of range (10s to years)"),
        ));
    }
    Ok(KubernetesSecretTarget {
        namespace: t.namespace,
        name,
        kubeconfig: t.kubeconfig,
        layout: t.layout.unwrap_or_default(),
        binding,
        lease: t.lease.unwrap_or(false),
        lease_duration,
    })
}

/// `path` as the kernel resolves it: `.` and `..` taken lexically, then the longest existing
/// ancestor with its symlinks resolved, the rest appended.
fn resolved_path(path: &Path) -> PathBuf {
    use std::path::Component;
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    let mut lexical = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    let mut existing = lexical.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return lexical,
        }
    }
}

fn resolve_id(text: &str, lookup: impl Fn(&str) -> Option<u32>) -> Option<u32> {
    text.parse::<u32>().ok().or_else(|| lookup(text))
}

impl RawConfig {
    fn validate(self, path: &Path, text: &str) -> Result<Config, ConfigError> {
        let err = |n: Option<usize>, field: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            position: n.and_then(|n| credential_position(text, n)),
            field,
            message,
        };
        let defaults = Policy::default().overlay(&self.defaults);
        if let Some(m) = too_long_retirement(defaults.retire_after) {
            return Err(err(None, "defaults.retire_after".into(), m));
        }
        if let Some(dir) = &self.state_dir
            && !dir.is_absolute()
        {
            return Err(err(
                None,
                "state_dir".into(),
                format!("{:?} must be an absolute path", dir.display().to_string()),
            ));
        }
        if !self.daemon.listen.is_empty()
            && self.daemon.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(err(
                None,
                "daemon.listen".into(),
                format!(
                    "{:?} is not an address:port (e.g. \"127.0.0.1:9464\"; \"\" disables)",
                    self.daemon.listen
                ),
            ));
        }
        if self.daemon.max_parallel == 0 {
            return Err(err(
                None,
                "daemon.max_parallel".into(),
                "must be at least 1".into(),
            ));
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut credentials = Vec::with_capacity(self.credential.len());
        for (i, raw) in self.credential.into_iter().enumerate() {
            let at = |f: &str| format!("credential[{i}].{f}");
            if !is_valid_name(&raw.name) {
                return Err(err(
                    Some(i),
                    at("name"),
                    format!(
                        "{:?} is not a valid name (1-63 characters of A-Z a-z 0-9 . _ -, not starting with '.')",
                        raw.name
                    ),
                ));
            }
            if let Some(first) = seen.insert(raw.name.clone(), i) {
                return Err(err(
                    Some(i),
                    at("name"),
                    format!("{:?} is already the name of credential[{first}]", raw.name),
                ));
            }
            let policy = defaults.overlay(&raw.policy());
            if let Some(m) = too_long_retirement(policy.retire_after) {
                return Err(err(Some(i), at("retire_after"), m));
            }
            let t = raw.target;
            let target = match t.type_ {
                TargetType::Directory => {
                    for (field, set) in [
                        ("namespace", t.namespace.is_some()),
                        ("name", t.name.is_some()),
                        ("kubeconfig", t.kubeconfig.is_some()),
                        ("lease", t.lease.is_some()),
                        ("lease_duration", t.lease_duration.is_some()),
                    ] {
                        if set {
                            return Err(err(
                                Some(i),
                                at(&format!("target.{field}")),
                                format!(
                                    "`{field}` is for kubernetes-secret targets; set type = \"kubernetes-secret\" or remove it"
                                ),
                            ));
                        }
                    }
                    let binding = service_binding(raw.kind, &t, &crate::names::OWN_FILES)
                        .map_err(|(f, m)| err(Some(i), at(&format!("target.{f}")), m))?;
                    let Some(dir) = t.path else {
                        return Err(err(
                            Some(i),
                            at("target.path"),
                            "a directory target needs `path`".into(),
                        ));
                    };
                    if !dir.is_absolute() {
                        return Err(err(
                            Some(i),
                            at("target.path"),
                            format!("{:?} must be an absolute path", dir.display().to_string()),
                        ));
                    }
                    let owner = match &t.owner {
                        None => None,
                        Some(o) => Some(
                            resolve_id(o, |n| uzers::get_user_by_name(n).map(|u| u.uid()))
                                .ok_or_else(|| {
                                    err(Some(i), at("target.owner"), format!("no user named {o:?}"))
                                })?,
                        ),
                    };
                    let group = match &t.group {
                        None => None,
                        Some(g) => Some(
                            resolve_id(g, |n| uzers::get_group_by_name(n).map(|g| g.gid()))
                                .ok_or_else(|| {
                                    err(
                                        Some(i),
                                        at("target.group"),
                                        format!("no group named {g:?}"),
                                    )
                                })?,
                        ),
                    };
                    let mode = t.mode.unwrap_or(FileMode(0o600));
                    if mode.0 & 0o002 != 0 {
                        return Err(err(
                            Some(i),
                            at("target.mode"),
                            format!("{mode} would make private keys writable by others"),
                        ));
                    }
                    if mode.0 & 0o600 != 0o600 {
                        return Err(err(
                            Some(i),
                            at("target.mode"),
                            format!("{mode} must let the owner read and write (0600 at least)"),
                        ));
                    }
                    Target::Directory(DirectoryTarget {
                        path: dir,
                        mode,
                        owner,
                        group,
                        layout: t.layout.unwrap_or_default(),
                        binding,
                    })
                }
                TargetType::KubernetesSecret => Target::KubernetesSecret(
                    kubernetes_target(t, raw.kind)
                        .map_err(|(f, m)| err(Some(i), at(&format!("target.{f}")), m))?,
                ),
            };
            if let Some(u) = &raw.check.token_url
                && !u.starts_with("https://")
            {
                return Err(err(
                    Some(i),
                    at("check.token_url"),
                    format!("{u:?} must be an https URL"),
                ));
            }
            if let Some(u) = &raw.check.discovery_url
                && !u.starts_with("https://")
            {
                return Err(err(
                    Some(i),
                    at("check.discovery_url"),
                    format!("{u:?} must be an https URL"),
                ));
            }
            if raw.check.timeout.0.is_zero() || raw.check.connect_timeout.0.is_zero() {
                return Err(err(
                    Some(i),
                    at("check.timeout"),
                    "timeouts must be greater than zero".into(),
                ));
            }
            if raw.check.attempts == 0 {
                return Err(err(
                    Some(i),
                    at("check.attempts"),
                    "must be at least 1".into(),
                ));
            }
            let issuer = match raw.issuer {
                None => None,
                Some(r) => Some(
                    r.resolve(&raw.name, raw.kind, &self.service_manager)
                        .map_err(|(f, m)| err(Some(i), at(&f), m))?,
                ),
            };
            if matches!(issuer, Some(Issuer::Csr(_))) {
                // Without a binding, nothing supplies the client id or the token URL.
                if raw.check.client_id.is_none() {
                    return Err(err(
                        Some(i),
                        at("check.client_id"),
                        "a csr issuer needs check.client_id (the OAuth client registered for the subject)".into(),
                    ));
                }
                if raw.check.token_url.is_none() && raw.check.discovery_url.is_none() {
                    return Err(err(
                        Some(i),
                        at("check.token_url"),
                        "a csr issuer needs check.token_url or check.discovery_url".into(),
                    ));
                }
            }
            let mut hooks = Vec::with_capacity(raw.hook.len());
            for (h, rh) in raw.hook.into_iter().enumerate() {
                hooks.push(
                    rh.resolve()
                        .map_err(|(f, m)| err(Some(i), at(&format!("hook[{h}].{f}")), m))?,
                );
            }
            for (k, v) in &raw.fields {
                let why = if crate::generation::PEM_FIELDS.contains(&k.as_str()) {
                    Some("comes from each generation's own certificate and key".to_string())
                } else if crate::generation::SECRET_FIELDS.contains(&k.as_str()) {
                    Some("is a secret; it does not belong in the configuration file".into())
                } else if crate::names::RESERVED.contains(&k.as_str()) {
                    Some("is a name certrot's own files use".into())
                } else if crate::generation::INVENTED_FIELDS.contains(&k.as_str()) {
                    Some(
                        "is not a service-key field (the token check's URL is check.token_url)"
                            .into(),
                    )
                } else if !crate::names::is_field_name(k) {
                    Some("is not a field name (letters, digits, '-', '_', '.')".into())
                } else if v.is_null() || v.is_object() {
                    Some("must be a string, number, boolean or array".into())
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(err(
                        Some(i),
                        at(&format!("fields.{k}")),
                        format!("{k:?} {why}"),
                    ));
                }
            }
            credentials.push(Credential {
                name: raw.name,
                kind: raw.kind,
                policy,
                target,
                check: raw.check,
                issuer,
                hooks,
                fields: raw.fields,
            });
        }
        // Two credentials writing into one directory or Secret would overwrite each other.
        // Directories are compared as the kernel resolves them (`x/../t`, a symlink to `t`),
        // Secrets by every name each uses (<name> and <name>-previous); one pass with maps.
        let mut dirs: std::collections::HashMap<PathBuf, usize> = std::collections::HashMap::new();
        let mut secrets: std::collections::HashMap<(Option<&str>, Option<&Path>, String), usize> =
            std::collections::HashMap::new();
        for (i, a) in credentials.iter().enumerate() {
            let (field, clash) = match &a.target {
                Target::Directory(t) => ("path", dirs.insert(resolved_path(&t.path), i)),
                Target::KubernetesSecret(k) => {
                    let mut clash = None;
                    for n in crate::names::secret_names(&k.name) {
                        let key = (k.namespace.as_deref(), k.kubeconfig.as_deref(), n);
                        if let Some(&b) = secrets.get(&key) {
                            clash = Some(b);
                        }
                        secrets.entry(key).or_insert(i);
                    }
                    ("name", clash)
                }
            };
            if let Some(b) = clash {
                return Err(err(
                    Some(i),
                    format!("credential[{i}].target.{field}"),
                    format!(
                        "{} is already the target of credential {:?}",
                        a.target, credentials[b].name
                    ),
                ));
            }
        }
        let names: Vec<&str> = credentials.iter().map(|c| c.name.as_str()).collect();
        issuer::validate_managers(&self.service_manager, &names)
            .map_err(|(f, m)| err(None, f, m))?;
        Ok(Config {
            path: path.to_path_buf(),
            state_dir: self
                .state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            daemon: self.daemon,
            defaults,
            service_managers: self.service_manager,
            credentials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("c.toml")).map_err(|e| e.to_string())
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
        assert_eq!(cred.policy, Policy::default());
        assert_eq!(c.daemon.listen, "127.0.0.1:9464");
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
