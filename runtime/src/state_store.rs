//! What credence keeps between one-shot runs, per provider instance: the provider's opaque
//! state (e.g. a refresh token) and credentials whose cache policy allows keeping them.
//!
//! Stored as 0600 files in 0700 directories under the XDG state dir:
//! `state/<provider>/state.bin` and `state/<provider>/credentials/<key>.json`, where the
//! key is a sha-256 of the URL, the operation and the provider's configuration, so a
//! changed config never answers from an old entry. A provider's state is only ever given
//! back to the same provider instance, and never logged.

use crate::private_dir::{is_private_file, write_private_file};
use crate::request::{CachePolicy, Credential};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// A stored credential is not used in its last minute: the tool still has to use it.
const EXPIRY_MARGIN_SECS: u64 = 60;

pub struct StateStore {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct StoredCredential {
    version: u32,
    credential: Credential,
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl StateStore {
    pub fn new(dir: PathBuf) -> Self {
        StateStore { dir }
    }

    fn provider_dir(&self, provider: &str) -> PathBuf {
        // Provider names are checked to be [a-z0-9-] when the config is read.
        self.dir.join(provider)
    }

    fn read_private(&self, path: &PathBuf) -> Option<Vec<u8>> {
        match is_private_file(path) {
            Ok(true) => std::fs::read(path).ok(),
            Ok(false) => {
                tracing::warn!(path = %path.display(), "ignoring a stored file others can write");
                None
            }
            Err(_) => None,
        }
    }

    pub fn provider_state(&self, provider: &str) -> Option<Vec<u8>> {
        self.read_private(&self.provider_dir(provider).join("state.bin"))
    }

    pub fn set_provider_state(&self, provider: &str, state: &[u8]) -> io::Result<()> {
        write_private_file(&self.provider_dir(provider), "state.bin", state)
    }

    /// A stored credential that is still valid.
    pub fn cached_credential(&self, provider: &str, key: &str) -> Option<Credential> {
        let path = self
            .provider_dir(provider)
            .join("credentials")
            .join(format!("{key}.json"));
        let bytes = self.read_private(&path)?;
        let stored: StoredCredential = serde_json::from_slice(&bytes).ok()?;
        let valid = stored.version == 1
            && stored.credential.cache == CachePolicy::UntilExpiry
            && stored
                .credential
                .expires_at
                .is_some_and(|t| t > now_unix() + EXPIRY_MARGIN_SECS);
        if !valid {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        Some(stored.credential)
    }

    /// Keeps a credential across runs if its policy allows: only `until-expiry` with an
    /// expiry. `session` credentials live as long as the process that asked (the agent).
    pub fn cache_credential(&self, provider: &str, key: &str, credential: &Credential) -> io::Result<bool> {
        if credential.cache != CachePolicy::UntilExpiry || credential.expires_at.is_none() {
            return Ok(false);
        }
        let json = serde_json::to_vec(&StoredCredential {
            version: 1,
            credential: credential.clone(),
        })?;
        write_private_file(
            &self.provider_dir(provider).join("credentials"),
            &format!("{key}.json"),
            &json,
        )?;
        Ok(true)
    }

    /// Remembers that the tool's server refused the credential for `key` (git `erase`,
    /// docker `erase`), so the next request is a retry even if the tool cannot say so.
    pub fn mark_rejected(&self, provider: &str, key: &str) -> io::Result<()> {
        write_private_file(&self.provider_dir(provider).join("rejected"), key, b"")
    }

    /// Whether a rejection was recorded for `key`; consumes it.
    pub fn take_rejected(&self, provider: &str, key: &str) -> bool {
        std::fs::remove_file(self.provider_dir(provider).join("rejected").join(key)).is_ok()
    }

    pub fn evict(&self, provider: &str, key: &str) {
        let _ = std::fs::remove_file(
            self.provider_dir(provider)
                .join("credentials")
                .join(format!("{key}.json")),
        );
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
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
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
        }
    }

    #[test]
    fn only_unexpired_until_expiry_credentials_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().to_owned());
        let later = now_unix() + 3600;
        assert!(
            !store
                .cache_credential("p", "k1", &cred(Some(later), CachePolicy::Session))
                .unwrap()
        );
        assert!(
            !store
                .cache_credential("p", "k2", &cred(None, CachePolicy::UntilExpiry))
                .unwrap()
        );
        assert!(
            store
                .cache_credential("p", "k3", &cred(Some(later), CachePolicy::UntilExpiry))
                .unwrap()
        );
        assert_eq!(store.cached_credential("p", "k3").unwrap().secret.expose(), "s3cret");
        store
            .cache_credential("p", "k4", &cred(Some(now_unix() + 30), CachePolicy::UntilExpiry))
            .unwrap();
        assert!(store.cached_credential("p", "k4").is_none(), "inside the expiry margin");
        assert!(store.cached_credential("q", "k3").is_none(), "another provider's entry");
    }

    #[test]
    fn forget_clears_state_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().to_owned());
        store.set_provider_state("a", b"refresh").unwrap();
        store.set_provider_state("b", b"refresh").unwrap();
        assert_eq!(store.forget(Some("a")).unwrap(), 1);
        assert!(store.provider_state("a").is_none());
        assert_eq!(store.provider_state("b").as_deref(), Some(&b"refresh"[..]));
        assert_eq!(store.forget(None).unwrap(), 1);
        assert!(store.provider_state("b").is_none());
    }
}
