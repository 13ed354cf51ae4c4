//! Signs in with an OpenID Connect / OAuth 2.0 authorization code and PKCE (RFC 7636): the
//! host binds a loopback redirect, opens the browser and checks the callback; this provider
//! only names the endpoints and exchanges the code. Answers with the access token and its
//! expiry; the refresh token lives only in the state the host keeps for this instance.
//!
//! Settings: `client-id`, `authorization-endpoint`, `token-endpoint` (required), `scope`
//! (default "openid offline_access"), `redirect-path` (default "/callback"), `issuer`
//! (optional, RFC 9207 check of the callback), `username` (default "oauth2").

use credence_provider::oauth::{Client, SignIn};
use credence_provider::{Credential, Host, Provider, Request, Result};

struct OAuthPkce;

impl Provider for OAuthPkce {
    fn get_credential(req: &Request, host: &mut dyn Host) -> Result<Credential> {
        let client = Client {
            token_endpoint: req.setting("token-endpoint")?,
            client_id: req.setting("client-id")?,
            client_secret: None,
            scope: Some(req.setting_or("scope", "openid offline_access")),
        };
        let sign_in = SignIn::AuthorizationCode {
            authorization_endpoint: req.setting("authorization-endpoint")?,
            redirect_path: req.setting_or("redirect-path", "/callback"),
            expected_issuer: req.optional_setting("issuer"),
            params: Vec::new(),
        };
        client.credential(host, req, &sign_in, req.setting_or("username", "oauth2"))
    }
}

credence_provider::provider!(OAuthPkce);
