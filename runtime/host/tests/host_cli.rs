//! The host program on its own. Living in the host package also makes
//! `cargo test --workspace` build the `credence-host` binary that `credence` execs and
//! starts as its agent (cargo builds a package's binaries only for its own integration tests).

use std::process::{Command, Output};

fn host(root: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_credence-host"))
        .args(args)
        .env_clear()
        .env("CREDENCE_HOME", root.join("home"))
        .env("XDG_CACHE_HOME", root.join("cache"))
        .env("XDG_STATE_HOME", root.join("state"))
        .env("XDG_RUNTIME_DIR", root.join("run"))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("run credence-host")
}

#[test]
fn help_lists_the_host_commands_and_the_agent() {
    let root = tempfile::tempdir().unwrap();
    let out = host(root.path(), &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for command in ["get", "providers", "install", "trust", "agent", "forget"] {
        assert!(text.contains(command), "{command} missing from:\n{text}");
    }
}

#[test]
fn a_config_that_does_not_parse_is_a_usage_error_in_process() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("home")).unwrap();
    std::fs::write(root.path().join("home/config.toml"), "[agent]\nidle = \"soon\"\n").unwrap();
    let out = host(root.path(), &["get", "https://registry.example/"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[agent] idle = \"soon\""), "{err}");
}
