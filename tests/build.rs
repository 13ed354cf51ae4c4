//! Builds the sample and hostile providers for wasm32-wasip2 with a nested cargo, into
//! `<target>/wasm-providers`, and tells the harness where the components are.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_owned();
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out; keep the guest builds beside
    // the profiles so they survive host rebuilds.
    let target = out_dir.ancestors().nth(4).unwrap().to_owned();
    let guest_target = target.join("wasm-providers");

    for dir in [
        root.join("wit"),
        root.join("sample-providers"),
        manifest_dir.join("hostile-providers"),
    ] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    for workspace in [root.join("sample-providers"), manifest_dir.join("hostile-providers")] {
        build_guests(&workspace, &guest_target);
    }
    let components = guest_target.join("wasm32-wasip2").join("release");
    println!("cargo:rustc-env=CREDENCE_TEST_COMPONENTS={}", components.display());
}

fn build_guests(workspace: &Path, target_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(workspace);
    // The outer build's settings (target, flags, jobserver, profile) must not leak in.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let keep = matches!(
            key.as_str(),
            "CARGO_HOME" | "CARGO_NET_OFFLINE" | "CARGO_REGISTRIES_CRATES_IO_PROTOCOL"
        );
        if (key.starts_with("CARGO_") && !keep)
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTDOC")
            || key == "RUSTFLAGS"
            || key == "TARGET"
            || key == "HOST"
            || key == "OUT_DIR"
            || key == "OPT_LEVEL"
            || key == "PROFILE"
            || key == "DEBUG"
            || key == "NUM_JOBS"
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().expect("running cargo for the wasm providers");
    if !status.success() {
        panic!(
            "building the providers in {} for wasm32-wasip2 failed; is the target installed? run `rustup target add wasm32-wasip2`",
            workspace.display()
        );
    }
}
