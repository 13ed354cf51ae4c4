//! credence-host: where providers run. The loading gate (signatures, trust, pins), the
//! wasmtime sandbox and its two capabilities, routing a request to the instances that serve
//! its URL, the credential cache, the audit trail, and the agent that keeps all of it warm.
//! The tool-facing `credence` crate holds the front ends and the [`Resolver`] seam they ask
//! through; this crate implements it ([`broker::Broker`]) and never the other way round.
//!
//! [`Resolver`]: credence::resolver::Resolver

pub mod agent;
pub mod audit;
pub mod authoring;
pub mod broker;
pub mod capability;
pub mod cli;
pub mod compile_cache;
pub mod component_info;
pub mod config;
pub mod config_entry;
pub mod credential_cache;
pub mod expiry;
pub mod fs_watch;
pub mod loader;
pub mod log_init;
pub mod org_policy;
pub mod os_store;
pub mod policy_cli;
pub mod producer;
pub mod remote;
pub mod run_slots;
pub mod sandbox;
pub mod sequence_store;
pub mod setup;
pub mod signing_cli;
pub mod state_store;
pub mod trust_file;

// The tool-facing crate's parts, under the names the host's modules use for them.
pub use credence::{front, logging, paths, private_dir, request, resolver, secret, terminal, trusted_file};
