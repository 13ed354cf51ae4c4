//! Write a [credence](../README.md) credential provider in safe Rust.
//!
//! A provider is a WebAssembly component (`wasm32-wasip2`) that answers one question: the
//! credential for a URL. This crate gives it the bindings of `credence:provider@0.2.0`
//! behind one trait and one macro, typed settings, errors that map to the host's answers,
//! HTTP helpers, the OAuth 2.0 flows (device code, authorization code with PKCE, refresh
//! with rotation), and a [`mock::MockHost`] so the logic runs in native `cargo test`.
//!
//! ```ignore
//! use credence_provider::{Credential, Host, Provider, Request, Result};
//!
//! struct StaticToken;
//!
//! impl Provider for StaticToken {
//!     fn get_credential(req: &Request, _host: &mut dyn Host) -> Result<Credential> {
//!         Ok(Credential::token(req.setting("token")?))
//!     }
//! }
//!
//! credence_provider::provider!(StaticToken);
//! ```

// The generated code names this crate by its path, from inside it too.
extern crate self as credence_provider;

pub mod bindings;
mod credential;
mod error;
mod host;
pub mod http;
pub mod mock;
pub mod oauth;
mod request;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub use bindings::credence::provider::flow::{
    AuthorizationRequest, AuthorizationResponse, AuthorizeError, DeviceCode, RedirectHost,
};
pub use bindings::credence::provider::http::{FetchError, Request as HttpRequest, Response as HttpResponse};
pub use bindings::credence::provider::prompt::PromptError;
pub use bindings::credence::provider::workload_identity::IdTokenError;
pub use bindings::exports::credence::provider::credential_provider::{CachePolicy, Protocol, RequestReason, Requester};
pub use credential::Credential;
pub use error::{Error, Result};
pub use host::{Host, WasmHost};
pub use request::Request;

/// What a provider implements: the credential for one request, using the host's
/// capabilities through `host` (the real one in WebAssembly, [`mock::MockHost`] in tests).
pub trait Provider {
    fn get_credential(req: &Request, host: &mut dyn Host) -> Result<Credential>;
}

/// Exports `$provider` (a type implementing [`Provider`]) as the component's
/// `credential-provider`. Use once, at the crate root.
#[macro_export]
macro_rules! provider {
    ($provider:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Export;
            impl $crate::bindings::exports::credence::provider::credential_provider::Guest for Export {
                fn get_credential(
                    req: $crate::bindings::exports::credence::provider::credential_provider::CredentialRequest,
                ) -> ::core::result::Result<
                    $crate::bindings::exports::credence::provider::credential_provider::Credential,
                    $crate::bindings::exports::credence::provider::credential_provider::CredentialError,
                > {
                    $crate::__answer::<$provider>(req)
                }
            }
    $crate::bindings::export_bindings!(Export with_types_in $crate::bindings);
        };
    };
}

#[doc(hidden)]
pub fn __answer<P: Provider>(
    req: bindings::exports::credence::provider::credential_provider::CredentialRequest,
) -> std::result::Result<
    bindings::exports::credence::provider::credential_provider::Credential,
    bindings::exports::credence::provider::credential_provider::CredentialError,
> {
    let req = Request::from(req);
    P::get_credential(&req, &mut WasmHost)
        .map(Credential::into_wit)
        .map_err(Error::into_wit)
}
