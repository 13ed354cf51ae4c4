//! Reading the files credence takes decisions from: the config, the trust store, components
//! and their statements and manifests.
//!
//! Two rules, both checked on the open file descriptor so nothing can be swapped in between:
//! - every such file is a regular file read with a bound: it is opened without blocking (a
//!   FIFO would otherwise hang the open) and `/dev/zero` or a device is refused, not read;
//! - a file that decides what runs (and every directory above it) is owned by this user or
//!   root and writable by no one else, as ssh demands of `authorized_keys`: otherwise another
//!   local user could have written it. A group- or world-writable directory with the sticky
//!   bit (`/tmp`) is accepted above it, since nobody else can rename or replace entries there.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is not a regular file ({kind}); credence reads only regular files there", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{} is {size} bytes; the limit for this file is {limit} bytes", path.display())]
    TooLarge { path: PathBuf, size: u64, limit: u64 },
    #[error(
        "{} is writable by {who} (mode {mode:04o}), so another user could change what credence trusts\n  hint: run `chmod go-w {}`",
        path.display(),
        path.display()
    )]
    Writable {
        path: PathBuf,
        who: &'static str,
        mode: u32,
    },
    #[error(
        "{} belongs to uid {owner}, not to you (uid {me}) or root, so that user decides what credence trusts\n  hint: run `sudo chown {me} {}` if it is yours",
        path.display(),
        path.display()
    )]
    Owner { path: PathBuf, owner: u32, me: u32 },
    #[error(
        "{} belongs to uid {owner}, not to root, so that user decides what credence trusts for every user of this machine\n  hint: run `sudo chown root {}`",
        path.display(),
        path.display()
    )]
    NotRoot { path: PathBuf, owner: u32 },
}

impl FileError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Who may have written a file credence trusts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writers {
    /// Anyone: the content is checked on its own (a component `credence verify` is shown).
    Anyone,
    /// Only this user or root, for the file and every directory above it.
    UserOnly,
    /// Only root, for the file and every directory above it: what an administrator decides
    /// for every user (the organisation's pinned root key and policy bundle).
    RootOnly,
}

/// Reads `path` whole: a regular file of at most `limit` bytes.
pub fn read_file(path: &Path, limit: u64, writers: Writers) -> Result<Vec<u8>, FileError> {
    let io_err = |source| FileError::Io {
        path: path.to_owned(),
        source,
    };
    let file = open_nonblocking(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            path: path.to_owned(),
            kind: kind(&meta),
        });
    }
    if writers != Writers::Anyone {
        check_writers(path, &meta, writers)?;
        if let Some(parent) = path.parent() {
            check_dir_chain_for(parent, writers)?;
        }
        // Through a symlink, the file's real directories decide who could replace it.
        if std::fs::symlink_metadata(path)
            .map_err(io_err)?
            .file_type()
            .is_symlink()
        {
            let real = std::fs::canonicalize(path).map_err(io_err)?;
            if let Some(parent) = real.parent() {
                check_dir_chain_for(parent, writers)?;
            }
            if !same_file(&meta, &std::fs::metadata(&real).map_err(io_err)?) {
                return Err(FileError::Io {
                    path: path.to_owned(),
                    source: io::Error::other("it changed while it was being opened"),
                });
            }
        }
    }
    if meta.len() > limit {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The size can change after fstat: the bound holds whatever the file does.
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io_err)?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// Like [`read_file`], but a missing file is `None`.
pub fn read_optional(path: &Path, limit: u64, writers: Writers) -> Result<Option<Vec<u8>>, FileError> {
    match read_file(path, limit, writers) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks that `dir` and every directory above it could only have been changed by this
/// user or root (sticky shared directories such as `/tmp` allowed): as written, and, where
/// a symlink leads elsewhere, where it leads (as OpenSSH's `secure_path` checks the real path).
pub fn check_dir_chain(dir: &Path) -> Result<(), FileError> {
    check_dir_chain_for(dir, Writers::UserOnly)
}

/// [`check_dir_chain`] for `writers` (`RootOnly`: every directory root's alone).
pub fn check_dir_chain_for(dir: &Path, writers: Writers) -> Result<(), FileError> {
    // Walked with lstat: a path without symlinks (the usual case) costs one call per
    // directory, and only one that has them is resolved and walked again.
    if writers == Writers::Anyone {
        return Ok(());
    }
    if check_chain_as_written(dir, writers)? == Links::Some {
        let real = std::fs::canonicalize(dir).map_err(|source| FileError::Io {
            path: dir.to_owned(),
            source,
        })?;
        check_chain_as_written(&real, writers)?;
    }
    Ok(())
}

#[derive(PartialEq, Eq)]
enum Links {
    None,
    Some,
}

fn same_file(a: &Metadata, b: &Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        a.dev() == b.dev() && a.ino() == b.ino()
    }
    #[cfg(not(unix))]
    {
        a.len() == b.len()
    }
}

/// Checks each directory of `dir` as written; a symlink among them is skipped here (its
/// own mode means nothing) and reported, so the caller checks where it leads.
fn check_chain_as_written(dir: &Path, writers: Writers) -> Result<Links, FileError> {
    let mut links = Links::None;
    #[cfg(unix)]
    {
        let absolute = if dir.is_absolute() {
            dir.to_owned()
        } else {
            std::env::current_dir()
                .map_err(|source| FileError::Io {
                    path: dir.to_owned(),
                    source,
                })?
                .join(dir)
        };
        let mut first = true;
        for d in absolute.ancestors() {
            let meta = match std::fs::symlink_metadata(d) {
                Ok(m) => m,
                // The directory itself may not exist yet (no config): nothing in it is read.
                Err(e) if first && e.kind() == io::ErrorKind::NotFound => return Ok(Links::None),
                Err(source) => {
                    return Err(FileError::Io {
                        path: d.to_owned(),
                        source,
                    });
                }
            };
            first = false;
            if meta.file_type().is_symlink() {
                links = Links::Some;
                continue;
            }
            use std::os::unix::fs::MetadataExt;
            let sticky = meta.mode() & 0o1000 != 0;
            if sticky && d != absolute {
                // Entries of a sticky directory can be renamed only by their owner, which
                // the checks below this one already established.
                check_owner(d, &meta, writers)?;
                continue;
            }
            check_writers(d, &meta, writers)?;
        }
    }
    #[cfg(not(unix))]
    let _ = (dir, writers);
    Ok(links)
}

fn check_writers(path: &Path, meta: &Metadata, writers: Writers) -> Result<(), FileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        check_owner(path, meta, writers)?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(FileError::Writable {
                path: path.to_owned(),
                who: if mode & 0o002 != 0 { "everyone" } else { "its group" },
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (path, meta, writers);
    Ok(())
}

#[cfg(unix)]
fn check_owner(path: &Path, meta: &Metadata, writers: Writers) -> Result<(), FileError> {
    use std::os::unix::fs::MetadataExt;
    if writers == Writers::RootOnly && meta.uid() != 0 {
        return Err(FileError::NotRoot {
            path: path.to_owned(),
            owner: meta.uid(),
        });
    }
    let me = crate::private_dir::current_uid();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(FileError::Owner {
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    Ok(())
}

fn open_nonblocking(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
        // It has no effect on reads of regular files, the only ones read further.
        options.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC);
    }
    options.open(path)
}

fn kind(meta: &Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() { "a directory" } else { "not a file" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking_and_a_device_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("statement.json");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_file(&fifo, 1024, Writers::Anyone).unwrap_err();
        assert!(err.to_string().contains("a FIFO"), "{err}");
        let link = dir.path().join("x.wasm");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let err = read_file(&link, 1024, Writers::Anyone).unwrap_err();
        assert!(err.to_string().contains("a device"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn loose_files_and_directories_are_refused_with_the_chmod_that_fixes_them() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("trust.toml");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(read_file(&file, 10, Writers::UserOnly).unwrap(), b"x");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = read_file(&file, 10, Writers::UserOnly).unwrap_err().to_string();
        assert!(
            err.contains("writable by everyone") && err.contains("chmod go-w"),
            "{err}"
        );
        assert_eq!(read_file(&file, 10, Writers::Anyone).unwrap(), b"x");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
        let err = read_file(&file, 10, Writers::UserOnly).unwrap_err().to_string();
        assert!(err.contains("writable by its group"), "{err}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = read_file(&file, 10, Writers::UserOnly).unwrap_err().to_string();
        assert!(
            err.contains("writable by everyone"),
            "the directory holding the file is itself checked: {err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_is_judged_by_the_directories_it_leads_to() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        let target = shared.join("trust.toml");
        std::fs::write(&target, "x").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let link = home.join("trust.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read_file(&link, 10, Writers::UserOnly).unwrap(), b"x");
        // The link's own directory is fine; the one it leads into is open to a team.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o770)).unwrap();
        let err = read_file(&link, 10, Writers::UserOnly).unwrap_err().to_string();
        assert!(err.contains("shared") && err.contains("writable by its group"), "{err}");
        // A directory reached through a link, likewise.
        let linked_dir = dir.path().join("providers");
        std::os::unix::fs::symlink(&shared, &linked_dir).unwrap();
        assert!(check_dir_chain(&linked_dir).is_err());
    }

    #[test]
    fn reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.wasm");
        std::fs::write(&file, vec![0u8; 100]).unwrap();
        assert!(matches!(
            read_file(&file, 99, Writers::Anyone),
            Err(FileError::TooLarge { size: 100, .. })
        ));
        assert_eq!(read_file(&file, 100, Writers::Anyone).unwrap().len(), 100);
    }
}
