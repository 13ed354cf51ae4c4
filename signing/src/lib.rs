//! What a credence provider is allowed to be and do, and who vouches for it: origins, the
//! provider manifest (its capability ceiling), ed25519 keys, signed statements, the trust
//! store and its policy. No wasmtime here: untrusted bytes are judged before any compiler
//! sees them, and a reviewer's tool can depend on this crate alone.

pub mod bundle;
pub mod keys;
pub mod manifest;
pub mod origin;
pub mod rotation;
pub mod statement;
pub mod trust;
pub mod upgrade;
pub mod verify;

pub use bundle::{Bundle, BundleFile, BundleRefusal, VerifiedBundle, verify_bundle};
pub use keys::{KeyId, PublicKey, SecretKey};
pub use manifest::{Limits, Manifest, ManifestError, PromptKind};
pub use origin::{Origin, OriginError, OriginPattern};
pub use rotation::Rotation;
pub use statement::{Statement, StatementFile};
pub use trust::{OrgPolicy, Policy, Role, TrustStore, TrustedKey};
pub use verify::{Refusal, Verified, verify};

/// A parser's message about untrusted bytes (serde quotes unknown field names and values
/// raw), made inert for a terminal: control, bidi and invisible characters escaped.
pub(crate) fn inert(message: impl std::fmt::Display) -> String {
    message.to_string().escape_debug().to_string()
}
