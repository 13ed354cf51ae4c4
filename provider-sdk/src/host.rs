//! The host's capabilities as a trait: [`WasmHost`] calls the real imports; tests use
//! [`crate::mock::MockHost`]. Provider code takes `&mut dyn Host` and never knows which.

use crate::bindings::credence::provider::{flow, http, prompt, workload_identity};
use crate::{
    AuthorizationRequest, AuthorizationResponse, AuthorizeError, DeviceCode, FetchError, IdTokenError, PromptError,
};
use crate::{HttpRequest, HttpResponse};

pub trait Host {
    /// One HTTP request to an origin the provider declares and the user grants.
    fn fetch(&mut self, req: HttpRequest) -> Result<HttpResponse, FetchError>;
    /// Asks the user on the requesting terminal; `secret` hides the input.
    fn ask(&mut self, message: &str, secret: bool) -> Result<String, PromptError>;
    fn show(&mut self, message: &str) -> Result<(), PromptError>;
    /// Shows an RFC 8628 device code (manifest prompt kind `device-code`).
    fn show_device_code(&mut self, code: &DeviceCode) -> Result<(), PromptError>;
    /// The device code is no longer needed.
    fn dismiss(&mut self);
    /// Sleeps `ms` (at most 60 s per call) without spending CPU time.
    fn wait(&mut self, ms: u32) -> Result<(), PromptError>;
    /// An authorization code with PKCE through the host's loopback listener (manifest
    /// prompt kind `authorize`).
    fn authorize(&mut self, req: &AuthorizationRequest) -> Result<AuthorizationResponse, AuthorizeError>;
    /// The CI job's identity token for `audience` (manifest `id-token = true`, the audience
    /// granted to the instance in config). Send it only to the exchange that wants it.
    fn id_token(&mut self, audience: &str) -> Result<String, IdTokenError>;
    /// Unix seconds now.
    fn now(&self) -> u64;
}

/// The real host, through the component's imports.
pub struct WasmHost;

impl Host for WasmHost {
    fn fetch(&mut self, req: HttpRequest) -> Result<HttpResponse, FetchError> {
        http::fetch(&req)
    }

    fn ask(&mut self, message: &str, secret: bool) -> Result<String, PromptError> {
        let kind = if secret {
            prompt::InputKind::Secret
        } else {
            prompt::InputKind::Text
        };
        prompt::ask(message, kind)
    }

    fn show(&mut self, message: &str) -> Result<(), PromptError> {
        prompt::show(message)
    }

    fn show_device_code(&mut self, code: &DeviceCode) -> Result<(), PromptError> {
        flow::show_device_code(code)
    }

    fn dismiss(&mut self) {
        flow::dismiss()
    }

    fn wait(&mut self, ms: u32) -> Result<(), PromptError> {
        flow::wait(ms)
    }

    fn authorize(&mut self, req: &AuthorizationRequest) -> Result<AuthorizationResponse, AuthorizeError> {
        flow::authorize(req)
    }

    fn id_token(&mut self, audience: &str) -> Result<String, IdTokenError> {
        workload_identity::id_token(audience)
    }

    fn now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}
