//! `credence setup <tool>`: the exact configuration that makes a tool ask credence, printed,
//! or applied with `--write` where a tool has a config file or command to change.

use std::path::PathBuf;
use std::process::ExitCode;

/// The program tools run: the thin `credence` beside this host binary (never the host
/// itself, which links wasmtime and would cost every fetch its start-up).
fn exe() -> String {
    credence::exe::sibling("credence")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "credence".into())
}

fn dir() -> String {
    credence::exe::sibling("credence")
        .and_then(|p| p.parent().map(|d| d.display().to_string()))
        .unwrap_or_else(|| ".".into())
}

/// The instructions for `tool`: (text to show, what `--write` does).
fn instructions(tool: &str) -> (String, Option<Write>) {
    let exe = exe();
    let dir = dir();
    match tool {
        "cargo" => (
            format!(
                "# ~/.cargo/config.toml (cargo runs `{exe} --cargo-plugin`)\n[registry]\nglobal-credential-providers = [\"cargo:token\", {exe:?}]\n"
            ),
            Some(Write::CargoConfig(exe)),
        ),
        "git" => {
            // git runs an absolute path as is; anything else (a quoted path) needs `!`.
            let helper = if exe.contains(char::is_whitespace) {
                format!("!\"{exe}\" git")
            } else {
                format!("{exe} git")
            };
            let mut text = format!("git config --global credential.helper '{helper}'\n");
            let mut commands = vec![git_config("credential.helper", &helper)];
            // git sends the path only with `credential.useHttpPath`; without it credence
            // sees `https://host/`, which a prefix with a path does not serve. Set per
            // origin, so other hosts' helpers keep their host-wide entries.
            for origin in origins_served_with_a_path() {
                let key = format!("credential.{origin}.useHttpPath");
                text.push_str(&format!("git config --global {key} true\n"));
                commands.push(git_config(&key, "true"));
            }
            (text, Some(Write::Commands(commands)))
        }
        "docker" => (
            format!(
                "ln -s {exe:?} ~/.local/bin/docker-credential-credence   # a directory on PATH\n# ~/.docker/config.json\n{{ \"credsStore\": \"credence\" }}\n# or per registry: {{ \"credHelpers\": {{ \"registry.example.com\": \"credence\" }} }}\n"
            ),
            None,
        ),
        "nuget" => (
            format!(
                "ln -s {exe:?} ~/.local/bin/nuget-plugin-credence   # NuGet 6.13+ finds nuget-plugin-* on PATH\n# nuget.exe (v1): copy or link as CredentialProviderCredence.exe into %LocalAppData%\\NuGet\\CredentialProviders\n"
            ),
            None,
        ),
        "bazel" => (
            format!(
                "ln -s {exe:?} {dir}/credence-bazel\n# ~/.bazelrc\ncommon --credential_helper={dir}/credence-bazel\n# or scoped: common --credential_helper=*.example.com={dir}/credence-bazel\n"
            ),
            None,
        ),
        "goauth" => (
            format!("go env -w GOAUTH='{exe} goauth'\n"),
            Some(Write::Commands(vec![vec![
                "go".into(),
                "env".into(),
                "-w".into(),
                format!("GOAUTH={exe} goauth"),
            ]])),
        ),
        "keyring" => (
            format!(
                "ln -s {exe:?} ~/.local/bin/keyring   # first `keyring` on PATH\npip config set global.keyring-provider subprocess   # uv: UV_KEYRING_PROVIDER=subprocess\n"
            ),
            None,
        ),
        "kubectl" => (
            format!(
                "# kubeconfig, under users[].user:\nexec:\n  apiVersion: client.authentication.k8s.io/v1\n  command: {exe}\n  args: [kubectl]\n  provideClusterInfo: true\n  interactiveMode: IfAvailable\n"
            ),
            None,
        ),
        _ => (String::new(), None),
    }
}

fn git_config(key: &str, value: &str) -> Vec<String> {
    ["git", "config", "--global", key, value].map(String::from).to_vec()
}

/// The origins of configured `serves` prefixes that have a path (`https://git.example/team/`),
/// each once, with a warning naming the prefix; none when the config cannot be read.
fn origins_served_with_a_path() -> Vec<String> {
    let config = crate::paths::Paths::from_env()
        .and_then(|paths| crate::config::Config::load(&paths.config_file()).map_err(|e| e.to_string()));
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "credence: warning: {e}; if a provider serves a prefix with a path, git must also send paths: git config --global credential.<origin>.useHttpPath true"
            );
            return Vec::new();
        }
    };
    let mut origins: Vec<String> = Vec::new();
    for provider in &config.providers {
        for prefix in provider.serves.iter().filter(|p| !p.path.is_empty()) {
            eprintln!(
                "credence: warning: provider {:?} serves {prefix}, and git sends a path only with credential.{}.useHttpPath = true (`credence setup git --write` sets it)",
                provider.name, prefix.origin
            );
            let origin = prefix.origin.to_string();
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
    }
    origins
}

enum Write {
    /// Commands to run, in order.
    Commands(Vec<Vec<String>>),
    CargoConfig(String),
}

pub fn run(tool: &str, write: bool) -> Result<ExitCode, String> {
    let (text, action) = instructions(tool);
    if !write {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    match action {
        None => Err(format!(
            "`--write` is not available for {tool}: apply these lines yourself:\n{text}"
        )),
        Some(Write::Commands(commands)) => {
            for argv in commands {
                let status = std::process::Command::new(&argv[0])
                    .args(&argv[1..])
                    .status()
                    .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
                if !status.success() {
                    return Err(format!("`{}` failed", argv.join(" ")));
                }
                eprintln!("credence: ran {}", argv.join(" "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Write::CargoConfig(exe)) => {
            let home = std::env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
            let path = home.ok_or("neither CARGO_HOME nor HOME is set")?.join("config.toml");
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current.contains("global-credential-providers") {
                return Err(format!(
                    "{} already sets global-credential-providers; edit it to:\n{text}",
                    path.display()
                ));
            }
            let mut doc: toml::Table =
                toml::from_str(&current).map_err(|e| format!("{} is not valid TOML: {e}", path.display()))?;
            let registry = doc
                .entry("registry")
                .or_insert_with(|| toml::Value::Table(Default::default()));
            let table = registry.as_table_mut().ok_or("[registry] is not a table")?;
            table.insert(
                "global-credential-providers".into(),
                toml::Value::Array(vec!["cargo:token".into(), exe.into()]),
            );
            std::fs::create_dir_all(path.parent().unwrap()).map_err(|e| e.to_string())?;
            std::fs::write(&path, toml::to_string(&doc).map_err(|e| e.to_string())?)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("credence: wrote {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
