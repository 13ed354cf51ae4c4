//! What credence keeps between one-shot runs, per provider instance: the provider's opaque
//! state (e.g. a refresh token) and credentials whose cache policy allows keeping them.
//!
//! Secrets go to the OS credential store when there is one (`store = "auto"`, see
//! [`crate::os_store`]), else to 0600 files in 0700 directories under the XDG state dir:
//! `state/<provider>/state.bin` and `state/<provider>/credentials/<key>.json`, where the
//! key is a sha-256 of the URL, the operation and the provider's configuration, so a
//! changed config never answers from an old entry. An entry kept in the OS store leaves
//! an empty marker (`state.in-os-store`, `credentials/<key>.in-os-store`) in its place,
//! so `credence forget` knows what to delete there. A provider's state is only ever
//! given back to the same provider instance, and never logged.

use crate::os_store::{OsStore, StoreMode};
use crate::private_dir::{ensure_private_dir, read_private_file, write_private_file};
use crate::producer::Producer;
use crate::request::{CachePolicy, Credential};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Stored state and credentials larger than this are not read (state is capped at 64 KiB,
/// a credential at 64 KiB of output plus its record).
const MAX_STORED_BYTES: u64 = 1 << 20;

/// A stored credential is not used in its last minute: the tool still has to use it.
pub const EXPIRY_MARGIN_SECS: u64 = 60;

pub struct StateStore {
    dir: PathBuf,
    mode: StoreMode,
    /// Opened on first use: a request answered without a stored secret never asks for it.
    os: OnceLock<Option<OsStore>>,
    /// Whether no one else could have swapped a directory above `dir`, once known.
    dir_chain: OnceLock<Result<(), String>>,
}

const MARKER: &str = ".in-os-store";

/// Version 2 added the producer; a version-1 entry (no producer) is never served.
const STORED_VERSION: u32 = 2;

#[derive(Serialize, Deserialize)]
struct StoredCredential {
    version: u32,
    credential: Credential,
    /// Who made it: it is served only while that provider would still pass the gate.
    producer: Producer,
}

/// Unix seconds as RFC 3339 for messages (the number itself if it is no time jiff holds).
pub fn shown_time(t: u64) -> String {
    i64::try_from(t)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(|| t.to_string(), |t| t.to_string())
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl StateStore {
    pub fn new(dir: PathBuf, mode: StoreMode) -> Self {
        StateStore {
            dir,
            mode,
            os: OnceLock::new(),
            dir_chain: OnceLock::new(),
        }
    }

    fn provider_dir(&self, provider: &str) -> PathBuf {
        // Provider names are checked to be [a-z0-9-] when the config is read.
        self.dir.join(provider)
    }

    fn state_slot(&self, provider: &str) -> Slot {
        Slot {
            os_name: format!("{provider}/state"),
            dir: self.provider_dir(provider),
            file: "state.bin".into(),
            marker: format!("state{MARKER}"),
        }
    }

    fn credential_slot(&self, provider: &str, key: &str) -> Slot {
        Slot {
            os_name: format!("{provider}/credential/{key}"),
            dir: self.provider_dir(provider).join("credentials"),
            file: format!("{key}.json"),
            marker: format!("{key}{MARKER}"),
        }
    }

    fn os(&self) -> Option<&OsStore> {
        if self.mode == StoreMode::File {
            return None;
        }
        self.any_os()
    }

    /// The OS store whatever the mode: entries made under another mode are still read
    /// and deleted. The state dir is made first, so the entries' names (derived from its
    /// canonical path) are the same in every run.
    fn any_os(&self) -> Option<&OsStore> {
        self.os
            .get_or_init(|| {
                if !self.dir.is_dir() {
                    let _ = ensure_private_dir(&self.dir);
                }
                OsStore::open(&self.dir)
            })
            .as_ref()
    }

    /// Where secrets go, for `credence providers` and the README's promise.
    pub fn describe(&self) -> String {
        match (self.mode, self.os()) {
            (StoreMode::File, _) => format!("0600 files under {} (store = \"file\")", self.dir.display()),
            (_, Some(_)) => OsStore::describe().to_owned(),
            (StoreMode::Auto, None) => format!("0600 files under {} (no OS credential store here)", self.dir.display()),
            (StoreMode::Os, None) => "nowhere: store = \"os\" and this machine has no OS credential store".to_owned(),
        }
    }

    /// Reads one secret. The OS store is asked only where this home's marker says the
    /// secret went there, so an entry outliving a deleted state dir is never served. Else
    /// the file; with `store = "os"` a file left by an earlier mode is read once and deleted.
    fn read_secret(&self, slot: &Slot) -> Option<Vec<u8>> {
        if slot.marker().exists() {
            if let Some(os) = self.any_os() {
                match os.get(&slot.os_name) {
                    Ok(Some(bytes)) => return Some(bytes),
                    // The kernel dropped an expired credential by itself.
                    Ok(None) => {
                        let _ = std::fs::remove_file(slot.marker());
                    }
                    Err(e) => tracing::debug!("{e}"),
                }
            }
        }
        let bytes = self.read_private(&slot.file());
        if self.mode == StoreMode::Os && bytes.is_some() {
            let _ = std::fs::remove_file(slot.file());
        }
        bytes
    }

    /// Keeps one secret in the OS store or, when there is none or it refuses and the mode
    /// allows, in a 0600 file. Returns whether it was kept. Whatever happens, the value it
    /// replaces is never served again.
    fn write_secret(&self, slot: &Slot, bytes: &[u8], expires_at: Option<u64>) -> io::Result<bool> {
        if let Some(os) = self.os() {
            // Marker first, so `forget` finds the entry even if this run dies after `set`.
            write_marker(&slot.marker())?;
            match os.set(&slot.os_name, bytes, expires_at) {
                Ok(()) => {
                    let _ = std::fs::remove_file(slot.file());
                    return Ok(true);
                }
                Err(e) => {
                    // A refused update (over the kernel's key quota or size, Windows' blob
                    // limit) leaves the old entry: delete it rather than serve it.
                    self.delete_secret(slot)?;
                    if self.mode == StoreMode::Os {
                        tracing::warn!("not kept (store = \"os\"): {e}");
                        return Ok(false);
                    }
                    tracing::debug!("{e}; keeping it in a file instead");
                }
            }
        } else if self.mode == StoreMode::Os {
            tracing::warn!("not kept: store = \"os\" and this machine has no OS credential store");
            return Ok(false);
        }
        write_private_file(&slot.dir, &slot.file, bytes)?;
        // An entry an earlier mode left in the OS store must not shadow this file.
        self.delete_os_entry(slot)?;
        Ok(true)
    }

    /// Deletes one secret: its file and, where its marker says so, its OS-store entry.
    fn delete_secret(&self, slot: &Slot) -> io::Result<()> {
        let _ = std::fs::remove_file(slot.file());
        self.delete_os_entry(slot)
    }

    /// Deletes the OS-store entry the marker names, then the marker. The marker stays if
    /// the entry could not be deleted, so a later `forget` can try again, and the caller
    /// hears of it.
    fn delete_os_entry(&self, slot: &Slot) -> io::Result<()> {
        let marker = slot.marker();
        if !marker.exists() {
            return Ok(());
        }
        let os = self.any_os().ok_or_else(|| {
            io::Error::other(format!(
                "{} says a secret is in the OS credential store, which does not answer here; it was not deleted",
                marker.display()
            ))
        })?;
        os.delete(&slot.os_name).map_err(io::Error::other)?;
        let _ = std::fs::remove_file(marker);
        Ok(())
    }

    fn read_private(&self, path: &PathBuf) -> Option<Vec<u8>> {
        // A secret is only as private as the directories above it: if others could have
        // swapped one of them, what is there may be theirs.
        // Checked once per process (the first read), like the directory's creation.
        let chain = self
            .dir_chain
            .get_or_init(|| crate::trusted_file::check_dir_chain(&self.dir).map_err(|e| e.to_string()));
        if let Err(e) = chain {
            tracing::warn!("ignoring stored state and credentials: {e}");
            return None;
        }
        match read_private_file(path, MAX_STORED_BYTES) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring a stored file: {e}");
                None
            }
        }
    }

    /// Holds `flock` on the instance's `run.lock` (0600, in its private dir) until dropped:
    /// threads of one process and processes of one home alike take turns.
    pub fn lock_instance(&self, provider: &str) -> io::Result<std::fs::File> {
        let dir = self.provider_dir(provider);
        crate::private_dir::ensure_private_dir(&dir)?;
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
        }
        let file = options.open(dir.join("run.lock"))?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            loop {
                // SAFETY: flock on a descriptor we own.
                if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                    break;
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
        Ok(file)
    }

    pub fn provider_state(&self, provider: &str) -> Option<Vec<u8>> {
        self.read_secret(&self.state_slot(provider))
    }

    pub fn set_provider_state(&self, provider: &str, state: &[u8]) -> io::Result<()> {
        let slot = self.state_slot(provider);
        if state.is_empty() {
            // Nothing to keep (and the OS stores refuse empty secrets).
            return self.delete_secret(&slot);
        }
        self.write_secret(&slot, state, None).map(|_| ())
    }

    /// A stored credential that has not expired, with its producer (which the caller must
    /// check against the gate before serving it).
    pub fn cached_credential(&self, provider: &str, key: &str) -> Option<(Credential, Producer)> {
        let bytes = self.read_secret(&self.credential_slot(provider, key))?;
        let stored: Option<StoredCredential> = serde_json::from_slice(&bytes).ok();
        let valid = stored.as_ref().is_some_and(|stored| {
            stored.version == STORED_VERSION
                && stored.credential.cache == CachePolicy::UntilExpiry
                && crate::credential_cache::fresh(&stored.credential, now_unix())
        });
        if !valid {
            self.evict(provider, key);
            return None;
        }
        stored.map(|s| (s.credential, s.producer))
    }

    /// Keys of the credentials stored for `provider` (files and OS-store markers).
    fn credential_keys(&self, provider: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.provider_dir(provider).join("credentials")) else {
            return Vec::new();
        };
        let mut keys: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(MARKER)
                    .or_else(|| name.strip_suffix(".json"))
                    .map(str::to_owned)
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Deletes each stored credential of `provider` whose producer `keep` refuses (or that
    /// cannot be read); returns how many were deleted.
    pub fn retain_credentials(&self, provider: &str, keep: impl Fn(&Producer) -> bool) -> usize {
        let mut dropped = 0;
        for key in self.credential_keys(provider) {
            let kept = self
                .read_secret(&self.credential_slot(provider, &key))
                .and_then(|b| serde_json::from_slice::<StoredCredential>(&b).ok())
                .is_some_and(|s| s.version == STORED_VERSION && keep(&s.producer));
            if !kept {
                self.evict(provider, &key);
                dropped += 1;
            }
        }
        dropped
    }

    /// Keeps a credential across runs if its policy allows: only `until-expiry` with an
    /// expiry. `session` credentials live as long as the process that asked (the agent).
    pub fn cache_credential(
        &self,
        provider: &str,
        key: &str,
        credential: &Credential,
        producer: &Producer,
    ) -> io::Result<bool> {
        if credential.cache != CachePolicy::UntilExpiry || credential.expires_at.is_none() {
            return Ok(false);
        }
        let json = zeroize::Zeroizing::new(serde_json::to_vec(&StoredCredential {
            version: STORED_VERSION,
            credential: credential.clone(),
            producer: producer.clone(),
        })?);
        self.write_secret(&self.credential_slot(provider, key), &json, credential.expires_at)
    }

    /// Remembers that the tool's server refused the credential for `key` (git `erase`,
    /// docker `erase`), so the next request is a retry even if the tool cannot say so.
    pub fn mark_rejected(&self, provider: &str, key: &str) -> io::Result<()> {
        write_private_file(&self.rejected_dir(provider), key, b"")
    }

    /// Whether a rejection was recorded for `key`; consumes it.
    pub fn take_rejected(&self, provider: &str, key: &str) -> bool {
        std::fs::remove_file(self.rejected_dir(provider).join(key)).is_ok()
    }

    /// The directory of a provider's recorded rejections, one empty file per key.
    pub fn rejected_dir(&self, provider: &str) -> PathBuf {
        self.provider_dir(provider).join("rejected")
    }

    /// The keys with a recorded rejection (none if the directory does not exist).
    pub fn rejected_keys(&self, provider: &str) -> io::Result<std::collections::HashSet<String>> {
        let entries = match std::fs::read_dir(self.rejected_dir(provider)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Default::default()),
            Err(e) => return Err(e),
        };
        let mut keys = std::collections::HashSet::new();
        for entry in entries {
            if let Some(name) = entry?.file_name().to_str() {
                keys.insert(name.to_owned());
            }
        }
        Ok(keys)
    }

    /// Drops a stored credential (a retry, an expired or unreadable entry). Failing to
    /// delete an OS-store entry is logged: its marker stays for `forget`.
    pub fn evict(&self, provider: &str, key: &str) {
        if let Err(e) = self.delete_secret(&self.credential_slot(provider, key)) {
            tracing::warn!("cannot delete a stored credential of {provider}: {e}");
        }
    }

    /// Deletes the OS-store entries that `dir`'s markers name; the first failure stops it.
    fn forget_os_entries(&self, dir: &Path) -> io::Result<()> {
        let Some(provider) = dir.file_name().and_then(|n| n.to_str()) else {
            return Ok(());
        };
        self.delete_secret(&self.state_slot(provider))?;
        let Ok(entries) = std::fs::read_dir(dir.join("credentials")) else {
            return Ok(());
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name();
            if let Some(key) = name.to_str().and_then(|n| n.strip_suffix(MARKER)) {
                self.delete_secret(&self.credential_slot(provider, key))?;
            }
        }
        Ok(())
    }

    /// Removes the state and stored credentials of one provider, or of all. Returns how
    /// many providers had something stored.
    pub fn forget(&self, provider: Option<&str>) -> io::Result<usize> {
        let dirs: Vec<PathBuf> = match provider {
            Some(p) => vec![self.provider_dir(p)],
            None => match std::fs::read_dir(&self.dir) {
                Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e),
            },
        };
        let mut removed = 0;
        for dir in dirs {
            // A secret the OS store would not delete keeps its directory and marker, and
            // `forget` fails saying so, rather than claiming it is gone.
            self.forget_os_entries(&dir)?;
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}

/// Where one secret lives: its OS-store entry name, or its file in `dir`, and the marker
/// in `dir` that says which.
struct Slot {
    os_name: String,
    dir: PathBuf,
    file: String,
    marker: String,
}

impl Slot {
    fn file(&self) -> PathBuf {
        self.dir.join(&self.file)
    }

    fn marker(&self) -> PathBuf {
        self.dir.join(&self.marker)
    }
}

/// An empty file saying "the secret for this is in the OS store".
fn write_marker(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        ensure_private_dir(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn cred(expires_at: Option<u64>, cache: CachePolicy) -> Credential {
        Credential {
            username: None,
            secret: Secret::new("s3cret".into()),
            headers: vec![],
            expires_at,
            cache,
            refresh_at: None,
        }
    }

    fn producer() -> Producer {
        Producer {
            provider: "p".into(),
            sequence: 1,
            component_sha256: "00".repeat(32),
            statement_sha256: None,
            publisher_key_id: None,
            signer_key_ids: vec![],
            statement_expires_at: None,
            component_file: None,
            statement_file: None,
            trust_file: None,
            valid_until: None,
            ..Default::default()
        }
    }

    #[test]
    fn only_unexpired_until_expiry_credentials_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().to_owned(), StoreMode::File);
        let later = now_unix() + 3600;
        assert!(
            !store
                .cache_credential("p", "k1", &cred(Some(later), CachePolicy::Session), &producer())
                .unwrap()
        );
        assert!(
            !store
                .cache_credential("p", "k2", &cred(None, CachePolicy::UntilExpiry), &producer())
                .unwrap()
        );
        assert!(
            store
                .cache_credential("p", "k3", &cred(Some(later), CachePolicy::UntilExpiry), &producer())
                .unwrap()
        );
        assert_eq!(store.cached_credential("p", "k3").unwrap().0.secret.expose(), "s3cret");
        store
            .cache_credential(
                "p",
                "k4",
                &cred(Some(now_unix() + 30), CachePolicy::UntilExpiry),
                &producer(),
            )
            .unwrap();
        assert!(store.cached_credential("p", "k4").is_none(), "inside the expiry margin");
        assert!(store.cached_credential("q", "k3").is_none(), "another provider's entry");
    }

    #[test]
    fn store_os_without_an_os_store_keeps_nothing_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().to_owned(), StoreMode::Os);
        store.os.set(None).ok().expect("not opened yet");
        let later = now_unix() + 3600;
        assert!(
            !store
                .cache_credential("p", "k", &cred(Some(later), CachePolicy::UntilExpiry), &producer())
                .unwrap()
        );
        store.set_provider_state("p", b"refresh").unwrap();
        assert!(store.cached_credential("p", "k").is_none());
        assert!(store.provider_state("p").is_none());
        assert!(!dir.path().join("p").exists(), "nothing written");
        assert!(store.describe().starts_with("nowhere"));
    }

    #[test]
    fn auto_without_an_os_store_falls_back_to_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().to_owned(), StoreMode::Auto);
        store.os.set(None).ok().expect("not opened yet");
        store.set_provider_state("p", b"refresh").unwrap();
        assert_eq!(std::fs::read(dir.path().join("p/state.bin")).unwrap(), b"refresh");
        assert_eq!(store.provider_state("p").as_deref(), Some(&b"refresh"[..]));
    }

    #[test]
    fn a_secret_kept_on_one_thread_is_found_on_another() {
        // The NuGet plugin answers each request on a thread of its own.
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(StateStore::new(dir.path().to_owned(), StoreMode::Auto));
        let writer = store.clone();
        std::thread::spawn(move || writer.set_provider_state("p", b"refresh").unwrap())
            .join()
            .unwrap();
        let reader = store.clone();
        let seen = std::thread::spawn(move || reader.provider_state("p")).join().unwrap();
        assert_eq!(seen.as_deref(), Some(&b"refresh"[..]), "kept in {}", store.describe());
        assert_eq!(store.provider_state("p").as_deref(), Some(&b"refresh"[..]));
        let in_os_store = !store.describe().starts_with("0600 files");
        assert_eq!(dir.path().join("p/state.in-os-store").exists(), in_os_store);
        assert_eq!(dir.path().join("p/state.bin").exists(), !in_os_store);
        store.forget(None).unwrap();
    }

    #[test]
    fn an_update_the_os_store_refuses_never_leaves_the_old_value_to_be_served() {
        // Linux "user" keys hold at most 32,767 bytes: the kernel refuses this update.
        let big = vec![b'x'; 40_000];
        let dir = tempfile::tempdir().unwrap();
        let auto = StateStore::new(dir.path().to_owned(), StoreMode::Auto);
        auto.set_provider_state("p", b"old refresh token").unwrap();
        auto.set_provider_state("p", &big).unwrap();
        assert_eq!(
            auto.provider_state("p").as_deref(),
            Some(&big[..]),
            "auto keeps it in a file"
        );
        assert!(!dir.path().join("p/state.in-os-store").exists());
        auto.forget(None).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let os = StateStore::new(dir.path().to_owned(), StoreMode::Os);
        os.set_provider_state("p", b"old refresh token").unwrap();
        os.set_provider_state("p", &big).unwrap();
        let now = os.provider_state("p");
        assert_ne!(
            now.as_deref(),
            Some(&b"old refresh token"[..]),
            "the replaced value is gone"
        );
        assert!(!dir.path().join("p/state.bin").exists(), "store = os writes no file");
        os.forget(None).unwrap();
    }

    #[test]
    fn forget_fails_rather_than_claim_an_os_entry_it_could_not_delete_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        // A marker from a run that had an OS store; this one has none.
        write_marker(&dir.path().join(format!("p/state{MARKER}"))).unwrap();
        let store = StateStore::new(dir.path().to_owned(), StoreMode::Auto);
        store.os.set(None).ok().expect("not opened yet");
        let err = store.forget(None).unwrap_err();
        assert!(err.to_string().contains("was not deleted"), "{err}");
        assert!(
            dir.path().join("p/state.in-os-store").exists(),
            "kept for a later forget"
        );
    }

    #[test]
    fn forget_clears_state_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().to_owned(), StoreMode::File);
        store.set_provider_state("a", b"refresh").unwrap();
        store.set_provider_state("b", b"refresh").unwrap();
        assert_eq!(store.forget(Some("a")).unwrap(), 1);
        assert!(store.provider_state("a").is_none());
        assert_eq!(store.provider_state("b").as_deref(), Some(&b"refresh"[..]));
        assert_eq!(store.forget(None).unwrap(), 1);
        assert!(store.provider_state("b").is_none());
    }
}
