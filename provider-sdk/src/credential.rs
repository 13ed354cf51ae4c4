//! The answer a provider gives, built in a line or two.

use crate::CachePolicy;
use crate::bindings::exports::credence::provider::credential_provider::Credential as WitCredential;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub username: Option<String>,
    pub secret: String,
    /// Ready-made HTTP headers, e.g. `Authorization: Bearer ...`.
    pub headers: Vec<(String, String)>,
    /// Unix seconds.
    pub expires_at: Option<u64>,
    pub cache: CachePolicy,
    /// Replaces the stored state when present (e.g. a rotated refresh token).
    pub new_state: Option<Vec<u8>>,
    pub scope: Option<String>,
    pub operation_independent: bool,
    pub refresh_at: Option<u64>,
}

impl Credential {
    /// A secret alone (the tool's default user name applies), kept for the host's session.
    pub fn token(secret: &str) -> Self {
        Credential {
            username: None,
            secret: secret.to_owned(),
            headers: Vec::new(),
            expires_at: None,
            cache: CachePolicy::Session,
            new_state: None,
            scope: None,
            operation_independent: false,
            refresh_at: None,
        }
    }

    /// A user name and password (or token).
    pub fn password(username: &str, secret: &str) -> Self {
        Credential::token(secret).with_username(Some(username))
    }

    /// A bearer token: the secret, and the `Authorization` header tools that take headers use.
    pub fn bearer(token: &str) -> Self {
        let mut c = Credential::token(token);
        c.headers.push(("Authorization".into(), format!("Bearer {token}")));
        c
    }

    pub fn with_username(mut self, username: Option<&str>) -> Self {
        self.username = username.map(str::to_owned);
        self
    }

    /// Valid until `expires_at` (Unix seconds): the host keeps it across runs until then.
    pub fn expiring(mut self, expires_at: Option<u64>) -> Self {
        self.expires_at = expires_at;
        if expires_at.is_some() {
            self.cache = CachePolicy::UntilExpiry;
        }
        self
    }

    pub fn with_state(mut self, state: Vec<u8>) -> Self {
        self.new_state = Some(state);
        self
    }

    pub fn cache(mut self, cache: CachePolicy) -> Self {
        self.cache = cache;
        self
    }

    pub(crate) fn into_wit(self) -> WitCredential {
        WitCredential {
            username: self.username,
            secret: self.secret,
            headers: self.headers,
            expires_at: self.expires_at,
            cache: self.cache,
            new_state: self.new_state,
            scope: self.scope,
            operation_independent: self.operation_independent,
            refresh_at: self.refresh_at,
        }
    }
}
