//! credence: one credential helper for every build tool. This crate is the program tools
//! run: the protocol front ends, the seam they ask through ([`resolver::Resolver`]), and the
//! client of the agent that runs the providers. It does not link wasmtime (`credence-host`
//! does): a tool spawns it on every fetch, and its start-up is the cost users feel.

pub mod agent;
pub mod cli;
pub mod exe;
pub mod front;
pub mod logging;
pub mod paths;
pub mod private_dir;
pub mod relay;
pub mod request;
pub mod resolver;
pub mod secret;
pub mod terminal;
pub mod trusted_file;
