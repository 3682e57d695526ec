//! What `config check` prints: the effective settings in the configuration's own words
//! ([`Config::summary`]) and the settings that are valid but will likely hurt
//! ([`Config::warnings`]: contradictions with the issued lifetime, missing input files, …).

use super::*;

impl Config {
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
                && i.certificate == SmCertificate::ServiceManaged
                && i.app_identifier.is_none()
            {
                out.push(format!(
                    "credential {:?}: without issuer.app_identifier every rotation gives the \
                     certificate a new subject, and Identity Authentication allows 20 distinct \
                     subjects per instance: set app_identifier",
                    c.name
                ));
            }
            out.extend(contradictions(c));
            for (field, path) in input_files(c) {
                if !path.exists() {
                    out.push(format!(
                        "credential {:?}: {field} {} does not exist (yet)",
                        c.name,
                        path.display()
                    ));
                }
            }
        }
        for (name, m) in &self.service_managers {
            if let SmAccessSource::ServiceKey(k) = &m.access
                && !k.exists()
            {
                out.push(format!(
                    "service_manager {name:?}: service_key {} does not exist (yet)",
                    k.display()
                ));
            }
        }
        out
    }

    /// A normalised TOML rendering of the effective configuration (for `config check`).
    pub fn summary(&self) -> String {
        let d = &self.daemon;
        let mut out = format!(
            "configuration {} is valid\nstate_dir = {}\ndaemon: {}, check_schedule {:?}, probe_schedule {:?}, max_parallel {}\n{} credential(s){}\n",
            self.path.display(),
            self.state_dir.display(),
            if d.listen.is_empty() {
                "no metrics listener".to_string()
            } else {
                format!("metrics at http://{}/metrics", d.listen)
            },
            d.check_schedule.text(),
            d.probe_schedule.text(),
            d.max_parallel,
            self.credentials.len(),
            if self.included > 0 {
                format!(" ({} from included files)", self.included)
            } else {
                String::new()
            }
        );
        for c in &self.credentials {
            let p = &c.policy;
            let layout = |l: Layout| match l {
                Layout::Files => "\"files\"",
                Layout::Servicebinding => "\"servicebinding\"",
            };
            let keystore = |k: &Option<Keystore>| match k {
                Some(k) => format!(
                    ", keystore.p12 alias {:?} password from {}",
                    k.alias,
                    k.password_file.display()
                ),
                None => String::new(),
            };
            let target = match &c.target {
                Target::Directory(t) => format!(
                    "target directory {} (mode {}, layout {}, keep {} generations{})",
                    t.path.display(),
                    t.mode,
                    layout(t.layout),
                    p.keep_generations,
                    keystore(&t.keystore)
                ),
                Target::KubernetesSecret(k) => format!(
                    "target {} (layout {}, lease {}{})",
                    c.target,
                    layout(k.layout),
                    k.lease,
                    keystore(&k.keystore)
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
                    let keys = match &i.certificate {
                        SmCertificate::ServiceManaged if c.kind == Kind::Generic => format!(
                            "service-managed, binding parameters {}",
                            serde_json::Value::Object(i.parameters.clone())
                        ),
                        SmCertificate::ServiceManaged => {
                            format!("service-managed {}-bit RSA", i.key_length)
                        }
                        SmCertificate::SelfManaged { signer } => format!(
                            "self-managed {} key signed by {}",
                            i.key_type.name(),
                            as_written(&signer.type_())
                        ),
                    };
                    out.push_str(&format!(
                        "  issuer: service-manager {:?}, instance {}, {keys}{}, bindings {}-<UTC time>\n",
                        i.service_manager,
                        i.instance_id,
                        if c.kind == Kind::Generic {
                            String::new()
                        } else {
                            format!(", {} day(s)", i.validity_days)
                        },
                        i.binding_prefix
                    ));
                }
            }
            if let Some(Issuer::Csr(i)) = &c.issuer {
                out.push_str(&format!(
                    "  issuer: csr, subject {:?}, {} key (rotate_key {}), signer {}\n",
                    i.subject,
                    i.key_type.name(),
                    as_written(&i.rotate_key),
                    as_written(&i.signer.type_())
                ));
            }
            if c.kind != Kind::Generic {
                let url = match (&c.check.token_url, &c.check.discovery_url) {
                    (Some(u), _) => format!("token_url {u}"),
                    (None, Some(d)) => format!("token endpoint from discovery_url {d}"),
                    (None, None) => match c.kind {
                        Kind::Identity => {
                            "token URL from the credential's url + /oauth2/token".into()
                        }
                        _ => "token URL from the credential's certurl + /oauth/token".into(),
                    },
                };
                out.push_str(&format!(
                    "  check: token request, {url}; {} attempt(s) over {}\n",
                    c.check.attempts, c.check.retry_for
                ));
            }
            for w in &p.windows {
                out.push_str(&format!(
                    "  window: opens {:?} for {}\n",
                    w.cron.text(),
                    w.duration
                ));
            }
            for h in &c.hooks {
                let on = as_written(&h.on);
                match &h.action {
                    hook::HookAction::Exec { argv, timeout } => out.push_str(&format!(
                        "  hook on {on}: exec {argv:?} (timeout {timeout})\n"
                    )),
                    hook::HookAction::Signal { signal, pid_file } => out.push_str(&format!(
                        "  hook on {on}: signal {signal} to the pid in {}\n",
                        pid_file.display()
                    )),
                }
            }
            if c.kind == Kind::Generic {
                out.push_str(&format!(
                    "  check: mTLS probe {} {} accepting HTTP {:?}; certificate from field {:?}, key from {:?}\n",
                    c.check.probe_method.name(),
                    c.check.probe_url.as_deref().unwrap_or_default(),
                    c.check.accept_status,
                    c.pem_fields.certificate,
                    c.pem_fields.key
                ));
            }
            for r in &c.replicas {
                let ks = match r {
                    Replica::Directory(d) => keystore(&d.keystore),
                    Replica::KubernetesSecret(k) => keystore(&k.keystore),
                    Replica::VaultKv(_) => String::new(),
                };
                out.push_str(&format!("  replica {r}{ks}\n"));
            }
        }
        for (name, m) in &self.service_managers {
            out.push_str(&format!(
                "service_manager {name}: {}, mode {}\n",
                match &m.access {
                    SmAccessSource::ServiceKey(k) => format!("service key {}", k.display()),
                    SmAccessSource::Credential(c) => format!("managed credential {c:?}"),
                },
                as_written(&m.mode)
            ));
        }
        out
    }
}

/// A setting's value as the configuration writes it (`"local-ca"`, `"never"`), quoted.
fn as_written<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The lifetime of the credential's new generations, where the configuration fixes it.
fn issued_lifetime(c: &Credential) -> Option<std::time::Duration> {
    let days = |d: u32| std::time::Duration::from_secs(u64::from(d) * 86_400);
    match &c.issuer {
        // A generic service's lifetime is its own (set, if at all, in issuer.parameters).
        Some(Issuer::ServiceManager(_)) if c.kind == Kind::Generic => None,
        Some(Issuer::ServiceManager(i)) => Some(days(i.validity_days)),
        Some(Issuer::Csr(i)) => match &i.signer {
            SignerConfig::LocalCa(l) => Some(l.validity.map_or(days(7), |v| v.0)),
            SignerConfig::Vault(v) => v.validity.map(|v| v.0),
            SignerConfig::Command(_) => None,
        },
        None => None,
    }
}

/// Policy settings that contradict the lifetime of the certificates the issuer makes.
fn contradictions(c: &Credential) -> Vec<String> {
    let Some(life) = issued_lifetime(c) else {
        return Vec::new();
    };
    let p = &c.policy;
    let human = |d: std::time::Duration| humantime::format_duration(d).to_string();
    let renew = match p.renew_before {
        RenewBefore::Span(s) => s.0,
        RenewBefore::Fraction(f) => life.mul_f64(f.get()),
    };
    let mut out = Vec::new();
    if p.critical_before.0 >= life {
        out.push(format!(
            "credential {:?}: critical_before ({}) is not shorter than the certificates' \
             lifetime ({}): every new generation is CRITICAL for its whole life",
            c.name,
            human(p.critical_before.0),
            human(life)
        ));
    } else if renew <= p.critical_before.0 {
        out.push(format!(
            "credential {:?}: renewal {} before expiry comes after critical_before ({}): \
             the credential turns CRITICAL before each renewal; lower critical_before or \
             raise renew_before",
            c.name,
            human(renew),
            human(p.critical_before.0)
        ));
    }
    if renew >= life {
        out.push(format!(
            "credential {:?}: renew_before ({}) is not shorter than the certificates' \
             lifetime ({}): every new generation is due at once",
            c.name,
            human(renew),
            human(life)
        ));
    }
    out
}

/// Files the credential reads, by the field that names them.
fn input_files(c: &Credential) -> Vec<(&'static str, &Path)> {
    let mut out: Vec<(&'static str, &Path)> = Vec::new();
    let primary_keystore = match &c.target {
        Target::Directory(d) => d.keystore.as_ref(),
        Target::KubernetesSecret(k) => k.keystore.as_ref(),
    };
    for r in &c.replicas {
        match r {
            Replica::Directory(DirectoryTarget {
                keystore: Some(k), ..
            })
            | Replica::KubernetesSecret(KubernetesSecretTarget {
                keystore: Some(k), ..
            }) => out.push(("target.keystore.password_file", &k.password_file)),
            Replica::VaultKv(v) => {
                if let Some(f) = &v.token_file {
                    out.push(("target.token_file", f));
                }
                if let Some(f) = &v.ca_file {
                    out.push(("target.ca_file", f));
                }
            }
            _ => {}
        }
    }
    if let Some(k) = primary_keystore {
        out.push(("target.keystore.password_file", &k.password_file));
    }
    if let Some(f) = &c.check.ca_file {
        out.push(("check.ca_file", f));
    }
    let signer = match &c.issuer {
        Some(Issuer::Csr(i)) => Some(&i.signer),
        Some(Issuer::ServiceManager(i)) => i.certificate.signer(),
        None => None,
    };
    match signer {
        Some(SignerConfig::LocalCa(l)) => {
            out.push(("issuer.signer.ca_cert", &l.ca_cert));
            out.push(("issuer.signer.ca_key", &l.ca_key));
        }
        Some(SignerConfig::Vault(v)) => {
            if let Some(f) = &v.token_file {
                out.push(("issuer.signer.token_file", f));
            }
            if let Some(f) = &v.ca_file {
                out.push(("issuer.signer.ca_file", f));
            }
        }
        Some(SignerConfig::Command(cmd)) => {
            let program = Path::new(&cmd.argv[0]);
            if program.is_absolute() {
                out.push(("issuer.signer.argv[0]", program));
            }
        }
        None => {}
    }
    out
}
