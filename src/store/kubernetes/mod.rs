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
use crate::store::directory::{Current, generation_dir_name};
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use time::OffsetDateTime;

const TLS_TYPE: &str = "kubernetes.io/tls";
/// Largest API response read (a Secret is at most 1 MiB).
const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Writes retried after conflicts caused by foreign changes.
const WRITE_ATTEMPTS: usize = 5;

mod annotations;
mod client;
pub(crate) mod error;
mod lease;
mod previous;

pub use crate::names::PREVIOUS_SUFFIX;
pub use annotations::{ANNOTATION_PREFIX, GENERATION_ANNOTATION, UNUSABLE_ANNOTATION, parse_state};
use annotations::{ours, set_annotation, state_annotations};
use client::connect;
pub use error::KubeError;

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

/// The Secret data of a generation: the files the layout shows, `cert.pem` and `key.pem`
/// under the `kubernetes.io/tls` keys (always present: the Secret type requires them).
/// `keep`: keys of certrot's own files the Secret holds now (written by an earlier version
/// into a `servicebinding` Secret); they stay, so that no consumer of them loses them.
fn data_of(
    g: &Generation,
    layout: Layout,
    binding: &ServiceBinding,
    keep: &[&str],
) -> Result<BTreeMap<String, ByteString>, crate::store::binding::BindingError> {
    let r = crate::store::binding::render(g, layout, binding)?;
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
    ) -> Result<Generation, crate::store::TargetError> {
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
        } else if get(crate::store::binding::METADATA).is_some() {
            // The servicebinding layout without credentials.json: the fields are the keys.
            let map = crate::store::binding::parse_fields(get)
                .map_err(|e| invalid(format!("key {e}")))?;
            g = g.with_credentials(map);
        }
        Ok(g)
    }

    /// The current generation (from the Secret as last read; read now if not yet).
    pub async fn read_current(&self) -> Result<Option<Current>, crate::store::TargetError> {
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
        let invalid = |e: crate::store::binding::BindingError| KubeError::Invalid {
            place: self.place(),
            reason: format!("nothing was written: {e}"),
        };
        data_of(g, self.cfg.layout, &self.cfg.binding, &[]).map_err(invalid)?;
        let keystore = match &self.cfg.keystore {
            None => None,
            Some(k) => Some(
                crate::store::keystore::read_password(&k.password_file)
                    .and_then(|pw| crate::store::keystore::pkcs12(g, &k.alias, &pw))
                    .map_err(|reason| KubeError::Invalid {
                        place: self.place(),
                        reason: format!(
                            "{}: {reason}; nothing was written",
                            crate::store::keystore::KEYSTORE_FILE
                        ),
                    })?,
            ),
        };
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
        let mut data = data_of(g, self.cfg.layout, &self.cfg.binding, &keep).map_err(invalid)?;
        if let Some(p12) = keystore {
            data.insert(
                crate::store::keystore::KEYSTORE_FILE.to_string(),
                ByteString(p12.to_vec()),
            );
        }
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
}
