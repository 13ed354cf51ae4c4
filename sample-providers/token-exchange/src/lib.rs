//! Exchanges long-lived client credentials for a short-lived bearer token, as the Azure
//! Artifacts provider trades a user token for a feed session token.
//!
//! Settings: `token-url` (required, must be an origin granted to this provider),
//! `client-id`, `client-secret` (required), `scope` (optional), `username` (optional,
//! returned with the token for tools that want Basic auth).
//!
//! The token endpoint answers OAuth 2.0 style JSON: `access_token`, optional `expires_in`
//! (seconds) and `refresh_token`. A refresh token is kept in the provider's opaque state,
//! which credence stores for it, and is tried first on the next call.

wit_bindgen::generate!({ path: "../../wit/v0.1", world: "provider" });

use credence::provider::http::{self, FetchError, Request};
use exports::credence::provider::credential_provider::{
    CachePolicy, Credential, CredentialError, CredentialRequest, Guest,
};
use std::time::{SystemTime, UNIX_EPOCH};

struct TokenExchange;

fn setting<'a>(req: &'a CredentialRequest, key: &str) -> Result<&'a str, CredentialError> {
    req.settings
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| CredentialError::Failed(format!("token-exchange needs a `{key}` setting")))
}

fn optional<'a>(req: &'a CredentialRequest, key: &str) -> Option<&'a str> {
    setting(req, key).ok()
}

/// `application/x-www-form-urlencoded` value encoding.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

enum Exchange {
    Token(Credential),
    Refused(String),
}

fn exchange(token_url: &str, form: &[(&str, &str)], req: &CredentialRequest) -> Result<Exchange, CredentialError> {
    let body = form
        .iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let response = http::fetch(&Request {
        method: "POST".into(),
        url: token_url.into(),
        headers: vec![
            ("Content-Type".into(), "application/x-www-form-urlencoded".into()),
            ("Accept".into(), "application/json".into()),
        ],
        body: body.into_bytes(),
    })
    .map_err(|e| {
        CredentialError::Failed(match e {
            FetchError::Denied(why) => format!("token endpoint not allowed: {why}"),
            FetchError::InvalidRequest(why) => format!("bad token request: {why}"),
            FetchError::Timeout => "the token endpoint timed out".into(),
            FetchError::TooLarge(why) => format!("token endpoint answer too large: {why}"),
            FetchError::Transport(why) => format!("cannot reach the token endpoint: {why}"),
        })
    })?;
    match response.status {
        200 => {}
        400 | 401 | 403 => {
            return Ok(Exchange::Refused(format!("the token endpoint refused the client credentials (HTTP {})", response.status)));
        }
        status => return Err(CredentialError::Failed(format!("the token endpoint answered HTTP {status}"))),
    }
    let json: serde_json::Value = serde_json::from_slice(&response.body)
        .map_err(|e| CredentialError::Failed(format!("the token endpoint answered invalid JSON: {e}")))?;
    let token = json["access_token"]
        .as_str()
        .ok_or_else(|| CredentialError::Failed("the token endpoint answer has no access_token".into()))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let expires_at = json["expires_in"].as_u64().map(|secs| now + secs);
    let new_state = json["refresh_token"].as_str().map(|r| r.as_bytes().to_vec());
    Ok(Exchange::Token(Credential {
        username: optional(req, "username").map(str::to_owned),
        secret: token.to_owned(),
        headers: vec![("Authorization".into(), format!("Bearer {token}"))],
        expires_at,
        cache: if expires_at.is_some() { CachePolicy::UntilExpiry } else { CachePolicy::Session },
        new_state,
    }))
}

impl Guest for TokenExchange {
    fn get_credential(req: CredentialRequest) -> Result<Credential, CredentialError> {
        let token_url = setting(&req, "token-url")?;
        let client_id = setting(&req, "client-id")?;
        let client_secret = setting(&req, "client-secret")?;
        let scope = optional(&req, "scope");

        // A stored refresh token saves a round of client authentication, but after a
        // refusal start over from the client credentials.
        let refresh = req.state.as_deref().and_then(|s| std::str::from_utf8(s).ok());
        if let (Some(refresh), false) = (refresh, req.is_retry) {
            let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", client_id)];
            if let Some(scope) = scope {
                form.push(("scope", scope));
            }
            if let Exchange::Token(credential) = exchange(token_url, &form, &req)? {
                return Ok(credential);
            }
        }

        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", client_secret),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        match exchange(token_url, &form, &req)? {
            Exchange::Token(credential) => Ok(credential),
            Exchange::Refused(why) => Err(CredentialError::Denied(why)),
        }
    }
}

export!(TokenExchange);
