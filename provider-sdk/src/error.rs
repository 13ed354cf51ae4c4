//! Errors a provider returns with `?`, each one of the host's answers.

use crate::bindings::exports::credence::provider::credential_provider::CredentialError;
use crate::{AuthorizeError, FetchError, IdTokenError, PromptError};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a request ends without a credential. The message reaches the user (neutralised by
/// the host), so it says what to do next and never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// This provider does not serve the URL; the host tries the next one.
    NotMine,
    /// The provider serves the URL but has no credential for it.
    NotFound(String),
    /// A credential needs the user, and the tool runs non-interactively.
    NeedsInteraction(String),
    /// The server or the user refused (a wrong secret, a denied sign-in).
    Denied(String),
    /// Anything else: a transport error, a malformed answer, a missing setting.
    Failed(String),
}

impl Error {
    pub fn failed(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }

    pub fn denied(message: impl Into<String>) -> Self {
        Error::Denied(message.into())
    }

    pub fn needs_interaction(message: impl Into<String>) -> Self {
        Error::NeedsInteraction(message.into())
    }

    pub(crate) fn into_wit(self) -> CredentialError {
        match self {
            Error::NotMine => CredentialError::NotMine,
            Error::NotFound(m) => CredentialError::NotFound(m),
            Error::NeedsInteraction(m) => CredentialError::NeedsInteraction(m),
            Error::Denied(m) => CredentialError::Denied(m),
            Error::Failed(m) => CredentialError::Failed(m),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotMine => write!(f, "not mine"),
            Error::NotFound(m) => write!(f, "not found: {m}"),
            Error::NeedsInteraction(m) => write!(f, "needs interaction: {m}"),
            Error::Denied(m) => write!(f, "denied: {m}"),
            Error::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<FetchError> for Error {
    fn from(e: FetchError) -> Self {
        Error::Failed(match e {
            FetchError::Denied(m) => format!("the host refused the request: {m}"),
            FetchError::InvalidRequest(m) => format!("invalid request: {m}"),
            FetchError::Timeout => "the server did not answer in time".into(),
            FetchError::TooLarge(m) => format!("the answer is too large: {m}"),
            FetchError::Transport(m) => format!("cannot reach the server: {m}"),
        })
    }
}

impl From<PromptError> for Error {
    fn from(e: PromptError) -> Self {
        match e {
            PromptError::NotInteractive => {
                Error::NeedsInteraction("signing in needs a terminal; run the command again in one".into())
            }
            PromptError::Cancelled => Error::Denied("cancelled".into()),
            PromptError::Unavailable(m) => Error::Failed(m),
        }
    }
}

impl From<AuthorizeError> for Error {
    fn from(e: AuthorizeError) -> Self {
        match e {
            AuthorizeError::NotInteractive => Error::NeedsInteraction(
                "signing in needs a browser and a terminal; run the command again in one".into(),
            ),
            AuthorizeError::Cancelled => Error::Denied("the sign-in was cancelled".into()),
            AuthorizeError::Timeout => {
                Error::Denied("the sign-in did not complete in time; run the command again".into())
            }
            AuthorizeError::AccessDenied(d) => Error::Denied(match d {
                Some(d) => format!("the sign-in was denied: {d}"),
                None => "the sign-in was denied".into(),
            }),
            AuthorizeError::ServerError((code, d)) => Error::Failed(match d {
                Some(d) => format!("the authorization server answered {code}: {d}"),
                None => format!("the authorization server answered {code}"),
            }),
            AuthorizeError::InvalidRequest(m) => Error::Failed(format!("the host refused the sign-in request: {m}")),
            AuthorizeError::Unavailable(m) => Error::Failed(m),
        }
    }
}

impl From<IdTokenError> for Error {
    fn from(e: IdTokenError) -> Self {
        match e {
            IdTokenError::NotAvailable(m) => Error::NotFound(m),
            IdTokenError::Denied(m) => Error::Denied(m),
            IdTokenError::Failed(m) => Error::Failed(m),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Failed(format!("the server's answer is not the JSON expected: {e}"))
    }
}
