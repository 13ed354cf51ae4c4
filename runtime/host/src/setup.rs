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

/// `s` quoted for a POSIX shell, so a printed line can be pasted as it is (a path with a
/// space, a quote or a `$` in it included).
pub(crate) fn sh(s: &str) -> String {
    shlex::try_quote(s)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| s.to_owned())
}

fn dir() -> String {
    credence::exe::sibling("credence")
        .and_then(|p| p.parent().map(|d| d.display().to_string()))
        .unwrap_or_else(|| ".".into())
}

/// The instructions for `tool`: (text to show, what `--write` does).
fn instructions(tool: &str) -> (String, Option<Write>) {
    let exe = exe();
    let q = sh(&exe);
    let bazel = sh(&format!("{}/credence-bazel", dir()));
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
            let mut text = format!("git config --global credential.helper {}\n", sh(&helper));
            let mut commands = Vec::new();
            let served = served_origins();
            // git hands a credential that worked to *every* helper (`store`): another
            // helper kept for the origins credence serves would write credence's tokens
            // to ~/.git-credentials or a keychain, and serve them later without the gate
            // or the audit trail. For those origins the list is reset (an empty value)
            // and credence is the only helper.
            if !served.all.is_empty() {
                text.push_str("# the origins credence serves ask credence only:\n");
            }
            for origin in &served.all {
                let key = format!("credential.{origin}.helper");
                text.push_str(&format!(
                    "git config --global {key} ''\ngit config --global --add {key} {}\n",
                    sh(&helper)
                ));
            }
            // git sends the path only with `credential.useHttpPath`; without it credence
            // sees `https://host/`, which a prefix with a path does not serve. Set per
            // origin, so other hosts' helpers keep their host-wide entries.
            for origin in served.with_a_path {
                let key = format!("credential.{origin}.useHttpPath");
                text.push_str(&format!("git config --global {key} true\n"));
                commands.push(git_config(&key, "true"));
            }
            (
                text,
                Some(Write::Git {
                    helper,
                    origins: served.all,
                    commands,
                }),
            )
        }
        "docker" => (
            format!(
                "ln -s {q} ~/.local/bin/docker-credential-credence   # a directory on PATH\n# ~/.docker/config.json\n{{ \"credsStore\": \"credence\" }}\n# or per registry: {{ \"credHelpers\": {{ \"registry.example.com\": \"credence\" }} }}\n"
            ),
            None,
        ),
        "nuget" => (
            format!(
                "ln -s {q} ~/.local/bin/nuget-plugin-credence   # NuGet 6.13+ finds nuget-plugin-* on PATH\n# nuget.exe (v1): copy or link as CredentialProviderCredence.exe into %LocalAppData%\\NuGet\\CredentialProviders\n"
            ),
            None,
        ),
        "bazel" => (
            format!(
                "ln -s {q} {bazel}\n# ~/.bazelrc\ncommon --credential_helper={bazel}\n# or scoped: common --credential_helper=*.example.com={bazel}\n"
            ),
            None,
        ),
        "goauth" => (
            format!("go env -w {}\n", sh(&format!("GOAUTH={exe} goauth"))),
            Some(Write::GoAuth(format!("{exe} goauth"))),
        ),
        "keyring" => (
            format!(
                "ln -s {q} ~/.local/bin/keyring   # first `keyring` on PATH\npip config set global.keyring-provider subprocess   # uv: UV_KEYRING_PROVIDER=subprocess\n"
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

struct Served {
    /// Every origin a configured prefix is on, each once.
    all: Vec<String>,
    /// Those of prefixes with a path (`https://git.example/team/`).
    with_a_path: Vec<String>,
}

/// The origins of the configured `serves` prefixes, with a warning naming each prefix
/// that has a path; none when the config cannot be read.
fn served_origins() -> Served {
    let config = crate::paths::Paths::from_env()
        .and_then(|paths| crate::config::Config::load(&paths.config_file()).map_err(|e| e.to_string()));
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "credence: warning: {e}; if a provider serves a prefix with a path, git must also send paths: git config --global credential.<origin>.useHttpPath true"
            );
            return Served {
                all: Vec::new(),
                with_a_path: Vec::new(),
            };
        }
    };
    let mut all: Vec<String> = Vec::new();
    let mut origins: Vec<String> = Vec::new();
    for provider in &config.providers {
        for prefix in &provider.serves {
            let origin = prefix.origin.to_string();
            if !all.contains(&origin) {
                all.push(origin);
            }
        }
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
    Served {
        all,
        with_a_path: origins,
    }
}

enum Write {
    /// The helper git runs for credence, added to the global config unless it is there
    /// already; then commands to run, in order (each idempotent).
    Git {
        helper: String,
        /// Where credence is the only helper.
        origins: Vec<String>,
        commands: Vec<Vec<String>>,
    },
    /// Added to `GOAUTH` unless it is there already.
    GoAuth(String),
    CargoConfig(String),
}

/// Runs `argv`; its stdout, or why it failed.
fn output(argv: &[&str]) -> Result<std::process::Output, String> {
    std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", argv[0]))
}

fn run_all(commands: &[Vec<String>]) -> Result<(), String> {
    for argv in commands {
        let status = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .status()
            .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
        if !status.success() {
            return Err(format!(
                "`{}` failed",
                argv.iter().map(|a| sh(a)).collect::<Vec<_>>().join(" ")
            ));
        }
        eprintln!(
            "credence: ran {}",
            argv.iter().map(|a| sh(a)).collect::<Vec<_>>().join(" ")
        );
    }
    Ok(())
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
        Some(Write::Git {
            helper,
            origins,
            commands,
        }) => {
            // git asks every configured helper in turn: others stay, credence is added once.
            let listed = output(&["git", "config", "--global", "--get-all", "credential.helper"])?;
            let existing: Vec<String> = String::from_utf8_lossy(&listed.stdout)
                .lines()
                .map(str::to_owned)
                .collect();
            if existing.iter().any(|h| *h == helper) {
                eprintln!(
                    "credence: git already asks credence (credential.helper = {}); nothing to add",
                    sh(&helper)
                );
            } else {
                let mut argv = vec!["git".to_owned(), "config".into(), "--global".into()];
                if !existing.is_empty() {
                    eprintln!(
                        "credence: git asks {} first; credence is added after {}",
                        existing.iter().map(|h| sh(h)).collect::<Vec<_>>().join(", "),
                        if existing.len() == 1 { "it" } else { "them" }
                    );
                    argv.push("--add".into());
                }
                argv.extend(["credential.helper".to_owned(), helper.clone()]);
                run_all(&[argv])?;
            }
            for origin in &origins {
                let key = format!("credential.{origin}.helper");
                let listed = output(&["git", "config", "--global", "--get-all", &key])?;
                let now: Vec<String> = String::from_utf8_lossy(&listed.stdout)
                    .lines()
                    .map(str::to_owned)
                    .collect();
                if now == ["", helper.as_str()] {
                    continue;
                }
                if !now.is_empty() {
                    run_all(&[["git", "config", "--global", "--unset-all", &key]
                        .map(String::from)
                        .to_vec()])?;
                }
                run_all(&[
                    ["git", "config", "--global", &key, ""].map(String::from).to_vec(),
                    vec![
                        "git".into(),
                        "config".into(),
                        "--global".into(),
                        "--add".into(),
                        key.clone(),
                        helper.clone(),
                    ],
                ])?;
            }
            if !existing.is_empty() && origins.is_empty() {
                eprintln!(
                    "credence: note: no provider is configured yet; once one is, run `credence setup git --write` again, so that for the origins it serves git asks credence only (another helper would store what credence hands out)"
                );
            }
            run_all(&commands)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Write::GoAuth(ours)) => {
            let current = output(&["go", "env", "GOAUTH"])?;
            let current = String::from_utf8_lossy(&current.stdout).trim().to_owned();
            // GOAUTH is a list of commands separated by ';', tried in order; `off` turns
            // authentication off and combines with nothing.
            if current.split(';').any(|c| c.trim() == ours) {
                eprintln!("credence: GOAUTH already asks credence ({current}); nothing to change");
                return Ok(ExitCode::SUCCESS);
            }
            let value = if current.is_empty() || current == "off" {
                ours
            } else {
                format!("{current};{ours}")
            };
            run_all(&[vec!["go".into(), "env".into(), "-w".into(), format!("GOAUTH={value}")]])?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Write::CargoConfig(exe)) => {
            let home = std::env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
            let path = home.ok_or("neither CARGO_HOME nor HOME is set")?.join("config.toml");
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            // Edited in place: the user's comments and layout stay.
            let mut doc: toml_edit::DocumentMut = current
                .parse()
                .map_err(|e| format!("{} is not valid TOML: {e}", path.display()))?;
            let registry = doc
                .entry("registry")
                .or_insert_with(toml_edit::table)
                .as_table_like_mut()
                .ok_or_else(|| format!("[registry] in {} is not a table", path.display()))?;
            match registry.get_mut("global-credential-providers") {
                None => {
                    let mut list = toml_edit::Array::new();
                    list.push("cargo:token");
                    list.push(exe.as_str());
                    registry.insert("global-credential-providers", toml_edit::value(list));
                }
                Some(item) => {
                    let list = item.as_array_mut().ok_or_else(|| {
                        format!(
                            "global-credential-providers in {} is not a list; edit it to:\n{text}",
                            path.display()
                        )
                    })?;
                    if list.iter().any(|v| v.as_str() == Some(exe.as_str())) {
                        eprintln!("credence: {} already lists credence; nothing changed", path.display());
                        return Ok(ExitCode::SUCCESS);
                    }
                    // Providers toward the end of the list take precedence in cargo.
                    list.push(exe.as_str());
                    eprintln!("credence: added credence to the end of global-credential-providers (it is asked first)");
                }
            }
            std::fs::create_dir_all(path.parent().unwrap()).map_err(|e| e.to_string())?;
            std::fs::write(&path, doc.to_string()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("credence: wrote {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sh;

    #[test]
    fn printed_arguments_survive_a_paste_into_a_shell() {
        assert_eq!(sh("/usr/bin/credence"), "/usr/bin/credence", "nothing to quote");
        for arg in [
            "/opt/my tools/credence git",
            "it's $HOME",
            "a\"b`c`\\d",
            "GOAUTH=/x y/credence goauth",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", sh(arg)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), arg, "{}", sh(arg));
        }
    }
}
