//! Targets: where the current generation lives for its consumers, and with it where
//! certrot keeps the credential's state and how it locks the credential.
//!
//! [`Backend`] is what the pipeline, `status`, `import` and `rollback` talk to:
//! - `directory`: the generation directory layout, the state file under `state_dir`, `flock`;
//! - `kubernetes-secret`: one Secret (state in its annotations), `<name>-previous`, and the
//!   resourceVersion discipline plus an optional Lease;
//! - `replica`: the further targets (directories, Secrets, `vault_kv` secrets) that receive
//!   copies of what the primary serves.
//!
//! Both keep the same promise: a consumer never sees a certificate of one generation with
//! the key of another.

pub mod binding;
pub(crate) mod directory;
pub mod keystore;
pub mod kubernetes;
pub mod replica;
pub(crate) mod vault_kv;

pub use directory::{Current, DirectoryTarget, TargetError};
pub use kubernetes::{KubeError, SecretTarget};
pub use replica::{ReplicaSlot, ReplicaStore, Synced};

use crate::config::{Credential, Target};
use crate::fsutil::Durability;
use crate::generation::Generation;
use crate::lock::{CredentialLock, LockError};
use crate::state::{Loaded, PendingRecord, State, StateError, StateStore};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// Without a Lease, an intent younger than this is taken for another run still at work.
pub const IN_FLIGHT: time::Duration = time::Duration::minutes(15);

/// Runs `work` (a directory target's or a state file's writes and their sync calls) on the
/// blocking pool, so the runtime's workers go on with the other pipelines meanwhile. The
/// work holds `lock` (the credential's file lock, when held) until it is done: a run dropped
/// while it waits gives the lock back only once the write is done, so no other run writes
/// beside it. (A Secret's Lease is not carried: it expires on its own.)
pub(crate) async fn on_disk<T: Send + 'static>(
    lock: Option<CredentialLock>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, std::io::Error> {
    crate::rt::on_blocking_pool(move || {
        let _held = lock;
        work()
    })
    .await
}

/// The primary target of a credential, with its state and lock.
#[derive(Debug)]
pub enum Primary {
    Directory {
        target: DirectoryTarget,
        store: StateStore,
    },
    Kubernetes(Box<SecretTarget>),
}

/// A credential's targets: the primary (with the state and the lock) and its replicas.
#[derive(Debug)]
pub struct Backend {
    primary: Primary,
    replicas: Vec<ReplicaSlot>,
    /// The credential's file lock while this backend holds it: disk work carries a clone.
    held: std::sync::Mutex<Option<CredentialLock>>,
}

/// A held lock; give it back with [`Backend::release`] (a file lock also goes when dropped,
/// a Lease expires).
#[derive(Debug)]
pub enum Guard {
    File(CredentialLock),
    Lease(kubernetes::LeaseGuard),
    /// The resourceVersion discipline alone.
    Optimistic,
}

impl Backend {
    /// The backend of `cred`; connecting to the Kubernetes API when its target is a Secret.
    pub async fn open(cred: &Credential, state_dir: &Path) -> Result<Backend, TargetError> {
        let primary = match &cred.target {
            Target::Directory(d) => Primary::Directory {
                target: DirectoryTarget::new(d.clone(), cred.policy.keep_generations),
                store: StateStore::new(state_dir),
            },
            Target::KubernetesSecret(k) => {
                Primary::Kubernetes(Box::new(SecretTarget::connect(k, &cred.name).await?))
            }
        };
        Ok(Backend {
            primary,
            replicas: ReplicaSlot::open_all(cred).await,
            held: std::sync::Mutex::new(None),
        })
    }

    /// A clone of the credential's file lock while this backend holds it (`None` otherwise).
    pub(crate) fn held_lock(&self) -> Option<CredentialLock> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Makes every replica serve `g` (after `import` or `rollback`): per replica, its place
    /// and what was done or why not.
    pub async fn replicate(
        &self,
        g: &Generation,
        now: OffsetDateTime,
    ) -> Vec<(String, Result<Synced, String>)> {
        let mut out = Vec::with_capacity(self.replicas.len());
        for r in &self.replicas {
            out.push((
                r.place.clone(),
                r.sync(g, now, self.held_lock())
                    .await
                    .map_err(|e| e.to_string()),
            ));
        }
        out
    }

    /// The replicas, in configuration order.
    pub fn replicas(&self) -> &[ReplicaSlot] {
        &self.replicas
    }

    /// The fingerprints of the leaves every target serves right now (read afresh): what no
    /// deletion may ever touch. `Err` when any target cannot be read (what it serves is
    /// unknown, so nothing may be deleted).
    pub async fn served_everywhere(&self) -> Result<Vec<String>, TargetError> {
        let mut out: Vec<String> = self.served_fingerprint().await?.into_iter().collect();
        for r in &self.replicas {
            if let Some(g) = r.served().await? {
                out.push(g.leaf().fingerprint_sha256.clone());
            }
        }
        Ok(out)
    }

    /// The target for messages: a path or `secret <namespace>/<name>`.
    pub fn describe(&self) -> String {
        match &self.primary {
            Primary::Directory { target, .. } => target.path().display().to_string(),
            Primary::Kubernetes(k) => k.place(),
        }
    }

    /// `CERTROT_TARGET` for hooks.
    pub fn hook_target(&self) -> PathBuf {
        PathBuf::from(self.describe())
    }

    /// True for a directory target (its files can be named to hooks).
    pub fn has_files(&self) -> bool {
        matches!(self.primary, Primary::Directory { .. })
    }

    /// Takes the credential's lock (`wait`: until it is free).
    pub async fn lock(&self, credential: &str, wait: bool) -> Result<Guard, LockError> {
        match &self.primary {
            Primary::Directory { store, .. } => {
                store.ensure_dir().map_err(|e| LockError::Io {
                    place: store.dir().display().to_string(),
                    message: e.to_string(),
                })?;
                let (dir, name) = (store.dir().to_path_buf(), credential.to_string());
                let lock =
                    tokio::task::spawn_blocking(move || CredentialLock::acquire(&dir, &name, wait))
                        .await
                        .map_err(|e| LockError::Io {
                            place: credential.to_string(),
                            message: e.to_string(),
                        })??;
                *self
                    .held
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(lock.clone());
                Ok(Guard::File(lock))
            }
            Primary::Kubernetes(k) if k.lease_enabled() => match k.acquire_lease(wait).await {
                Ok(Ok(g)) => Ok(Guard::Lease(g)),
                Ok(Err(holder)) => Err(LockError::Locked {
                    credential: credential.to_string(),
                    holder,
                    place: k.place(),
                }),
                Err(e) => Err(LockError::Io {
                    place: k.place(),
                    message: e.to_string(),
                }),
            },
            Primary::Kubernetes(_) => Ok(Guard::Optimistic),
        }
    }

    /// Runs `work` under `guard`: a held Lease is renewed meanwhile (every third of its
    /// duration). Writes after the Lease was lost are refused by the target itself.
    pub async fn hold<T>(&self, guard: &Guard, work: impl std::future::Future<Output = T>) -> T {
        match (&self.primary, guard) {
            (Primary::Kubernetes(k), Guard::Lease(_)) => {
                tokio::select! {
                    biased;
                    out = work => out,
                    never = k.keep_lease() => match never {},
                }
            }
            _ => work.await,
        }
    }

    /// Before acting on the Service Manager from the state read: a held Lease must still
    /// be this run's (see [`SecretTarget::hold_lease`]); always true for other locks.
    pub async fn still_held(&self) -> Result<(), KubeError> {
        match &self.primary {
            Primary::Kubernetes(k) => k.hold_lease().await,
            Primary::Directory { .. } => Ok(()),
        }
    }

    /// Gives a lock back.
    pub async fn release(&self, guard: Guard) {
        if let Guard::File(_) = &guard {
            self.held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
        }
        if let (Primary::Kubernetes(k), Guard::Lease(g)) = (&self.primary, guard) {
            k.release(g).await;
        }
    }

    /// Reads the state (`repair`: set an unreadable state file aside).
    pub async fn load_state(&self, credential: &str, repair: bool) -> Result<Loaded, StateError> {
        match &self.primary {
            Primary::Directory { store, .. } => store.load(credential, repair),
            Primary::Kubernetes(k) => {
                let (mut state, problem) = k.load_state().await?;
                if let Some(p) = &problem {
                    if repair {
                        tracing::warn!(credential, secret = %k.place(), "state annotations are unusable; they are kept in {} and replaced: {p}", kubernetes::UNUSABLE_ANNOTATION);
                        state.unknown_since = Some(OffsetDateTime::now_utc());
                    } else {
                        tracing::warn!(credential, secret = %k.place(), "state annotations are unusable: {p}");
                    }
                }
                Ok(Loaded {
                    state,
                    set_aside: problem.map(|p| (PathBuf::from(k.place()), p)),
                })
            }
        }
    }

    /// Writes the state durably.
    pub async fn save_state(&self, state: &State) -> Result<(), StateError> {
        self.save_state_as(state, Durability::Durable).await
    }

    /// Writes the state; a state directory's file as durable as `durability` says (a
    /// Secret's annotations are durable once the API server answers). A state directory's
    /// file is written on the blocking pool ([`on_disk`]): the runtime's workers,
    /// and the caller's other futures (a token check polled beside it), go on during its
    /// sync calls.
    pub async fn save_state_as(
        &self,
        state: &State,
        durability: Durability,
    ) -> Result<(), StateError> {
        match &self.primary {
            Primary::Directory { store, .. } => {
                let (store, state) = (store.clone(), state.clone());
                let path = store.path_of(&state.credential);
                on_disk(self.held_lock(), move || store.save_as(&state, durability))
                    .await
                    .unwrap_or_else(|source| {
                        Err(StateError::Io {
                            path,
                            action: "writing state",
                            source,
                        })
                    })
            }
            Primary::Kubernetes(k) => Ok(k.save_state(state).await?),
        }
    }

    /// The current generation, `None` when there is none yet.
    pub async fn read_current(&self) -> Result<Option<Current>, TargetError> {
        match &self.primary {
            Primary::Directory { target, .. } => target.read_current(),
            Primary::Kubernetes(k) => k.read_current().await,
        }
    }

    /// The fingerprint of the leaf the target serves right now (read afresh), `None` when it
    /// holds no generation: what no deletion may ever touch.
    pub async fn served_fingerprint(&self) -> Result<Option<String>, TargetError> {
        Ok(self
            .read_current()
            .await?
            .map(|c| c.generation.leaf().fingerprint_sha256.clone()))
    }

    /// The certificates (fingerprints, read from `cert.pem` alone) of every generation a
    /// directory target keeps, the current one among them: what was served once, and may
    /// still be held by an application. A Secret keeps its record of every commit in its
    /// annotations: none.
    pub async fn kept_fingerprints(&self) -> Result<Vec<String>, TargetError> {
        match &self.primary {
            Primary::Directory { target, .. } => {
                let mut fps = Vec::new();
                if !target.ensure_safe_dir(false)? {
                    return Ok(fps);
                }
                for name in target.generations()? {
                    fps.extend(target.certificate_fingerprints(&name)?);
                }
                Ok(fps)
            }
            Primary::Kubernetes(_) => Ok(Vec::new()),
        }
    }

    /// Makes `g` current in one step; returns the new generation's name.
    pub async fn commit(&self, g: &Generation, now: OffsetDateTime) -> Result<String, TargetError> {
        match &self.primary {
            Primary::Directory { target, .. } => {
                target.commit_off_worker(g, now, self.held_lock()).await
            }
            Primary::Kubernetes(k) => Ok(k.commit(g, now).await?),
        }
    }

    /// The generation `rollback` would switch to, for checking it first.
    pub async fn previous(&self) -> Result<Generation, TargetError> {
        match &self.primary {
            Primary::Directory { target, .. } => target.previous().map(|(_, _, g)| g),
            Primary::Kubernetes(k) => k.previous().await,
        }
    }

    /// After `commit` answered an error: whether the target shows the certificate
    /// `fingerprint` anyway (`Some(generation)`: the write landed). `Err`: unknown.
    pub async fn shows(&self, fingerprint: &str) -> Result<Option<String>, TargetError> {
        match &self.primary {
            Primary::Directory { target, .. } => Ok(target
                .read_current()?
                .filter(|c| c.generation.leaf().fingerprint_sha256 == fingerprint)
                .map(|c| c.dir_name)),
            Primary::Kubernetes(k) => Ok(k.shows(fingerprint).await?),
        }
    }

    /// True when the state is a file in the state directory on this host (not a Secret's
    /// annotations).
    pub fn state_on_host(&self) -> bool {
        matches!(self.primary, Primary::Directory { .. })
    }

    /// True when no other run can work on the credential while the lock is held.
    pub fn exclusive(&self) -> bool {
        match &self.primary {
            Primary::Directory { .. } => true,
            Primary::Kubernetes(k) => k.lease_enabled(),
        }
    }

    /// Switches back to the previous generation, which must hold the certificate
    /// `expected` (the one checked): (from, to, generation).
    pub async fn rollback(
        &self,
        expected: &str,
    ) -> Result<(String, String, Generation), TargetError> {
        match &self.primary {
            Primary::Directory { target, .. } => target.rollback(expected),
            Primary::Kubernetes(k) => k.rollback(expected).await,
        }
    }

    /// Told which certificates' bindings were just retired (the Secret target drops its
    /// `-previous` copy then; directories keep `keep_generations`).
    pub async fn retired(&self, fingerprints: &[String]) {
        if let Primary::Kubernetes(k) = &self.primary
            && let Err(e) = k.retired(fingerprints).await
        {
            tracing::warn!(secret = %k.place(), "after retirement: {e}");
        }
    }

    /// True when `pending` may belong to another run still at work: a Secret's intent that
    /// is younger than [`IN_FLIGHT`] when no Lease excludes other runs. Under `flock` or a
    /// held Lease an intent is always an interrupted run's (or one that lost its Lease,
    /// which writes nothing more).
    pub fn pending_in_flight(&self, pending: &PendingRecord, now: OffsetDateTime) -> bool {
        match &self.primary {
            Primary::Kubernetes(k) if k.lease_enabled() => false,
            Primary::Kubernetes(_) => {
                let window = IN_FLIGHT;
                // A start in the future (a clock that was ahead) counts only within the window.
                pending.started_at > now - window && pending.started_at < now + window
            }
            Primary::Directory { .. } => false,
        }
    }
}

/// True when a write was refused because this run no longer holds its Lease.
pub fn is_lease_lost(e: &StateError) -> bool {
    matches!(e, StateError::Kube(KubeError::LeaseLost { .. }))
}

/// True when a state write failed because another run changed the state meanwhile.
pub fn is_conflict(e: &StateError) -> bool {
    matches!(e, StateError::Kube(KubeError::Conflict { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::time::Duration;

    /// A run dropped while its disk work waits (the daemon's stop grace aborts rotations)
    /// must not give the credential's lock back before that write is done: another run
    /// would write the same target or state file beside it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_dropped_during_its_disk_work_keeps_the_lock_until_the_write_is_done() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "[service_manager.main]\nservice_key = \"/k.json\"\n[[credential]]\nname = \"orders\"\n\
             target.path = \"{}\"\nissuer.instance_id = \"i\"\n",
            dir.path().join("orders").display()
        );
        let cred = Config::parse(&text, Path::new("t.toml"))
            .expect("config")
            .credentials
            .remove(0);
        let state_dir = dir.path().join("state");
        let backend = Backend::open(&cred, &state_dir).await.expect("backend");
        let guard = backend.lock("orders", false).await.expect("lock");
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let mut work = Box::pin(on_disk(backend.held_lock(), move || {
            wait.recv_timeout(Duration::from_secs(10)).is_ok()
        }));
        // The work is under way on the blocking pool; then the run is dropped, lock and all.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut work)
                .await
                .is_err()
        );
        drop(work);
        drop(guard);
        drop(backend);
        let taken = CredentialLock::acquire(&state_dir, "orders", false);
        assert!(
            matches!(taken, Err(LockError::Locked { .. })),
            "the lock was given back while the write went on: {taken:?}"
        );
        go.send(()).expect("the work is waiting");
        let mut free = false;
        for _ in 0..200 {
            if CredentialLock::acquire(&state_dir, "orders", false).is_ok() {
                free = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(free, "the lock stayed held after the write was done");
    }
}
