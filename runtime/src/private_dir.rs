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

/// A random 32-byte key in `dir/name`, created on first use: kept 0600 by this user, and
/// replaced by a new one if it is not (others may have read it), which only invalidates
/// what it protected.
pub fn installation_key(dir: &Path, name: &str) -> io::Result<[u8; 32]> {
    let path = dir.join(name);
    if is_private_file(&path).unwrap_or(false)
        && let Ok(key) = <[u8; 32]>::try_from(fs::read(&path)?.as_slice())
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

#[cfg(unix)]
fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
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
    }
}
