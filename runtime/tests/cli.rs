//! The command line as a tool or a user meets it with no providers configured. Living in the
//! runtime package also makes `cargo test --workspace` build the `credence` binary that the
//! end-to-end suites in `tests/` drive (cargo builds a package's binaries only for its own
//! integration tests; `runtime/host/tests/` does the same for `credence-host`).

use std::process::{Command, Output};

fn credence(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_credence"))
        .args(args)
        .env_clear()
        .env("CREDENCE_HOME", home.join("home"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("run credence")
}

#[test]
fn a_url_no_provider_serves_exits_1_and_says_how_to_add_one() {
    let home = tempfile::tempdir().unwrap();
    let out = credence(home.path(), &["get", "https://registry.example.com/index"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout when there is no credential");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("registry.example.com"), "{err}");
}

#[test]
fn a_malformed_url_is_a_usage_error_with_exit_2() {
    let home = tempfile::tempdir().unwrap();
    let out = credence(home.path(), &["get", "not a url"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("credence: error:"));
}

#[test]
fn an_unknown_subcommand_is_a_usage_error_with_exit_2() {
    let home = tempfile::tempdir().unwrap();
    let out = credence(home.path(), &["fetch-all-the-secrets"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn the_program_tools_run_links_no_webassembly_compiler() {
    // Every fetch spawns it: 16 MB of compiler mapped and relocated at each start is what
    // the split into credence and credence-host removed. cranelift's symbols and panic
    // locations would be in the binary if anything pulled it in.
    let bytes = std::fs::read(env!("CARGO_BIN_EXE_credence")).unwrap();
    let needle = b"cranelift";
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "the credence binary links cranelift"
    );
}

#[test]
fn credence_installed_without_credence_host_says_how_to_install_it_beside() {
    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join("prefix/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let lone = bin.join("credence");
    std::fs::copy(env!("CARGO_BIN_EXE_credence"), &lone).unwrap();
    let out = Command::new(&lone)
        .args(["providers"])
        .env_clear()
        .env("CREDENCE_HOME", home.path().join("home"))
        .env("XDG_STATE_HOME", home.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "`cargo install --locked --path runtime/host --root {}`",
        home.path().join("prefix").display()
    );
    assert!(
        err.contains("credence-host is missing") || err.contains("credence-host, which must be beside it"),
        "{err}"
    );
    assert!(err.contains(&expected), "{err}");
}
