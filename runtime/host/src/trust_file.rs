//! `$CREDENCE_HOME/trust.toml` on disk: read only if it is a regular file that no one but
//! this user (or root) could have written, and changed only under a lock, from a fresh
//! read, so `credence trust ...` and a run recording a rollback floor never drop each
//! other's changes.

use crate::private_dir::write_private_file;
use crate::producer::FileStamp;
use crate::trusted_file::{Writers, read_optional};
use credence_signing::TrustStore;
use std::path::Path;

/// Trust stores larger than this are refused unread.
pub const MAX_TRUST_BYTES: u64 = 1 << 20;

/// A missing trust store is an empty one: then no signed provider runs either. A store that
/// cannot be read or parsed fails closed: nothing runs until it is fixed.
pub fn load(path: &Path) -> Result<TrustStore, String> {
    let Some(bytes) = read_optional(path, MAX_TRUST_BYTES, Writers::UserOnly).map_err(|e| e.to_string())? else {
        return Ok(TrustStore::default());
    };
    let text = String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8", path.display()))?;
    TrustStore::parse(&text).map_err(|e| {
        format!(
            "{} is not a valid trust store, so no provider runs: {e}\n  hint: fix the file by hand (`credence trust list` checks it); the [floor] table holds the rollback floor, and lowering or deleting it re-admits older releases",
            path.display()
        )
    })
}

/// Applies `change` to the trust store in `home` and writes it back atomically, all under an
/// exclusive lock on `home/.trust.lock`.
pub fn update<T>(home: &Path, change: impl FnOnce(&mut TrustStore) -> Result<T, String>) -> Result<T, String> {
    update_stamped(home, change).map(|(out, _, _)| out)
}

/// [`update`], also returning the identity of `trust.toml` just before it was read under
/// the lock and just after it was replaced: a process whose store was read from the
/// former knows the latter holds exactly its store and this change.
pub fn update_stamped<T>(
    home: &Path,
    change: impl FnOnce(&mut TrustStore) -> Result<T, String>,
) -> Result<(T, Option<FileStamp>, Option<FileStamp>), String> {
    std::fs::create_dir_all(home).map_err(|e| format!("cannot create {}: {e}", home.display()))?;
    let lock_path = home.join(".trust.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    let path = home.join("trust.toml");
    let before = FileStamp::of(&path);
    let mut store = load(&path)?;
    let out = change(&mut store)?;
    write_private_file(home, "trust.toml", store.to_toml().as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((out, before, FileStamp::of(&path)))
}
