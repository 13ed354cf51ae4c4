//! Link settings for the `credence` program only (no dependency is rebuilt for them).

fn main() {
    println!("cargo:rerun-if-env-changed=CREDENCE_PIE");
    // Tools spawn this program on every fetch, so its start is on every tool's hot path. As a
    // position-independent executable its ~3,300 relocations are applied at every start:
    // 0.13-0.19 ms here, measured (docs/perf-experiments.md), where the whole round trip to
    // the agent costs about as much. Linked at a fixed address, they are resolved at link
    // time. The stack, heap, shared libraries and mmaps stay randomised; only this small
    // binary's own image does not move. It runs no third-party code (credence-host, which
    // does, stays a PIE) and parses only its tool's input and the agent's frames.
    // CREDENCE_PIE=1 keeps a PIE.
    let target = std::env::var("TARGET").unwrap_or_default();
    let pie = std::env::var_os("CREDENCE_PIE").is_some_and(|v| v == "1");
    if target.contains("linux-gnu") && !pie {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
