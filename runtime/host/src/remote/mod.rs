//! Remote development: a dev container, codespace, WSL distribution or SSH host asks the
//! user's own machine for credentials. The remote runs only the thin `credence`; the
//! providers, their state and every prompt stay here. [`policy`] is what `[remote]` allows,
//! [`session`] what one session decides, [`serve`] the agent's side of a session, and
//! [`launcher`] the `credence remote ...` commands that open sessions (always from this
//! machine: a remote can never open one).

pub mod launcher;
pub mod policy;
pub mod serve;
pub mod session;
