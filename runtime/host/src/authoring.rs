//! The provider author's loop: `credence new NAME` scaffolds a provider crate on the SDK
//! (manifest, a native test against the mock host, the release profile), and
//! `credence dev [DIR] URL` builds it for wasm32-wasip2 and runs it once, unsigned, in a
//! throwaway home, with the host's log of every fetch, prompt and decision shown live.
//! Signing comes after: `credence sign` with the author's key.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Where this credence's own provider SDK is, when it was built from its repository.
fn bundled_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../provider-sdk");
    sdk.join("Cargo.toml")
        .is_file()
        .then(|| sdk.canonicalize().unwrap_or(sdk))
}

fn valid_name(name: &str) -> bool {
    credence_signing::manifest::valid_name(name)
}

/// `credence new NAME [--dir DIR] [--sdk PATH]`.
pub fn new_provider(name: &str, dir: Option<&Path>, sdk: Option<&Path>) -> Result<ExitCode, String> {
    if !valid_name(name) {
        return Err(format!(
            "{name:?} is not a provider name: 1-64 characters of a-z, 0-9 and '-', starting with a letter"
        ));
    }
    let sdk = match sdk {
        Some(p) => p.to_owned(),
        None => bundled_sdk().ok_or(
            "this credence was not built from its repository, so it does not know where the provider SDK is; pass --sdk <path to provider-sdk>",
        )?,
    };
    if !sdk.join("Cargo.toml").is_file() {
        return Err(format!(
            "{} holds no Cargo.toml; --sdk must name the provider-sdk folder",
            sdk.display()
        ));
    }
    let root = dir.map(Path::to_owned).unwrap_or_else(|| PathBuf::from(name));
    if root.exists() {
        return Err(format!(
            "{} exists already; choose another --dir or remove it",
            root.display()
        ));
    }
    let ident = name.replace('-', "_");
    let type_name: String = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let files: Vec<(&str, String)> = vec![
        (
            "Cargo.toml",
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the component; rlib: the native tests link the provider's logic.
crate-type = ["cdylib", "rlib"]

[dependencies]
credence-provider = {{ path = {sdk:?} }}

# Its own workspace, so it builds alone wherever it lives.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#,
                sdk = sdk.display().to_string()
            ),
        ),
        (
            "manifest.toml",
            format!(
                r#"# What {name} may do: the ceiling a user's config can only narrow. Signed with the
# component by `credence sign --key <key> --manifest manifest.toml <component>`.
name = "{name}"
version = "0.1.0"
world = "credence:provider/provider@0.2.0"
# Origins it may fetch from (https, or http on a loopback literal).
origins = []
# Any of "ask", "show", "open-url", "device-code", "authorize".
prompts = []

[settings.token]
description = "the token to answer with"
required = true
secret = true
"#
            ),
        ),
        (
            "src/lib.rs",
            format!(
                r#"//! {name}: a credence provider. It answers with its `token` setting; replace the body of
//! `get_credential` with your own (see the SDK's `http` and `oauth` modules).

use credence_provider::{{Credential, Host, Provider, Request, Result}};

pub struct {type_name};

impl Provider for {type_name} {{
    fn get_credential(req: &Request, _host: &mut dyn Host) -> Result<Credential> {{
        Ok(Credential::token(req.setting("token")?))
    }}
}}

credence_provider::provider!({type_name});
"#
            ),
        ),
        (
            "tests/provider.rs",
            format!(
                r#"//! {name} against the SDK's mock host, natively: `cargo test`.

use credence_provider::mock::MockHost;
use credence_provider::{{Provider, Request}};
use {ident}::{type_name};

#[test]
fn answers_with_its_token_setting() {{
    let mut host = MockHost::new();
    let req = Request::for_url("https://registry.example/").with_setting("token", "t-123");
    let credential = {type_name}::get_credential(&req, &mut host).unwrap();
    assert_eq!(credential.secret, "t-123");
}}

#[test]
fn a_missing_token_names_the_setting() {{
    let mut host = MockHost::new();
    let err = {type_name}::get_credential(&Request::for_url("https://registry.example/"), &mut host).unwrap_err();
    assert!(err.to_string().contains("`token`"), "{{err}}");
}}
"#
            ),
        ),
        (
            "README.md",
            format!(
                "# {name}\n\nA credence provider.\n\n- `cargo test`: its logic against the mock host, natively.\n- `credence dev . https://registry.example/ --setting token=t-123`: built for wasm32-wasip2 and run once, unsigned, with the host's log.\n- `credence sign --key <your key> --manifest manifest.toml target/wasm32-wasip2/release/{ident}.wasm`: sign it for users.\n\n| setting | required | secret | meaning |\n|---|---|---|---|\n| `token` | yes | yes | the token to answer with |\n"
            ),
        ),
        (".gitignore", "/target\n".into()),
    ];
    for (file, text) in &files {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().expect("a file under the crate"))
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    eprintln!(
        "credence: created provider {name} in {}\n  next: cd {} && cargo test && credence dev . https://registry.example/ --setting token=t-123",
        root.display(),
        crate::setup::sh(&root.display().to_string())
    );
    Ok(ExitCode::SUCCESS)
}

/// `credence dev [DIR] URL [--setting K=V]... [--grant ORIGIN]... [--prompt]`.
pub struct DevRun<'a> {
    pub dir: &'a Path,
    pub url: &'a str,
    pub settings: &'a [String],
    pub grants: &'a [String],
    pub interactive: bool,
}

pub fn dev(run: DevRun<'_>) -> Result<ExitCode, String> {
    let url = url::Url::parse(run.url).map_err(|e| format!("{:?} is not a URL: {e}", run.url))?;
    let crate_manifest = run.dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&crate_manifest).map_err(|e| {
        format!(
            "cannot read {}: {e}; run `credence dev` in a provider crate (`credence new NAME` makes one)",
            crate_manifest.display()
        )
    })?;
    let package: toml::Table = toml::from_str(&text).map_err(|e| format!("{}: {e}", crate_manifest.display()))?;
    let crate_name = package
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| format!("{} has no [package] name", crate_manifest.display()))?
        .to_owned();
    let provider_manifest = run.dir.join("manifest.toml");
    let manifest_text = std::fs::read_to_string(&provider_manifest).map_err(|e| {
        format!(
            "cannot read {}: {e}; a provider crate keeps its manifest there",
            provider_manifest.display()
        )
    })?;
    let manifest = credence_signing::Manifest::from_toml(&manifest_text)
        .map_err(|e| format!("{}: {e}", provider_manifest.display()))?;

    eprintln!("credence: building {crate_name} for wasm32-wasip2");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(&crate_manifest)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("the build failed (above); if the target is missing: rustup target add wasm32-wasip2".into());
    }
    let metadata = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
        .arg(&crate_manifest)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    let metadata: serde_json::Value =
        serde_json::from_slice(&metadata.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    let target = metadata["target_directory"]
        .as_str()
        .ok_or("cargo metadata names no target directory")?;
    let component = Path::new(target)
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    if !component.is_file() {
        return Err(format!(
            "the build made no {}; is the crate a cdylib (`crate-type = [\"cdylib\"]`)?",
            component.display()
        ));
    }

    // A throwaway home: the author's own config, trust and state are never touched.
    let home = tempfile::Builder::new()
        .prefix("credence-dev-")
        .tempdir()
        .map_err(|e| format!("cannot make a temporary home: {e}"))?;
    let providers = home.path().join("home/providers");
    std::fs::create_dir_all(&providers).map_err(|e| e.to_string())?;
    let name = &manifest.name;
    std::fs::copy(&component, providers.join(format!("{name}.wasm"))).map_err(|e| e.to_string())?;
    std::fs::write(providers.join(format!("{name}.manifest.toml")), &manifest_text).map_err(|e| e.to_string())?;
    let mut serves = url.clone();
    serves.set_query(None);
    serves.set_fragment(None);
    let mut grants: Vec<String> = manifest.origins.iter().map(|o| o.to_string()).collect();
    grants.extend(run.grants.iter().cloned());
    let mut config = toml_edit::DocumentMut::new();
    let mut entry = toml_edit::Table::new();
    entry["name"] = toml_edit::value(name.as_str());
    entry["component"] = toml_edit::value(format!("{name}.wasm"));
    entry["serves"] = toml_edit::value(toml_edit::Array::from_iter([serves.as_str()]));
    entry["grant-origins"] = toml_edit::value(toml_edit::Array::from_iter(grants.iter().map(String::as_str)));
    let mut settings = toml_edit::InlineTable::new();
    for pair in run.settings {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("--setting {pair:?} is not KEY=VALUE"))?;
        settings.insert(k, v.into());
    }
    entry["settings"] = toml_edit::value(settings);
    let mut array = toml_edit::ArrayOfTables::new();
    array.push(entry);
    config["provider"] = toml_edit::Item::ArrayOfTables(array);
    std::fs::write(home.path().join("home/config.toml"), config.to_string()).map_err(|e| e.to_string())?;

    eprintln!(
        "credence: running {} unsigned for {} (throwaway home {}; log below)",
        component.display(),
        url,
        home.path().display()
    );
    let host = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut get = Command::new(host);
    get.args(["--allow-unsigned", "get", "--json", url.as_str()])
        .env("CREDENCE_HOME", home.path().join("home"))
        .env("XDG_CACHE_HOME", home.path().join("cache"))
        .env("XDG_STATE_HOME", home.path().join("state"))
        .env("CREDENCE_AGENT", "0")
        .env(
            "CREDENCE_LOG",
            std::env::var("CREDENCE_LOG").unwrap_or_else(|_| "credence=debug".into()),
        );
    if !run.interactive {
        get.arg("--non-interactive");
    }
    let status = get.status().map_err(|e| format!("cannot run the host: {e}"))?;
    Ok(ExitCode::from(status.code().unwrap_or(3).clamp(0, 255) as u8))
}
