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
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_file() {
        return Ok(false);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != current_uid() || meta.mode() & 0o077 != 0 {
            return Ok(false);
        }
    }
    Ok(true)
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
