//! Small, careful filesystem helpers: atomic file replacement (temp file, fdatasync, rename,
//! fsync directory, as durable as asked), directory fsync, size-limited reads that never
//! follow symlinks.

use rustix::fs::{Mode, OFlags};
use std::io::{Read, Write};
use std::path::Path;

/// Fsyncs a directory so that renames inside it are durable.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::fs::fsync(&fd)?;
    Ok(())
}

/// Starts writing back what `file` holds (Linux `sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`) without waiting for it and without any promise of durability:
/// several files written one after another and then fsynced are on the disk sooner when
/// their writes were started together. A hint only: where the call is not available, or
/// fails, nothing changes (the fsync that follows is what makes the file durable).
pub fn start_writeback(file: &std::fs::File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: `sync_file_range` takes a file descriptor, which `file` keeps open for the
        // duration of the call, and integers; it reads or writes no memory of this process.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// How durable a replacement by [`write_atomic`] is when it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The new content and its name are on disk (`fdatasync` of the file, `fsync` of the
    /// directory): for a record an action outside this host will rely on.
    Durable,
    /// The new content is on disk before it takes the name (`fdatasync`), so a power cut
    /// leaves the old or the new content, never a torn or empty file; the rename itself
    /// may be lost: for a record the next run rebuilds from an earlier durable one.
    Atomic,
    /// No sync at all: a file nothing depends on after a power cut (a metrics text file).
    Volatile,
}

/// Replaces `dir/name` with `data` atomically: readers see the old or the new content.
/// The file's mode is set explicitly; its timestamps need not be durable, so the content
/// is synced with `fdatasync`.
pub fn write_atomic(
    dir: &Path,
    name: &str,
    data: &[u8],
    mode: u32,
    durability: Durability,
) -> std::io::Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .tempfile_in(dir)?;
    rustix::fs::fchmod(tmp.as_file(), Mode::from_raw_mode(mode))?;
    tmp.write_all(data)?;
    if durability != Durability::Volatile {
        tmp.as_file().sync_data()?;
    }
    tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    if durability == Durability::Durable {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Opens a file for reading without blocking on a FIFO or a device, and refuses anything but
/// a regular file (`/dev/zero`, a FIFO, a directory). `follow`: whether a symlink at the
/// last component is followed. Returns the file with its metadata (read once, from the
/// open file).
pub fn open_regular(
    path: &Path,
    follow: bool,
) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    let mut flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    let f = std::fs::File::from(rustix::fs::open(path, flags, Mode::empty())?);
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((f, meta))
}

/// Reads at most `limit` bytes of a regular file, refusing symlinks at the last component.
/// Returns `InvalidData` when the file is larger than `limit`.
pub fn read_limited_nofollow(path: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut f = std::fs::File::from(fd);
    read_file_limited(&mut f, limit)
}

/// Reads at most `limit` bytes of the open file `f` into one buffer of the size its
/// metadata gives: two `read` calls for a file that did not change, where a buffer grown
/// from nothing takes several (a 2 KB PEM file: seven), and no reallocation that leaves a
/// copy of a key behind in freed memory. More than `limit` is an `InvalidData` error.
pub fn read_file_limited(f: &mut std::fs::File, limit: usize) -> std::io::Result<Vec<u8>> {
    let meta = f.metadata()?;
    read_opened(f, &meta, limit)
}

/// [`read_file_limited`] of a file whose metadata was read already (by [`open_regular`]).
pub fn read_opened(
    f: &mut std::fs::File,
    meta: &std::fs::Metadata,
    limit: usize,
) -> std::io::Result<Vec<u8>> {
    read_limited_sized(f, limit, usize::try_from(meta.len()).unwrap_or(usize::MAX))
}

/// Reads at most `limit` bytes from `r`; more is an `InvalidData` error.
pub fn read_limited(r: &mut impl Read, limit: usize) -> std::io::Result<Vec<u8>> {
    read_limited_sized(r, limit, 0)
}

/// [`read_limited`] into a buffer made for `expected` bytes (a file's size from its
/// metadata): a large file is read into one allocation of its size, not one that doubled
/// past it.
pub fn read_limited_sized(
    r: &mut impl Read,
    limit: usize,
    expected: usize,
) -> std::io::Result<Vec<u8>> {
    // One byte more, so that reading to the end needs no second allocation to see it.
    let mut buf = Vec::with_capacity(expected.min(limit).saturating_add(1));
    r.take(limit as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than the {} KiB limit", limit / 1024),
        ));
    }
    Ok(buf)
}

/// Reads a user-supplied file with the 1 MiB limit, naming it in errors.
pub fn read_input(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let (mut f, meta) = open_regular(path, true).map_err(|e| format!("{}: {e}", path.display()))?;
    read_opened(&mut f, &meta, crate::x509::MAX_PEM_BYTES)
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file is read whole into a buffer of its size (no reallocation that would leave a
    /// copy behind); one over the limit is refused; one that grew after its size was read
    /// is still read to its end.
    #[test]
    fn a_file_is_read_into_one_buffer_of_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key.pem");
        let text = vec![b'k'; 2_000];
        std::fs::write(&p, &text).unwrap();
        let got = read_limited_nofollow(&p, 4_096).unwrap();
        assert_eq!(got, text);
        assert_eq!(got.capacity(), text.len() + 1);
        let over = read_limited_nofollow(&p, 1_999).unwrap_err();
        assert_eq!(over.kind(), std::io::ErrorKind::InvalidData);
        // The size hint is only a hint: more than it said is read too, up to the limit.
        let mut f = std::fs::File::open(&p).unwrap();
        let got = read_limited_sized(&mut f, 4_096, 10).unwrap();
        assert_eq!(got, text);
    }
}
