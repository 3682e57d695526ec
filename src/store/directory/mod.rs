//! The directory target, laid out as Kubernetes' AtomicWriter lays out volumes:
//!
//! ```text
//! <path>/..data -> ..2026_11_21_20_58_39.123456789    one rename(2) swaps every file
//! <path>/..2026_11_21_20_58_39.123456789/{cert.pem,key.pem,bundle.pem,credentials.json[,keystore.p12]}
//! <path>/cert.pem -> ..data/cert.pem                   (and the other visible names)
//! ```
//!
//! A generation directory is written completely under a staging name, fsynced (each file,
//! then the directory), renamed to its final name, and only then published by renaming a
//! fresh symlink over `..data`; one fsync of `<path>` then makes both renames durable.
//! Readers resolve `..data` once, so cert and key always come from one generation.
//! Invariants: files `mode` (0600 default), directories 0700; a target directory writable by
//! group/others or owned by another non-root user is refused; planted symlinks are never
//! followed.

use crate::config;
use crate::fsutil::{fsync_dir, read_limited_nofollow};
use crate::generation::Generation;
use crate::store::binding::{Rendered, render};
use crate::store::keystore;
use crate::x509::{InspectError, MAX_PEM_BYTES};
use rustix::fs::{Mode, OFlags};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// The symlink naming the current generation directory.
mod links;

pub const DATA_LINK: &str = "..data";
const STAGING_PREFIX: &str = "..staging.";
const DATA_TMP: &str = "..data_tmp";

/// Why the directory target could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: refusing to use this target: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error("{path}: {reason}")]
    BadCredentials { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    NoPrevious { path: PathBuf, reason: String },
    #[error(transparent)]
    Kube(#[from] super::kubernetes::error::KubeError),
    #[error("{place}: {reason}")]
    Vault { place: String, reason: String },
    #[error("{place}: keystore.p12: {reason}; nothing was written")]
    Keystore { place: String, reason: String },
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> TargetError + use<> {
    let path = path.to_path_buf();
    move |source| TargetError::Io {
        path,
        action,
        source,
    }
}

/// The current generation as read from disk, with the name of its directory.
#[derive(Debug)]
pub struct Current {
    pub generation: Generation,
    pub dir_name: String,
}

/// A directory target.
#[derive(Clone, Debug)]
pub struct DirectoryTarget {
    cfg: config::DirectoryTarget,
    keep_generations: u32,
}

/// Name of a generation directory for commit time `t`.
pub fn generation_dir_name(t: OffsetDateTime) -> String {
    format!(
        "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}.{:09}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

/// True for names certrot gives generation directories (`..` then a digit).
pub fn is_generation_dir_name(name: &str) -> bool {
    name.len() > 3
        && name.starts_with("..")
        && name.as_bytes()[2].is_ascii_digit()
        && !name.contains('/')
}

impl DirectoryTarget {
    pub fn new(cfg: config::DirectoryTarget, keep_generations: u32) -> DirectoryTarget {
        DirectoryTarget {
            cfg,
            keep_generations,
        }
    }

    pub fn path(&self) -> &Path {
        &self.cfg.path
    }

    fn dir_mode(&self) -> u32 {
        let m = self.cfg.mode.0;
        0o700 | (m & 0o040) | ((m & 0o040) >> 2) | (m & 0o004) | ((m & 0o004) >> 2)
    }

    fn chown_wanted(&self) -> bool {
        (self.cfg.owner.is_some() || self.cfg.group.is_some())
            && rustix::process::geteuid().is_root()
    }

    fn chown_fd(&self, fd: impl rustix::fd::AsFd, path: &Path) -> Result<(), TargetError> {
        if self.chown_wanted() {
            rustix::fs::fchown(
                fd,
                self.cfg.owner.map(rustix::fs::Uid::from_raw),
                self.cfg.group.map(rustix::fs::Gid::from_raw),
            )
            .map_err(|e| io(path, "changing owner")(e.into()))?;
        }
        Ok(())
    }

    /// Checks (and with `create`, makes) the target directory: a real directory, owned by
    /// this user or root, not writable by group or others.
    pub fn ensure_safe_dir(&self, create: bool) -> Result<bool, TargetError> {
        let path = self.path();
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(self.dir_mode())
                    .create(path)
                    .map_err(io(path, "creating the target directory"))?;
                let fd = open_dir(path)?;
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(self.dir_mode()))
                    .map_err(|e| io(path, "setting the mode")(e.into()))?;
                self.chown_fd(&fd, path)?;
                if let Some(parent) = path.parent() {
                    let _ = fsync_dir(parent);
                }
                return Ok(true);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io(path, "reading the target directory")(e)),
        };
        if meta.file_type().is_symlink() {
            return Err(TargetError::Unsafe {
                path: path.to_path_buf(),
                reason: "it is a symlink; point `path` at the real directory".into(),
            });
        }
        if !meta.is_dir() {
            return Err(TargetError::Unsafe {
                path: path.to_path_buf(),
                reason: "it is not a directory".into(),
            });
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me && meta.uid() != 0 && Some(meta.uid()) != self.cfg.owner {
            return Err(TargetError::Unsafe {
                path: path.to_path_buf(),
                reason: format!(
                    "it is owned by uid {}, neither this user (uid {me}), root, nor the configured owner",
                    meta.uid()
                ),
            });
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(TargetError::Unsafe {
                path: path.to_path_buf(),
                reason: format!(
                    "it is writable by group or others (mode {:04o}); run chmod go-w on it",
                    meta.permissions().mode() & 0o7777
                ),
            });
        }
        Ok(true)
    }

    /// Names of the complete generation directories, oldest first.
    pub fn generations(&self) -> Result<Vec<String>, TargetError> {
        let path = self.path();
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io(path, "listing the target directory"))? {
            let entry = entry.map_err(io(path, "listing the target directory"))?;
            if let Some(name) = entry.file_name().to_str()
                && is_generation_dir_name(name)
                && entry.file_type().is_ok_and(|t| t.is_dir())
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// The name of the generation directory `..data` points at, if any.
    pub fn current_dir_name(&self) -> Result<Option<String>, TargetError> {
        let link = self.path().join(DATA_LINK);
        match std::fs::symlink_metadata(&link) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&link, "reading")(e)),
            Ok(m) if !m.file_type().is_symlink() => {
                return Err(TargetError::Unsafe {
                    path: link,
                    reason: "it is not a symlink".into(),
                });
            }
            Ok(_) => {}
        }
        let dest = std::fs::read_link(&link).map_err(io(&link, "reading the link"))?;
        match dest.to_str() {
            Some(name) if is_generation_dir_name(name) => Ok(Some(name.to_string())),
            _ => Err(TargetError::Unsafe {
                path: link,
                reason: format!(
                    "it points at {:?}, not at a generation directory of this target",
                    dest.display().to_string()
                ),
            }),
        }
    }

    /// Reads the current generation, resolving `..data` exactly once. `Ok(None)`: none yet.
    pub fn read_current(&self) -> Result<Option<Current>, TargetError> {
        if !self.ensure_safe_dir(false)? {
            return Ok(None);
        }
        let Some(dir_name) = self.current_dir_name()? else {
            return Ok(None);
        };
        let generation = self.read_generation(&dir_name)?;
        Ok(Some(Current {
            generation,
            dir_name,
        }))
    }

    /// The fingerprints of every certificate in the `cert.pem` of generation `dir_name`
    /// (its leaf among them): what that generation served, read without its key.
    pub fn certificate_fingerprints(&self, dir_name: &str) -> Result<Vec<String>, TargetError> {
        let p = self.path().join(dir_name).join("cert.pem");
        let label = self.path().join("cert.pem");
        let text = read_limited_nofollow(&p, MAX_PEM_BYTES).map_err(io(&label, "reading"))?;
        let chain = crate::x509::parse_chain(&text, &label.display().to_string())?;
        Ok(chain
            .into_iter()
            .map(|c| c.info.fingerprint_sha256)
            .collect())
    }

    /// Reads and inspects the generation stored in directory `dir_name`.
    pub fn read_generation(&self, dir_name: &str) -> Result<Generation, TargetError> {
        let dir = self.path().join(dir_name);
        let read = |name: &str| {
            let p = dir.join(name);
            // Errors name the visible path, which is what operators know.
            read_limited_nofollow(&p, MAX_PEM_BYTES).map_err(io(&self.path().join(name), "reading"))
        };
        let cert = read("cert.pem")?;
        let key = zeroize::Zeroizing::new(read("key.pem")?);
        let cert_label = self.path().join("cert.pem").display().to_string();
        let key_label = self.path().join("key.pem").display().to_string();
        let mut generation = Generation::from_pem(&cert, &cert_label, &key, &key_label)?;
        match read("credentials.json") {
            Ok(bytes) => {
                let bytes = zeroize::Zeroizing::new(bytes);
                let map: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&bytes).map_err(|e| TargetError::BadCredentials {
                        path: self.path().join("credentials.json"),
                        reason: crate::x509::json_error(&e),
                    })?;
                generation = generation.with_credentials(map);
            }
            Err(TargetError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(generation)
    }

    /// Creates `dir/name` with `data`, mode and owner set, its writeback started but not
    /// waited for: the caller syncs it.
    fn write_file(
        &self,
        dir: &Path,
        name: &str,
        data: &[u8],
    ) -> Result<std::fs::File, TargetError> {
        let p = dir.join(name);
        let fd = rustix::fs::open(
            &p,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(self.cfg.mode.0),
        )
        .map_err(|e| io(&p, "creating")(e.into()))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(self.cfg.mode.0))
            .map_err(|e| io(&p, "setting the mode")(e.into()))?;
        self.chown_fd(&fd, &p)?;
        let mut f = std::fs::File::from(fd);
        f.write_all(data).map_err(io(&p, "writing"))?;
        crate::fsutil::start_writeback(&f);
        Ok(f)
    }

    /// Writes `g` as a new generation and makes it current in one rename. Returns the name of
    /// the new generation directory. Old generations beyond `keep_generations` are pruned.
    pub fn commit(&self, g: &Generation, now: OffsetDateTime) -> Result<String, TargetError> {
        let rendered = self.render(g)?;
        self.write(rendered, now)
    }

    /// [`DirectoryTarget::commit`] from an async task: the files are rendered here, and
    /// written and synced on the blocking pool (holding `lock` until done, when given), so
    /// the runtime's workers go on with the other pipelines in flight (their network and
    /// crypto) while this one waits for the disk.
    pub async fn commit_off_worker(
        &self,
        g: &Generation,
        now: OffsetDateTime,
        lock: Option<crate::lock::CredentialLock>,
    ) -> Result<String, TargetError> {
        let rendered = self.render(g)?;
        let target = self.clone();
        super::on_disk(lock, move || target.write(rendered, now))
            .await
            .unwrap_or_else(|e| Err(io(self.path(), "committing")(e)))
    }

    /// The files of `g` as this target lays them out (the keystore among them when
    /// configured); nothing is written.
    fn render(&self, g: &Generation) -> Result<Rendered, TargetError> {
        // An unsafe directory or a planted `..data` stops us before anything is read for
        // the files (a keystore's password) or written; `write` checks again.
        self.ensure_safe_dir(true)?;
        self.current_dir_name()?;
        let root = self.path();
        let mut rendered = render(g, self.cfg.layout, &self.cfg.binding).map_err(|e| {
            TargetError::BadCredentials {
                path: root.to_path_buf(),
                reason: format!("nothing was written: {e}"),
            }
        })?;
        if let Some(k) = &self.cfg.keystore {
            let p12 = keystore::seal(g, k, &root.display().to_string())?;
            rendered.add_shown(keystore::KEYSTORE_FILE, p12);
        }
        Ok(rendered)
    }

    /// Writes `rendered` as a new generation and makes it current (see
    /// [`DirectoryTarget::commit`]).
    fn write(&self, rendered: Rendered, now: OffsetDateTime) -> Result<String, TargetError> {
        self.ensure_safe_dir(true)?;
        let root = self.path();
        // A planted non-symlink `..data` must stop us before anything is written.
        let previous = self.current_dir_name()?;
        let files = rendered.files;
        let mut names: Vec<&str> = rendered.visible.iter().map(String::as_str).collect();
        // Links of certrot's own files that an earlier version showed in a servicebinding
        // target stay: a consumer may read them.
        let kept = self.kept_own_links(&names);
        if !kept.is_empty() {
            tracing::warn!(
                target = %root.display(),
                "keeps showing {} (links of an earlier certrot) although the servicebinding layout no longer shows them by default: add them to target.show_files to keep them for good, or remove the links",
                kept.join(", ")
            );
            names.extend(&kept);
        }
        // A real file at a visible name must stop us before anything is written, too.
        self.refuse_real_files(&names)?;
        self.remove_staging()?;
        // Pick a fresh final name (two commits in one nanosecond get distinct names).
        let mut t = now;
        let final_name = loop {
            let name = generation_dir_name(t);
            if std::fs::symlink_metadata(root.join(&name)).is_err()
                && Some(&name) != previous.as_ref()
            {
                break name;
            }
            t += time::Duration::nanoseconds(1);
        };
        let staging = root.join(format!("{STAGING_PREFIX}{}", &final_name[2..]));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(io(&staging, "creating the generation directory"))?;
        // Every file is written (its writeback started) before the first is synced: the
        // disk works on all of them at once, and each sync waits for less. The same sync
        // calls, in the same order, as writing and syncing them one by one.
        let mut written = Vec::with_capacity(files.len());
        for (name, data) in &files {
            written.push((name, self.write_file(&staging, name, data)?));
        }
        for (name, f) in written {
            f.sync_all().map_err(io(&staging.join(name), "syncing"))?;
        }
        let fd = open_dir(&staging)?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(self.dir_mode()))
            .map_err(|e| io(&staging, "setting the mode")(e.into()))?;
        self.chown_fd(&fd, &staging)?;
        rustix::fs::fsync(&fd).map_err(|e| io(&staging, "syncing")(e.into()))?;
        let final_path = root.join(&final_name);
        std::fs::rename(&staging, &final_path).map_err(io(&final_path, "renaming into place"))?;
        // Until `..data` points at it, a failure must not leave a complete generation behind
        // (rollback would take it for the previous one).
        let unswitched = |e: TargetError| {
            let _ = std::fs::remove_dir_all(&final_path);
            e
        };
        // No sync of `<path>` between the two renames: both change this one directory, whose
        // changes a journaling filesystem (ext4, XFS, btrfs) makes durable in order, and the
        // sync after the second makes both durable (docs/architecture.md, "Durable writes").
        if let Some(p) = &previous {
            self.pin_stale_links(&names, p);
        }
        self.switch_data(&final_name).map_err(unswitched)?;
        // From here on the new generation is current: what follows is housekeeping, and a
        // failure of it must not be mistaken for a failed commit.
        self.show_only(&names, "after the commit");
        if let Err(e) = self.prune(&final_name) {
            tracing::warn!(target = %root.display(), "after the commit: {e}");
        }
        Ok(final_name)
    }

    /// Points `..data` at `dir_name` with one rename, then fsyncs the target directory.
    fn switch_data(&self, dir_name: &str) -> Result<(), TargetError> {
        let root = self.path();
        let tmp = root.join(DATA_TMP);
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&tmp, "removing a stale link")(e)),
        }
        std::os::unix::fs::symlink(dir_name, &tmp).map_err(io(&tmp, "creating the link"))?;
        let data = root.join(DATA_LINK);
        std::fs::rename(&tmp, &data).map_err(io(&data, "switching the current generation"))?;
        // The rename happened: the new generation is live whatever the sync says.
        if let Err(e) = fsync_dir(root) {
            tracing::warn!(target = %root.display(), "after switching the current generation: syncing: {e}");
        }
        Ok(())
    }

    /// Removes half-written staging directories left by a crash.
    pub fn remove_staging(&self) -> Result<usize, TargetError> {
        let root = self.path();
        let mut removed = 0;
        for entry in std::fs::read_dir(root).map_err(io(root, "listing the target directory"))? {
            let entry = entry.map_err(io(root, "listing the target directory"))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(STAGING_PREFIX) {
                let p = root.join(name);
                std::fs::remove_dir_all(&p)
                    .map_err(io(&p, "removing a half-written generation"))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Keeps `current` and the `keep_generations` newest other generation directories.
    fn prune(&self, current: &str) -> Result<(), TargetError> {
        let mut others: Vec<String> = self
            .generations()?
            .into_iter()
            .filter(|n| n != current)
            .collect();
        let keep = self.keep_generations as usize;
        if others.len() <= keep {
            return Ok(());
        }
        let drop = others.len() - keep;
        // Not synced: a removal a power cut undoes leaves an old generation that the next
        // commit prunes again.
        for name in others.drain(..drop) {
            let p = self.path().join(&name);
            std::fs::remove_dir_all(&p).map_err(io(&p, "pruning an old generation"))?;
        }
        Ok(())
    }

    /// The generation `rollback` would switch to: (current, previous directory names, its
    /// generation, inspected).
    pub fn previous(&self) -> Result<(String, String, Generation), TargetError> {
        self.ensure_safe_dir(false)?;
        let Some(current) = self.current_dir_name()? else {
            return Err(TargetError::NoPrevious {
                path: self.path().to_path_buf(),
                reason: "there is no current generation to roll back from".into(),
            });
        };
        let Some(previous) = self
            .generations()?
            .into_iter()
            .rfind(|n| n.as_str() < current.as_str())
        else {
            return Err(TargetError::NoPrevious {
                path: self.path().to_path_buf(),
                reason: format!("no generation older than {current} is kept"),
            });
        };
        let g = self.read_generation(&previous)?;
        Ok((current, previous, g))
    }

    /// Switches `..data` back to the newest generation older than the current one, after
    /// inspecting it. Returns (from, to) directory names and the generation switched to.
    /// `expected`: the fingerprint the previous generation must have (the one checked).
    pub fn rollback(&self, expected: &str) -> Result<(String, String, Generation), TargetError> {
        let (current, previous, g) = self.previous()?;
        if g.leaf().fingerprint_sha256 != expected {
            return Err(TargetError::NoPrevious {
                path: self.path().join(&previous),
                reason: "changed since it was checked; nothing was switched".into(),
            });
        }
        let names: Option<Vec<String>> = match render(&g, self.cfg.layout, &self.cfg.binding) {
            Ok(mut r) => {
                // The keystore is shown if that generation has one (it may predate the setting).
                if self.cfg.keystore.is_some()
                    && std::fs::symlink_metadata(
                        self.path().join(&previous).join(keystore::KEYSTORE_FILE),
                    )
                    .is_ok()
                {
                    r.visible.push(keystore::KEYSTORE_FILE.to_string());
                }
                Some(r.visible)
            }
            Err(e) => {
                tracing::warn!(target = %self.path().display(), "rolling back: {e}");
                None
            }
        };
        let mut names: Option<Vec<&str>> = names
            .as_ref()
            .map(|n| n.iter().map(String::as_str).collect());
        if let Some(n) = names.as_mut() {
            let kept = self.kept_own_links(n);
            n.extend(kept);
            self.pin_stale_links(n, &current);
        }
        self.switch_data(&previous)?;
        if let Some(n) = &names {
            self.show_only(n, "after the rollback");
        }
        Ok((current, previous, g))
    }
}

fn open_dir(path: &Path) -> Result<rustix::fd::OwnedFd, TargetError> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(path, "opening")(e.into()))
}
