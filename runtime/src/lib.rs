//! credence: one credential helper for every build tool. Requests from each tool's helper
//! protocol go to providers, WebAssembly components that run sandboxed with only an HTTP
//! client limited to their origins and a prompt on the user's terminal.

pub mod audit;
pub mod broker;
pub mod capability;
pub mod cli;
pub mod compile_cache;
pub mod component_info;
pub mod config;
pub mod front;
pub mod loader;
pub mod logging;
pub mod os_store;
pub mod paths;
mod private_dir;
pub mod producer;
pub mod request;
pub mod sandbox;
pub mod secret;
pub mod sequence_store;
pub mod signing_cli;
pub mod state_store;
pub mod trust_file;
pub mod trusted_file;
