//! Per-credential advisory lock (`flock` on `<state_dir>/<name>.lock`), so that a daemon, a
//! timer and a human never rotate or switch the same credential at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Exit code for "locked by another process" (EX_TEMPFAIL).
pub const EXIT_LOCKED: i32 = 75;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "credential {credential:?} is locked by {holder} ({place}); retry later or pass --wait"
    )]
    Locked {
        credential: String,
        holder: String,
        place: String,
    },
    #[error("{place}: cannot lock: {message}")]
    Io { place: String, message: String },
}

/// A held lock; released when the last of its clones is dropped. A clone is what disk work
/// on the blocking pool carries, so that a run dropped while it waits (the daemon's stop
/// grace abandons rotations) gives the lock back only once that write is done.
#[derive(Clone, Debug)]
pub struct CredentialLock {
    _file: std::sync::Arc<File>,
}

impl CredentialLock {
    /// Takes the lock of `credential`; with `wait`, blocks until it is free.
    pub fn acquire(state_dir: &Path, credential: &str, wait: bool) -> Result<Self, LockError> {
        let path = state_dir.join(format!("{credential}.lock"));
        let ioerr = |e: std::io::Error| LockError::Io {
            place: path.display().to_string(),
            message: e.to_string(),
        };
        // Never through a planted link, never blocking on a planted FIFO; a regular file only.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(
                (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
            )
            .open(&path)
            .map_err(ioerr)?;
        if !file.metadata().map_err(ioerr)?.is_file() {
            return Err(ioerr(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) if wait => file.lock().map_err(ioerr)?,
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "another process".into(),
                };
                return Err(LockError::Locked {
                    credential: credential.to_string(),
                    holder,
                    place: path.display().to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(ioerr(e)),
        }
        file.set_len(0).map_err(ioerr)?;
        file.rewind().map_err(ioerr)?;
        write!(file, "{}", std::process::id()).map_err(ioerr)?;
        Ok(CredentialLock {
            _file: std::sync::Arc::new(file),
        })
    }
}
