//! The seam between the tools and the providers. Every front end decodes its tool's input
//! into [`CredentialRequest`]s and asks a [`Resolver`]; two implement it: the in-process
//! router of `credence-host` and the agent client, which sends the same calls over the
//! agent's socket. Everything that crosses the seam is serialisable.

use crate::request::{Answer, CredentialRequest, Refusal};
use crate::terminal::Terminal;
use serde::{Deserialize, Serialize};

/// What the tool's server did with the credential it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// It worked (git `store`): a pending rejection no longer applies.
    Accepted,
    /// It was refused (git `erase`): the stored credential goes and the next request for
    /// it is a retry.
    Rejected,
}

/// What to forget.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Forget {
    /// The user logged out through the tool (docker `erase`, cargo `logout`, keyring `del`):
    /// stored credentials and state of every provider serving the URL. Not a rejection: the
    /// next request is a first one. `NotServed` when no provider serves the URL.
    LoggedOut(CredentialRequest),
    /// The credential stored for the request, at every provider serving its URL, keeping
    /// their state (cargo `login`: the next request runs the provider). `NotServed` as above.
    Stored(CredentialRequest),
    /// `credence forget [--provider NAME]`: stored state and credentials of one instance
    /// or of all.
    Provider(Option<String>),
}

/// What a forget removed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Forgotten {
    /// Providers (for `Provider`) or entries whose stored data went.
    pub count: usize,
    /// Where secrets are kept, for the message.
    pub store: String,
}

pub trait Resolver: Send + Sync {
    /// A credential for `request`. The provider's prompts go to `prompts`, which also says
    /// whether one can be shown at all.
    fn resolve(&self, request: &CredentialRequest, prompts: Box<dyn Terminal>) -> Result<Answer, Refusal>;
    /// The tool's server accepted or rejected what was given for `request`.
    fn verdict(&self, request: &CredentialRequest, verdict: Verdict);
    fn forget(&self, what: Forget) -> Result<Forgotten, Refusal>;
}
