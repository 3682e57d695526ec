//! From the raw TOML to the effective configuration: every credential resolved against
//! `[defaults]`, every rule checked, each error naming the file, line:column and field path.

use super::*;

/// Converts a byte span into a 1-based (line, column).
pub(super) fn position_of(
    text: &str,
    span: Option<std::ops::Range<usize>>,
) -> Option<(usize, usize)> {
    let start = span?.start.min(text.len());
    let before = text.get(..start)?;
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(start, |i| start - i - 1) + 1;
    Some((line, col))
}

/// Finds the line of the `n`-th `[[credential]]` header, for errors found after parsing.
pub(super) fn credential_position(text: &str, n: usize) -> Option<(usize, usize)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[credential]]"))
        .nth(n)
        .map(|(i, _)| (i + 1, 1))
}

pub(super) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

/// Refuses a `retire_after` over a year (it would outlive any certificate, and time
/// arithmetic on it must not overflow).
pub(super) fn too_long_retirement(span: Span) -> Option<String> {
    (span.0 > std::time::Duration::from_secs(366 * 86_400)).then(|| {
        format!(
            "{span} is longer than a year; a replaced binding would outlive its certificate by far"
        )
    })
}

pub(super) fn resolve_id(text: &str, lookup: impl Fn(&str) -> Option<u32>) -> Option<u32> {
    text.parse::<u32>().ok().or_else(|| lookup(text))
}

/// Validates a configuration one credential at a time, as each is parsed: a fleet's raw
/// sections (about 1.5 KB each before they are resolved) are never all held at once, and
/// each credential is made in its shared place at once.
pub(super) struct Validator {
    defaults: Policy,
    state_dir: Option<PathBuf>,
    daemon: Daemon,
    service_manager: std::collections::BTreeMap<String, issuer::RawServiceManager>,
    seen: HashMap<String, usize>,
    credentials: Vec<std::sync::Arc<Credential>>,
    /// The last credential's policy and check settings, shared by the next when the same.
    last_policy: Option<std::sync::Arc<Policy>>,
    last_check: Option<std::sync::Arc<CheckConfig>>,
}

/// `value`, or the same value held in `last` (then shared, not stored again).
fn shared<T: PartialEq>(last: &mut Option<std::sync::Arc<T>>, value: T) -> std::sync::Arc<T> {
    match last {
        Some(l) if **l == value => l.clone(),
        _ => last.insert(std::sync::Arc::new(value)).clone(),
    }
}

impl Validator {
    /// Checks the settings outside the credentials (`raw.credential` and `raw.include` are
    /// left to the caller).
    pub(super) fn new(
        raw: RawConfig,
        sources: &super::include::Sources,
        credentials: usize,
    ) -> Result<Validator, ConfigError> {
        let err = |field: &str, message: String| sources.error(None, field.into(), message);
        let defaults = Policy::default().overlay(&raw.defaults);
        if let Some(m) = too_long_retirement(defaults.retire_after) {
            return Err(err("defaults.retire_after", m));
        }
        if let Some(dir) = &raw.state_dir
            && !dir.is_absolute()
        {
            return Err(err(
                "state_dir",
                format!("{:?} must be an absolute path", dir.display().to_string()),
            ));
        }
        if !raw.daemon.listen.is_empty()
            && raw.daemon.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(err(
                "daemon.listen",
                format!(
                    "{:?} is not an address:port (e.g. \"127.0.0.1:9464\"; \"\" disables)",
                    raw.daemon.listen
                ),
            ));
        }
        if raw.daemon.max_parallel == 0 {
            return Err(err("daemon.max_parallel", "must be at least 1".into()));
        }
        Ok(Validator {
            defaults,
            state_dir: raw.state_dir,
            daemon: raw.daemon,
            service_manager: raw.service_manager,
            seen: HashMap::with_capacity(credentials),
            credentials: Vec::with_capacity(credentials),
            last_policy: None,
            last_check: None,
        })
    }

    /// Resolves and checks the next credential (number `credentials.len()` in `sources`).
    pub(super) fn add(
        &mut self,
        raw: RawCredential,
        sources: &super::include::Sources,
    ) -> Result<(), ConfigError> {
        let i = self.credentials.len();
        let err = |field: String, message: String| sources.error(Some(i), field, message);
        let label = sources.label(i);
        let at = |f: &str| format!("{label}.{f}");
        if !is_valid_name(&raw.name) {
            return Err(err(
                at("name"),
                format!(
                    "{:?} is not a valid name (1-63 characters of A-Z a-z 0-9 . _ -, not starting with '.')",
                    raw.name
                ),
            ));
        }
        if let Some(first) = self.seen.insert(raw.name.clone(), i) {
            return Err(err(
                at("name"),
                format!(
                    "{:?} is already the name of {}",
                    raw.name,
                    sources.reference(first, i)
                ),
            ));
        }
        let policy = self.defaults.overlay(&raw.policy());
        if let Some(m) = too_long_retirement(policy.retire_after) {
            return Err(err(at("retire_after"), m));
        }
        let RawTargets { targets, array } = raw.target;
        let field_of = |n: usize, f: &str| {
            if array {
                at(&format!("target[{n}].{f}"))
            } else {
                at(&format!("target.{f}"))
            }
        };
        if targets.is_empty() {
            return Err(err(at("target"), "needs at least one target".into()));
        }
        let mut target = None;
        let mut replicas = Vec::with_capacity(targets.len() - 1);
        for (n, t) in targets.into_iter().enumerate() {
            let lease = t.lease.is_some();
            let resolved =
                resolve_target(t, raw.kind, &raw.name).map_err(|(f, m)| err(field_of(n, f), m))?;
            match (n, resolved) {
                (0, Resolved::Directory(d)) => target = Some(Target::Directory(d)),
                (0, Resolved::KubernetesSecret(k)) => {
                    target = Some(Target::KubernetesSecret(Box::new(k)))
                }
                (0, Resolved::VaultKv(_)) => {
                    return Err(err(
                        field_of(n, "type"),
                        "a vault-kv target can only be a further target: the first target \
                         holds the credential's state and lock (a directory or a kubernetes-secret)"
                            .into(),
                    ));
                }
                (_, _) if lease => {
                    return Err(err(
                        field_of(n, "lease"),
                        "only the first target locks the credential; remove `lease` here".into(),
                    ));
                }
                (_, Resolved::Directory(d)) => replicas.push(Replica::Directory(d)),
                (_, Resolved::KubernetesSecret(k)) => replicas.push(Replica::KubernetesSecret(k)),
                (_, Resolved::VaultKv(v)) => replicas.push(Replica::VaultKv(v)),
            }
        }
        let Some(target) = target else {
            return Err(err(at("target"), "needs at least one target".into()));
        };
        if let Some(u) = &raw.check.token_url
            && !u.starts_with("https://")
        {
            return Err(err(
                at("check.token_url"),
                format!("{u:?} must be an https URL"),
            ));
        }
        if let Some(u) = &raw.check.discovery_url
            && !u.starts_with("https://")
        {
            return Err(err(
                at("check.discovery_url"),
                format!("{u:?} must be an https URL"),
            ));
        }
        if raw.check.timeout.0.is_zero() || raw.check.connect_timeout.0.is_zero() {
            return Err(err(
                at("check.timeout"),
                "timeouts must be greater than zero".into(),
            ));
        }
        if raw.check.attempts == 0 {
            return Err(err(at("check.attempts"), "must be at least 1".into()));
        }
        let issuer = match raw.issuer {
            None => None,
            Some(r) => Some(
                r.resolve(&raw.name, raw.kind, &self.service_manager)
                    .map_err(|(f, m)| err(at(&f), m))?,
            ),
        };
        let pem_fields = super::probe::kind_rules(
            raw.kind,
            &raw.check,
            issuer.as_ref(),
            raw.certificate_field,
            raw.key_field,
        )
        .map_err(|(f, m)| err(at(f), m))?;
        if matches!(issuer, Some(Issuer::Csr(_))) {
            // Without a binding, nothing supplies the client id or the token URL.
            if raw.check.client_id.is_none() {
                return Err(err(
                    at("check.client_id"),
                    "a csr issuer needs check.client_id (the OAuth client registered for the subject)".into(),
                ));
            }
            if raw.check.token_url.is_none() && raw.check.discovery_url.is_none() {
                return Err(err(
                    at("check.token_url"),
                    "a csr issuer needs check.token_url or check.discovery_url".into(),
                ));
            }
        }
        let mut hooks = Vec::with_capacity(raw.hook.len());
        for (h, rh) in raw.hook.into_iter().enumerate() {
            hooks.push(
                rh.resolve()
                    .map_err(|(f, m)| err(at(&format!("hook[{h}].{f}")), m))?,
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
                Some("is not a service-key field (the token check's URL is check.token_url)".into())
            } else if !crate::names::is_field_name(k) {
                Some("is not a field name (letters, digits, '-', '_', '.')".into())
            } else if v.is_null() || v.is_object() {
                Some("must be a string, number, boolean or array".into())
            } else {
                None
            };
            if let Some(why) = why {
                return Err(err(at(&format!("fields.{k}")), format!("{k:?} {why}")));
            }
        }
        self.credentials.push(std::sync::Arc::new(Credential {
            name: raw.name,
            kind: raw.kind,
            policy: shared(&mut self.last_policy, policy),
            target,
            replicas,
            check: shared(&mut self.last_check, raw.check),
            issuer,
            hooks,
            fields: raw.fields,
            pem_fields,
        }));
        Ok(())
    }

    /// The cross-credential checks, once every credential is in: no two targets in one
    /// place, every Service Manager's use; then the whole configuration.
    pub(super) fn finish(self, sources: &super::include::Sources) -> Result<Config, ConfigError> {
        let err =
            |n: Option<usize>, field: String, message: String| sources.error(n, field, message);
        let credentials = self.credentials;
        // Two targets writing into one directory, Secret or KV secret would overwrite each
        // other (of two credentials, or twice in one). Directories are compared as the kernel
        // resolves them (`x/../t`, a symlink to `t`), Secrets by every name each uses (<name>
        // and <name>-previous); one pass with maps.
        let mut dirs: HashMap<PathBuf, usize> = HashMap::new();
        let mut resolver = PathResolver::default();
        let mut secrets: HashMap<(Option<&str>, Option<&Path>, String), usize> = HashMap::new();
        let mut kv: HashMap<(&str, Option<&str>, &str, &str), usize> = HashMap::new();
        for (i, a) in credentials.iter().enumerate() {
            let all = std::iter::once(TargetRef::Primary(&a.target))
                .chain(a.replicas.iter().map(TargetRef::Replica));
            for (n, t) in all.enumerate() {
                let (field, clash) = match t.place() {
                    Place::Directory(p) => ("path", dirs.insert(resolver.resolve(p), i)),
                    Place::Secret(k) => {
                        let mut clash = None;
                        for name in crate::names::secret_names(&k.name) {
                            let key = (k.namespace.as_deref(), k.kubeconfig.as_deref(), name);
                            if let Some(&b) = secrets.get(&key) {
                                clash = Some(b);
                            }
                            secrets.entry(key).or_insert(i);
                        }
                        ("name", clash)
                    }
                    Place::VaultKv(v) => (
                        "path",
                        kv.insert(
                            (
                                v.url.as_str(),
                                v.namespace.as_deref(),
                                v.mount.as_str(),
                                v.path.as_str(),
                            ),
                            i,
                        ),
                    ),
                };
                if let Some(b) = clash {
                    let field = if a.replicas.is_empty() {
                        format!("{}.target.{field}", sources.label(i))
                    } else {
                        format!("{}.target[{n}].{field}", sources.label(i))
                    };
                    return Err(err(
                        Some(i),
                        field,
                        format!(
                            "{t} is already the target of credential {:?}",
                            credentials[b].name
                        ),
                    ));
                }
            }
        }
        let names: Vec<&str> = credentials.iter().map(|c| c.name.as_str()).collect();
        let service_managers = issuer::resolve_managers(self.service_manager, &names)
            .map_err(|(f, m)| err(None, f, m))?;
        Ok(Config {
            included: sources.included(),
            path: sources.main().0.to_path_buf(),
            state_dir: self
                .state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            daemon: self.daemon,
            defaults: self.defaults,
            service_managers,
            credentials,
        })
    }
}
