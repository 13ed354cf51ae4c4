//! Link-time settings for the `credence` binary only (no dependency is rebuilt for them).

fn main() {
    println!("cargo:rerun-if-env-changed=CREDENCE_PIE");
    // A helper is spawned on every fetch, so its start-up is on every tool's hot path. As a
    // position-independent executable, the ~36,000 pointers in wasmtime's and cranelift's
    // read-only data are relocated at every start, which copies ~140 pages on write: about
    // 1 ms here, measured (README, "Performance"). Linked as a fixed-address executable the
    // pointers are resolved at link time. The stack, heap, shared libraries and every mmap
    // (compiled provider code included) stay randomised; only the binary's own image does
    // not move. Build with CREDENCE_PIE=1 to keep a PIE.
    let target = std::env::var("TARGET").unwrap_or_default();
    let pie = std::env::var_os("CREDENCE_PIE").is_some_and(|v| v == "1");
    if target.contains("linux-gnu") && !pie {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
