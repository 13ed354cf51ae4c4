//! Answers from its settings: `token` (required), `username` (optional),
//! `header` (optional; `bearer` adds `Authorization: Bearer <token>`).
//! Useful for a fixed registry token kept out of the tool's own config files.

use credence_provider::{Credential, Error, Host, Provider, Request, Result};

struct StaticToken;

impl Provider for StaticToken {
    fn get_credential(req: &Request, _host: &mut dyn Host) -> Result<Credential> {
        let token = req.setting("token")?;
        // A retry means the server refused this very token: answering it again would loop.
        if req.is_retry {
            return Err(Error::denied("the server refused the configured token; update the `token` setting"));
        }
        let credential = match req.optional_setting("header") {
            Some("bearer") => Credential::bearer(token),
            _ => Credential::token(token),
        };
        Ok(credential.with_username(req.optional_setting("username")))
    }
}

credence_provider::provider!(StaticToken);
