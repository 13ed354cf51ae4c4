//! The operating system's credential store, through the `keyring` crate: the login
//! Keychain on macOS, the Credential Manager on Windows, and on Linux the kernel's key
//! retention service (the user's persistent keyring: in kernel memory, never on disk,
//! kept across logins for `persistent_keyring_expiry` after its last use, 3 days by
//! default, but not across a reboot).
//!
//! Entries are named per credence state directory, so two homes (or two test runs) never
//! read each other's secrets. The store cannot list its entries, so callers keep a marker
//! file next to where the secret would otherwise be, and `credence forget` deletes what
//! the markers name.

use sha2::{Digest, Sha256};
use std::path::Path;

/// Where stored credentials and provider state go (`store` in config.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreMode {
    /// The OS store when it answers, else 0600 files (also for an entry the OS store
    /// refuses, e.g. over the kernel's per-user key quota).
    #[default]
    Auto,
    /// The OS store only: what it cannot keep is not kept, and never written to disk.
    Os,
    /// 0600 files under the state directory only.
    File,
}

pub struct OsStore {
    service: String,
}

#[derive(Debug, thiserror::Error)]
#[error("the OS credential store refused: {0}")]
pub struct OsStoreError(String);

impl OsStore {
    /// The OS store for the state kept in `state_dir`, if this machine has one that
    /// answers (a container whose seccomp profile forbids keyctl has none).
    pub fn open(state_dir: &Path) -> Option<OsStore> {
        // Elsewhere the keyring crate would fall back to its in-memory mock, which keeps
        // nothing: files are the honest answer there.
        if !cfg!(any(target_os = "linux", target_os = "macos", target_os = "windows")) {
            return None;
        }
        // The canonical path, so a symlink or `//` in XDG_STATE_HOME names the same entries.
        let state_dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_owned());
        let digest = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
        // On Linux, joining the persistent keyring (which every entry needs first anyway)
        // fails where the kernel store is unusable; elsewhere failures show on first use.
        #[cfg(target_os = "linux")]
        if let Err(e) = join_persistent_keyring() {
            tracing::debug!("no OS credential store here; using files: {e}");
            return None;
        }
        Some(OsStore {
            service: format!("credence {}", &hex::encode(digest)[..16]),
        })
    }

    /// What `credence` tells the user about where secrets go.
    pub fn describe() -> &'static str {
        if cfg!(target_os = "macos") {
            "the macOS login Keychain"
        } else if cfg!(windows) {
            "the Windows Credential Manager"
        } else {
            "the Linux kernel keyring (persistent keyring of this user)"
        }
    }

    fn entry(&self, name: &str) -> Result<keyring::Entry, OsStoreError> {
        #[cfg(target_os = "linux")]
        join_persistent_keyring()?;
        keyring::Entry::new(&self.service, name).map_err(|e| OsStoreError(e.to_string()))
    }

    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>, OsStoreError> {
        match self.entry(name)?.get_secret() {
            Ok(bytes) => Ok(Some(bytes)),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(OsStoreError(e.to_string())),
        }
    }

    /// Keeps `bytes` under `name`. With `expires_at` (Unix seconds), the kernel keyring
    /// deletes the entry itself then, so an expired token does not linger in memory.
    pub fn set(&self, name: &str, bytes: &[u8], expires_at: Option<u64>) -> Result<(), OsStoreError> {
        self.entry(name)?
            .set_secret(bytes)
            .map_err(|e| OsStoreError(e.to_string()))?;
        #[cfg(target_os = "linux")]
        if let Some(at) = expires_at {
            self.expire(name, at);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = expires_at;
        Ok(())
    }

    /// Sets the kernel's timeout on the key the keyring crate just wrote. Best effort: the
    /// host checks expiry itself on every read anyway.
    #[cfg(target_os = "linux")]
    fn expire(&self, name: &str, expires_at: u64) {
        use linux_keyutils::{KeyRing, KeyRingIdentifier};
        // The kernel takes the timeout as 32-bit seconds; a provider's far-future expiry
        // must not wrap around to a short (or, at 0, no) timeout.
        let seconds = expires_at
            .saturating_sub(crate::state_store::now_unix())
            .clamp(1, u64::from(u32::MAX));
        // The description the keyring crate gives its keyutils entries.
        let description = format!("keyring-rs:{name}@{}", self.service);
        let set = KeyRing::from_special_id(KeyRingIdentifier::Session, false)
            .and_then(|ring| ring.search(&description))
            .and_then(|key| key.set_timeout(usize::try_from(seconds).unwrap_or(usize::MAX)));
        if let Err(e) = set {
            tracing::debug!("cannot set the kernel keyring timeout of a stored credential: {e}");
        }
    }

    /// Deletes the entry if there is one.
    pub fn delete(&self, name: &str) -> Result<(), OsStoreError> {
        match self.entry(name)?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(OsStoreError(e.to_string())),
        }
    }
}

/// Gives the calling thread a session keyring with the user's persistent keyring linked in,
/// once per thread, before the `keyring` crate looks at it.
///
/// The crate reads the thread's session keyring id *before* asking the kernel for the
/// persistent keyring, and that request is what creates a session keyring in a thread that
/// has none (keyrings belong to a thread's credentials). Without this, the first entry a
/// thread touches searches the bare user-session keyring and misses everything: the NuGet
/// plugin, which answers each request on its own thread, never found a stored credential.
/// Requiring the persistent keyring also means a kernel without it gets files, not secrets
/// that vanish with the process.
#[cfg(target_os = "linux")]
fn join_persistent_keyring() -> Result<(), OsStoreError> {
    use linux_keyutils::{KeyRing, KeyRingIdentifier};
    use std::cell::Cell;
    thread_local!(static JOINED: Cell<bool> = const { Cell::new(false) });
    if JOINED.get() {
        return Ok(());
    }
    KeyRing::get_persistent(KeyRingIdentifier::Session)
        .map_err(|e| OsStoreError(format!("no persistent kernel keyring: {e}")))?;
    JOINED.set(true);
    Ok(())
}
