//! The precompiled-component cache: compile once, then map the native code on every run.
//!
//! Loading a precompiled component runs whatever native code is in the file, so an entry
//! is only loaded if this host wrote it: a regular file owned by this user, not writable by
//! anyone else, in a 0700 directory, named by the sha-256 of the verified component bytes
//! and of the engine's compatibility hash (wasmtime version and every setting that changes
//! the code). Any failure to load deletes the entry and compiles again.

use crate::private_dir::{ensure_private_dir, is_private_file, write_private_file};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

pub struct CompileCache {
    dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Compiled,
}

/// Feeds `Hash` output into sha-256 (std's hashers are not stable across builds).
struct Sha256Hasher(Sha256);
impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        unreachable!("only the sha-256 digest is used")
    }
}

impl CompileCache {
    pub fn new(dir: PathBuf) -> Self {
        CompileCache { dir }
    }

    pub fn entry_path(&self, engine: &Engine, component_digest: &[u8; 32]) -> PathBuf {
        let mut hasher = Sha256Hasher(Sha256::new());
        hasher.write(b"credence precompiled component v1\0");
        hasher.write(component_digest);
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let key = hex::encode(hasher.0.finalize());
        self.dir.join(format!("{key}.cwasm"))
    }

    /// `bytes` must be the component whose sha-256 is `digest`, already verified by the
    /// loading gate: they are compiled only on a miss.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &[u8; 32],
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.entry_path(engine, digest);
        if let Some(component) = self.try_load(engine, &path) {
            tracing::debug!(path = %path.display(), "loaded precompiled component from cache");
            return Ok((component, CacheOutcome::Hit));
        }
        let compiled = engine.precompile_component(bytes)?;
        // A cache that cannot be written only costs speed.
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        match write_private_file(&self.dir, name, &compiled) {
            Ok(()) => {
                tracing::debug!(path = %path.display(), "compiled component and stored it in the cache")
            }
            Err(e) => tracing::warn!(
                "cannot write the compiled-component cache in {}: {e}",
                self.dir.display()
            ),
        }
        // SAFETY: these bytes were produced by `precompile_component` on this very engine
        // a moment ago and never left this process.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        Ok((component, CacheOutcome::Compiled))
    }

    fn try_load(&self, engine: &Engine, path: &Path) -> Option<Component> {
        match is_private_file(path) {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(path = %path.display(), "ignoring a cache entry this host did not write (owner, mode or type is wrong); recompiling");
                let _ = std::fs::remove_file(path);
                return None;
            }
            Err(_) => return None,
        }
        if ensure_private_dir(&self.dir).is_err() {
            return None;
        }
        // SAFETY: the file is a regular file in our private directory, owned by this user
        // and writable by no one else, named by the digest of verified bytes and this
        // engine's compatibility hash: only `load_or_compile` writes such files, and it
        // replaces them by rename, never in place, so the mapping stays valid.
        match unsafe { Component::deserialize_file(engine, path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cache entry unusable; recompiling");
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }
}
