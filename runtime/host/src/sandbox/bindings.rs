//! Host bindings generated from `wit/`, the contract shared with providers.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "provider",
});
