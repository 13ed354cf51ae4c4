//! The single gate every provider passes through before it can run: read the component
//! and its manifest, establish trust, and only then compile (from the cache when possible)
//! and check its imports. Nothing else in credence compiles or instantiates a component.

use crate::compile_cache::{CacheOutcome, CompileCache};
use crate::config::ProviderConfig;
use crate::sandbox::limits::ProviderLimits;
use crate::sandbox::{ImportError, check_component_type};
use credence_signing::{Manifest, Origin, PromptKind};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Components larger than this are refused before hashing or compiling.
pub const MAX_COMPONENT_BYTES: u64 = 32 << 20;

/// How trust is established. Signature verification plugs in here; until then, unsigned
/// providers load only when the user explicitly asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrustMode {
    RequireSigned,
    /// `--allow-unsigned`: for developing providers only.
    DangerousAllowUnsigned,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("provider {provider}: cannot read {path}: {source}")]
    Read {
        provider: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "provider {provider}: {path} is {size} bytes; components are limited to {MAX_COMPONENT_BYTES} bytes"
    )]
    TooLarge {
        provider: String,
        path: PathBuf,
        size: u64,
    },
    #[error("provider {provider}: manifest {path}: {message}")]
    Manifest {
        provider: String,
        path: PathBuf,
        message: String,
    },
    #[error(
        "provider {provider} is not signed, and credence runs only signed providers\n  hint: while developing a provider, run with `--allow-unsigned`"
    )]
    Unsigned { provider: String },
    #[error("provider {provider} is refused: {source}")]
    Imports {
        provider: String,
        source: ImportError,
    },
    #[error("provider {provider}: the component does not compile: {message}")]
    Compile { provider: String, message: String },
}

/// A provider that passed the gate, with its effective capabilities: what its manifest
/// declares intersected with what the user grants.
pub struct LoadedProvider {
    pub instance: String,
    pub manifest: Manifest,
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
    pub trust: TrustMode,
}

pub fn manifest_path(component: &Path) -> PathBuf {
    component.with_extension("manifest.toml")
}

impl Loader<'_> {
    pub fn load(&self, config: &ProviderConfig) -> Result<LoadedProvider, LoadError> {
        let provider = config.name.clone();
        let path = self.providers_dir.join(&config.component);
        let (bytes, manifest) = read_provider(&provider, &path)?;

        match self.trust {
            TrustMode::RequireSigned => return Err(LoadError::Unsigned { provider }),
            TrustMode::DangerousAllowUnsigned => {
                tracing::debug!(provider = %provider, "loading an unsigned provider (--allow-unsigned)");
            }
        }

        // Only bytes that passed the trust check above reach the compiler.
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let (component, cache) = self
            .cache
            .load_or_compile(self.engine, &digest, &bytes)
            .map_err(|e| LoadError::Compile {
                provider: provider.clone(),
                message: e.to_string(),
            })?;
        check_component_type(self.engine, &component).map_err(|source| LoadError::Imports {
            provider: provider.clone(),
            source,
        })?;

        let origins = manifest
            .origins
            .intersection(&config.granted_origins)
            .cloned()
            .collect();
        let limits = ProviderLimits::from_config(manifest.limits.min(config.limits));
        Ok(LoadedProvider {
            instance: provider,
            prompts: manifest.prompts.clone(),
            manifest,
            digest,
            size: bytes.len() as u64,
            component,
            cache,
            origins,
            limits,
        })
    }
}

/// Reads a component (bounded) and the manifest beside it.
pub fn read_provider(provider: &str, path: &Path) -> Result<(Vec<u8>, Manifest), LoadError> {
    let read_err = |path: &Path, source| LoadError::Read {
        provider: provider.to_owned(),
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| read_err(path, e))?
        .len();
    if size > MAX_COMPONENT_BYTES {
        return Err(LoadError::TooLarge {
            provider: provider.to_owned(),
            path: path.to_owned(),
            size,
        });
    }
    let bytes = std::fs::read(path).map_err(|e| read_err(path, e))?;
    let mpath = manifest_path(path);
    let text = std::fs::read_to_string(&mpath).map_err(|e| read_err(&mpath, e))?;
    let manifest = Manifest::from_toml(&text).map_err(|e| LoadError::Manifest {
        provider: provider.to_owned(),
        path: mpath.clone(),
        message: e.to_string(),
    })?;
    Ok((bytes, manifest))
}
