//! The CI job's identity for a provider (`workload-identity.id-token`): an OIDC token the
//! host fetches from the job's own source, for an audience the user's config grants the
//! instance, which the provider may then send only to its granted origins (e.g. a
//! registry's trusted-publishing exchange). The provider never sees the environment the
//! source lives in; the host never caches or logs the token.
//!
//! GitHub Actions: a job with `permissions: id-token: write` has
//! `ACTIONS_ID_TOKEN_REQUEST_URL` and `ACTIONS_ID_TOKEN_REQUEST_TOKEN`; a GET of the URL with
//! `&audience=` and the request token as bearer returns `{"value": "<JWT>"}`. A request made
//! with those variables set is answered in-process (never by an agent started in another
//! step or job), so the source is always the requesting step's own.

use crate::config::{IdTokenGrant, IdTokenSource};
use base64::Engine as _;
use std::time::Duration;

pub const GITHUB_URL_VAR: &str = "ACTIONS_ID_TOKEN_REQUEST_URL";
pub const GITHUB_TOKEN_VAR: &str = "ACTIONS_ID_TOKEN_REQUEST_TOKEN";
/// An identity token is a few KiB; anything larger is not one.
const MAX_TOKEN_RESPONSE: usize = 64 << 10;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("{0}")]
    NotAvailable(String),
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Failed(String),
}

/// The identity one provider instance may ask for in one call.
pub struct IdTokenCapability {
    /// The signed ceiling declares `id-token = true`.
    declared: bool,
    grants: Vec<IdTokenGrant>,
    /// The request came from a remote session: never.
    remote: bool,
}

impl IdTokenCapability {
    pub fn new(declared: bool, grants: Vec<IdTokenGrant>, remote: bool) -> Self {
        IdTokenCapability {
            declared,
            grants,
            remote,
        }
    }

    /// The grant that lets the provider have a token for `audience`.
    fn grant(&self, audience: &str) -> Result<&IdTokenGrant, IdTokenError> {
        if !self.declared {
            return Err(IdTokenError::Denied(
                "this provider did not declare `id-token = true` in its signed manifest".into(),
            ));
        }
        if self.remote {
            return Err(IdTokenError::Denied(
                "the CI identity is never handed out for a remote session".into(),
            ));
        }
        self.grants.iter().find(|g| g.audience == audience).ok_or_else(|| {
            IdTokenError::Denied(format!(
                "the audience {:?} is not granted to this instance: add `grant-id-token = [{{ source = \"github-actions\", audience = {:?} }}]` to its [[provider]] entry in config.toml",
                crate::capability::prompt::neutralise_within(audience, 256),
                crate::capability::prompt::neutralise_within(audience, 256),
            ))
        })
    }

    pub fn id_token(&self, audience: &str, time_left: Duration) -> Result<String, IdTokenError> {
        let grant = self.grant(audience)?;
        let token = match grant.source {
            IdTokenSource::GithubActions => github_actions(audience, time_left)?,
        };
        if !audience_is(&token, audience) {
            return Err(IdTokenError::Failed(
                "the identity source answered with a token for another audience".into(),
            ));
        }
        Ok(token)
    }
}

fn github_actions(audience: &str, time_left: Duration) -> Result<String, IdTokenError> {
    let (Some(url), Some(bearer)) = (std::env::var_os(GITHUB_URL_VAR), std::env::var_os(GITHUB_TOKEN_VAR)) else {
        return Err(IdTokenError::NotAvailable(format!(
            "no GitHub Actions identity here: {GITHUB_URL_VAR} and {GITHUB_TOKEN_VAR} are set only in a job with `permissions: id-token: write`"
        )));
    };
    let (url, bearer) = (
        url.to_string_lossy().into_owned(),
        bearer.to_string_lossy().into_owned(),
    );
    let mut url =
        url::Url::parse(&url).map_err(|e| IdTokenError::Failed(format!("{GITHUB_URL_VAR} is not a URL: {e}")))?;
    url.query_pairs_mut().append_pair("audience", audience);
    let timeout = time_left.min(Duration::from_secs(30));
    let fetch = async move {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .use_rustls_tls()
            .user_agent(concat!("credence/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        let mut response = client
            .get(url)
            .header("Authorization", format!("bearer {bearer}"))
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("cannot reach the identity source: {}", e.without_url()))?;
        if !response.status().is_success() {
            return Err(format!(
                "the identity source answered HTTP {}",
                response.status().as_u16()
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.without_url().to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_TOKEN_RESPONSE {
                return Err("the identity source's answer is too large".into());
            }
        }
        Ok(body)
    };
    let body = crate::capability::io_runtime()
        .block_on(fetch)
        .map_err(IdTokenError::Failed)?;
    #[derive(serde::Deserialize)]
    struct Answer {
        value: String,
    }
    let answer: Answer = serde_json::from_slice(&body)
        .map_err(|_| IdTokenError::Failed("the identity source's answer has no token".into()))?;
    Ok(answer.value)
}

/// Whether the (unverified) JWT's `aud` is `audience`, as a string or in a list. The
/// provider's exchange verifies the signature; this stops handing out a token minted for
/// someone else.
fn audience_is(jwt: &str, audience: &str) -> bool {
    let Some(payload) = jwt.split('.').nth(1) else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')) else {
        return false;
    };
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return false;
    };
    match &claims["aud"] {
        serde_json::Value::String(a) => a == audience,
        serde_json::Value::Array(list) => list.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", e(r#"{"alg":"RS256"}"#), e(claims))
    }

    #[test]
    fn the_token_must_be_for_the_granted_audience() {
        assert!(audience_is(&jwt(r#"{"aud":"crates.io"}"#), "crates.io"));
        assert!(audience_is(&jwt(r#"{"aud":["x","crates.io"]}"#), "crates.io"));
        assert!(!audience_is(&jwt(r#"{"aud":"evil.example"}"#), "crates.io"));
        assert!(!audience_is("not-a-jwt", "crates.io"));
    }

    #[test]
    fn undeclared_ungranted_and_remote_are_refused_before_any_source_is_asked() {
        let grant = IdTokenGrant {
            source: IdTokenSource::GithubActions,
            audience: "crates.io".into(),
        };
        let t = Duration::from_secs(1);
        let undeclared = IdTokenCapability::new(false, vec![grant.clone()], false);
        assert!(matches!(
            undeclared.id_token("crates.io", t),
            Err(IdTokenError::Denied(_))
        ));
        let remote = IdTokenCapability::new(true, vec![grant.clone()], true);
        assert!(matches!(remote.id_token("crates.io", t), Err(IdTokenError::Denied(_))));
        let other = IdTokenCapability::new(true, vec![grant], false);
        assert!(
            matches!(other.id_token("evil.example", t), Err(IdTokenError::Denied(m)) if m.contains("grant-id-token"))
        );
    }
}
