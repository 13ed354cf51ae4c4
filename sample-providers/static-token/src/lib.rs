//! Answers from its settings: `token` (required), `username` (optional),
//! `header` (optional; `bearer` adds `Authorization: Bearer <token>`).
//! Useful for a fixed registry token kept out of the tool's own config files.

wit_bindgen::generate!({ path: "../../wit/v0.1", world: "provider" });

use exports::credence::provider::credential_provider::{
    CachePolicy, Credential, CredentialError, CredentialRequest, Guest,
};

struct StaticToken;

fn setting<'a>(req: &'a CredentialRequest, key: &str) -> Option<&'a str> {
    req.settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

impl Guest for StaticToken {
    fn get_credential(req: CredentialRequest) -> Result<Credential, CredentialError> {
        let Some(token) = setting(&req, "token") else {
            return Err(CredentialError::Failed(
                "static-token needs a `token` setting: add `settings = { token = \"...\" }` to its [[provider]] entry in config.toml".into(),
            ));
        };
        // A retry means the server refused this very token: answering it again would loop.
        if req.is_retry {
            return Err(CredentialError::Denied(
                "the server refused the configured token; update the `token` setting".into(),
            ));
        }
        let headers = match setting(&req, "header") {
            Some("bearer") => vec![("Authorization".into(), format!("Bearer {token}"))],
            _ => Vec::new(),
        };
        Ok(Credential {
            username: setting(&req, "username").map(str::to_owned),
            secret: token.to_owned(),
            headers,
            expires_at: None,
            cache: CachePolicy::Session,
            new_state: None,
        })
    }
}

export!(StaticToken);
