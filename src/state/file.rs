//! The state directory: one JSON file per credential, written atomically (temp file,
//! fdatasync, rename, and, for a durable write, fsync of the directory), in a directory no
//! other local user can write to.
//!
//! A corrupt or unreadable state file is never silently discarded: it is renamed aside with
//! a `.corrupt-<timestamp>` suffix and reported, and a fresh state starts.

use super::{STATE_VERSION, State};
use crate::fsutil::{Durability, read_opened, write_atomic};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

const MAX_STATE_BYTES: usize = 4 << 20;

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
fn unsafe_dir_reason(dir: &Path) -> Option<String> {
    unsafe_reason(std::fs::metadata(dir))
}

/// [`unsafe_dir_reason`] from the directory's metadata as read.
fn unsafe_reason(meta: std::io::Result<std::fs::Metadata>) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = match meta {
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
        // A missing directory means no state yet; one that exists must be safe (one stat).
        match std::fs::metadata(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            meta => {
                if let Some(reason) = unsafe_reason(meta) {
                    return Err(StateError::Unsafe {
                        path: self.dir.clone(),
                        reason,
                    });
                }
            }
        }
        let bytes = match crate::fsutil::open_regular(&path, false) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Loaded {
                    state: fresh,
                    set_aside: None,
                });
            }
            Err(e) => Err(e),
            Ok((mut f, meta)) => read_opened(&mut f, &meta, MAX_STATE_BYTES),
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

    /// Writes the state atomically and durably.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        self.save_as(state, Durability::Durable)
    }

    /// Writes the state atomically, as durable as `durability` says.
    pub fn save_as(&self, state: &State, durability: Durability) -> Result<(), StateError> {
        self.ensure_dir()?;
        let mut s = state.clone();
        s.version = STATE_VERSION;
        let json = serde_json::to_vec_pretty(&s).unwrap_or_default();
        let name = format!("{}.json", state.credential);
        write_atomic(&self.dir, &name, &json, 0o600, durability).map_err(|source| StateError::Io {
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
