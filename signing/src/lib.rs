//! What a credence provider is allowed to be and do, independent of how it runs:
//! origins, the provider manifest (its capability ceiling) and, later, signed statements
//! and the trust store. No wasmtime here: a reviewer's tool can depend on this alone.

pub mod manifest;
pub mod origin;

pub use manifest::{Limits, Manifest, ManifestError, PromptKind};
pub use origin::{Origin, OriginError};
