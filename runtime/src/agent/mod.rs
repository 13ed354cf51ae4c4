//! The agent: one long-running `credence-host agent` per user and credence home, which keeps
//! verified, compiled providers and answered credentials in memory. This side of it is what
//! every tool's `credence` needs: where the agent listens ([`endpoint`]), the frames on its
//! socket ([`wire`]), and the client ([`client`]) that implements the [`Resolver`] seam
//! over them and starts an agent when none answers.
//!
//! [`Resolver`]: crate::resolver::Resolver

pub mod client;
pub mod endpoint;
pub mod mux;
pub mod remote_client;
pub mod wire;
