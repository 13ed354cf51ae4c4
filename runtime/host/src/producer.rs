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
//! the verifier uses; when `trust.toml` itself is provably unchanged since (its identity,
//! as for the files) and no expiry has passed, that verdict cannot differ and the store is
//! not even read. Any difference sends the request down the full gate.

use crate::config::ProviderConfig;
use crate::loader::{LoadedProvider, Trust, TrustMode};
use credence_signing::trust::ExpiredPolicy;
use credence_signing::verify::{SignatureCheck, apply_policy, check_key};
use credence_signing::{KeyId, TrustStore};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// `trust.toml` as it was when this producer was admitted (`None`: unknown, so the
    /// store is always read again).
    pub trust_file: Option<FileStamp>,
    /// The first second at which a signer key, the statement or the policy bundle expires
    /// under that store.
    pub valid_until: Option<u64>,
    /// The organisation's policy directory, root key and bundle as they were.
    #[serde(default)]
    pub policy_files: PolicyStamp,
    /// The signed version and the statement's issue time, which the organisation's policy
    /// and key rotations judge (`None` in credentials made before they were recorded: then
    /// those are judged through the whole gate).
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub statement_issued_at: Option<u64>,
}

/// The identity of the organisation's policy directory (its change time moves with a chmod
/// or a new entry), pinned root key and bundle: all `None` where there is no policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStamp {
    pub dir: Option<FileStamp>,
    pub root: Option<FileStamp>,
    pub bundle: Option<FileStamp>,
}

impl PolicyStamp {
    /// Taken before the files are read, like every stamp.
    pub fn of(dir: &crate::org_policy::PolicyDir) -> PolicyStamp {
        PolicyStamp {
            dir: FileStamp::of(&dir.dir),
            root: FileStamp::of(&dir.root_file()),
            bundle: FileStamp::of(&dir.bundle_file()),
        }
    }
}

/// A file's identity. A replacement by rename (how credence writes `trust.toml` and
/// installs components) always changes the inode, and a rewrite in place changes the size
/// or the modification and change times. What it cannot tell apart is a rewrite of equal
/// size within one tick of the filesystem's clock (a few ms) onto a reused inode, which only
/// the file's owner can make: out of scope, like everything a process of the user can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    /// Seconds and nanoseconds, as `stat` gives them.
    mtime: (i64, i64),
    ctime: (i64, i64),
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
                mtime: (meta.mtime(), meta.mtime_nsec()),
                ctime: (meta.ctime(), meta.ctime_nsec()),
            })
        }
        #[cfg(not(unix))]
        {
            let modified = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
            let mtime = (modified.as_secs() as i64, i64::from(modified.subsec_nanos()));
            Some(FileStamp {
                dev: 0,
                ino: 0,
                size: meta.len(),
                mtime,
                ctime: mtime,
            })
        }
    }
}

impl Producer {
    /// The producer of a credential `loaded` just made, admitted under `trust`.
    pub fn of(loaded: &LoadedProvider, trust: &Trust) -> Producer {
        let key_expiries = loaded.signers.iter().filter_map(|s| {
            trust
                .store
                .find(&s.key_id)
                .and_then(|k| k.not_after)
                .map(|t| t.saturating_add(1))
        });
        let statement_expiry = loaded
            .statement_expires_at
            .filter(|_| trust.store.policy.expired() == ExpiredPolicy::Refuse);
        let bundle_expiry = trust.store.org.as_ref().map(|o| o.expires_at);
        // The first second at which the statement is older than the organisation accepts.
        let too_old = trust.store.org.as_ref().and_then(|o| {
            let days = o.max_statement_age_days?;
            Some(
                loaded
                    .statement_issued_at?
                    .saturating_add(days.saturating_mul(86_400))
                    .saturating_add(1),
            )
        });
        Producer {
            trust_file: trust.sequences.trust_file(),
            valid_until: key_expiries
                .chain(statement_expiry)
                .chain(bundle_expiry)
                .chain(too_old)
                .min(),
            policy_files: trust.policy,
            version: Some(loaded.ceiling.version.clone()),
            statement_issued_at: loaded.statement_issued_at,
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

    /// What the gate decides without the trust store: the config still pins this provider
    /// (and publisher), the component and statement are the files it was made from, and an
    /// unsigned producer is served only where unsigned providers may run.
    pub fn local_checks(&self, config: &ProviderConfig, files: (&Path, &Path), mode: TrustMode) -> Result<(), String> {
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
        let Some(publisher) = &self.publisher_key_id else {
            return match mode {
                TrustMode::DangerousAllowUnsigned => Ok(()),
                TrustMode::RequireSigned => Err("an unsigned provider made it".into()),
            };
        };
        if let Some(pinned) = config.publisher.as_ref().filter(|p| *p != publisher) {
            return Err(format!("the config pins publisher {pinned}, and {publisher} signed it"));
        }
        Ok(())
    }

    /// Whether the trust store the producer was admitted by is provably the one in force:
    /// the same file (a rewrite changes its change time, which no user can set back) and
    /// no key or statement expiry passed since. Then judging it again would give the same
    /// verdict, and the stored path skips reading and parsing the store.
    pub fn trust_unchanged(&self, trust_file: Option<FileStamp>, policy_files: PolicyStamp, now: u64) -> bool {
        // An unsigned producer rests on no trust store, but on the policy: a bundle that
        // forbids unsigned code may have come since.
        (self.statement_sha256.is_none() && self.policy_files == policy_files)
            || (self.trust_file.is_some()
                && self.trust_file == trust_file
                && self.policy_files == policy_files
                && self.valid_until.is_none_or(|t| now < t))
    }

    /// Judges the producer again against `trust` as the verifier would (steps 3 to 7 of
    /// verification, on the signatures checked when it was made). `floor` is the rollback
    /// floor for its name.
    pub fn trust_checks(&self, trust: &TrustStore, floor: Option<u64>, now: u64) -> Result<(), String> {
        let (Some(statement), Some(publisher)) = (&self.statement_sha256, &self.publisher_key_id) else {
            return match trust.org.as_ref().filter(|o| !o.allow_unsigned) {
                Some(org) => Err(format!(
                    "an unsigned provider made it, and the policy of {} lets no unsigned provider run",
                    org.label()
                )),
                None => Ok(()),
            };
        };
        if trust.statement_revoked(statement) {
            return Err(format!("the statement {statement} is revoked"));
        }
        let checks: Vec<(&str, SignatureCheck)> = self
            .signer_key_ids
            .iter()
            .map(|id| {
                let check = check_key(trust, &KeyId(id.clone()), &self.provider, self.statement_issued_at, now);
                (id.as_str(), check)
            })
            .collect();
        apply_policy(&checks, publisher, &trust.policy).map_err(|r| r.to_string())?;
        if let Some(org) = &trust.org {
            let version = self.version.as_deref().ok_or("its version was not recorded")?;
            org.admits(
                &self.provider,
                version,
                &self.component_sha256,
                self.statement_issued_at,
                now,
            )
            .map_err(|reason| format!("the policy of {} does not allow it: {reason}", org.label()))?;
        }
        if let Some(t) = self.statement_expires_at.filter(|t| *t <= now)
            && trust.policy.expired() == ExpiredPolicy::Refuse
        {
            return Err(format!("its statement expired at {t}"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(trust_file: Option<FileStamp>, valid_until: Option<u64>) -> Producer {
        Producer {
            provider: "p".into(),
            sequence: 1,
            component_sha256: "00".repeat(32),
            statement_sha256: Some("11".repeat(32)),
            publisher_key_id: Some("22".repeat(16)),
            signer_key_ids: vec!["22".repeat(16)],
            statement_expires_at: None,
            component_file: None,
            statement_file: None,
            trust_file,
            valid_until,
            policy_files: PolicyStamp::default(),
            version: Some("0.1.0".into()),
            statement_issued_at: Some(1),
        }
    }

    #[test]
    fn the_trust_store_is_skipped_only_while_it_is_provably_the_one_that_admitted_the_producer() {
        let dir = tempfile::tempdir().unwrap();
        let trust = dir.path().join("trust.toml");
        std::fs::write(&trust, "a").unwrap();
        let stamp = FileStamp::of(&trust);
        let none = PolicyStamp::default();
        assert!(signed(stamp, None).trust_unchanged(stamp, none, 100));
        assert!(signed(stamp, Some(101)).trust_unchanged(stamp, none, 100));
        assert!(
            !signed(stamp, Some(100)).trust_unchanged(stamp, none, 100),
            "an expiry passed"
        );
        assert!(
            !signed(None, None).trust_unchanged(None, none, 100),
            "unknown store: read it"
        );
        assert!(!signed(stamp, None).trust_unchanged(None, none, 100), "store deleted");
        // Replaced by rename, as credence writes it: the old file is still there when the
        // new one is made, so the new one has another inode.
        let tmp = dir.path().join("new");
        std::fs::write(&tmp, "b").unwrap();
        std::fs::rename(&tmp, &trust).unwrap();
        assert!(!signed(stamp, None).trust_unchanged(FileStamp::of(&trust), none, 100));
        // An unsigned producer never depended on the store.
        let mut unsigned = signed(None, None);
        unsigned.statement_sha256 = None;
        unsigned.publisher_key_id = None;
        assert!(unsigned.trust_unchanged(None, none, 100));
        assert!(
            !unsigned.trust_unchanged(None, PolicyStamp { dir: stamp, ..none }, 100),
            "a policy came since"
        );
        // A policy bundle installed, replaced or removed since: judged again.
        let bundle = dir.path().join("policy.json");
        std::fs::write(&bundle, "{}").unwrap();
        let installed = PolicyStamp {
            bundle: FileStamp::of(&bundle),
            ..none
        };
        assert!(!signed(FileStamp::of(&trust), None).trust_unchanged(FileStamp::of(&trust), installed, 100));
    }
}
