//! Running one provider component in wasmtime with nothing but its two capabilities,
//! inert WASI, and hard limits on memory, CPU time, wall-clock time and output.

pub mod bindings;
pub mod engine;
pub mod imports;
pub mod limits;
pub mod run;
mod store;
mod wasi;

pub use engine::{new_engine, new_pooled_engine};
pub use imports::{ImportError, check_component_type};
pub use limits::{LimitHit, ProviderLimits};
pub use run::{ProviderCall, ProviderRunError, run_provider};
