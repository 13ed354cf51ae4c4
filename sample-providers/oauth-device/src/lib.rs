//! Signs in with the OAuth 2.0 device authorization grant (RFC 8628), GitHub-style: the
//! user enters a short code at a page on any device. Answers with the access token and its
//! expiry; the refresh token lives only in the state the host keeps for this instance, and
//! a later request refreshes (and rotates) it without a prompt.
//!
//! Settings: `client-id` (required), `device-endpoint`, `token-endpoint` (GitHub's by
//! default), `scope` (optional), `username` (default "oauth2").

use credence_provider::oauth::{Client, SignIn};
use credence_provider::{Credential, Host, Provider, Request, Result};

struct OAuthDevice;

impl Provider for OAuthDevice {
    fn get_credential(req: &Request, host: &mut dyn Host) -> Result<Credential> {
        let client = Client {
            token_endpoint: req.setting_or("token-endpoint", "https://github.com/login/oauth/access_token"),
            client_id: req.setting("client-id")?,
            client_secret: None,
            scope: req.optional_setting("scope"),
        };
        let sign_in = SignIn::Device {
            device_endpoint: req.setting_or("device-endpoint", "https://github.com/login/device/code"),
        };
        client.credential(host, req, &sign_in, req.setting_or("username", "oauth2"))
    }
}

credence_provider::provider!(OAuthDevice);
