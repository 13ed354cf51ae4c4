//! Where credence keeps things: config and providers in `$CREDENCE_HOME` (default the XDG
//! config dir `credence/`), compiled components under the XDG cache dir, stored state and
//! credentials under the XDG state dir.

use std::env;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct Paths {
    /// `config.toml` and `providers/`.
    pub home: PathBuf,
    /// Precompiled components (`cwasm/`).
    pub cache: PathBuf,
    /// Provider state and cached credentials.
    pub state: PathBuf,
    /// Highest statement sequence seen per provider (survives `credence forget`).
    pub trust_state: PathBuf,
}

impl Paths {
    pub fn from_env() -> Result<Paths, String> {
        let home = match env::var_os("CREDENCE_HOME").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => xdg("XDG_CONFIG_HOME", &[".config"], "APPDATA")?.join("credence"),
        };
        let state = xdg("XDG_STATE_HOME", &[".local", "state"], "LOCALAPPDATA")?.join("credence");
        Ok(Paths {
            home,
            cache: xdg("XDG_CACHE_HOME", &[".cache"], "LOCALAPPDATA")?.join("credence"),
            state: state.join("state"),
            trust_state: state,
        })
    }

    pub fn config_file(&self) -> PathBuf {
        self.home.join("config.toml")
    }
    pub fn trust_file(&self) -> PathBuf {
        self.home.join("trust.toml")
    }
    pub fn providers_dir(&self) -> PathBuf {
        self.home.join("providers")
    }
    pub fn compiled_dir(&self) -> PathBuf {
        self.cache.join("cwasm")
    }
}

/// An XDG base dir: the variable if set and absolute (the spec says to ignore relative
/// ones), else the fallback under `$HOME`; on Windows the given known folder.
fn xdg(var: &str, fallback: &[&str], windows_var: &str) -> Result<PathBuf, String> {
    if let Some(dir) = env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute()) {
        return Ok(dir);
    }
    if cfg!(windows) {
        if let Some(dir) = env::var_os(windows_var).map(PathBuf::from).filter(|p| p.is_absolute()) {
            return Ok(dir);
        }
    }
    let home = env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .ok_or_else(|| format!("neither ${var} nor $HOME is set to an absolute path; set CREDENCE_HOME and {var}"))?;
    Ok(fallback.iter().fold(home, |p, part| p.join(part)))
}
