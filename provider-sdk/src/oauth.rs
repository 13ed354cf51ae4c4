//! OAuth 2.0 for providers: the device authorization grant (RFC 8628), the authorization
//! code grant with PKCE (RFC 6749 §4.1, RFC 7636) through the host's `authorize`, and
//! refresh with rotation (RFC 6749 §6), the refresh token kept only in the opaque state the
//! host stores for this provider instance.
//!
//! [`Client::credential`] is the whole flow: refresh when there is a refresh token, sign in
//! when there is none or the server no longer accepts it, answer with the access token and
//! its expiry, and keep the newest refresh token.

use crate::http::{json, post_form};
use crate::{AuthorizationRequest, Credential, DeviceCode, Error, Host, RedirectHost, Request, Result};
use serde::{Deserialize, Serialize};

/// RFC 8628 §3.4.
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// RFC 8628 §3.2: the interval when the server gives none.
const DEFAULT_INTERVAL_S: u64 = 5;
/// RFC 8628 §3.5: what `slow_down` adds to the interval.
const SLOW_DOWN_S: u64 = 5;

/// A successful token response (RFC 6749 §5.1).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Tokens {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

/// What the provider keeps between runs: only the refresh token.
#[derive(Serialize, Deserialize)]
struct Kept {
    refresh_token: String,
}

/// An error response (RFC 6749 §5.2, RFC 8628 §3.5).
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// A token endpoint's answer: tokens, or the `error` code and its description.
enum TokenAnswer {
    Tokens(Tokens),
    Error(String, Option<String>),
}

/// How the user signs in when there is no usable refresh token.
#[derive(Clone, Debug)]
pub enum SignIn<'a> {
    /// RFC 8628: a code the user enters at a page, on any device.
    Device { device_endpoint: &'a str },
    /// RFC 6749 §4.1 with PKCE: a browser on this machine and a loopback redirect.
    AuthorizationCode {
        authorization_endpoint: &'a str,
        /// The registered redirect URI's path, e.g. "/callback".
        redirect_path: &'a str,
        /// RFC 9207: the issuer a callback's `iss` must equal, when the server sends it.
        expected_issuer: Option<&'a str>,
        /// Other authorization request parameters (prompt, login_hint, audience, ...).
        params: Vec<(&'a str, &'a str)>,
    },
}

/// One OAuth client registration at one authorization server.
#[derive(Clone, Debug)]
pub struct Client<'a> {
    pub token_endpoint: &'a str,
    pub client_id: &'a str,
    /// Only for confidential clients; a public client (most CLIs) has none.
    pub client_secret: Option<&'a str>,
    pub scope: Option<&'a str>,
}

impl<'a> Client<'a> {
    /// The access token for `req` as a bearer credential for `username`: refreshed when a
    /// refresh token is kept, else (or when the server refuses it) through `sign_in`. The
    /// rotated refresh token replaces the kept one; the old one is never sent again.
    pub fn credential(
        &self,
        host: &mut dyn Host,
        req: &Request,
        sign_in: &SignIn<'_>,
        username: &str,
    ) -> Result<Credential> {
        // Expiry is counted from before the request, so it is never overestimated.
        let asked_at = host.now();
        let kept = req
            .state
            .as_deref()
            .and_then(|s| serde_json::from_slice::<Kept>(s).ok())
            .map(|k| k.refresh_token);
        let tokens = match &kept {
            Some(refresh_token) => match self.refresh(host, refresh_token)? {
                Some(tokens) => tokens,
                None => self.sign_in(host, req, sign_in)?,
            },
            None => self.sign_in(host, req, sign_in)?,
        };
        let mut credential = Credential::bearer(&tokens.access_token)
            .with_username(Some(username))
            .expiring(tokens.expires_in.map(|s| asked_at + s));
        if let Some(refresh_token) = tokens.refresh_token {
            credential = credential.with_state(serde_json::to_vec(&Kept { refresh_token }).expect("serialisable"));
        }
        Ok(credential)
    }

    /// Signs the user in; never starts when the tool cannot prompt, so a non-interactive
    /// request makes no request to the authorization server at all.
    pub fn sign_in(&self, host: &mut dyn Host, req: &Request, sign_in: &SignIn<'_>) -> Result<Tokens> {
        if !req.interactive {
            return Err(Error::needs_interaction(
                "signing in needs you: run the same command in a terminal, or `credence get <url>` once",
            ));
        }
        match sign_in {
            SignIn::Device { device_endpoint } => self.device(host, device_endpoint),
            SignIn::AuthorizationCode {
                authorization_endpoint,
                redirect_path,
                expected_issuer,
                params,
            } => self.authorization_code(host, authorization_endpoint, redirect_path, *expected_issuer, params),
        }
    }

    fn with_client<'b>(&'b self, mut pairs: Vec<(&'b str, &'b str)>) -> Vec<(&'b str, &'b str)> {
        pairs.push(("client_id", self.client_id));
        if let Some(secret) = self.client_secret {
            pairs.push(("client_secret", secret));
        }
        pairs
    }

    fn token_request(&self, host: &mut dyn Host, pairs: &[(&str, &str)]) -> Result<TokenAnswer> {
        let response = post_form(host, self.token_endpoint, pairs, &[])?;
        // GitHub answers device polling errors with 200; others with 400. The body decides.
        if let Ok(e) = serde_json::from_slice::<ErrorBody>(&response.body) {
            return Ok(TokenAnswer::Error(e.error, e.error_description));
        }
        if !(200..300).contains(&response.status) {
            return Err(Error::failed(format!(
                "the token endpoint answered HTTP {}",
                response.status
            )));
        }
        Ok(TokenAnswer::Tokens(json(&response)?))
    }

    /// RFC 6749 §6. `None`: the server no longer accepts the refresh token (sign in again).
    pub fn refresh(&self, host: &mut dyn Host, refresh_token: &str) -> Result<Option<Tokens>> {
        let mut pairs = vec![("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
        if let Some(scope) = self.scope {
            pairs.push(("scope", scope));
        }
        match self.token_request(host, &self.with_client(pairs))? {
            TokenAnswer::Tokens(tokens) => Ok(Some(tokens)),
            TokenAnswer::Error(code, _) if code == "invalid_grant" => Ok(None),
            TokenAnswer::Error(code, description) => Err(server_error("refreshing the token", &code, description)),
        }
    }

    /// RFC 8628 §3.1-3.5.
    fn device(&self, host: &mut dyn Host, device_endpoint: &str) -> Result<Tokens> {
        #[derive(Deserialize)]
        struct Authorization {
            device_code: String,
            user_code: String,
            verification_uri: String,
            #[serde(default)]
            verification_uri_complete: Option<String>,
            expires_in: u64,
            #[serde(default)]
            interval: Option<u64>,
        }
        let mut pairs = Vec::new();
        if let Some(scope) = self.scope {
            pairs.push(("scope", scope));
        }
        let response = post_form(host, device_endpoint, &self.with_client(pairs), &[])?;
        if !(200..300).contains(&response.status) {
            let detail = serde_json::from_slice::<ErrorBody>(&response.body)
                .map(|e| e.error)
                .unwrap_or_default();
            return Err(Error::failed(format!(
                "the device authorization endpoint answered HTTP {} {detail}",
                response.status
            )));
        }
        let auth: Authorization = json(&response)?;
        let deadline = host.now() + auth.expires_in;
        host.show_device_code(&DeviceCode {
            verification_uri: auth.verification_uri.clone(),
            verification_uri_complete: auth.verification_uri_complete.clone(),
            user_code: auth.user_code.clone(),
            expires_in_s: auth.expires_in.try_into().unwrap_or(u32::MAX),
        })?;
        let mut interval = auth.interval.unwrap_or(DEFAULT_INTERVAL_S).max(1);
        let outcome = loop {
            if host.now() + interval > deadline {
                break Err(expired());
            }
            if let Err(e) = sleep(host, interval) {
                break Err(e);
            }
            let pairs = self.with_client(vec![("grant_type", DEVICE_GRANT), ("device_code", &auth.device_code)]);
            match self.token_request(host, &pairs) {
                Ok(TokenAnswer::Tokens(tokens)) => break Ok(tokens),
                Ok(TokenAnswer::Error(code, description)) => match code.as_str() {
                    "authorization_pending" => {}
                    "slow_down" => interval += SLOW_DOWN_S,
                    "expired_token" => break Err(expired()),
                    "access_denied" => break Err(Error::denied("the sign-in was denied")),
                    _ => break Err(server_error("signing in", &code, description)),
                },
                Err(e) => break Err(e),
            }
        };
        host.dismiss();
        outcome
    }

    /// RFC 6749 §4.1.3 with the verifier of RFC 7636 §4.5; the host made the challenge and
    /// checked the callback.
    fn authorization_code(
        &self,
        host: &mut dyn Host,
        endpoint: &str,
        redirect_path: &str,
        expected_issuer: Option<&str>,
        params: &[(&str, &str)],
    ) -> Result<Tokens> {
        let mut all: Vec<(String, String)> = vec![("client_id".into(), self.client_id.into())];
        if let Some(scope) = self.scope {
            all.push(("scope".into(), scope.into()));
        }
        all.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let granted = host.authorize(&AuthorizationRequest {
            endpoint: endpoint.into(),
            params: all,
            redirect_path: redirect_path.into(),
            redirect_host: RedirectHost::Ip4,
            redirect_port: None,
            expected_issuer: expected_issuer.map(str::to_owned),
            message: "Sign in in your browser".into(),
        })?;
        let pairs = self.with_client(vec![
            ("grant_type", "authorization_code"),
            ("code", &granted.code),
            ("redirect_uri", &granted.redirect_uri),
            ("code_verifier", &granted.code_verifier),
        ]);
        match self.token_request(host, &pairs)? {
            TokenAnswer::Tokens(tokens) => Ok(tokens),
            TokenAnswer::Error(code, description) => Err(server_error("exchanging the code", &code, description)),
        }
    }
}

/// Sleeps `seconds` through the host, in the host's 60 s steps.
fn sleep(host: &mut dyn Host, seconds: u64) -> Result<()> {
    let mut left = seconds * 1000;
    while left > 0 {
        let step = left.min(60_000);
        host.wait(step as u32)?;
        left -= step;
    }
    Ok(())
}

fn expired() -> Error {
    Error::denied("the device code expired before the sign-in was completed; run the command again for a new code")
}

fn server_error(doing: &str, code: &str, description: Option<String>) -> Error {
    let text = match description {
        Some(d) => format!("{doing}: the server answered {code}: {d}"),
        None => format!("{doing}: the server answered {code}"),
    };
    if code == "access_denied" || code == "invalid_client" || code == "unauthorized_client" {
        Error::Denied(text)
    } else {
        Error::Failed(text)
    }
}
