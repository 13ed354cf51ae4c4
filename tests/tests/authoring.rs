//! The author's first hour: `credence new` scaffolds a crate whose native tests pass
//! against the mock host, and `credence dev` builds it for wasm32-wasip2 and answers a
//! request with it, unsigned, in a throwaway home, with the host's log on stderr.

use credence_tests::{Home, components_dir};
use std::process::Command;
use std::time::Duration;

/// `<target>` of this build: the scaffold's builds go under it, so a second run is quick
/// and the wasm one shares what the sample providers already compiled.
fn target_dir() -> std::path::PathBuf {
    components_dir()
        .ancestors()
        .nth(3)
        .expect("<target>/wasm-providers/wasm32-wasip2/release")
        .to_owned()
}

fn cargo(args: &[&str], target: &std::path::Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args).env("CARGO_TARGET_DIR", target);
    for (k, _) in std::env::vars() {
        if (k.starts_with("CARGO_") && k != "CARGO_HOME") || k == "RUSTFLAGS" {
            cmd.env_remove(k);
        }
    }
    cmd.env("CARGO_TARGET_DIR", target);
    cmd
}

#[test]
fn a_new_provider_passes_its_native_tests_and_answers_through_credence_dev() {
    let home = Home::new();
    let dir = home.dir.path().join("my-registry");
    let made = home.run(&["new", "my-registry", "--dir", dir.to_str().unwrap()]);
    assert_eq!(made.code, Some(0), "{made:#?}");
    assert!(
        made.stderr.contains("cargo test"),
        "it says what to run next: {}",
        made.stderr
    );
    for file in ["Cargo.toml", "manifest.toml", "src/lib.rs", "tests/provider.rs"] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    let again = home.run(&["new", "my-registry", "--dir", dir.to_str().unwrap()]);
    assert_eq!(
        again.code,
        Some(2),
        "an existing directory is never overwritten: {again:#?}"
    );

    // The versions the sample providers already lock (and CI already fetched and built).
    let samples_lock = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sample-providers/Cargo.lock");
    std::fs::copy(samples_lock, dir.join("Cargo.lock")).unwrap();
    let manifest_path = dir.join("Cargo.toml");
    let mut test = cargo(
        &["test", "--quiet", "--manifest-path", manifest_path.to_str().unwrap()],
        &target_dir().join("authoring-native"),
    );
    let (out, _) = credence_tests::run_bounded(
        {
            test.stdin(std::process::Stdio::null());
            test
        },
        Duration::from_secs(600),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo test of the scaffold failed:\n{text}");
    assert!(text.contains("2 passed"), "{text}");

    let mut dev = home.command();
    dev.args([
        "dev",
        "https://registry.example/",
        "--path",
        dir.to_str().unwrap(),
        "--setting",
        "token=t-123",
        "--non-interactive",
    ])
    .env("CARGO_TARGET_DIR", target_dir().join("wasm-providers"))
    .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    if let Some(v) = std::env::var_os("RUSTUP_HOME") {
        dev.env("RUSTUP_HOME", v);
    }
    if let Some(v) = std::env::var_os("CARGO_HOME") {
        dev.env("CARGO_HOME", v);
    }
    let (out, _) = credence_tests::run_bounded(dev, Duration::from_secs(600));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the credential as JSON");
    assert_eq!(answer["secret"], "t-123", "{answer}");
    assert!(stderr.contains("runs UNSIGNED"), "{stderr}");
    assert!(
        stderr.contains("provider call finished"),
        "the host's log is shown: {stderr}"
    );

    // Installing what it built without signing it first says how to sign it.
    let component = target_dir().join("wasm-providers/wasm32-wasip2/release/my_registry.wasm");
    let install = home.run(&[
        "install",
        component.to_str().unwrap(),
        "--serves",
        "https://registry.example/",
    ]);
    assert_ne!(install.code, Some(0));
    assert!(install.stderr.contains("credence sign"), "{}", install.stderr);
}

#[test]
fn each_sample_signs_with_the_manifest_kept_beside_its_source_and_verifies() {
    let home = Home::new();
    let key = home.keygen("publisher");
    home.trust(&key, "Sample publisher", "publisher", "*");
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sample-providers");
    for (name, prompts) in [
        ("static-token", "[]"),
        ("oauth-device", "[\"device-code\"]"),
        ("oauth-pkce", "[\"authorize\"]"),
        ("ci-exchange", "[]"),
    ] {
        std::fs::copy(
            credence_tests::component(name),
            home.provider_file(&format!("{name}.wasm")),
        )
        .unwrap();
        let manifest = samples.join(name).join("manifest.toml");
        home.sign(name, &key, &["--manifest", manifest.to_str().unwrap()]);
        let component = home.provider_file(&format!("{name}.wasm"));
        let verified = home.run(&["verify", component.to_str().unwrap()]);
        assert_eq!(verified.code, Some(0), "{name}: {verified:#?}");
        let inspect = home.run(&["inspect", component.to_str().unwrap(), "--json"]);
        let shown: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
        assert_eq!(shown["capabilities"]["prompts"].to_string(), prompts, "{name}: {shown}");
    }
}
