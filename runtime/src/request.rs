//! The one internal request and answer types. Every protocol front end maps its wire format
//! to `CredentialRequest` and `Credential` back; the router and sandbox know nothing else.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use url::Url;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Cargo,
    Git,
    Docker,
    Nuget,
    Bazel,
    Goauth,
    Keyring,
    Kubectl,
    Generic,
}

impl Protocol {
    /// The tool's name as the user knows it (who asked, in a sign-in prompt).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Cargo => "cargo",
            Protocol::Git => "git",
            Protocol::Docker => "docker",
            Protocol::Nuget => "NuGet",
            Protocol::Bazel => "Bazel",
            Protocol::Goauth => "go",
            Protocol::Keyring => "pip (keyring)",
            Protocol::Kubectl => "kubectl",
            Protocol::Generic => "credence get",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CredentialRequest {
    /// Absolute http(s) URL without userinfo or fragment.
    pub url: Url,
    pub protocol: Protocol,
    pub operation: String,
    pub is_retry: bool,
    pub interactive: bool,
    pub username_hint: Option<String>,
    /// The server's challenge (e.g. `WWW-Authenticate`) when the tool passes it.
    pub challenge_headers: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CachePolicy {
    Never,
    Session,
    UntilExpiry,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Credential {
    pub username: Option<String>,
    pub secret: Secret<String>,
    /// Ready-made HTTP headers; values may embed the secret, so they are secrets too.
    pub headers: Vec<(String, Secret<String>)>,
    /// Unix seconds.
    pub expires_at: Option<u64>,
    pub cache: CachePolicy,
    /// Unix seconds after which the host asks the provider again rather than hand this
    /// out, though it stays valid until `expires_at` (the provider's `refresh-at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_at: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A credential stored by an earlier run; no provider ran.
    Stored,
    Provider,
}

/// A credential and where it came from: the provider instance (its name in config.toml)
/// and whether that provider ran for this request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    pub credential: Credential,
    pub provider: String,
    pub source: Source,
    /// The `serves` prefix of that instance that matched the URL (Go's GOAUTH answer names
    /// the prefix a credential covers).
    pub serves: Option<String>,
}

/// Why no credential came back, in the terms every front end can map to its own error form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Refusal {
    #[error("no configured provider serves {0}")]
    NotServed(String),
    #[error("no provider has a credential for {url}{}", with_detail(.detail))]
    NotFound { url: String, detail: String },
    #[error("provider {provider} needs interaction: {message}")]
    NeedsInteraction { provider: String, message: String },
    #[error("provider {provider} refused: {message}")]
    Denied { provider: String, message: String },
    #[error("{0}")]
    Failed(String),
    /// The agent has more requests in hand than it queues; the client answers in-process
    /// or the tool tries again.
    #[error("the credence agent is busy ({0} requests queued); try again")]
    Busy(usize),
}

/// The latest expiry credence hands any tool: 9999-12-31T23:59:59Z, the last second a
/// four-digit year can write. cargo reads `expiration` as an i64, git's
/// `password_expiry_utc` is a time_t, and kubectl and Bazel parse RFC 3339 with a four-digit
/// year; a provider's "never expires" as `u64::MAX`, or any date past year 9999, would make
/// each of them fail, so every expiry is clamped to this once, where the broker takes the
/// provider's answer.
pub const LATEST_EXPIRY: u64 = 253_402_300_799;

/// A provider's expiry as every tool can represent it (see [`LATEST_EXPIRY`]).
pub fn representable_expiry(expires_at: Option<u64>) -> Option<u64> {
    expires_at.map(|t| t.min(LATEST_EXPIRY))
}

/// The URL as it may appear in messages: no query (which can hold tokens).
pub fn shown_url(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

fn with_detail(d: &str) -> String {
    if d.is_empty() { String::new() } else { format!(" ({d})") }
}

/// Checks a URL a tool asked about: absolute http(s), no credentials inside, no fragment.
pub fn parse_request_url(text: &str) -> Result<Url, String> {
    const MAX_URL: usize = 64 * 1024;
    if text.len() > MAX_URL {
        return Err(format!("the URL is {} bytes long; the limit is {MAX_URL}", text.len()));
    }
    if text.chars().any(|c| c.is_control()) {
        return Err("the URL contains control characters (CR, LF, NUL or similar)".into());
    }
    let mut url = Url::parse(text).map_err(|e| format!("{text:?} is not an absolute URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("credence serves http(s) URLs, not {:?}", url.scheme()));
    }
    if url.host().is_none() {
        return Err(format!("{text:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "the URL {} carries a user name or password; pass the URL without them",
            credence_signing::origin::redact_userinfo(&url)
        ));
    }
    url.set_fragment(None);
    if let Some(what) = smuggled(&url) {
        return Err(format!(
            "the URL contains {what}, raw or percent-encoded; credence refuses it before any provider, prompt or policy sees it"
        ));
    }
    Ok(url)
}

/// What a URL must not carry even percent-encoded: the URL reaches providers, prompts,
/// audit lines and other tools' protocols, and a decoder further on turns `%0a` back into a
/// line break (a second header, a second git attribute), `%1b[` into a terminal sequence,
/// and `%E2%80%AE` into a right-to-left override that makes one host look like another.
/// A request from a remote session comes through here too, before any policy.
fn smuggled(url: &Url) -> Option<&'static str> {
    let decoded = percent_encoding::percent_decode_str(url.as_str()).decode_utf8_lossy();
    for c in decoded.chars() {
        if c.is_control() {
            return Some("a control character (CR, LF, ESC or similar)");
        }
        if crate::terminal::is_invisible_or_bidi(c) {
            return Some("an invisible or bidirectional-override character");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_urls_with_userinfo_or_controls_are_refused_without_echoing_secrets() {
        let err = parse_request_url("https://user:hunter2@registry.example/").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(parse_request_url("https://registry.example/\r\nHost: evil").is_err());
        assert!(parse_request_url("https://registry.example/\0").is_err());
        assert!(parse_request_url("file:///etc/passwd").is_err());
    }

    #[test]
    fn an_expiry_of_u64_max_or_past_year_9999_is_clamped_to_the_last_second_of_9999() {
        assert_eq!(representable_expiry(Some(u64::MAX)), Some(LATEST_EXPIRY));
        // 10000-01-01T00:00:00Z
        assert_eq!(representable_expiry(Some(253_402_300_800)), Some(LATEST_EXPIRY));
        assert_eq!(representable_expiry(Some(1_767_225_600)), Some(1_767_225_600));
        assert_eq!(representable_expiry(None), None);
        assert!(i64::try_from(LATEST_EXPIRY).is_ok(), "cargo reads an i64");
    }

    #[test]
    fn line_breaks_escapes_and_bidi_overrides_are_refused_even_percent_encoded() {
        for bad in [
            "https://r.example/a%0ab",
            "https://r.example/a%0D%0AHost:%20evil",
            "https://r.example/?q=%1b[2J",
            "https://r.example/%E2%80%AEmoc.elgoog",
            "https://r.example/a\u{202e}b",
            "https://r.example/%00",
            "https://r.example/a%E2%81%A6b",
        ] {
            let err = parse_request_url(bad).unwrap_err();
            assert!(err.contains("character"), "{bad}: {err}");
        }
        // Ordinary percent-encoding is still fine.
        assert!(parse_request_url("https://r.example/a%20b/%C3%A9t%C3%A9?x=%2F").is_ok());
    }

    #[test]
    fn fragment_is_dropped() {
        assert_eq!(
            parse_request_url("https://r.example/a#frag").unwrap().as_str(),
            "https://r.example/a"
        );
    }
}
