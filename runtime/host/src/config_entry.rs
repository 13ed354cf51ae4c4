//! `credence install X.wasm --serves URL`: the `[[provider]]` entry for config.toml, built
//! from the command line and the provider's signed ceiling, checked as the config will
//! read it, and added to the file without disturbing the rest of it (comments, order).
//!
//! Settings the ceiling marks secret are never taken from argv, where shell history and
//! `ps` keep them: they are read from the terminal with echo off, or from stdin (one
//! line each, in the order of their names) when there is no terminal.

use credence_signing::{Manifest, Origin};
use std::collections::BTreeMap;
use std::io::BufRead;

use std::path::PathBuf;

pub struct Entry {
    path: PathBuf,
    /// The file as it was read, so a change made meanwhile is not overwritten.
    read: String,
    text: String,
    instance: String,
}

impl Entry {
    pub fn new(
        paths: &crate::paths::Paths,
        ceiling: &Manifest,
        name: Option<String>,
        serves: Vec<String>,
        settings: Vec<String>,
        grants: Vec<String>,
    ) -> Result<Entry, String> {
        let instance = name.unwrap_or_else(|| ceiling.name.clone());
        let mut granted = Vec::new();
        for g in &grants {
            let origin = Origin::parse(g).map_err(|e| format!("--grant {g}: {e}"))?;
            if !ceiling.allows(&origin) {
                return Err(format!(
                    "--grant {origin}: {} may call only what it declares ({}), so granting more gives it nothing",
                    ceiling.name,
                    declared_origins(ceiling)
                ));
            }
            granted.push(origin.to_string());
        }

        let mut values: BTreeMap<String, String> = BTreeMap::new();
        for kv in &settings {
            let (key, value) = kv
                .split_once('=')
                .ok_or_else(|| format!("--setting {kv:?} is not KEY=VALUE"))?;
            if ceiling.settings.get(key).is_some_and(|s| s.secret) {
                return Err(format!(
                    "{} marks the setting {key} secret, so it is not taken from the command line (shell history and `ps` keep it): run the command again without `--setting {key}=...` and type it when asked, or pipe it on stdin",
                    ceiling.name
                ));
            }
            if !ceiling.settings.is_empty() && !ceiling.settings.contains_key(key) {
                eprintln!(
                    "credence: warning: {} does not declare a setting {key:?} (it declares {}); it is written anyway",
                    ceiling.name,
                    ceiling.settings.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            values.insert(key.to_owned(), value.to_owned());
        }
        // Everything that can be refused is refused before a secret is asked for.
        for (key, spec) in &ceiling.settings {
            if spec.required && !spec.secret && !values.contains_key(key) {
                return Err(format!(
                    "{} needs the setting {key}{}: add `--setting {key}=...`",
                    ceiling.name,
                    described(&spec.description)
                ));
            }
        }
        let path = paths.config_file();
        let current = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let existing = crate::config::Config::parse(&current)
            .map_err(|e| format!("{} does not load as it is ({e}); fix it first", path.display()))?;
        if existing.providers.iter().any(|p| p.name == instance) {
            return Err(format!(
                "{} has an instance named {instance:?} already: choose another name with --name, or edit that entry",
                path.display()
            ));
        }
        let mut stdin = std::io::stdin().lock();
        let asked: Vec<_> = ceiling
            .settings
            .iter()
            .filter(|(k, s)| s.secret && !values.contains_key(*k))
            .collect();
        for (key, spec) in asked {
            match read_secret(&ceiling.name, key, &spec.description, &mut stdin)? {
                Some(v) if !v.is_empty() => {
                    values.insert(key.clone(), v);
                }
                _ if spec.required => {
                    return Err(format!(
                        "{} needs the secret setting {key}, and none was given (type it when asked, or pipe it on stdin)",
                        ceiling.name
                    ));
                }
                _ => {}
            }
        }

        let mut doc: toml_edit::DocumentMut = current
            .parse()
            .map_err(|e| format!("{} is not valid TOML: {e}", path.display()))?;
        let mut table = toml_edit::Table::new();
        table.insert("name", toml_edit::value(instance.as_str()));
        if instance != ceiling.name {
            table.insert("component", toml_edit::value(format!("{}.wasm", ceiling.name)));
        }
        table.insert(
            "serves",
            toml_edit::value(serves.iter().map(String::as_str).collect::<toml_edit::Array>()),
        );
        if !granted.is_empty() {
            table.insert(
                "grant-origins",
                toml_edit::value(granted.iter().map(String::as_str).collect::<toml_edit::Array>()),
            );
        }
        if !values.is_empty() {
            let mut inline = toml_edit::InlineTable::new();
            for (k, v) in &values {
                inline.insert(k, v.as_str().into());
            }
            table.insert("settings", toml_edit::value(inline));
        }
        doc.entry("provider")
            .or_insert_with(|| toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()))
            .as_array_of_tables_mut()
            .ok_or_else(|| format!("`provider` in {} is not a list of [[provider]] tables", path.display()))?
            .push(table);
        let text = doc.to_string();
        // Read back as every credence will read it: an entry that would not load is not written.
        crate::config::Config::parse(&text).map_err(|e| format!("the new entry would not load: {e}"))?;
        Ok(Entry {
            path,
            read: current,
            text,
            instance,
        })
    }

    /// Writes the config with the entry (0600: it may hold secrets now), replacing the file
    /// by rename so no credence ever reads half of it. Returns the instance's name.
    pub fn write(self) -> Result<String, String> {
        let now = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
        };
        if now != self.read {
            return Err(format!(
                "{} changed while the provider was being installed; the provider is installed, run the command again to add its entry",
                self.path.display()
            ));
        }
        // A config.toml that is a link (to a dotfiles checkout) stays one: its target is written.
        let path = match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_symlink() => {
                std::fs::canonicalize(&self.path).map_err(|e| format!("cannot follow {}: {e}", self.path.display()))?
            }
            _ => self.path.clone(),
        };
        let dir = path.parent().ok_or("the config file has no directory")?;
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("the config file has no name")?;
        crate::signing_cli::write_file_atomically(dir, name, self.text.as_bytes(), 0o600)?;
        Ok(self.instance)
    }
}

fn described(description: &str) -> String {
    if description.is_empty() {
        String::new()
    } else {
        format!(" ({})", credence::terminal::neutralise(description))
    }
}

fn declared_origins(ceiling: &Manifest) -> String {
    let all: Vec<String> = ceiling
        .origins
        .iter()
        .map(|o| o.to_string())
        .chain(ceiling.wildcard_origins.iter().map(|o| o.to_string()))
        .collect();
    if all.is_empty() {
        "no origins".into()
    } else {
        all.join(", ")
    }
}

/// A secret setting's value: typed on the terminal with echo off, or one line of stdin
/// when there is no terminal. `None` at end of input.
fn read_secret(
    provider: &str,
    key: &str,
    description: &str,
    stdin: &mut impl BufRead,
) -> Result<Option<String>, String> {
    use credence::terminal::Terminal;
    let mut tty = credence::terminal::ControllingTerminal;
    if tty.can_prompt() {
        let label = format!(
            "credence: {provider} setting {key}{} (not echoed)",
            described(description)
        );
        return tty
            .ask(&label, true)
            .map(|v| v.map(|s| s.trim_end_matches(['\r', '\n']).to_owned()))
            .map_err(|e| format!("cannot read {key} from the terminal: {e}"));
    }
    let mut line = String::new();
    let limit = credence::terminal::MAX_ANSWER_BYTES as u64;
    let read = std::io::Read::take(&mut *stdin, limit + 1)
        .read_line(&mut line)
        .map_err(|e| format!("cannot read {key} from stdin: {e}"))?;
    if read as u64 > limit {
        return Err(format!("the value of {key} on stdin is longer than {limit} bytes"));
    }
    Ok((read > 0).then(|| line.trim_end_matches(['\r', '\n']).to_owned()))
}
