//! The generated bindings of `credence:provider@0.2.0` (`wit/provider.wit`). Providers use
//! the types through the crate root; the functions only through [`crate::Host`], so the same
//! provider code runs against the real host in WebAssembly and the mock host natively.

wit_bindgen::generate!({
    path: "../wit",
    world: "provider",
    pub_export_macro: true,
    export_macro_name: "export_bindings",
    default_bindings_module: "credence_provider::bindings",
    runtime_path: "credence_provider::__wit_bindgen::rt",
});
