//! The single gate every provider passes through before it can run: read the component,
//! establish trust (its signed statement against the user's trust store and policy), check
//! its imports from its bytes, and only then compile (from the cache when possible).
//! Nothing else in credence compiles or instantiates a component, and no byte that failed
//! verification ever reaches the compiler.

use crate::compile_cache::{CacheOutcome, CompileCache};
use crate::component_info::read_component_info;
use crate::config::ProviderConfig;
use crate::sandbox::imports::is_allowed_import;
use crate::sandbox::limits::ProviderLimits;
use crate::sandbox::{ImportError, check_component_type};
use crate::sequence_store::SequenceStore;
use crate::state_store::now_unix;
use credence_signing::verify::{Input, Signer};
use credence_signing::{Manifest, Origin, PromptKind, Refusal, TrustStore, verify};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Components larger than this are refused before hashing or compiling.
pub const MAX_COMPONENT_BYTES: u64 = 32 << 20;

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
    pub store: TrustStore,
    pub sequences: SequenceStore,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("provider {provider}: cannot read {path}: {source}")]
    Read {
        provider: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("provider {provider}: {path} is {size} bytes; components are limited to {MAX_COMPONENT_BYTES} bytes")]
    TooLarge { provider: String, path: PathBuf, size: u64 },
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
    #[error("provider {provider} is refused: {refusal}{}", hint(.refusal))]
    Untrusted { provider: String, refusal: Refusal },
    #[error("provider {provider} is refused: {source}")]
    Imports { provider: String, source: ImportError },
    #[error("provider {provider} is refused: {message}")]
    NotAComponent { provider: String, message: String },
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

/// The outcome of the trust step, before anything is compiled.
pub struct Vetted {
    pub bytes: Vec<u8>,
    pub ceiling: Manifest,
    pub signers: Vec<Signer>,
    pub digest: [u8; 32],
}

/// Reads and verifies a component against its statement; checks its imports from the
/// bytes. Compiles nothing.
pub fn vet(provider: &str, path: &Path, trust: &Trust) -> Result<Vetted, LoadError> {
    let bytes = read_bounded(provider, path)?;
    let (ceiling, signers, digest) = match trust.mode {
        TrustMode::RequireSigned => {
            let spath = statement_path(path);
            let statement = match std::fs::read(&spath) {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(LoadError::Unsigned {
                        provider: provider.to_owned(),
                        path: spath,
                    });
                }
                Err(source) => {
                    return Err(LoadError::Read {
                        provider: provider.to_owned(),
                        path: spath,
                        source,
                    });
                }
            };
            // The sequence floor is per provider name, which only the statement tells; read
            // it leniently here, the verifier checks everything strictly.
            let name = credence_signing::StatementFile::parse(&statement)
                .map(|f| f.statement.provider.name)
                .unwrap_or_default();
            let verified = verify(Input {
                component: &bytes,
                statement: &statement,
                trust: &trust.store,
                highest_sequence: trust.sequences.highest(&name),
                now: now_unix(),
            })
            .map_err(|refusal| LoadError::Untrusted {
                provider: provider.to_owned(),
                refusal,
            })?;
            if let Some(warning) = &verified.expired_warning {
                tracing::warn!(
                    provider,
                    "{warning}; running it because the policy says expired = \"warn\""
                );
            }
            if let Err(e) = trust
                .sequences
                .record(&verified.ceiling.name, verified.ceiling.sequence)
            {
                tracing::warn!("cannot record the provider's sequence number: {e}");
            }
            (verified.ceiling, verified.signers, verified.component_sha256)
        }
        TrustMode::DangerousAllowUnsigned => {
            tracing::debug!(provider, "loading an unsigned provider (--allow-unsigned)");
            let mpath = manifest_path(path);
            let text = std::fs::read_to_string(&mpath).map_err(|source| LoadError::Read {
                provider: provider.to_owned(),
                path: mpath.clone(),
                source,
            })?;
            let manifest = Manifest::from_toml(&text).map_err(|e| LoadError::Manifest {
                provider: provider.to_owned(),
                path: mpath,
                message: e.to_string(),
            })?;
            let digest: [u8; 32] =
                sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes)).into();
            (manifest, Vec::new(), digest)
        }
    };
    let info = read_component_info(&bytes).map_err(|message| LoadError::NotAComponent {
        provider: provider.to_owned(),
        message,
    })?;
    if let Some(forbidden) = info.imports.iter().find(|i| !is_allowed_import(i)) {
        return Err(LoadError::Imports {
            provider: provider.to_owned(),
            source: ImportError::Forbidden(forbidden.clone()),
        });
    }
    Ok(Vetted {
        bytes,
        ceiling,
        signers,
        digest,
    })
}

impl Loader<'_> {
    pub fn load(&self, config: &ProviderConfig) -> Result<LoadedProvider, LoadError> {
        let provider = config.name.clone();
        let path = self.providers_dir.join(&config.component);
        let started = std::time::Instant::now();
        let vetted = vet(&provider, &path, self.trust)?;
        let vetted_in = started.elapsed();

        // Only verified bytes reach the compiler; the cache entry is named by their digest.
        let (component, cache) = self
            .cache
            .load_or_compile(self.engine, &vetted.digest, &vetted.bytes)
            .map_err(|e| LoadError::Compile {
                provider: provider.clone(),
                message: e.to_string(),
            })?;
        check_component_type(self.engine, &component).map_err(|source| LoadError::Imports {
            provider: provider.clone(),
            source,
        })?;
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
            size: vetted.bytes.len() as u64,
            component,
            cache,
            origins,
            limits,
        })
    }
}

fn read_bounded(provider: &str, path: &Path) -> Result<Vec<u8>, LoadError> {
    let read_err = |source| LoadError::Read {
        provider: provider.to_owned(),
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_err)?.len();
    if size > MAX_COMPONENT_BYTES {
        return Err(LoadError::TooLarge {
            provider: provider.to_owned(),
            path: path.to_owned(),
            size,
        });
    }
    std::fs::read(path).map_err(read_err)
}
