//! The request a provider answers, with typed access to its settings.

use crate::bindings::exports::credence::provider::credential_provider::CredentialRequest;
use crate::{Error, Protocol, RequestReason, Requester, Result};

/// One request: the URL, who asked and why, the provider's settings from the user's
/// config, and the state it kept last time.
#[derive(Clone, Debug)]
pub struct Request {
    pub url: String,
    pub protocol: Protocol,
    /// As the tool says it: read, download, publish, get, ...
    pub operation: String,
    /// The tool already tried a credential for this URL and the server refused it.
    pub is_retry: bool,
    /// The tool allows prompting, and a terminal is there.
    pub interactive: bool,
    pub username_hint: Option<String>,
    /// The 401's `WWW-Authenticate` and similar, when the tool passes them.
    pub challenge_headers: Vec<(String, String)>,
    pub settings: Vec<(String, String)>,
    /// What the provider returned as `new-state` last time (e.g. a refresh token).
    pub state: Option<Vec<u8>>,
    pub requester: Requester,
    pub reason: RequestReason,
    /// Seconds an interactive flow may take in this call (0 when not interactive).
    pub interactive_deadline_s: u32,
}

impl From<CredentialRequest> for Request {
    fn from(r: CredentialRequest) -> Self {
        Request {
            url: r.url,
            protocol: r.protocol,
            operation: r.operation,
            is_retry: r.is_retry,
            interactive: r.interactive,
            username_hint: r.username_hint,
            challenge_headers: r.challenge_headers,
            settings: r.settings,
            state: r.state,
            requester: r.requester,
            reason: r.reason,
            interactive_deadline_s: r.interactive_deadline_s,
        }
    }
}

impl Request {
    /// A request for `url` as a tool on this machine would send it: interactive, no
    /// settings, no state. For tests against [`crate::mock::MockHost`].
    pub fn for_url(url: &str) -> Self {
        Request {
            url: url.to_owned(),
            protocol: Protocol::Generic,
            operation: "get".into(),
            is_retry: false,
            interactive: true,
            username_hint: None,
            challenge_headers: Vec::new(),
            settings: Vec::new(),
            state: None,
            requester: Requester::Local("credence get".into()),
            reason: RequestReason::Request,
            interactive_deadline_s: 900,
        }
    }

    /// Builder for tests: adds a setting.
    pub fn with_setting(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Builder for tests: the state from an earlier answer.
    pub fn with_state(mut self, state: Option<Vec<u8>>) -> Self {
        self.state = state;
        self
    }

    /// Builder for tests: a tool that may not prompt.
    pub fn non_interactive(mut self) -> Self {
        self.interactive = false;
        self.interactive_deadline_s = 0;
        self
    }

    /// A required setting; the error names it and where the user sets it.
    pub fn setting(&self, key: &str) -> Result<&str> {
        self.optional_setting(key).ok_or_else(|| {
            Error::Failed(format!(
                "the `{key}` setting is missing: add `{key} = \"...\"` to this provider's [provider.settings] table in config.toml, or install it with `credence install <component> --serves <url> --setting {key}=<value>`"
            ))
        })
    }

    pub fn optional_setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// A setting with a default.
    pub fn setting_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.optional_setting(key).unwrap_or(default)
    }
}
