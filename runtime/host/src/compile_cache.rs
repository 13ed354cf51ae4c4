//! The precompiled-component cache: compile once, then load the native code on every run.
//!
//! Loading a precompiled component runs whatever native code is in the file, and a file
//! name proves nothing (one provider's entry copied over another's name would run the wrong
//! code under the right name). So every entry carries a tag: keyed BLAKE3, under a random
//! per-installation key kept 0600 in the private state dir, over the verified component's
//! digest, the engine's compatibility hash and the compiled bytes. The tag is checked before
//! anything is deserialised; an entry without a valid tag for *this* digest and engine is
//! deleted and compiled again.
//!
//! The directory must be 0700 and this user's, and each entry a regular 0600 file of this
//! user. Anything else means someone else may have written there: its entries are discarded
//! (never "fixed and used"), and a directory this user does not own is not used at all.

use crate::private_dir::{installation_key, is_private_metadata, write_private_file};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The first bytes of every entry, then the 32-byte tag, then the compiled component.
const MAGIC: &[u8; 16] = b"credence-cwasm-2";
const HEADER: usize = MAGIC.len() + 32;
/// Compiled code is a few times the component's size; far more than that is not ours.
const MAX_ENTRY_BYTES: u64 = 512 << 20;

pub struct CompileCache {
    dir: PathBuf,
    /// Where the tag key lives: the private state dir, not the cache, which is often
    /// shared, backed up or synced with less care.
    key_dir: PathBuf,
    key: OnceLock<Option<[u8; 32]>>,
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

/// Why an entry was not loaded; each is logged once and the entry compiled again.
#[derive(Debug)]
enum Miss {
    Absent,
    /// Not a regular private file of this user (planted, or loosened).
    NotPrivate,
    /// The tag does not match this component digest and engine: copied, edited or truncated.
    BadTag,
    Unusable(String),
}

impl CompileCache {
    pub fn new(dir: PathBuf, key_dir: PathBuf) -> Self {
        CompileCache {
            dir,
            key_dir,
            key: OnceLock::new(),
        }
    }

    fn engine_hash(engine: &Engine) -> [u8; 32] {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        hasher.0.finalize().into()
    }

    fn entry_path(&self, engine_hash: &[u8; 32], component_digest: &[u8; 32]) -> PathBuf {
        let mut h = Sha256::new();
        h.update(b"credence precompiled component v2\0");
        h.update(component_digest);
        h.update(engine_hash);
        self.dir.join(format!("{}.cwasm", hex::encode(h.finalize())))
    }

    fn key(&self) -> Option<&[u8; 32]> {
        self.key
            .get_or_init(|| match installation_key(&self.key_dir, "cache.key") {
                Ok(k) => Some(k),
                Err(e) => {
                    tracing::warn!(
                        "cannot read or create the cache key in {}: {e}; compiling without the cache",
                        self.key_dir.display()
                    );
                    None
                }
            })
            .as_ref()
    }

    fn tag(key: &[u8; 32], digest: &[u8; 32], engine_hash: &[u8; 32], compiled: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(b"credence cwasm tag v2\0");
        h.update(digest);
        h.update(engine_hash);
        h.update(compiled);
        *h.finalize().as_bytes()
    }

    /// `bytes` must be the component whose sha-256 is `digest`, already verified by the
    /// loading gate: they are compiled only on a miss.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &[u8; 32],
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        // Hashed once: it names the entry and goes into its tag.
        let engine_hash = Self::engine_hash(engine);
        let path = self.entry_path(&engine_hash, digest);
        let usable_dir = self.key().is_some() && self.check_dir();
        if usable_dir {
            match self.try_load(engine, &path, digest, &engine_hash) {
                Ok(component) => {
                    tracing::debug!(path = %path.display(), "loaded precompiled component from cache");
                    return Ok((component, CacheOutcome::Hit));
                }
                Err(Miss::Absent) => {}
                Err(miss) => {
                    match &miss {
                        Miss::NotPrivate => {
                            tracing::warn!(path = %path.display(), "ignoring a cache entry this host did not write (owner, mode or type is wrong); recompiling")
                        }
                        Miss::BadTag => {
                            tracing::warn!(path = %path.display(), "ignoring a cache entry whose tag does not match this component and engine (copied or changed); recompiling")
                        }
                        Miss::Unusable(e) => {
                            tracing::debug!(path = %path.display(), error = %e, "cache entry unusable; recompiling")
                        }
                        Miss::Absent => {}
                    }
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        if let (true, Some(key)) = (usable_dir, self.key()) {
            let mut entry = Vec::with_capacity(HEADER + compiled.len());
            entry.extend_from_slice(MAGIC);
            entry.extend_from_slice(&Self::tag(key, digest, &engine_hash, &compiled));
            entry.extend_from_slice(&compiled);
            // A cache that cannot be written only costs speed.
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            match write_private_file(&self.dir, name, &entry) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), "compiled component and stored it in the cache")
                }
                Err(e) => tracing::warn!(
                    "cannot write the compiled-component cache in {}: {e}",
                    self.dir.display()
                ),
            }
        }
        // SAFETY: these bytes were produced by `precompile_component` on this very engine
        // a moment ago and never left this process.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        Ok((component, CacheOutcome::Compiled))
    }

    /// Whether the cache directory may be used: created 0700 if missing; if it is this
    /// user's but others could write it, every entry in it is deleted (any of them may be
    /// planted) before it is made private again; if it is not this user's (or not a
    /// directory), it is not used.
    fn check_dir(&self) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let meta = match std::fs::symlink_metadata(&self.dir) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return crate::private_dir::ensure_private_dir(&self.dir).is_ok();
                }
                Err(_) => return false,
            };
            let me = crate::private_dir::current_uid();
            if !meta.is_dir() || meta.uid() != me {
                tracing::warn!(
                    "not using the compiled-component cache {}: it is not a directory of yours; run `rm -rf {}`",
                    self.dir.display(),
                    self.dir.display()
                );
                return false;
            }
            if meta.mode() & 0o777 != 0o700 {
                tracing::warn!(
                    "the compiled-component cache {} was open to others (mode {:04o}); discarding its entries",
                    self.dir.display(),
                    meta.mode() & 0o7777
                );
                if let Ok(entries) = std::fs::read_dir(&self.dir) {
                    for e in entries.flatten() {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
                return std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700)).is_ok();
            }
        }
        true
    }

    fn try_load(
        &self,
        engine: &Engine,
        path: &Path,
        digest: &[u8; 32],
        engine_hash: &[u8; 32],
    ) -> Result<Component, Miss> {
        let file = match crate::private_dir::open_no_follow(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Absent),
            // A symlink (ELOOP with O_NOFOLLOW) or anything else unreadable: not ours.
            Err(_) => return Err(Miss::NotPrivate),
        };
        // Judged on the open descriptor, so the file read is the file checked.
        let meta = file.metadata().map_err(|e| Miss::Unusable(e.to_string()))?;
        if !is_private_metadata(&meta) {
            return Err(Miss::NotPrivate);
        }
        let key = self.key().ok_or(Miss::Absent)?;
        if meta.len() < HEADER as u64 || meta.len() > MAX_ENTRY_BYTES {
            return Err(Miss::BadTag);
        }
        // SAFETY: a private, read-only mapping of a regular 0600 file of this user in its
        // 0700 directory, which this host only ever replaces by rename, never rewrites: the
        // bytes cannot change under the mapping but by this user's own hand (see the threat
        // model). Mapped, not read, so checking the tag costs no copy into fresh heap pages.
        let entry = unsafe { memmap2::MmapOptions::new().map_copy_read_only(&file) }
            .map_err(|e| Miss::Unusable(e.to_string()))?;
        if entry.len() < HEADER || &entry[..MAGIC.len()] != MAGIC {
            return Err(Miss::BadTag);
        }
        let (head, compiled) = entry.split_at(HEADER);
        let expected = Self::tag(key, digest, engine_hash, compiled);
        // blake3::Hash compares in constant time.
        if blake3::Hash::from_bytes(expected)
            != blake3::Hash::from_bytes(head[MAGIC.len()..].try_into().expect("32 bytes"))
        {
            return Err(Miss::BadTag);
        }
        // SAFETY: the bytes carry a valid tag under this installation's secret key for this
        // component digest and engine: only `load_or_compile` of this installation, which
        // compiled them from verified bytes, can have produced it. wasmtime copies them
        // into memory of its own, so the mapping ends here.
        unsafe { Component::deserialize(engine, compiled) }.map_err(|e| Miss::Unusable(e.to_string()))
    }
}
