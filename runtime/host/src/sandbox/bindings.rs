//! Host bindings generated from `wit/`, the contract shared with providers: the current
//! world (0.2.0) and the one before it (0.1.0), which the host keeps running unchanged.

/// `credence:provider@0.2.0`: the host's own request and answer types are these.
pub mod current {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "provider",
    });
}

/// `credence:provider@0.1.0`: converted to and from the current types at the call.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1",
        world: "provider",
    });
}
