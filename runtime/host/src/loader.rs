//! The single gate every provider passes through before it can run: read the component,
//! establish trust (its signed statement against the user's trust store and policy), check
//! its imports from its bytes, and only then compile (from the cache when possible).
//! Nothing else in credence compiles or instantiates a component, and no byte that failed
//! verification ever reaches the compiler.

use crate::compile_cache::{CacheOutcome, CompileCache};
use crate::component_info::{ComponentInfo, read_component_info};
use crate::config::ProviderConfig;
use crate::producer::FileStamp;
use crate::sandbox::imports::{check_world, is_allowed_import, is_provider_export};
use crate::sandbox::limits::ProviderLimits;
use crate::sandbox::{ImportError, check_component_type};
use crate::sequence_store::SequenceStore;
use crate::state_store::now_unix;
use crate::trusted_file::{FileError, Writers, read_file, read_optional};
use credence_signing::statement::MAX_STATEMENT_BYTES;
use credence_signing::verify::{Input, Signer, verify_parsed};
use credence_signing::{Manifest, Origin, PromptKind, Refusal, TrustStore};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Components larger than this are refused before hashing or compiling.
pub const MAX_COMPONENT_BYTES: u64 = 32 << 20;
/// Manifests larger than this are refused unread.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrustMode {
    RequireSigned,
    /// `--allow-unsigned`: for developing providers only; the manifest beside the component
    /// is taken at its word.
    DangerousAllowUnsigned,
}

/// Everything the gate needs to decide trust.
#[derive(Clone)]
pub struct Trust {
    pub mode: TrustMode,
    /// The trust in force: `trust.toml` under the organisation's policy bundle, if any.
    pub store: TrustStore,
    pub sequences: SequenceStore,
    /// The organisation's files as they were when `store` was made from them.
    pub policy: crate::producer::PolicyStamp,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("provider {provider}: {source}")]
    File { provider: String, source: FileError },
    #[error("provider {provider}: manifest {path}: {message}")]
    Manifest {
        provider: String,
        path: PathBuf,
        message: String,
    },
    #[error(
        "provider {provider} is not signed ({path} is missing), and credence runs only signed providers\n  hint: sign it with `credence sign`, or while developing a provider run with `--allow-unsigned`"
    )]
    Unsigned { provider: String, path: PathBuf },
    #[error(
        "provider {provider} is not signed, and the policy of {organisation} lets no unsigned provider run, --allow-unsigned or not\n  hint: sign it (`credence sign`) with a key the policy trusts, or develop it on a machine without this policy"
    )]
    UnsignedForbidden { provider: String, organisation: String },
    #[error("provider {provider} is refused: {refusal}{}", hint(.refusal))]
    Untrusted { provider: String, refusal: Refusal },
    #[error("provider {provider} is refused: {source}")]
    Imports { provider: String, source: ImportError },
    #[error("provider {provider} is refused: {message}")]
    NotAComponent { provider: String, message: String },
    #[error(
        "provider {instance} is refused: the config expects provider {expected:?}, and {component} is provider {found:?}\n  hint: reinstall {expected} with `credence install`, or if {found} is meant to serve here set `provider = \"{found}\"` for {instance} in config.toml"
    )]
    WrongProvider {
        instance: String,
        component: String,
        expected: String,
        found: String,
    },
    #[error(
        "provider {instance} is refused: the config pins publisher key {expected}, and {component} is signed by {}\n  hint: reinstall it from that publisher, or change `publisher` for {instance} in config.toml",
        if found.is_empty() { "no publisher (unsigned)".to_owned() } else { found.join(", ") }
    )]
    WrongPublisher {
        instance: String,
        component: String,
        expected: String,
        found: Vec<String>,
    },
    #[error(
        "provider {provider}: its rollback floor cannot be recorded, so an older release could be installed after it: {message}\n  hint: make trust.toml writable (`credence trust list` checks it) and install again"
    )]
    Floor { provider: String, message: String },
    #[error("provider {provider}: the component does not compile: {message}")]
    Compile { provider: String, message: String },
}

fn hint(r: &Refusal) -> String {
    r.hint().map(|h| format!("\n  hint: {h}")).unwrap_or_default()
}

/// A provider that passed the gate, with its effective capabilities: its signed ceiling
/// intersected with what the user grants.
pub struct LoadedProvider {
    pub instance: String,
    /// The capability ceiling: signed, or (with `--allow-unsigned`) the manifest's word.
    pub ceiling: Manifest,
    pub signers: Vec<Signer>,
    pub digest: [u8; 32],
    /// `None` when unsigned (`--allow-unsigned`, no statement).
    pub statement_digest: Option<[u8; 32]>,
    pub publisher_key_id: Option<String>,
    pub statement_expires_at: Option<u64>,
    pub statement_issued_at: Option<u64>,
    /// The files as they were when they passed the gate (see `producer`).
    pub component_file: Option<FileStamp>,
    pub statement_file: Option<FileStamp>,
    pub size: u64,
    pub component: Component,
    pub cache: CacheOutcome,
    pub origins: BTreeSet<Origin>,
    pub prompts: BTreeSet<PromptKind>,
    pub limits: ProviderLimits,
}

pub struct Loader<'a> {
    pub providers_dir: &'a Path,
    pub engine: &'a Engine,
    pub cache: &'a CompileCache,
    pub trust: &'a Trust,
}

pub fn manifest_path(component: &Path) -> PathBuf {
    component.with_extension("manifest.toml")
}

pub fn statement_path(component: &Path) -> PathBuf {
    component.with_extension("statement.json")
}

/// Whether failing to write the rollback floor refuses the release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloorWrite {
    Warn,
    Required,
}

/// The outcome of the trust step, before anything is compiled.
pub struct Vetted {
    pub bytes: Vec<u8>,
    pub ceiling: Manifest,
    pub signers: Vec<Signer>,
    pub digest: [u8; 32],
    pub statement_digest: Option<[u8; 32]>,
    /// The statement exactly as verified (what `install` copies).
    pub statement_bytes: Option<Vec<u8>>,
    pub publisher_key_id: Option<String>,
    pub statement_expires_at: Option<u64>,
    pub statement_issued_at: Option<u64>,
    pub info: ComponentInfo,
}

/// Reads and verifies a component against its statement; checks its imports and its
/// provider export from the bytes. Compiles nothing and records nothing: `credence
/// verify` and `inspect` give exactly this verdict, and the loader raises the rollback
/// floor only once the component has passed everything after it too.
///
/// A statement beside the component is always verified, also with `--allow-unsigned`
/// (which only admits a component that has none), so unsigned code cannot stand in for a
/// signed provider or skip its rollback floor.
pub fn vet(provider: &str, path: &Path, spath: &Path, trust: &Trust, writers: Writers) -> Result<Vetted, LoadError> {
    let file_err = |source| LoadError::File {
        provider: provider.to_owned(),
        source,
    };
    let bytes = read_file(path, MAX_COMPONENT_BYTES, writers).map_err(file_err)?;
    let statement = read_optional(spath, MAX_STATEMENT_BYTES as u64, writers).map_err(file_err)?;
    let vetted = match (statement, trust.mode) {
        (Some(statement), _) => {
            let untrusted = |refusal| LoadError::Untrusted {
                provider: provider.to_owned(),
                refusal,
            };
            let file =
                credence_signing::StatementFile::parse(&statement).map_err(|e| untrusted(Refusal::Malformed(e)))?;
            // The floor is per provider name, which only the statement tells.
            let highest_sequence = trust.sequences.highest(&file.statement.provider.name);
            let verified = verify_parsed(
                file,
                Input {
                    component: &bytes,
                    statement: &statement,
                    trust: &trust.store,
                    highest_sequence,
                    now: now_unix(),
                },
            )
            .map_err(untrusted)?;
            if let Some(warning) = &verified.expired_warning {
                tracing::warn!(
                    provider,
                    "{warning}; running it because the policy says expired = \"warn\""
                );
            }
            Vetted {
                info: ComponentInfo::default(),
                statement_bytes: Some(statement),
                statement_digest: Some(verified.statement_digest),
                publisher_key_id: Some(verified.file.statement.key_id.clone()),
                statement_expires_at: verified.file.statement.expires_at,
                statement_issued_at: Some(verified.file.statement.issued_at),
                ceiling: verified.ceiling,
                signers: verified.signers,
                digest: verified.component_sha256,
                bytes,
            }
        }
        (None, TrustMode::RequireSigned) => {
            return Err(LoadError::Unsigned {
                provider: provider.to_owned(),
                path: spath.to_owned(),
            });
        }
        (None, TrustMode::DangerousAllowUnsigned) => {
            if let Some(org) = trust.store.org.as_ref().filter(|o| !o.allow_unsigned) {
                return Err(LoadError::UnsignedForbidden {
                    provider: provider.to_owned(),
                    organisation: org.label(),
                });
            }
            let mpath = manifest_path(path);
            let text = read_file(&mpath, MAX_MANIFEST_BYTES, writers)
                .map_err(file_err)
                .and_then(|b| {
                    String::from_utf8(b).map_err(|_| LoadError::Manifest {
                        provider: provider.to_owned(),
                        path: mpath.clone(),
                        message: "not UTF-8".into(),
                    })
                })?;
            let manifest = Manifest::from_toml(&text).map_err(|e| LoadError::Manifest {
                provider: provider.to_owned(),
                path: mpath,
                message: e.to_string(),
            })?;
            let digest: [u8; 32] =
                sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes)).into();
            // Unsigned code the organisation allows is still held to its list of providers,
            // by the name, version and bytes it declares (it has no statement to date).
            if let Some(org) = &trust.store.org {
                let now = now_unix();
                org.admits(&manifest.name, &manifest.version, &hex::encode(digest), Some(now), now)
                    .map_err(|reason| LoadError::Untrusted {
                        provider: provider.to_owned(),
                        refusal: Refusal::Organisation {
                            organisation: org.label(),
                            reason,
                        },
                    })?;
            }
            tracing::warn!(
                "provider {provider} runs UNSIGNED ({} has no statement; --allow-unsigned)",
                path.display()
            );
            Vetted {
                bytes,
                ceiling: manifest,
                signers: Vec::new(),
                digest,
                statement_digest: None,
                statement_bytes: None,
                publisher_key_id: None,
                statement_expires_at: None,
                statement_issued_at: None,
                info: ComponentInfo::default(),
            }
        }
    };
    let info = read_component_info(&vetted.bytes).map_err(|message| LoadError::NotAComponent {
        provider: provider.to_owned(),
        message,
    })?;
    if let Some(forbidden) = info.imports.iter().find(|i| !is_allowed_import(i)) {
        return Err(LoadError::Imports {
            provider: provider.to_owned(),
            source: ImportError::Forbidden(forbidden.clone()),
        });
    }
    if !info.exports.iter().any(|e| is_provider_export(e)) {
        return Err(LoadError::Imports {
            provider: provider.to_owned(),
            source: ImportError::MissingExport,
        });
    }
    check_world(&vetted.ceiling.world, info.imports.iter().chain(&info.exports)).map_err(|source| {
        LoadError::Imports {
            provider: provider.to_owned(),
            source,
        }
    })?;
    Ok(Vetted { info, ..vetted })
}

impl Loader<'_> {
    /// The gate's last steps for vetted bytes: compile (or map the cached compilation bound
    /// to their digest), type-check the imports again, and only then, every check passed,
    /// raise the rollback floor to this release.
    pub fn admit(&self, provider: &str, vetted: &Vetted) -> Result<(Component, CacheOutcome), LoadError> {
        self.admit_with(provider, vetted, FloorWrite::Warn)
    }

    /// [`Loader::admit`], with `FloorWrite::Required` refusing a release whose floor
    /// cannot be written (`credence install`: installing it must leave the floor behind).
    pub fn admit_with(
        &self,
        provider: &str,
        vetted: &Vetted,
        floor_write: FloorWrite,
    ) -> Result<(Component, CacheOutcome), LoadError> {
        let (component, cache) = self
            .cache
            .load_or_compile(self.engine, &vetted.digest, &vetted.bytes)
            .map_err(|e| LoadError::Compile {
                provider: provider.to_owned(),
                message: e.to_string(),
            })?;
        check_component_type(self.engine, &component).map_err(|source| LoadError::Imports {
            provider: provider.to_owned(),
            source,
        })?;
        if vetted.statement_digest.is_some()
            && let Err(e) = self
                .trust
                .sequences
                .record(&vetted.ceiling.name, vetted.ceiling.sequence)
        {
            match floor_write {
                FloorWrite::Warn => tracing::warn!(
                    "cannot record the rollback floor of {}: {e}; older releases stay refused in this process only",
                    vetted.ceiling.name
                ),
                FloorWrite::Required => {
                    return Err(LoadError::Floor {
                        provider: provider.to_owned(),
                        message: e,
                    });
                }
            }
        }
        Ok((component, cache))
    }

    pub fn load(&self, config: &ProviderConfig) -> Result<LoadedProvider, LoadError> {
        let provider = config.name.clone();
        let path = self.providers_dir.join(&config.component);
        let started = std::time::Instant::now();
        // Stamped before reading: a change while it is read then shows as a change later.
        let component_file = FileStamp::of(&path);
        let statement_file = FileStamp::of(&statement_path(&path));
        let vetted = vet(&provider, &path, &statement_path(&path), self.trust, Writers::UserOnly)?;
        check_pins(config, &vetted)?;
        let vetted_in = started.elapsed();
        let (component, cache) = self.admit(&provider, &vetted)?;
        tracing::debug!(
            provider = %provider,
            verify_us = vetted_in.as_micros() as u64,
            load_us = (started.elapsed() - vetted_in).as_micros() as u64,
            "provider passed the loading gate"
        );

        let ceiling = vetted.ceiling;
        let origins = config
            .granted_origins
            .iter()
            .filter(|o| ceiling.allows(o))
            .cloned()
            .collect();
        let limits = ProviderLimits::from_config(ceiling.limits.min(config.limits));
        Ok(LoadedProvider {
            instance: provider,
            prompts: ceiling.prompts.clone(),
            ceiling,
            signers: vetted.signers,
            digest: vetted.digest,
            statement_digest: vetted.statement_digest,
            publisher_key_id: vetted.publisher_key_id,
            statement_expires_at: vetted.statement_expires_at,
            statement_issued_at: vetted.statement_issued_at,
            component_file,
            statement_file,
            size: vetted.bytes.len() as u64,
            component,
            cache,
            origins,
            limits,
        })
    }
}

/// The config names the provider an instance runs (and optionally its publisher): its
/// settings are meant for that code only.
pub fn check_pins(config: &ProviderConfig, vetted: &Vetted) -> Result<(), LoadError> {
    if vetted.ceiling.name != config.provider {
        return Err(LoadError::WrongProvider {
            instance: config.name.clone(),
            component: config.component.clone(),
            expected: config.provider.clone(),
            found: vetted.ceiling.name.clone(),
        });
    }
    if let Some(expected) = &config.publisher
        && vetted.publisher_key_id.as_ref() != Some(expected)
    {
        return Err(LoadError::WrongPublisher {
            instance: config.name.clone(),
            component: config.component.clone(),
            expected: expected.clone(),
            found: vetted.publisher_key_id.iter().cloned().collect(),
        });
    }
    Ok(())
}
