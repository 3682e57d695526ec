//! Replicas: the further targets of a credential (`[[credential.target]]` after the first).
//! Each receives a copy of the generation the primary target serves — a directory (same
//! layout and atomic switch), a Kubernetes Secret (same resourceVersion discipline), or a
//! Vault / OpenBao KV v2 secret (check-and-set) — and is read back afresh for every
//! decision that depends on what it serves. Replicas hold no state and take no lock: the
//! primary's lock covers the credential.

use super::{DirectoryTarget, SecretTarget, TargetError, vault_kv::VaultKvStore};
use crate::config::{Credential, Replica};
use crate::generation::Generation;
use time::OffsetDateTime;

/// One opened replica.
#[derive(Debug)]
pub enum ReplicaStore {
    Directory(DirectoryTarget),
    Kubernetes(Box<SecretTarget>),
    VaultKv(Box<VaultKvStore>),
}

/// A replica as configured, opened or with why it could not be.
#[derive(Debug)]
pub struct ReplicaSlot {
    /// The target for messages, status and the metrics' `target` label.
    pub place: String,
    pub store: Result<ReplicaStore, String>,
}

/// What bringing one replica up to date did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    /// It already served the generation.
    Already,
    /// The generation was written (its name there: a directory, a Secret generation, a KV version).
    Written(String),
}

impl ReplicaSlot {
    /// Opens each of `cred`'s replicas (a Kubernetes one connects); one that cannot be opened
    /// is kept with its error, so what it serves counts as unknown.
    pub async fn open_all(cred: &Credential) -> Vec<ReplicaSlot> {
        let mut out = Vec::with_capacity(cred.replicas.len());
        for r in &cred.replicas {
            let store = match r {
                Replica::Directory(d) => Ok(ReplicaStore::Directory(DirectoryTarget::new(
                    d.clone(),
                    cred.policy.keep_generations,
                ))),
                Replica::KubernetesSecret(k) => SecretTarget::connect(k, &cred.name)
                    .await
                    .map(|t| ReplicaStore::Kubernetes(Box::new(t)))
                    .map_err(|e| e.to_string()),
                Replica::VaultKv(v) => VaultKvStore::new(v)
                    .map(|v| ReplicaStore::VaultKv(Box::new(v)))
                    .map_err(|e| e.to_string()),
            };
            let place = match &store {
                Ok(ReplicaStore::Kubernetes(k)) => k.place(),
                _ => r.to_string(),
            };
            out.push(ReplicaSlot { place, store });
        }
        out
    }

    /// The generation the replica serves now (read afresh), `None` when it holds none.
    pub async fn served(&self) -> Result<Option<Generation>, TargetError> {
        let store = self.store.as_ref().map_err(|reason| TargetError::Vault {
            place: self.place.clone(),
            reason: format!("cannot be opened: {reason}"),
        })?;
        match store {
            ReplicaStore::Directory(d) => Ok(d.read_current()?.map(|c| c.generation)),
            ReplicaStore::Kubernetes(k) => {
                // A fresh read of the Secret (read_current answers from the last read).
                k.load_state().await?;
                Ok(k.read_current().await?.map(|c| c.generation))
            }
            ReplicaStore::VaultKv(v) => v.read_current().await,
        }
    }

    /// Makes the replica serve `g`, unless it already does (same certificate and key). A
    /// directory replica is written on the blocking pool, holding `lock` (the credential's,
    /// when held) until done.
    pub async fn sync(
        &self,
        g: &Generation,
        now: OffsetDateTime,
        lock: Option<crate::lock::CredentialLock>,
    ) -> Result<Synced, TargetError> {
        let served = self.served().await;
        if let Ok(Some(s)) = &served
            && s.leaf().fingerprint_sha256 == g.leaf().fingerprint_sha256
            && *s.key_pem() == *g.key_pem()
        {
            return Ok(Synced::Already);
        }
        let store = self.store.as_ref().map_err(|reason| TargetError::Vault {
            place: self.place.clone(),
            reason: reason.clone(),
        })?;
        let name = match store {
            ReplicaStore::Directory(d) => d.commit_off_worker(g, now, lock).await?,
            ReplicaStore::Kubernetes(k) => k.commit(g, now).await?,
            ReplicaStore::VaultKv(v) => v.commit(g).await?,
        };
        Ok(Synced::Written(name))
    }
}
