//! The visible names of a directory target: links into `..data` for exactly the names the
//! current generation shows. A real file at such a name is never overwritten; stale links are
//! pinned to the replaced generation just before the switch and removed right after it, so
//! that no link dangles at any moment.

use super::*;

impl DirectoryTarget {
    /// Fails if a visible name is a real file or directory (an operator's own file).
    pub(super) fn refuse_real_files(&self, names: &[&str]) -> Result<(), TargetError> {
        for name in names {
            let link = self.path().join(name);
            match std::fs::symlink_metadata(&link) {
                Ok(m) if !m.file_type().is_symlink() => {
                    return Err(TargetError::Unsafe {
                        path: link,
                        reason: "it is a real file or directory where certrot keeps a link to \
                                 ..data; move it away (certrot import can adopt a credential)"
                            .into(),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Makes the visible links exactly `names`: missing ones are created, and links of
    /// certrot's (`<name> -> ..data/<name>`) for names the current generation does not show
    /// are removed, so no link dangles (@sap/xsenv fails for the whole binding root on a
    /// dangling one). Failures are logged: the generation is current already.
    pub(super) fn show_only(&self, names: &[&str], when: &str) {
        let root = self.path();
        if let Err(e) = self.ensure_visible_links(names) {
            tracing::warn!(target = %root.display(), "{when}: {e}");
        }
        if let Err(e) = self.remove_stale_links(names) {
            tracing::warn!(target = %root.display(), "{when}: {e}");
        }
    }

    /// certrot's own files that `names` leaves out but an earlier version linked here: they
    /// stay shown, so that no consumer of them loses them.
    pub(super) fn kept_own_links(&self, names: &[&str]) -> Vec<&'static str> {
        crate::store::binding::OWN_FILES
            .into_iter()
            .filter(|f| !names.contains(f) && self.is_our_link(f))
            .collect()
    }

    /// True when `<path>/<name>` is a link of certrot's: to `..data/<name>`, or to
    /// `<generation dir>/<name>` (pinned during a switch).
    pub(super) fn is_our_link(&self, name: &str) -> bool {
        let link = self.path().join(name);
        if !std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
            return false;
        }
        let Ok(dest) = std::fs::read_link(&link) else {
            return false;
        };
        let mut parts = dest.iter();
        let (Some(dir), Some(file), None) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        file == std::ffi::OsStr::new(name)
            && (dir == std::ffi::OsStr::new(DATA_LINK)
                || dir.to_str().is_some_and(is_generation_dir_name))
    }

    /// Before `..data` moves on: certrot's links for names the next generation does not
    /// show are pointed at the generation being replaced (`old_dir`) directly, so none
    /// dangles between the switch and their removal. Best effort: a failure is logged.
    pub(super) fn pin_stale_links(&self, names: &[&str], old_dir: &str) {
        let root = self.path();
        let Ok(entries) = std::fs::read_dir(root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if names.contains(&name) || name.starts_with("..") || !self.is_our_link(name) {
                continue;
            }
            if std::fs::symlink_metadata(root.join(old_dir).join(name)).is_err() {
                continue;
            }
            let tmp = root.join(format!(".{name}.link-tmp"));
            let _ = std::fs::remove_file(&tmp);
            let pinned = std::os::unix::fs::symlink(PathBuf::from(old_dir).join(name), &tmp)
                .and_then(|()| std::fs::rename(&tmp, root.join(name)));
            if let Err(e) = pinned {
                tracing::warn!(target = %root.display(), "pinning the link {name}: {e}");
            }
        }
    }

    /// Removes certrot's visible links (`<name> -> ..data/<name>`, or pinned to a
    /// generation) whose name is not in `names`; anything else in the directory is left
    /// alone.
    pub(super) fn remove_stale_links(&self, names: &[&str]) -> Result<(), TargetError> {
        let root = self.path();
        let mut changed = false;
        for entry in std::fs::read_dir(root).map_err(io(root, "listing the target directory"))? {
            let entry = entry.map_err(io(root, "listing the target directory"))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if names.contains(&name) || name == DATA_LINK || name == DATA_TMP {
                continue;
            }
            let link = root.join(name);
            if self.is_our_link(name) {
                std::fs::remove_file(&link).map_err(io(&link, "removing a stale link"))?;
                changed = true;
            }
        }
        if changed {
            fsync_dir(root).map_err(io(root, "syncing"))?;
        }
        Ok(())
    }

    /// Makes `<path>/<name>` a symlink to `..data/<name>` for each name, replacing planted
    /// symlinks (never following them) and refusing to replace real files.
    pub(super) fn ensure_visible_links(&self, names: &[&str]) -> Result<(), TargetError> {
        let root = self.path();
        let mut changed = false;
        for name in names {
            let link = root.join(name);
            let want = PathBuf::from(DATA_LINK).join(name);
            match std::fs::symlink_metadata(&link) {
                Ok(m) if m.file_type().is_symlink() => {
                    if std::fs::read_link(&link).ok().as_deref() == Some(want.as_path()) {
                        continue;
                    }
                }
                Ok(_) => {
                    return Err(TargetError::Unsafe {
                        path: link,
                        reason: "it is a real file or directory where certrot keeps a link to \
                                 ..data; move it away (certrot import can adopt a credential)"
                            .into(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&link, "reading")(e)),
            }
            let tmp = root.join(format!(".{name}.link-tmp"));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&want, &tmp).map_err(io(&tmp, "creating the link"))?;
            std::fs::rename(&tmp, &link).map_err(io(&link, "creating the link"))?;
            changed = true;
        }
        if changed {
            fsync_dir(root).map_err(io(root, "syncing"))?;
        }
        Ok(())
    }
}
