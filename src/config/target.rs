//! Where a credential lives: the target types (directory, Kubernetes Secret), their layout
//! and servicebinding settings, and their validation (paths resolved as the kernel resolves
//! them, Kubernetes names).

use super::*;

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
pub(super) struct RawTarget {
    #[serde(rename = "type", default)]
    pub(super) type_: TargetType,
    pub(super) path: Option<PathBuf>,
    pub(super) mode: Option<FileMode>,
    pub(super) owner: Option<String>,
    pub(super) group: Option<String>,
    pub(super) layout: Option<Layout>,
    pub(super) show_files: Option<Vec<String>>,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) kubeconfig: Option<PathBuf>,
    pub(super) lease: Option<bool>,
    pub(super) lease_duration: Option<Span>,
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

/// The settings of a `kubernetes-secret` target; `Err((field, message))`.
/// The `servicebinding` presentation of a credential of `kind`: `show_files` only with that
/// layout, and only certrot's own files (`allowed`).
pub(super) fn service_binding(
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

pub(super) fn kubernetes_target(
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
pub(super) fn resolved_path(path: &Path) -> PathBuf {
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
