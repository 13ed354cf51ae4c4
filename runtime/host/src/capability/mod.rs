//! The capabilities a provider may import (http, prompt, and the sign-in flows built on them). Each is a context struct (policy, limits)
//! whose code does not depend on how wasmtime runs the guest: the sync host blocks on the
//! same futures a long-running async agent awaits.

pub mod address_policy;
pub mod browser;
pub mod http;
pub mod loopback;
pub mod prompt;
pub mod workload_identity;

use std::sync::OnceLock;

/// One small runtime for host I/O in one-shot runs, built on the first fetch only, so a
/// provider that never calls out pays nothing for it.
pub(crate) fn io_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread tokio runtime needs no resources that can be missing")
    })
}
