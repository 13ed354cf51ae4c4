//! The operating system's credential store, through the `keyring` crate: the login
//! Keychain on macOS, the Credential Manager on Windows, and on Linux the kernel's key
//! retention service (the user's persistent keyring: in kernel memory, never on disk,
//! kept across logins but not across a reboot).
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
        let digest = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
        let store = OsStore {
            service: format!("credence {}", &hex::encode(digest)[..16]),
        };
        // On Linux this reaches the persistent keyring, so it fails where the kernel store
        // is unusable; elsewhere failures show on first use.
        match store.entry("probe") {
            Ok(_) => Some(store),
            Err(e) => {
                tracing::debug!("no OS credential store here; using files: {e}");
                None
            }
        }
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

    pub fn set(&self, name: &str, bytes: &[u8]) -> Result<(), OsStoreError> {
        self.entry(name)?
            .set_secret(bytes)
            .map_err(|e| OsStoreError(e.to_string()))
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
    use std::cell::Cell;
    const KEYCTL_GET_PERSISTENT: libc::c_long = 22;
    const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
    thread_local!(static JOINED: Cell<bool> = const { Cell::new(false) });
    if JOINED.get() {
        return Ok(());
    }
    // SAFETY: keyctl(KEYCTL_GET_PERSISTENT, own uid, session keyring) takes no pointers; it
    // links the caller's persistent keyring into its session keyring and returns its id.
    let id = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_PERSISTENT,
            -1 as libc::c_long,
            KEY_SPEC_SESSION_KEYRING,
        )
    };
    if id < 0 {
        return Err(OsStoreError(format!(
            "no persistent kernel keyring: {}",
            std::io::Error::last_os_error()
        )));
    }
    JOINED.set(true);
    Ok(())
}
