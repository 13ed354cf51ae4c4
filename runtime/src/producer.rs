//! Who made a stored credential, recorded beside it, so that it is served only while the
//! provider that made it would still pass the loading gate: not after its key or statement
//! is revoked, its key removed or expired, the policy raised above its signatures, the
//! trust store deleted, the component or statement replaced, or the config pinned to
//! another provider.
//!
//! The stored path must stay cheap (no component hashing): the component and statement
//! files are compared by identity (device, inode, size, modification and change times; the
//! change time cannot be set back by a user), and the signatures, verified when the
//! credential was made, are re-judged against today's trust store by the same functions
//! the verifier uses. Any difference sends the request down the full gate.

use crate::config::ProviderConfig;
use crate::loader::{LoadedProvider, TrustMode};
use credence_signing::trust::ExpiredPolicy;
use credence_signing::verify::{SignatureCheck, apply_policy, check_key};
use credence_signing::{KeyId, TrustStore};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Producer {
    /// The signed (or, unsigned, the manifest's) provider name.
    pub provider: String,
    pub sequence: u64,
    pub component_sha256: String,
    /// `None` for a provider run with `--allow-unsigned`: its credentials are never served
    /// to a run that requires signatures.
    pub statement_sha256: Option<String>,
    pub publisher_key_id: Option<String>,
    /// Every key whose trusted signature satisfied the policy.
    pub signer_key_ids: Vec<String>,
    pub statement_expires_at: Option<u64>,
    pub component_file: Option<FileStamp>,
    pub statement_file: Option<FileStamp>,
}

/// A file's identity: any replacement or rewrite changes at least one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    pub fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Some(FileStamp {
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.size(),
                mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
                ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            })
        }
        #[cfg(not(unix))]
        {
            let mtime = meta
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_nanos() as i128;
            Some(FileStamp {
                dev: 0,
                ino: 0,
                size: meta.len(),
                mtime_ns: mtime,
                ctime_ns: mtime,
            })
        }
    }
}

impl Producer {
    pub fn of(loaded: &LoadedProvider) -> Producer {
        Producer {
            provider: loaded.ceiling.name.clone(),
            sequence: loaded.ceiling.sequence,
            component_sha256: hex::encode(loaded.digest),
            statement_sha256: loaded.statement_digest.map(hex::encode),
            publisher_key_id: loaded.publisher_key_id.clone(),
            signer_key_ids: loaded.signers.iter().map(|s| s.key_id.0.clone()).collect(),
            statement_expires_at: loaded.statement_expires_at,
            component_file: loaded.component_file,
            statement_file: loaded.statement_file,
        }
    }

    /// Whether the producer would still pass the gate for `config`; the reason if not.
    /// `floor` is the rollback floor for its name.
    pub fn still_admitted(
        &self,
        config: &ProviderConfig,
        files: (&Path, &Path),
        mode: TrustMode,
        trust: &TrustStore,
        floor: Option<u64>,
        now: u64,
    ) -> Result<(), String> {
        if self.provider != config.provider {
            return Err(format!(
                "it was made by provider {:?} and the config now names {:?}",
                self.provider, config.provider
            ));
        }
        if self.component_file.is_none() || self.component_file != FileStamp::of(files.0) {
            return Err("the component changed since".into());
        }
        if self.statement_file != FileStamp::of(files.1) {
            return Err("the statement changed since".into());
        }
        let (Some(statement), Some(publisher)) = (&self.statement_sha256, &self.publisher_key_id) else {
            return match mode {
                TrustMode::DangerousAllowUnsigned => Ok(()),
                TrustMode::RequireSigned => Err("an unsigned provider made it".into()),
            };
        };
        if let Some(pinned) = &config.publisher {
            if pinned != publisher {
                return Err(format!("the config pins publisher {pinned}, and {publisher} signed it"));
            }
        }
        if trust.statement_revoked(statement) {
            return Err(format!("the statement {statement} is revoked"));
        }
        let checks: Vec<(&str, SignatureCheck)> = self
            .signer_key_ids
            .iter()
            .map(|id| (id.as_str(), check_key(trust, &KeyId(id.clone()), &self.provider, now)))
            .collect();
        apply_policy(&checks, publisher, &trust.policy).map_err(|r| r.to_string())?;
        if let Some(t) = self.statement_expires_at.filter(|t| *t <= now) {
            if trust.policy.expired == ExpiredPolicy::Refuse {
                return Err(format!("its statement expired at {t}"));
            }
        }
        if let Some(floor) = floor.filter(|f| *f > self.sequence) {
            return Err(format!(
                "sequence {} is below the rollback floor {floor}",
                self.sequence
            ));
        }
        Ok(())
    }
}
