//! The Kubernetes Secret target (`type = "kubernetes-secret"`).
//!
//! One Secret per credential holds the current generation (`tls.crt` chain, `tls.key`,
//! `bundle.pem`, `credentials.json`, plus one key per field with `layout = "servicebinding"`),
//! written in one replace so that cert and key always change together; the kubelet projects it
//! into pods with the same `..data` swap the directory target uses. certrot's state for the
//! credential lives in the Secret's `certrot.io/…` annotations, so a CronJob needs no volume.
//! Every write carries the `resourceVersion` last read: on 409 Conflict the Secret is read
//! again; if only foreign fields changed (a label, someone else's annotation) the change is
//! applied on top of them, if certrot's state changed (another run) the write fails with
//! [`KubeError::Conflict`] and the caller re-decides. The generation replaced last is kept in
//! `<name>-previous` for `certrot rollback` until its binding is retired. An optional
//! `coordination.k8s.io` Lease (`certrot-<name>`) serialises runs.

use crate::config::{KubernetesSecretTarget, Layout, ServiceBinding};
use crate::generation::Generation;
use crate::state::State;
use crate::target::directory::{Current, generation_dir_name};
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Suffix of the Secret that keeps the previous generation.
pub const PREVIOUS_SUFFIX: &str = "-previous";
/// Prefix of certrot's annotations.
pub const ANNOTATION_PREFIX: &str = "certrot.io/";
/// The annotation naming the generation a Secret holds (a timestamp, like a directory name).
pub const GENERATION_ANNOTATION: &str = "certrot.io/generation";
const TLS_TYPE: &str = "kubernetes.io/tls";
/// Largest API response read (a Secret is at most 1 MiB).
const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Writes retried after conflicts caused by foreign changes.
const WRITE_ATTEMPTS: usize = 5;

/// True for a DNS-1123 subdomain (Secret and Lease names).
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

/// The Secrets a target named `name` uses: itself and its `-previous` copy.
pub fn secret_names(name: &str) -> [String; 2] {
    [name.to_string(), format!("{name}{PREVIOUS_SUFFIX}")]
}

/// True for a DNS-1123 label (namespace names).
pub fn is_dns_label(name: &str) -> bool {
    name.len() <= 63 && !name.contains('.') && is_dns_subdomain(name)
}

/// Why the Kubernetes API could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("{place}: {message}")]
    Client { place: String, message: String },
    #[error("{place}: {action}: the API server answered {code} {reason}: {message}")]
    Api {
        place: String,
        action: &'static str,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{place}: {action}: {message}")]
    Transport {
        place: String,
        action: &'static str,
        message: String,
    },
    #[error(
        "{place}: changed by another certrot run while this one was {action}; re-read and decide again"
    )]
    Conflict { place: String, action: &'static str },
    #[error("{place}: {reason}")]
    Invalid { place: String, reason: String },
    #[error(
        "{place}: the lease is now held by {holder}, so this run writes nothing more (it outlived lease_duration or another run took the lease)"
    )]
    LeaseLost { place: String, holder: String },
}

impl KubeError {
    fn of(place: &str, server: &str, action: &'static str, e: kube::Error) -> KubeError {
        match e {
            kube::Error::Api(s) => KubeError::Api {
                place: place.to_string(),
                action,
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            other => {
                // kube's message is terse ("client error (Connect)"): add the causes.
                let mut message = other.to_string();
                let mut cause = std::error::Error::source(&other);
                while let Some(c) = cause {
                    let text = c.to_string();
                    if !message.contains(&text) {
                        message = format!("{message}: {text}");
                    }
                    cause = c.source();
                }
                KubeError::Transport {
                    place: format!("{place} (API server {server})"),
                    action,
                    message,
                }
            }
        }
    }

    /// The API server's HTTP status, when it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            KubeError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Builds an API client: `kubeconfig` from the target, else `KUBECONFIG`, else the
/// in-cluster service account. Returns the client and the namespace to use.
async fn connect(
    cfg: &KubernetesSecretTarget,
) -> Result<(kube::Client, String, String), KubeError> {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let client_err = |place: String, message: String| KubeError::Client { place, message };
    let (config, source) = match (&cfg.kubeconfig, std::env::var_os("KUBECONFIG")) {
        (Some(path), _) => {
            let place = path.display().to_string();
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| client_err(place.clone(), e.to_string()))?;
            let c = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| client_err(place.clone(), e.to_string()))?;
            (c, place)
        }
        (None, Some(env)) => {
            let place = format!("KUBECONFIG={}", env.to_string_lossy());
            let c = kube::Config::from_kubeconfig(&KubeConfigOptions::default())
                .await
                .map_err(|e| client_err(place.clone(), e.to_string()))?;
            (c, place)
        }
        (None, None) => {
            let place = "in-cluster service account".to_string();
            let c = kube::Config::incluster().map_err(|e| {
                client_err(
                    place.clone(),
                    format!(
                        "{e} (outside a cluster, set `kubeconfig` in the target or KUBECONFIG)"
                    ),
                )
            })?;
            (c, place)
        }
    };
    let mut config = config;
    if config.accept_invalid_certs {
        return Err(client_err(
            source,
            "the kubeconfig turns off server certificate verification (insecure-skip-tls-verify); certrot always verifies: give the cluster's CA instead".into(),
        ));
    }
    config.connect_timeout = Some(std::time::Duration::from_secs(10));
    config.read_timeout = Some(std::time::Duration::from_secs(30));
    config.write_timeout = Some(std::time::Duration::from_secs(30));
    let namespace = cfg
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let url = config.cluster_url.to_string();
    let limit =
        tower::util::MapResponseLayer::new(|r: http::Response<Box<kube::client::DynBody>>| {
            r.map(|b| http_body_util::Limited::new(b, MAX_RESPONSE_BYTES))
        });
    let client = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| client_err(url.clone(), e.to_string()))?
        .with_layer(&limit)
        .build();
    Ok((client, namespace, url))
}

/// The Secret as last read or written, with certrot's state parsed from it.
#[derive(Clone)]
struct Seen {
    obj: Option<Secret>,
    state: State,
    /// Why the state annotations could not be used, if so.
    problem: Option<String>,
    /// certrot's part of a write of this run whose answer was an error: it may have landed.
    unconfirmed: Option<(BTreeMap<String, String>, Vec<u8>)>,
}

/// A credential's Secret.
pub struct SecretTarget {
    cfg: KubernetesSecretTarget,
    /// The API server's URL, for messages.
    server: String,
    credential: String,
    namespace: String,
    secrets: Api<Secret>,
    leases: Api<Lease>,
    seen: tokio::sync::Mutex<Option<Seen>>,
    /// The Lease this run holds, while it holds it.
    held: tokio::sync::Mutex<Option<HeldLease>>,
}

/// This run's hold on its Lease: renewed every third of `lease_duration`; once another
/// holder is seen, every further write is refused.
#[derive(Debug)]
struct HeldLease {
    name: String,
    holder: String,
    renewed: tokio::time::Instant,
    lost_to: Option<String>,
}

// No derive: the cached Secret holds the private key.
impl std::fmt::Debug for SecretTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretTarget")
            .field("namespace", &self.namespace)
            .field("name", &self.cfg.name)
            .finish_non_exhaustive()
    }
}

/// A held Lease; give it back with [`SecretTarget::release`].
#[derive(Debug)]
pub struct LeaseGuard {
    name: String,
    holder: String,
}

fn micro_now() -> MicroTime {
    let now = OffsetDateTime::now_utc();
    let ts = k8s_openapi::jiff::Timestamp::new(now.unix_timestamp(), now.nanosecond() as i32)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    MicroTime(ts)
}

fn to_offset(t: &MicroTime) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(t.0.as_nanosecond()).ok()
}

/// Where unusable state annotations are kept (as a JSON object) when certrot's are rewritten.
pub const UNUSABLE_ANNOTATION: &str = "certrot.io/unusable-state";

/// certrot's part of a Secret: its `certrot.io/` annotations and the certificate. A change
/// in it between a read and a write means another certrot run (or an operator's rollback).
fn ours(obj: &Option<Secret>) -> (BTreeMap<String, String>, Vec<u8>) {
    let Some(o) = obj else {
        return (BTreeMap::new(), Vec::new());
    };
    let ann = o
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX) && k.as_str() != UNUSABLE_ANNOTATION)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let crt = o
        .data
        .as_ref()
        .and_then(|d| d.get("tls.crt"))
        .map(|v| v.0.clone())
        .unwrap_or_default();
    (ann, crt)
}

/// The state as annotations: one per field, `certrot.io/<field-name>`; strings as they are,
/// everything else as JSON; empty fields are removed (`None`).
fn state_annotations(state: &State) -> Vec<(String, Option<String>)> {
    let Ok(Value::Object(map)) = serde_json::to_value(state) else {
        return Vec::new();
    };
    map.into_iter()
        .map(|(k, v)| {
            let key = format!("{ANNOTATION_PREFIX}{}", k.replace('_', "-"));
            let value = match v {
                Value::Null => None,
                Value::Array(a) if a.is_empty() => None,
                Value::Number(n) if n.as_u64() == Some(0) && k != "version" => None,
                Value::String(s) => Some(s),
                other => Some(other.to_string()),
            };
            (key, value)
        })
        .collect()
}

/// State fields kept as plain strings (never parsed as JSON: a credential may be named `123`).
const STRING_FIELDS: [&str; 4] = ["credential", "last-success", "next-attempt", "installation"];

/// The state read back from annotations; `Err` names the annotation.
pub fn parse_state(
    annotations: Option<&BTreeMap<String, String>>,
    credential: &str,
) -> Result<State, String> {
    let mut map = Map::new();
    for (k, v) in annotations.into_iter().flatten() {
        let Some(field) = k.strip_prefix(ANNOTATION_PREFIX) else {
            continue;
        };
        if k == GENERATION_ANNOTATION || k == UNUSABLE_ANNOTATION || field.starts_with("previous") {
            continue;
        }
        let value = if STRING_FIELDS.contains(&field) {
            Value::String(v.clone())
        } else {
            serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.clone()))
        };
        map.insert(field.replace('-', "_"), value);
    }
    if map.is_empty() {
        return Ok(State {
            version: 1,
            credential: credential.to_string(),
            ..State::default()
        });
    }
    let state: State = serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let path = e.path().to_string();
        let (field, rest) = path.split_once('.').unwrap_or((&path, ""));
        let at = format!("{ANNOTATION_PREFIX}{}", field.replace('_', "-"));
        let at = if rest.is_empty() {
            at
        } else {
            format!("{at} ({rest})")
        };
        format!("annotation {at}: {}", e.inner())
    })?;
    if state.credential != credential {
        return Err(format!(
            "annotation {ANNOTATION_PREFIX}credential says it belongs to credential {:?}, not {credential:?}",
            state.credential
        ));
    }
    if state.version != 1 {
        return Err(format!(
            "annotation {ANNOTATION_PREFIX}version: unsupported state version {}",
            state.version
        ));
    }
    Ok(state)
}

fn has_generation(obj: &Secret) -> bool {
    obj.data
        .as_ref()
        .and_then(|d| d.get("tls.crt"))
        .is_some_and(|v| !v.0.is_empty())
}

fn generation_name(obj: &Secret) -> String {
    obj.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(GENERATION_ANNOTATION))
        .cloned()
        .unwrap_or_else(|| {
            format!(
                "resourceVersion {}",
                obj.metadata.resource_version.clone().unwrap_or_default()
            )
        })
}

fn set_annotation(obj: &mut Secret, key: &str, value: Option<&str>) {
    let a = obj.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match value {
        Some(v) => {
            a.insert(key.to_string(), v.to_string());
        }
        None => {
            a.remove(key);
        }
    }
}

/// The Secret data of a generation: the files the layout shows, `cert.pem` and `key.pem`
/// under the `kubernetes.io/tls` keys (always present: the Secret type requires them).
/// `keep`: keys of certrot's own files the Secret holds now (written by an earlier version
/// into a `servicebinding` Secret); they stay, so that no consumer of them loses them.
fn data_of(
    g: &Generation,
    layout: Layout,
    binding: &ServiceBinding,
    keep: &[&str],
) -> Result<BTreeMap<String, ByteString>, crate::target::binding::BindingError> {
    let r = crate::target::binding::render(g, layout, binding)?;
    Ok(r.files
        .into_iter()
        .filter_map(|(name, bytes)| {
            let key = match name.as_str() {
                "cert.pem" => "tls.crt".to_string(),
                "key.pem" => "tls.key".to_string(),
                _ if r.visible.contains(&name) || keep.contains(&name.as_str()) => name,
                _ => return None,
            };
            Some((key, ByteString(bytes.to_vec())))
        })
        .collect())
}

impl SecretTarget {
    /// Connects to the API server for `cfg`.
    pub async fn connect(
        cfg: &KubernetesSecretTarget,
        credential: &str,
    ) -> Result<SecretTarget, KubeError> {
        let (client, namespace, server) = connect(cfg).await?;
        Ok(SecretTarget {
            cfg: cfg.clone(),
            server,
            credential: credential.to_string(),
            secrets: Api::namespaced(client.clone(), &namespace),
            leases: Api::namespaced(client, &namespace),
            namespace,
            seen: tokio::sync::Mutex::new(None),
            held: tokio::sync::Mutex::new(None),
        })
    }

    fn fail(&self, place: &str, action: &'static str, e: kube::Error) -> KubeError {
        KubeError::of(place, &self.server, action, e)
    }

    /// `secret <namespace>/<name>`, for messages.
    pub fn place(&self) -> String {
        format!("secret {}/{}", self.namespace, self.cfg.name)
    }

    fn previous_name(&self) -> String {
        format!("{}{PREVIOUS_SUFFIX}", self.cfg.name)
    }

    pub fn lease_enabled(&self) -> bool {
        self.cfg.lease
    }

    async fn fetch(&self) -> Result<Seen, KubeError> {
        let obj = self
            .secrets
            .get_opt(&self.cfg.name)
            .await
            .map_err(|e| self.fail(&self.place(), "reading", e))?;
        let parsed = parse_state(
            obj.as_ref().and_then(|o| o.metadata.annotations.as_ref()),
            &self.credential,
        );
        let (state, problem) = match parsed {
            Ok(s) => (s, None),
            Err(p) => (
                State {
                    version: 1,
                    credential: self.credential.clone(),
                    ..State::default()
                },
                Some(p),
            ),
        };
        Ok(Seen {
            obj,
            state,
            problem,
            unconfirmed: None,
        })
    }

    /// Reads the Secret afresh; returns the state and, when the annotations were unusable, why.
    pub async fn load_state(&self) -> Result<(State, Option<String>), KubeError> {
        let seen = self.fetch().await?;
        let out = (seen.state.clone(), seen.problem.clone());
        *self.seen.lock().await = Some(seen);
        Ok(out)
    }

    /// Replaces the state annotations with `state`.
    pub async fn save_state(&self, state: &State) -> Result<(), KubeError> {
        let ann = state_annotations(state);
        self.write("saving state", |o| {
            for (k, v) in &ann {
                set_annotation(o, k, v.as_deref());
            }
        })
        .await
    }

    /// Writes the Secret with `modify` applied, under the resourceVersion discipline.
    async fn write(
        &self,
        action: &'static str,
        modify: impl Fn(&mut Secret),
    ) -> Result<(), KubeError> {
        self.hold_lease().await?;
        let mut seen = self.seen.lock().await;
        let mut base = match seen.take() {
            Some(s) => s,
            None => self.fetch().await?,
        };
        // Unusable state annotations are kept aside (once) before certrot's are rewritten.
        let keep_aside = base.problem.is_some()
            && base.obj.as_ref().is_some_and(|o| {
                o.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| !a.contains_key(UNUSABLE_ANNOTATION))
            });
        let aside =
            keep_aside.then(|| serde_json::to_string(&ours(&base.obj).0).unwrap_or_default());
        let modify = |o: &mut Secret| {
            if let Some(a) = &aside {
                set_annotation(o, UNUSABLE_ANNOTATION, Some(a));
            }
            modify(o);
        };
        let pp = PostParams::default();
        for _ in 0..WRITE_ATTEMPTS {
            let (attempt, result) = match &base.obj {
                Some(obj) => {
                    let mut o = obj.clone();
                    modify(&mut o);
                    let r = self.secrets.replace(&self.cfg.name, &pp, &o).await;
                    (o, r)
                }
                None => {
                    let mut o = self.new_secret(&self.cfg.name);
                    modify(&mut o);
                    let r = self.secrets.create(&pp, &o).await;
                    (o, r)
                }
            };
            match result {
                Ok(o) => {
                    let state = parse_state(o.metadata.annotations.as_ref(), &self.credential);
                    let (state, problem) = match state {
                        Ok(s) => (s, None),
                        Err(p) => (base.state.clone(), Some(p)),
                    };
                    *seen = Some(Seen {
                        obj: Some(o),
                        state,
                        problem,
                        unconfirmed: None,
                    });
                    return Ok(());
                }
                // 409: a stale resourceVersion (replace) or a Secret created meanwhile (create).
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let fresh = match self.fetch().await {
                        Ok(f) => f,
                        Err(e) => {
                            *seen = Some(base);
                            return Err(e);
                        }
                    };
                    // certrot's part (state, generation, certificate) changed: another run —
                    // unless it is what an earlier write of ours, unanswered, wrote.
                    let now_ours = ours(&fresh.obj);
                    if now_ours != ours(&base.obj) && base.unconfirmed.as_ref() != Some(&now_ours) {
                        // Keep the old view: every later write of this run meets the same
                        // conflict, so its stale state never overwrites the other run's.
                        *seen = Some(base);
                        return Err(KubeError::Conflict {
                            place: self.place(),
                            action,
                        });
                    }
                    tracing::debug!(secret = %self.place(), "changed by someone else meanwhile; writing on top of it");
                    base = fresh;
                }
                Err(e) => {
                    base.unconfirmed = Some(ours(&Some(attempt)));
                    *seen = Some(base);
                    return Err(self.fail(&self.place(), action, e));
                }
            }
        }
        *seen = Some(base);
        Err(KubeError::Conflict {
            place: self.place(),
            action,
        })
    }

    fn generation_of(
        &self,
        obj: &Secret,
        place: &str,
    ) -> Result<Generation, crate::target::TargetError> {
        let data = obj.data.as_ref();
        let get = |k: &str| data.and_then(|d| d.get(k)).map(|v| v.0.as_slice());
        let invalid = |reason: String| KubeError::Invalid {
            place: place.to_string(),
            reason,
        };
        let cert = get("tls.crt").ok_or_else(|| invalid("has no tls.crt".into()))?;
        let key = zeroize::Zeroizing::new(
            get("tls.key")
                .ok_or_else(|| invalid("has tls.crt but no tls.key".into()))?
                .to_vec(),
        );
        let mut g = Generation::from_pem(
            cert,
            &format!("{place} key tls.crt"),
            &key,
            &format!("{place} key tls.key"),
        )?;
        if let Some(json) = get("credentials.json") {
            let map: Map<String, Value> = serde_json::from_slice(json).map_err(|e| {
                invalid(format!(
                    "key credentials.json: {}",
                    crate::x509::json_error(&e)
                ))
            })?;
            g = g.with_credentials(map);
        } else if get(crate::target::binding::METADATA).is_some() {
            // The servicebinding layout without credentials.json: the fields are the keys.
            let map = crate::target::binding::parse_fields(get)
                .map_err(|e| invalid(format!("key {e}")))?;
            g = g.with_credentials(map);
        }
        Ok(g)
    }

    /// The current generation (from the Secret as last read; read now if not yet).
    pub async fn read_current(&self) -> Result<Option<Current>, crate::target::TargetError> {
        let mut seen = self.seen.lock().await;
        if seen.is_none() {
            *seen = Some(self.fetch().await?);
        }
        let Some(Some(obj)) = seen.as_ref().map(|s| &s.obj) else {
            return Ok(None);
        };
        if !has_generation(obj) {
            return Ok(None);
        }
        let generation = self.generation_of(obj, &self.place())?;
        Ok(Some(Current {
            generation,
            dir_name: generation_name(obj),
        }))
    }

    /// After a commit whose answer was an error: reads the Secret afresh and says whether it
    /// holds the certificate `fingerprint` (the write landed), with its generation name.
    pub async fn shows(&self, fingerprint: &str) -> Result<Option<String>, KubeError> {
        let fresh = self.fetch().await?;
        let Some(obj) = fresh.obj.as_ref().filter(|o| has_generation(o)) else {
            return Ok(None);
        };
        // The certificate alone (a key changed by someone else must not hide our commit);
        // a chain that does not parse leaves the outcome unknown.
        let crt = ours(&fresh.obj).1;
        let chain =
            crate::x509::parse_chain(&crt, &self.place()).map_err(|e| KubeError::Invalid {
                place: self.place(),
                reason: e.to_string(),
            })?;
        // certrot writes the leaf first.
        if chain.first().map(|c| c.info.fingerprint_sha256.as_str()) != Some(fingerprint) {
            return Ok(None);
        }
        let name = generation_name(obj);
        // Only our own commit changed certrot's part: later writes may build on it.
        let mut seen = self.seen.lock().await;
        let same_state = |o: &Option<Secret>| {
            let mut a = ours(o).0;
            a.remove(GENERATION_ANNOTATION);
            a
        };
        if seen
            .as_ref()
            .is_some_and(|b| same_state(&b.obj) == same_state(&fresh.obj))
        {
            *seen = Some(fresh);
        }
        Ok(Some(name))
    }

    /// The generation a rollback would switch to (read from `<name>-previous`).
    pub async fn previous(&self) -> Result<Generation, crate::target::TargetError> {
        let (previous, place) = self.previous_secret().await?;
        self.generation_of(&previous, &place)
    }

    /// `<name>-previous` holding a generation, with its place for messages.
    async fn previous_secret(&self) -> Result<(Secret, String), KubeError> {
        let name = self.previous_name();
        let place = format!("secret {}/{name}", self.namespace);
        let previous = self
            .secrets
            .get_opt(&name)
            .await
            .map_err(|e| self.fail(&place, "reading", e))?
            .filter(has_generation)
            .ok_or_else(|| KubeError::Invalid {
                place: place.clone(),
                reason:
                    "no previous generation is kept (it is removed once its binding is retired)"
                        .into(),
            })?;
        Ok((previous, place))
    }

    /// A new `kubernetes.io/tls` Secret named `name`, labelled as certrot's, with the two
    /// keys such a Secret must have (empty until a generation is written).
    fn new_secret(&self, name: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "certrot".to_string(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some(TLS_TYPE.into()),
            data: Some(BTreeMap::from([
                ("tls.crt".to_string(), ByteString(Vec::new())),
                ("tls.key".to_string(), ByteString(Vec::new())),
            ])),
            ..Secret::default()
        }
    }

    /// Makes `g` current: the generation it replaces goes to `<name>-previous` first, then
    /// one replace of the Secret writes cert, key and bundle together.
    pub async fn commit(&self, g: &Generation, now: OffsetDateTime) -> Result<String, KubeError> {
        let invalid = |e: crate::target::binding::BindingError| KubeError::Invalid {
            place: self.place(),
            reason: format!("nothing was written: {e}"),
        };
        data_of(g, self.cfg.layout, &self.cfg.binding, &[]).map_err(invalid)?;
        let before = {
            let mut seen = self.seen.lock().await;
            if seen.is_none() {
                *seen = Some(self.fetch().await?);
            }
            seen.as_ref().and_then(|s| s.obj.clone())
        };
        let keep: Vec<&str> = ["bundle.pem", "credentials.json"]
            .into_iter()
            .filter(|k| {
                self.cfg.layout == Layout::Servicebinding
                    && !self.cfg.binding.show_files.iter().any(|f| f == k)
                    && before
                        .as_ref()
                        .and_then(|o| o.data.as_ref())
                        .is_some_and(|d| d.contains_key(*k))
            })
            .collect();
        if !keep.is_empty() {
            tracing::warn!(
                target = %self.place(),
                "keeps {} (written by an earlier certrot) although the servicebinding layout no longer shows them by default: add them to target.show_files to keep them for good, or remove the keys",
                keep.join(", ")
            );
        }
        let data = data_of(g, self.cfg.layout, &self.cfg.binding, &keep).map_err(invalid)?;
        let mut name = generation_dir_name(now);
        if let Some(old) = before.as_ref().filter(|o| has_generation(o)) {
            let old_name = generation_name(old);
            if old_name == name {
                name = generation_dir_name(now + time::Duration::nanoseconds(1));
            }
            self.put_previous(old.data.clone().unwrap_or_default(), &old_name)
                .await?;
        }
        self.write("committing the new generation", |o| {
            o.data = Some(data.clone());
            o.string_data = None;
            set_annotation(o, GENERATION_ANNOTATION, Some(&name));
        })
        .await?;
        Ok(name)
    }

    /// Creates or replaces `<name>-previous` with `data`.
    async fn put_previous(
        &self,
        data: BTreeMap<String, ByteString>,
        generation: &str,
    ) -> Result<(), KubeError> {
        self.hold_lease().await?;
        let name = self.previous_name();
        let place = format!("secret {}/{name}", self.namespace);
        let pp = PostParams::default();
        for _ in 0..WRITE_ATTEMPTS {
            let existing = self
                .secrets
                .get_opt(&name)
                .await
                .map_err(|e| self.fail(&place, "reading", e))?;
            if let Some(e) = &existing {
                let of = e
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(&format!("{ANNOTATION_PREFIX}previous-of")));
                if has_generation(e) && of != Some(&self.cfg.name) {
                    return Err(KubeError::Invalid {
                        place,
                        reason: format!(
                            "holds a certificate but is not certrot's copy of {} (no certrot.io/previous-of = {0:?}); refusing to overwrite it",
                            self.cfg.name
                        ),
                    });
                }
            }
            let mut o = existing.clone().unwrap_or_else(|| self.new_secret(&name));
            o.data = Some(data.clone());
            let ann = o.metadata.annotations.get_or_insert_with(BTreeMap::new);
            ann.insert(GENERATION_ANNOTATION.into(), generation.to_string());
            ann.insert(
                format!("{ANNOTATION_PREFIX}previous-of"),
                self.cfg.name.clone(),
            );
            let r = match existing {
                Some(_) => self.secrets.replace(&name, &pp, &o).await,
                None => self.secrets.create(&pp, &o).await,
            };
            match r {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(self.fail(&place, "keeping the previous generation", e)),
            }
        }
        Err(KubeError::Conflict {
            place,
            action: "keeping the previous generation",
        })
    }

    /// Swaps the Secret and `<name>-previous`. Returns (from, to) generation names and the
    /// generation switched to.
    pub async fn rollback(
        &self,
        expected: &str,
    ) -> Result<(String, String, Generation), crate::target::TargetError> {
        let (previous, place) = self.previous_secret().await?;
        let no_previous = |reason: String| KubeError::Invalid {
            place: place.clone(),
            reason,
        };
        let g = self.generation_of(&previous, &place)?;
        let current = {
            let mut seen = self.seen.lock().await;
            *seen = Some(self.fetch().await?);
            seen.as_ref()
                .and_then(|s| s.obj.clone())
                .filter(has_generation)
                .ok_or_else(|| {
                    no_previous("there is no current generation to roll back from".into())
                })?
        };
        if g.leaf().fingerprint_sha256 != expected {
            return Err(
                no_previous("changed since it was checked; nothing was switched".into()).into(),
            );
        }
        if ours(&Some(current.clone())).1 == ours(&Some(previous.clone())).1 {
            return Err(no_previous(
                "holds the certificate the Secret already has (an interrupted commit); nothing to roll back to".into(),
            )
            .into());
        }
        let (from, to) = (generation_name(&current), generation_name(&previous));
        let data = previous.data.clone().unwrap_or_default();
        self.write("rolling back", |o| {
            o.data = Some(data.clone());
            set_annotation(o, GENERATION_ANNOTATION, Some(&to));
        })
        .await?;
        // The switch is done; a lost copy of the generation rolled away from must not make
        // the rollback look failed (its state would then not be recorded).
        if let Err(e) = self
            .put_previous(current.data.clone().unwrap_or_default(), &from)
            .await
        {
            tracing::warn!(secret = %self.place(), "rolled back, but the generation rolled away from was not kept: {e}");
        }
        Ok((from, to, g))
    }

    /// After retirements: `<name>-previous` goes once the binding of its certificate is gone.
    pub async fn retired(&self, fingerprints: &[String]) -> Result<(), KubeError> {
        let name = self.previous_name();
        let place = format!("secret {}/{name}", self.namespace);
        let Some(previous) = self
            .secrets
            .get_opt(&name)
            .await
            .map_err(|e| self.fail(&place, "reading", e))?
        else {
            return Ok(());
        };
        let fp = self
            .generation_of(&previous, &place)
            .ok()
            .map(|g| g.leaf().fingerprint_sha256.clone());
        if fp.is_some_and(|f| fingerprints.contains(&f)) {
            self.hold_lease().await?;
            // Only the object just read: not a newer copy written meanwhile.
            let dp = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    resource_version: previous.metadata.resource_version.clone(),
                    uid: previous.metadata.uid.clone(),
                }),
                ..DeleteParams::default()
            };
            match self.secrets.delete(&name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(self.fail(&place, "deleting", e)),
            }
            tracing::info!(secret = %place, "removed the previous generation: its binding is retired");
        }
        Ok(())
    }

    fn lease_name(&self) -> String {
        let mut n = format!("certrot-{}", self.cfg.name);
        n.truncate(253);
        n.trim_end_matches(['-', '.']).to_string()
    }

    /// Takes the Lease `certrot-<name>` (creating it); `Ok(Err(holder))` while another holder
    /// has it and it has not expired. With `wait`, polls until it is free.
    pub async fn acquire_lease(&self, wait: bool) -> Result<Result<LeaseGuard, String>, KubeError> {
        let name = self.lease_name();
        let place = format!("lease {}/{name}", self.namespace);
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        // pid 1 in every container, and pods may share a host name: a per-run nonce too.
        let nonce = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64 & 0xffff_ffff;
        let holder = format!("{host}/{}/{nonce:08x}", std::process::id());
        let pp = PostParams::default();
        let duration = i32::try_from(self.lease_secs().as_secs()).unwrap_or(i32::MAX);
        loop {
            let existing = self
                .leases
                .get_opt(&name)
                .await
                .map_err(|e| self.fail(&place, "reading", e))?;
            let now = OffsetDateTime::now_utc();
            let busy = existing.as_ref().and_then(|l| {
                let spec = l.spec.as_ref()?;
                let who = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
                let renewed = spec.renew_time.as_ref().and_then(to_offset)?;
                let until = renewed
                    .checked_add(time::Duration::seconds(i64::from(
                        spec.lease_duration_seconds.unwrap_or(0),
                    )))
                    .unwrap_or(renewed);
                (until > now && who != holder).then(|| {
                    format!(
                        "{who} (lease {name} until {})",
                        crate::status::short_time(until)
                    )
                })
            });
            if let Some(who) = busy {
                if !wait {
                    return Ok(Err(who));
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                continue;
            }
            let spec = LeaseSpec {
                holder_identity: Some(holder.clone()),
                lease_duration_seconds: Some(duration),
                acquire_time: Some(micro_now()),
                renew_time: Some(micro_now()),
                lease_transitions: Some(
                    existing
                        .as_ref()
                        .and_then(|l| l.spec.as_ref()?.lease_transitions)
                        .unwrap_or(0)
                        .saturating_add(i32::from(existing.is_some())),
                ),
                ..LeaseSpec::default()
            };
            // The Lease runs from its renew time, taken before the request.
            let asked = tokio::time::Instant::now();
            let r = match existing {
                Some(mut l) => {
                    l.spec = Some(spec);
                    self.leases.replace(&name, &pp, &l).await
                }
                None => {
                    let l = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            namespace: Some(self.namespace.clone()),
                            ..ObjectMeta::default()
                        },
                        spec: Some(spec),
                    };
                    self.leases.create(&pp, &l).await
                }
            };
            match r {
                Ok(_) => {
                    *self.held.lock().await = Some(HeldLease {
                        name: name.clone(),
                        holder: holder.clone(),
                        renewed: asked,
                        lost_to: None,
                    });
                    return Ok(Ok(LeaseGuard { name, holder }));
                }
                // Someone took it between our read and write: look again.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(self.fail(&place, "taking the lease", e)),
            }
        }
    }

    /// Renews the held Lease every third of `lease_duration` for as long as it is polled;
    /// never completes. A renewal that finds another holder marks the Lease lost.
    pub async fn keep_lease(&self) -> std::convert::Infallible {
        let every = self.lease_secs() / 3;
        // After a failed renewal, sooner: the Lease still holds for a while.
        let soon = (every / 4).min(std::time::Duration::from_secs(5));
        let mut wait = every;
        loop {
            tokio::time::sleep(wait).await;
            let renewed = tokio::time::timeout(every, self.renew_lease(every))
                .await
                .unwrap_or_else(|_| {
                    Err(KubeError::Transport {
                        place: self.place(),
                        action: "renewing the lease",
                        message: format!("no answer within {every:?}"),
                    })
                });
            wait = match renewed {
                Ok(()) => every,
                Err(e @ KubeError::LeaseLost { .. }) => {
                    tracing::error!(secret = %self.place(), "{e}");
                    return std::future::pending().await;
                }
                Err(e) => {
                    tracing::warn!(secret = %self.place(), "could not renew the lease (trying again): {e}");
                    soon
                }
            }
        }
    }

    /// `lease_duration` as the Lease states it: whole seconds.
    fn lease_secs(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.cfg.lease_duration.0.as_secs())
    }

    /// Before a write: the Lease, if this run holds one, must still be its own. A Lease
    /// found lost (by [`SecretTarget::keep_lease`] or here) refuses the write; one renewed
    /// within the last two thirds of `lease_duration` is taken as still held (no other
    /// run can take it before it expires, clocks in sync), an older one is renewed first.
    pub async fn hold_lease(&self) -> Result<(), KubeError> {
        self.renew_lease(self.lease_secs() * 2 / 3).await
    }

    /// Renews the Lease when the last renewal is at least `older_than` ago; `LeaseLost`
    /// when someone else holds it (remembered: later calls refuse without asking).
    async fn renew_lease(&self, older_than: std::time::Duration) -> Result<(), KubeError> {
        let mut held = self.held.lock().await;
        let Some(h) = held.as_mut() else {
            return Ok(());
        };
        let place = format!("lease {}/{}", self.namespace, h.name);
        if let Some(holder) = &h.lost_to {
            return Err(KubeError::LeaseLost {
                place,
                holder: holder.clone(),
            });
        }
        if h.renewed.elapsed() < older_than {
            return Ok(());
        }
        for _ in 0..WRITE_ATTEMPTS {
            let asked = tokio::time::Instant::now();
            let lease = self
                .leases
                .get_opt(&h.name)
                .await
                .map_err(|e| self.fail(&place, "reading", e))?;
            let holder = lease
                .as_ref()
                .and_then(|l| l.spec.as_ref()?.holder_identity.clone())
                .unwrap_or_default();
            let Some(mut lease) = lease.filter(|_| holder == h.holder) else {
                let holder = if holder.is_empty() {
                    "nobody (released or deleted by someone else)".to_string()
                } else {
                    holder
                };
                h.lost_to = Some(holder.clone());
                return Err(KubeError::LeaseLost { place, holder });
            };
            lease.spec.get_or_insert_with(LeaseSpec::default).renew_time = Some(micro_now());
            match self
                .leases
                .replace(&h.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => {
                    h.renewed = asked;
                    tracing::debug!(lease = %place, "lease renewed");
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(self.fail(&place, "renewing the lease", e)),
            }
        }
        // Not `Conflict`: that would read as another run's change to the state.
        Err(KubeError::Transport {
            place,
            action: "renewing the lease",
            message: format!("the Lease changed on each of {WRITE_ATTEMPTS} attempts"),
        })
    }

    /// Gives the Lease back (clears the holder); it would expire anyway.
    pub async fn release(&self, guard: LeaseGuard) {
        let lost = self
            .held
            .lock()
            .await
            .take()
            .is_some_and(|h| h.lost_to.is_some());
        if lost {
            return;
        }
        let place = format!("lease {}/{}", self.namespace, guard.name);
        let result = async {
            // A renewal cut short may still land meanwhile: 409 → read again.
            for _ in 0..WRITE_ATTEMPTS {
                let Some(mut l) = self.leases.get_opt(&guard.name).await? else {
                    return Ok(());
                };
                let spec = l.spec.get_or_insert_with(LeaseSpec::default);
                if spec.holder_identity.as_deref() != Some(&guard.holder) {
                    return Ok(());
                }
                spec.holder_identity = None;
                spec.renew_time = None;
                spec.acquire_time = None;
                match self
                    .leases
                    .replace(&guard.name, &PostParams::default(), &l)
                    .await
                {
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    r => return r.map(|_| ()),
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(lease = %place, "could not release the lease (it expires by itself): {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{PendingRecord, RetiringRecord};

    #[test]
    fn names() {
        assert!(is_dns_subdomain("orders-credentials"));
        assert!(is_dns_subdomain("a.b-c"));
        assert!(!is_dns_subdomain("Orders"));
        assert!(!is_dns_subdomain("-a"));
        assert!(!is_dns_subdomain("a_b"));
        assert!(!is_dns_subdomain(""));
        assert!(is_dns_label("apps"));
        assert!(!is_dns_label("a.b"));
    }

    #[test]
    fn state_round_trips_through_annotations() {
        let t = time::macros::datetime!(2026-11-23 12:00:00.123456789 UTC);
        let st = State {
            version: 1,
            credential: "orders".into(),
            consecutive_failures: 2,
            next_attempt: Some(t),
            pending: Some(PendingRecord {
                binding_name: "certrot-orders-1".into(),
                binding_id: Some("b1".into()),
                service_manager: "default".into(),
                instance_id: "i1".into(),
                started_at: t,
                fingerprint_sha256: None,
            }),
            retiring: vec![RetiringRecord {
                binding_id: "b0".into(),
                service_manager: "default".into(),
                fingerprint_sha256: Some("ab".into()),
                retire_at: t,
                reason: "replaced".into(),
                attempts: 0,
            }],
            ..State::default()
        };
        let ann: BTreeMap<String, String> = state_annotations(&st)
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
        assert_eq!(ann["certrot.io/credential"], "orders");
        assert_eq!(ann["certrot.io/consecutive-failures"], "2");
        assert!(!ann.contains_key("certrot.io/current"));
        assert_eq!(parse_state(Some(&ann), "orders").unwrap(), st);
        // Someone else's credential, or a broken value, is reported with the annotation.
        let e = parse_state(Some(&ann), "billing").unwrap_err();
        assert!(e.contains("belongs to credential \"orders\""), "{e}");
        let mut bad = ann.clone();
        bad.insert("certrot.io/next-attempt".into(), "yesterday".into());
        let e = parse_state(Some(&bad), "orders").unwrap_err();
        assert!(e.starts_with("annotation certrot.io/next-attempt"), "{e}");
        // No annotations: a fresh state.
        assert_eq!(parse_state(None, "x").unwrap().credential, "x");
    }
}
