//! Where a credential lives: the target types (directory, Kubernetes Secret, Vault/OpenBao
//! KV v2), their layout and servicebinding settings, and their validation (paths resolved as
//! the kernel resolves them, Kubernetes names). A credential has one target
//! (`[credential.target]`) or several (`[[credential.target]]`): the first holds the state
//! and the lock, the others are *replicas* that receive every committed generation.

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
    /// A Vault / OpenBao KV version 2 secret (a replica only).
    VaultKv,
}

impl TargetType {
    fn name(self) -> &'static str {
        match self {
            TargetType::Directory => "directory",
            TargetType::KubernetesSecret => "kubernetes-secret",
            TargetType::VaultKv => "vault-kv",
        }
    }

    /// The fields a target of this type reads (`type` and `layout`-independent ones aside).
    fn uses(self, field: &str) -> bool {
        match self {
            TargetType::Directory => [
                "path",
                "mode",
                "owner",
                "group",
                "layout",
                "show_files",
                "keystore",
            ]
            .contains(&field),
            TargetType::KubernetesSecret => [
                "namespace",
                "name",
                "kubeconfig",
                "lease",
                "lease_duration",
                "layout",
                "show_files",
                "keystore",
            ]
            .contains(&field),
            TargetType::VaultKv => [
                "url",
                "mount",
                "path",
                "token_file",
                "approle",
                "namespace",
                "ca_file",
                "timeout",
            ]
            .contains(&field),
        }
    }

    /// What to say about a field this type does not read: which types read it.
    fn misplaced(self, field: &str) -> String {
        const ALL: [TargetType; 3] = [
            TargetType::Directory,
            TargetType::KubernetesSecret,
            TargetType::VaultKv,
        ];
        let readers: Vec<&str> = ALL
            .into_iter()
            .filter(|t| t.uses(field))
            .map(TargetType::name)
            .collect();
        let own = match self {
            TargetType::Directory => "a directory target has `path`",
            TargetType::KubernetesSecret => "a kubernetes-secret target has `namespace` and `name`",
            TargetType::VaultKv => "a vault-kv target has `url`, `mount`, `path` and its login",
        };
        format!(
            "`{field}` is for {} targets; {own} (set type = {:?} or remove it)",
            readers.join(" and "),
            readers.first().copied().unwrap_or("directory")
        )
    }
}

/// `target` as written: one table (`[credential.target]`) or an array of tables
/// (`[[credential.target]]`); `array` remembers which, for field paths in errors.
#[derive(Debug)]
pub(super) struct RawTargets {
    pub(super) targets: Vec<RawTarget>,
    pub(super) array: bool,
}

impl<'de> Deserialize<'de> for RawTargets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawTargets;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a target table, or an array of target tables ([[credential.target]])")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawTargets, A::Error> {
                let t = RawTarget::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RawTargets {
                    targets: vec![t],
                    array: false,
                })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawTargets, A::Error> {
                let mut targets = Vec::new();
                while let Some(t) = seq.next_element::<RawTarget>()? {
                    targets.push(t);
                }
                Ok(RawTargets {
                    targets,
                    array: true,
                })
            }
        }
        d.deserialize_any(V)
    }
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
    pub(super) url: Option<String>,
    pub(super) mount: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) approle: Option<AppRole>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) timeout: Option<Span>,
    pub(super) keystore: Option<RawKeystore>,
}

/// `keystore` as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeystore {
    password_file: Option<PathBuf>,
    alias: Option<String>,
}

/// A PKCS#12 keystore (`keystore.p12`) written beside the PEM files of every generation of a
/// directory or Secret target, for Java consumers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Keystore {
    /// The file holding the keystore's password (read at every write; one trailing newline
    /// is not part of it).
    pub password_file: PathBuf,
    /// The key entry's alias (friendly name); default: the credential's name.
    pub alias: String,
}

/// The keystore settings of a directory or Secret target of credential `credential`.
fn keystore(t: &RawTarget, credential: &str) -> Result<Option<Keystore>, (&'static str, String)> {
    let Some(k) = &t.keystore else {
        return Ok(None);
    };
    if t.layout == Some(Layout::Servicebinding) {
        return Err((
            "keystore",
            "is for layout = \"files\": in a servicebinding layout every file is a credential \
             property to @sap/xsenv; write the keystore to a further target with the files layout"
                .into(),
        ));
    }
    let Some(password_file) = k.password_file.clone() else {
        return Err((
            "keystore.password_file",
            "a keystore needs password_file (a file holding its password)".into(),
        ));
    };
    if !password_file.is_absolute() {
        return Err((
            "keystore.password_file",
            format!(
                "{:?} must be an absolute path",
                password_file.display().to_string()
            ),
        ));
    }
    let alias = k.alias.clone().unwrap_or_else(|| credential.to_string());
    if alias.is_empty() || alias.chars().count() > 64 || alias.chars().any(char::is_control) {
        return Err((
            "keystore.alias",
            format!("{alias:?} must be 1 to 64 characters, none of them control characters"),
        ));
    }
    Ok(Some(Keystore {
        password_file,
        alias,
    }))
}

impl RawTarget {
    /// Every field that was written, by name.
    fn written(&self) -> [(&'static str, bool); 18] {
        [
            ("path", self.path.is_some()),
            ("mode", self.mode.is_some()),
            ("owner", self.owner.is_some()),
            ("group", self.group.is_some()),
            ("layout", self.layout.is_some()),
            ("show_files", self.show_files.is_some()),
            ("namespace", self.namespace.is_some()),
            ("name", self.name.is_some()),
            ("kubeconfig", self.kubeconfig.is_some()),
            ("lease", self.lease.is_some()),
            ("lease_duration", self.lease_duration.is_some()),
            ("url", self.url.is_some()),
            ("mount", self.mount.is_some()),
            ("token_file", self.token_file.is_some()),
            ("approle", self.approle.is_some()),
            ("ca_file", self.ca_file.is_some()),
            ("timeout", self.timeout.is_some()),
            ("keystore", self.keystore.is_some()),
        ]
    }
}

/// A Vault / OpenBao KV version 2 replica (`type = "vault-kv"`): each generation written as
/// one secret version at `<mount>/data/<path>` holding the service-key fields (`certificate`,
/// `key`, `clientid`, …), with check-and-set so a concurrent writer is never overwritten.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VaultKvTarget {
    /// The server, e.g. `https://vault.example:8200` (https only).
    pub url: String,
    /// The KV v2 engine's mount (default `secret`).
    pub mount: String,
    /// The secret's path below the mount, e.g. `certrot/orders`.
    pub path: String,
    /// A file holding the token (else `approle`, else `VAULT_TOKEN` / `BAO_TOKEN`).
    pub token_file: Option<PathBuf>,
    pub approle: Option<AppRole>,
    /// `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// Extra CA certificates for the server (verification cannot be turned off).
    pub ca_file: Option<PathBuf>,
    /// Time limit of a call (default 30 s).
    pub timeout: Option<Span>,
}

/// A target that receives copies of the primary target's generations.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Replica {
    Directory(DirectoryTarget),
    KubernetesSecret(KubernetesSecretTarget),
    VaultKv(VaultKvTarget),
}

impl fmt::Display for Replica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replica::Directory(d) => Target::Directory(d.clone()).fmt(f),
            Replica::KubernetesSecret(k) => Target::KubernetesSecret(Box::new(k.clone())).fmt(f),
            Replica::VaultKv(v) => write!(f, "vault-kv {}/v1/{}/data/{}", v.url, v.mount, v.path),
        }
    }
}

/// A target resolved from what was written: the first of a credential's targets must be a
/// [`Target`], the others become [`Replica`]s.
pub(super) enum Resolved {
    Directory(DirectoryTarget),
    KubernetesSecret(KubernetesSecretTarget),
    VaultKv(VaultKvTarget),
}

/// Resolves one written target of credential `credential` of `kind`; `Err((field, message))`.
pub(super) fn resolve_target(
    t: RawTarget,
    kind: Kind,
    credential: &str,
) -> Result<Resolved, (&'static str, String)> {
    if let Some((field, _)) = t
        .written()
        .into_iter()
        .find(|(f, set)| *set && !t.type_.uses(f))
    {
        return Err((field, t.type_.misplaced(field)));
    }
    Ok(match t.type_ {
        TargetType::Directory => Resolved::Directory(directory_target(t, kind, credential)?),
        TargetType::KubernetesSecret => {
            Resolved::KubernetesSecret(kubernetes_target(t, kind, credential)?)
        }
        TargetType::VaultKv => Resolved::VaultKv(vault_kv_target(t)?),
    })
}

/// The settings of a `directory` target.
fn directory_target(
    t: RawTarget,
    kind: Kind,
    credential: &str,
) -> Result<DirectoryTarget, (&'static str, String)> {
    let binding = service_binding(kind, &t, &crate::names::OWN_FILES)?;
    let keystore = keystore(&t, credential)?;
    let Some(dir) = t.path else {
        return Err(("path", "a directory target needs `path`".into()));
    };
    if !dir.is_absolute() {
        return Err((
            "path",
            format!("{:?} must be an absolute path", dir.display().to_string()),
        ));
    }
    let owner = match &t.owner {
        None => None,
        Some(o) => Some(
            resolve_id(o, |n| uzers::get_user_by_name(n).map(|u| u.uid()))
                .ok_or_else(|| ("owner", format!("no user named {o:?}")))?,
        ),
    };
    let group = match &t.group {
        None => None,
        Some(g) => Some(
            resolve_id(g, |n| uzers::get_group_by_name(n).map(|g| g.gid()))
                .ok_or_else(|| ("group", format!("no group named {g:?}")))?,
        ),
    };
    let mode = t.mode.unwrap_or(FileMode(0o600));
    if mode.0 & 0o002 != 0 {
        return Err((
            "mode",
            format!("{mode} would make private keys writable by others"),
        ));
    }
    if mode.0 & 0o600 != 0o600 {
        return Err((
            "mode",
            format!("{mode} must let the owner read and write (0600 at least)"),
        ));
    }
    Ok(DirectoryTarget {
        path: dir,
        mode,
        owner,
        group,
        layout: t.layout.unwrap_or_default(),
        binding,
        keystore,
    })
}

/// The settings of a `vault-kv` target.
fn vault_kv_target(t: RawTarget) -> Result<VaultKvTarget, (&'static str, String)> {
    let url = match t.url {
        None => return Err(("url", "a vault-kv target needs url (https://…)".into())),
        Some(u) if !u.starts_with("https://") => {
            return Err((
                "url",
                format!("{u:?} must be an https URL: the private key travels over it"),
            ));
        }
        Some(u) => u.trim_end_matches('/').to_string(),
    };
    let mount = t.mount.unwrap_or_else(|| "secret".into());
    let Some(path) = t.path else {
        return Err((
            "path",
            "a vault-kv target needs `path` (the secret's path below the mount)".into(),
        ));
    };
    let path = path.to_string_lossy().trim_matches('/').to_string();
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if !path.split('/').all(segment_ok) {
        return Err((
            "path",
            format!("{path:?} is not a KV path (segments of A-Z a-z 0-9 - _ . separated by /)"),
        ));
    }
    if !mount.split('/').all(segment_ok) {
        return Err((
            "mount",
            format!("{mount:?} is not a mount path (segments of A-Z a-z 0-9 - _ . separated by /)"),
        ));
    }
    if t.timeout.is_some_and(|d| d.0.is_zero()) {
        return Err(("timeout", "must be greater than zero".into()));
    }
    Ok(VaultKvTarget {
        url,
        mount,
        path,
        token_file: t.token_file,
        approle: t.approle,
        namespace: t.namespace,
        ca_file: t.ca_file,
        timeout: t.timeout,
    })
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
    /// `keystore.p12` as a further key of the Secret.
    pub keystore: Option<Keystore>,
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
    /// `keystore.p12` in every generation.
    pub keystore: Option<Keystore>,
}

/// The effective target of a credential.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Target {
    Directory(DirectoryTarget),
    /// Boxed: larger than a directory target, which most credentials of a host have.
    KubernetesSecret(Box<KubernetesSecretTarget>),
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

/// The settings of a `kubernetes-secret` target; `Err((field, message))`.
fn kubernetes_target(
    t: RawTarget,
    kind: Kind,
    credential: &str,
) -> Result<KubernetesSecretTarget, (&'static str, String)> {
    // tls.crt and tls.key (the Secret type's keys) are always there.
    let binding = service_binding(kind, &t, &["bundle.pem", "credentials.json"])?;
    let keystore = keystore(&t, credential)?;
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
        keystore,
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

/// [`resolved_path`] for many paths, each parent directory resolved once: a fleet's
/// targets mostly share their parents, so each target costs one `lstat` of its own name
/// instead of a `readlink` of every component.
#[derive(Default)]
pub(super) struct PathResolver {
    parents: HashMap<PathBuf, Option<PathBuf>>,
}

impl PathResolver {
    pub(super) fn resolve(&mut self, path: &Path) -> PathBuf {
        use std::path::Component;
        let (Some(parent), Some(Component::Normal(name))) =
            (path.parent(), path.components().next_back())
        else {
            return resolved_path(path);
        };
        let real_parent = self
            .parents
            .entry(parent.to_path_buf())
            .or_insert_with(|| std::fs::canonicalize(parent).ok());
        let Some(real_parent) = real_parent else {
            return resolved_path(path);
        };
        let candidate = real_parent.join(name);
        match std::fs::symlink_metadata(&candidate) {
            // An existing name that is no link, in a resolved directory: resolved.
            Ok(m) if !m.file_type().is_symlink() => candidate,
            // A name not there yet (a target before its first commit) under a parent that
            // `resolved_path` would resolve as the kernel does (no `.` or `..` for it to
            // take lexically first): that parent's resolution with the name appended.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && plain(parent) => candidate,
            _ => resolved_path(path),
        }
    }
}

/// Whether `path` names its directories without `.` or `..`.
fn plain(path: &Path) -> bool {
    use std::path::Component;
    path.components().all(|c| {
        matches!(
            c,
            Component::Normal(_) | Component::RootDir | Component::Prefix(_)
        )
    })
}

/// A credential's primary target or one of its replicas, for checks over all of them.
pub(super) enum TargetRef<'a> {
    Primary(&'a Target),
    Replica(&'a Replica),
}

/// What a target writes into, for the check that no two targets share it.
pub(super) enum Place<'a> {
    Directory(&'a Path),
    Secret(&'a KubernetesSecretTarget),
    VaultKv(&'a VaultKvTarget),
}

impl<'a> TargetRef<'a> {
    pub(super) fn place(&self) -> Place<'a> {
        match *self {
            TargetRef::Primary(Target::Directory(d))
            | TargetRef::Replica(Replica::Directory(d)) => Place::Directory(&d.path),
            TargetRef::Primary(Target::KubernetesSecret(k)) => Place::Secret(k),
            TargetRef::Replica(Replica::KubernetesSecret(k)) => Place::Secret(k),
            TargetRef::Replica(Replica::VaultKv(v)) => Place::VaultKv(v),
        }
    }
}

impl fmt::Display for TargetRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetRef::Primary(t) => t.fmt(f),
            TargetRef::Replica(r) => r.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resolver names every path as `resolved_path` does: plain, through a linked
    /// parent, a linked name, `..` after a link, missing names and missing parents.
    #[test]
    fn the_resolver_agrees_with_resolved_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::fs::create_dir_all(root.join("real/t")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(root.join("real/t"), root.join("real/alias")).unwrap();
        let mut resolver = PathResolver::default();
        for p in [
            "real/t",
            "link/t",
            "real/alias",
            "link/alias",
            "link/sub/../t",
            "real/missing",
            "link/missing",
            "link/sub/../missing",
            "real/./missing",
            "missing/t",
            "link/missing/t",
            "real/t/.",
            "real/t/..",
        ] {
            let path = root.join(p);
            assert_eq!(resolver.resolve(&path), resolved_path(&path), "{p}");
        }
        assert_eq!(
            resolver.resolve(&root.join("link/alias")),
            std::fs::canonicalize(root.join("real/t")).unwrap()
        );
    }
}
