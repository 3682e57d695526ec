//! Per-credential state: one JSON file per credential under `state_dir`, written atomically
//! (temp file, fsync, rename, fsync directory).
//!
//! A corrupt or unreadable state file is never silently discarded: it is renamed aside with
//! a `.corrupt-<timestamp>` suffix and reported, and a fresh state starts.

use crate::fsutil::{read_limited, write_atomic};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

const STATE_VERSION: u32 = 1;
const MAX_STATE_BYTES: usize = 4 << 20;

/// What certrot remembers about one credential between runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub version: u32,
    pub credential: String,
    /// The generation certrot last made current.
    pub current: Option<CurrentRecord>,
    /// The last rotation attempt, successful or not.
    pub last_rotation: Option<RotationRecord>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_success: Option<OffsetDateTime>,
    pub consecutive_failures: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt: Option<OffsetDateTime>,
    /// A rotation in flight: written before a binding is created, so that a crash at any
    /// point leaves a record the next run reconciles.
    pub pending: Option<PendingRecord>,
    /// Bindings of replaced (or failed) generations, deleted at their deadline.
    pub retiring: Vec<RetiringRecord>,
    /// When certrot lost track of this credential (its state was unusable and set aside):
    /// until a generation committed since then has been current for `retire_after`, which
    /// bindings are live is unknown, and reconcile deletes nothing.
    #[serde(with = "time::serde::rfc3339::option")]
    pub unknown_since: Option<OffsetDateTime>,
    /// A random id naming this installation's bindings (label `certrot_installation`), set
    /// before its first binding: another installation, or one whose state was lost, has
    /// another id and never takes these bindings for its own orphans.
    pub installation: Option<String>,
}

/// The intent of a rotation in flight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingRecord {
    /// Name of the binding being created.
    pub binding_name: String,
    /// Its id, once Service Manager answered.
    pub binding_id: Option<String>,
    pub service_manager: String,
    pub instance_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// Fingerprint of the new certificate, recorded just before the commit: if the target
    /// shows it afterwards, the commit happened (even if the state write after it did not).
    #[serde(default)]
    pub fingerprint_sha256: Option<String>,
}

/// A binding queued for deletion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetiringRecord {
    pub binding_id: String,
    pub service_manager: String,
    /// Fingerprint of its certificate, when known.
    pub fingerprint_sha256: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub retire_at: OffsetDateTime,
    /// Why it is queued.
    pub reason: RetireReason,
    /// Failed deletion attempts so far (each pushes `retire_at` further out).
    #[serde(default)]
    pub attempts: u32,
}

/// The generation made current by certrot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurrentRecord {
    pub serial: String,
    pub fingerprint_sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Generation directory (directory target).
    pub generation: Option<String>,
    pub binding_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub committed_at: OffsetDateTime,
    /// How it got there.
    pub source: CommitSource,
}

/// One rotation attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RotationRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub result: RotationResult,
    /// Failed step, when `result` is `failure`.
    pub step: Option<Step>,
    /// Stable failure label (e.g. `unauthorized`, `sm-rate-limited`).
    #[serde(default)]
    pub label: Option<String>,
    pub message: Option<String>,
}

/// Why a binding is queued for retirement (the names are those of the state files).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetireReason {
    /// Its generation was replaced by a rotation.
    Replaced,
    /// A failed attempt's binding whose deletion failed.
    FailedRotation,
    /// Found by reconcile, neither current nor queued.
    Orphan,
    /// The generation rolled away from.
    RolledBack,
}

impl RetireReason {
    pub fn label(self) -> &'static str {
        match self {
            RetireReason::Replaced => "replaced",
            RetireReason::FailedRotation => "failed-rotation",
            RetireReason::Orphan => "orphan",
            RetireReason::RolledBack => "rolled-back",
        }
    }
}

impl std::fmt::Display for RetireReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// How the current generation became current.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommitSource {
    #[serde(rename = "import")]
    Import,
    #[serde(rename = "rotate")]
    Rotate,
    /// A rotation whose state write was interrupted, adopted by the next run.
    #[serde(rename = "rotate (recovered after an interrupted commit)")]
    Recovered,
    #[serde(rename = "rollback")]
    Rollback,
}

impl CommitSource {
    /// Made current by a rotation (not by hand).
    pub fn is_rotation(self) -> bool {
        matches!(self, CommitSource::Rotate | CommitSource::Recovered)
    }
}

/// How a rotation attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RotationResult {
    Success,
    Failure,
}

impl std::fmt::Display for RotationResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RotationResult::Success => "success",
            RotationResult::Failure => "failure",
        })
    }
}

/// The pipeline's steps, as failures name them (logs, metrics, state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Lock,
    Inspect,
    Decide,
    Reconcile,
    Issue,
    Verify,
    Check,
    Commit,
    Hooks,
    Retire,
}

impl Step {
    pub fn label(self) -> &'static str {
        match self {
            Step::Lock => "lock",
            Step::Inspect => "inspect",
            Step::Decide => "decide",
            Step::Reconcile => "reconcile",
            Step::Issue => "issue",
            Step::Verify => "verify",
            Step::Check => "check",
            Step::Commit => "commit",
            Step::Hooks => "hooks",
            Step::Retire => "retire",
        }
    }
}

/// Why state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: refusing to use this state directory: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    #[error(transparent)]
    Kube(#[from] crate::store::kubernetes::error::KubeError),
}

/// Why `dir` cannot hold certrot's state and locks, if so: it must be a directory that no
/// one but its owner can write to, owned by certrot's user or root (else another local user
/// could plant links, FIFOs or forged state files in it).
pub fn unsafe_dir_reason(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) => return Some(e.to_string()),
    };
    if !m.is_dir() {
        return Some("it is not a directory".into());
    }
    if m.mode() & 0o022 != 0 {
        return Some(format!(
            "it is writable by group or others (mode {:04o}); chmod go-w it",
            m.mode() & 0o7777
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if m.uid() != me && m.uid() != 0 {
        return Some(format!(
            "it belongs to uid {}, neither certrot's user (uid {me}) nor root",
            m.uid()
        ));
    }
    None
}

/// State as loaded, with a note when a corrupt file was set aside.
#[derive(Debug)]
pub struct Loaded {
    pub state: State,
    /// Where an unreadable state file was moved, and why.
    pub set_aside: Option<(PathBuf, String)>,
}

/// The directory of state files.
#[derive(Clone, Debug)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    pub fn new(dir: &Path) -> StateStore {
        StateStore {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, credential: &str) -> PathBuf {
        self.dir.join(format!("{credential}.json"))
    }

    /// Creates the state directory (0700) if needed, and refuses an unsafe one.
    pub fn ensure_dir(&self) -> Result<(), StateError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| StateError::Io {
                path: self.dir.clone(),
                action: "creating the state directory",
                source,
            })?;
        self.check_dir()
    }

    /// Refuses a state directory others could write to (see [`unsafe_dir_reason`]).
    pub fn check_dir(&self) -> Result<(), StateError> {
        match unsafe_dir_reason(&self.dir) {
            None => Ok(()),
            Some(reason) => Err(StateError::Unsafe {
                path: self.dir.clone(),
                reason,
            }),
        }
    }

    /// Loads the state of `credential`; a missing file gives a fresh state, a corrupt one is
    /// set aside (only when `repair` is true; otherwise it is left in place and reported).
    pub fn load(&self, credential: &str, repair: bool) -> Result<Loaded, StateError> {
        let path = self.path_of(credential);
        let fresh = State {
            version: STATE_VERSION,
            credential: credential.to_string(),
            ..State::default()
        };
        if self.dir.exists() {
            self.check_dir()?;
        }
        let bytes = match crate::fsutil::open_regular(&path, false) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Loaded {
                    state: fresh,
                    set_aside: None,
                });
            }
            Err(e) => Err(e),
            Ok(mut f) => read_limited(&mut f, MAX_STATE_BYTES),
        };
        let problem = match bytes {
            Ok(b) => match serde_json::from_slice::<State>(&b) {
                Ok(s) if s.version == STATE_VERSION && s.credential == credential => {
                    return Ok(Loaded {
                        state: s,
                        set_aside: None,
                    });
                }
                Ok(s) if s.credential != credential => format!(
                    "it belongs to credential {:?}, not {credential:?}",
                    s.credential
                ),
                Ok(s) => format!("unsupported state version {}", s.version),
                Err(e) => format!("not valid state JSON: {e}"),
            },
            Err(e) => format!("unreadable: {e}"),
        };
        if !repair {
            return Ok(Loaded {
                state: fresh,
                set_aside: Some((path, problem)),
            });
        }
        let now = OffsetDateTime::now_utc();
        let stamp = now.unix_timestamp();
        let aside = self.dir.join(format!("{credential}.json.corrupt-{stamp}"));
        // A copy aside first; the fresh state then replaces the file in one rename, so that
        // a failed write leaves the corrupt file in place (repaired again next time) rather
        // than no file (which would look like a credential with no history).
        std::fs::hard_link(&path, &aside)
            .or_else(|_| std::fs::copy(&path, &aside).map(|_| ()))
            .map_err(|source| StateError::Io {
                path: path.clone(),
                action: "setting the corrupt state file aside",
                source,
            })?;
        tracing::warn!(
            credential,
            state_file = %path.display(),
            moved_to = %aside.display(),
            problem = %problem,
            "state file was unusable and has been set aside"
        );
        // The mark must outlive this run even if it writes nothing else.
        let state = State {
            unknown_since: Some(now),
            ..fresh
        };
        self.save(&state)?;
        Ok(Loaded {
            state,
            set_aside: Some((aside, problem)),
        })
    }

    /// Writes the state atomically.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        self.ensure_dir()?;
        let mut s = state.clone();
        s.version = STATE_VERSION;
        let json = serde_json::to_vec_pretty(&s).unwrap_or_default();
        let name = format!("{}.json", state.credential);
        write_atomic(&self.dir, &name, &json, 0o600).map_err(|source| StateError::Io {
            path: self.dir.join(&name),
            action: "writing state",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let mut st = store.load("orders", true).unwrap().state;
        assert_eq!(st.consecutive_failures, 0);
        st.consecutive_failures = 2;
        store.save(&st).unwrap();
        assert_eq!(store.load("orders", true).unwrap().state, st);

        std::fs::write(store.path_of("orders"), b"{not json").unwrap();
        // Read-only load reports but keeps the file.
        let ro = store.load("orders", false).unwrap();
        assert!(ro.set_aside.is_some());
        assert!(store.path_of("orders").exists());
        // Repairing load moves it aside, keeping its content.
        let l = store.load("orders", true).unwrap();
        let (aside, why) = l.set_aside.unwrap();
        assert!(why.contains("not valid state JSON"), "{why}");
        assert_eq!(std::fs::read(&aside).unwrap(), b"{not json");
        assert_eq!(l.state.consecutive_failures, 0);
        // In its place, a fresh state that remembers certrot lost track.
        let again = store.load("orders", true).unwrap();
        assert!(again.set_aside.is_none());
        assert!(again.state.unknown_since.is_some());
        assert_eq!(again.state, l.state);
    }
}
