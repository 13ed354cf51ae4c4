//! Link-time settings for the `credence` binary only (no dependency is rebuilt for them).

fn main() {
    println!("cargo:rerun-if-env-changed=CREDENCE_PIE");
    println!("cargo:rerun-if-env-changed=CREDENCE_LINK_ORDER");
    println!("cargo:rerun-if-changed=link-order.txt");
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

    // A one-shot run executes a few thousand of the binary's functions once each, scattered
    // over 16 MB of code: every 64 KiB window it touches is a page fault. `link-order.txt`
    // (made by `tests/link-order.sh` from the benchmark's calls) lists the functions that
    // the stored, warm and HTTP paths run, so the linker puts them side by side. Only for
    // release builds with rust-lld, the default linker of this target since Rust 1.90
    // (skipped when another linker is configured; CREDENCE_LINK_ORDER=0 turns it off). Names
    // that no longer exist after a dependency update are skipped silently: the order then
    // only helps less, and the benchmark shows it.
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let wanted = std::env::var_os("CREDENCE_LINK_ORDER").is_none_or(|v| v != "0");
    // A linker chosen in cargo's config or the rustflags may be one without the flag.
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let default_linker =
        std::env::var_os("RUSTC_LINKER").is_none() && !flags.contains("linker") && !flags.contains("fuse-ld");
    if target == "x86_64-unknown-linux-gnu" && release && wanted && default_linker {
        let order = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("link-order.txt");
        if order.is_file() {
            println!(
                "cargo:rustc-link-arg-bin=credence=-Wl,--symbol-ordering-file={}",
                order.display()
            );
            println!("cargo:rustc-link-arg-bin=credence=-Wl,--no-warn-symbol-ordering");
        }
    }
}
