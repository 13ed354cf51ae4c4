//! Directories and files only this user can read, written atomically. Used for the
//! precompiled cache (where a planted file would be native code) and for stored secrets.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Creates `dir` (and parents) and makes sure it is private to this user.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = fs::symlink_metadata(dir)?;
        if !meta.is_dir() {
            return Err(io::Error::other(format!("{} is not a directory", dir.display())));
        }
        if meta.uid() != current_uid() {
            return Err(io::Error::other(format!("{} belongs to another user", dir.display())));
        }
        if meta.mode() & 0o777 != 0o700 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// Whether `path` is a regular file this user owns that nobody else can write.
pub fn is_private_file(path: &Path) -> io::Result<bool> {
    Ok(is_private_metadata(&fs::symlink_metadata(path)?))
}

/// Whether `meta` is of a regular file this user owns that nobody else can access.
pub fn is_private_metadata(meta: &fs::Metadata) -> bool {
    if !meta.is_file() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != current_uid() || meta.mode() & 0o077 != 0 {
            return false;
        }
    }
    true
}

/// Writes `bytes` to `dir/name` through a 0600 temporary file and a rename, so readers
/// (and mmaps of an older version) never see a partial file.
pub fn write_private_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    ensure_private_dir(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    Ok(())
}

/// Opens `path` for reading without following a symlink (nothing credence writes in a
/// private directory is one) and without blocking (on a FIFO planted under its name).
pub fn open_no_follow(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    }
    options.open(path)
}

/// Reads a file credence wrote in a private directory, at most `limit` bytes: `None` if it
/// is missing; an error if it is not a regular file of this user that only this user can
/// access, judged on the open descriptor, so the file read is the file checked.
pub fn read_private_file(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = match open_no_follow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !is_private_metadata(&meta) {
        return Err(io::Error::other(format!(
            "{} is not a private file of this user (owner, mode or type is wrong)",
            path.display()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len().min(limit) as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::other(format!(
            "{} is larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(Some(bytes))
}

/// A random 32-byte key in `dir/name`, created on first use: kept 0600 by this user, and
/// replaced by a new one if it is not (others may have read it), which only invalidates
/// what it protected.
pub fn installation_key(dir: &Path, name: &str) -> io::Result<[u8; 32]> {
    let path = dir.join(name);
    if let Ok(Some(bytes)) = read_private_file(&path, 32)
        && let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok(key);
    }
    let _ = fs::remove_file(&path);
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| io::Error::other(format!("no randomness for a key: {e}")))?;
    ensure_private_dir(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(&key)?;
    tmp.as_file().sync_all()?;
    // Two first runs at once must agree on one key: the first to link its file wins.
    match tmp.persist_noclobber(&path) {
        Ok(_) => Ok(key),
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists && is_private_file(&path).unwrap_or(false) => {
            <[u8; 32]>::try_from(fs::read(&path)?.as_slice())
                .map_err(|_| io::Error::other(format!("{} is not a key", path.display())))
        }
        Err(e) => Err(e.error),
    }
}

/// This process's effective uid, asked once: every ownership check needs it, and credence
/// never changes it.
#[cfg(unix)]
pub fn current_uid() -> u32 {
    static UID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    *UID.get_or_init(|| unsafe { libc::geteuid() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn files_are_private_and_others_are_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("cache");
        write_private_file(&sub, "a", b"x").unwrap();
        assert_eq!(fs::metadata(&sub).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(sub.join("a")).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(is_private_file(&sub.join("a")).unwrap());
        fs::set_permissions(sub.join("a"), fs::Permissions::from_mode(0o666)).unwrap();
        assert!(!is_private_file(&sub.join("a")).unwrap());
        std::os::unix::fs::symlink(sub.join("a"), sub.join("link")).unwrap();
        assert!(!is_private_file(&sub.join("link")).unwrap());
        // Read through the descriptor: a link or a FIFO under a secret's name is refused
        // (without blocking), a missing file is `None`.
        fs::set_permissions(sub.join("a"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private_file(&sub.join("a"), 10).unwrap().unwrap(), b"x");
        assert!(read_private_file(&sub.join("link"), 10).is_err());
        let fifo = std::ffi::CString::new(sub.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(read_private_file(&sub.join("fifo"), 10).is_err());
        assert!(read_private_file(&sub.join("none"), 10).unwrap().is_none());
        assert!(read_private_file(&sub.join("a"), 0).is_err(), "bounded");
    }
}
