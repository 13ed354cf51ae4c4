//! The documented install works: `cargo install --locked --path runtime` and
//! `--path runtime/host` put the two programs side by side, and the installed `credence`
//! answers a tool through the installed `credence-host`. (`--debug`, into this build's
//! target dir, so the test reuses what the test build compiled instead of a release build.)

use credence_tests::{Home, components_dir};
use std::process::Command;
use std::time::Duration;

#[test]
fn cargo_install_of_the_two_packages_gives_a_credence_that_answers() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = components_dir().ancestors().nth(3).expect("<target>").to_owned();
    let root = tempfile::tempdir().unwrap();
    for package in ["runtime", "runtime/host"] {
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.args(["install", "--locked", "--debug", "--path"])
            .arg(repo.join(package))
            .arg("--root")
            .arg(root.path());
        for (k, _) in std::env::vars() {
            if (k.starts_with("CARGO_") && k != "CARGO_HOME") || k == "RUSTFLAGS" {
                cmd.env_remove(k);
            }
        }
        cmd.env("CARGO_TARGET_DIR", &target);
        let (out, _) = credence_tests::run_bounded(cmd, Duration::from_secs(900));
        assert!(
            out.status.success(),
            "cargo install --path {package}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let installed = root.path().join("bin/credence");
    assert!(root.path().join("bin/credence-host").is_file());

    let (home, _) = Home::signed_static_token();
    let version = home.run_program(&installed, &["--version"], b"", &[]);
    assert_eq!(version.code, Some(0), "{version:#?}");
    assert!(version.stdout.starts_with("credence "), "{}", version.stdout);
    let run = home.run_program(&installed, &["get", "https://registry.example/"], b"", &[]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.stdout, "signed-token\n");
    // Through git's protocol too, the way a tool runs it.
    let git = home.run_program(
        &installed,
        &["git", "get"],
        b"protocol=https\nhost=registry.example\n\n",
        &[],
    );
    assert_eq!(git.code, Some(0), "{git:#?}");
    assert!(git.stdout.contains("password=signed-token"), "{}", git.stdout);
}
