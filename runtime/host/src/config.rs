//! The user's `config.toml`: which providers exist, which URLs each serves, which origins
//! it is granted, its settings and limits. Nothing is served unless this file says so.
//!
//! ```toml
//! store = "auto"                               # where secrets are kept: auto, os or file
//!
//! [[provider]]
//! name = "corp-registry"                       # this instance's name (state is kept per name)
//! component = "token-exchange.wasm"            # in providers/; default "<name>.wasm"
//! provider = "token-exchange"                  # the signed name it must be; default: the file stem
//! publisher = "<32 hex key id>"                # optional: the key that must have signed it
//! serves = ["https://registry.corp.example/"]  # URL prefixes: scheme, host, port exact; path prefix
//! grant-origins = ["https://login.corp.example"]
//! [provider.settings]
//! client-id = "ci"
//! grant-id-token = [{ source = "github-actions", audience = "crates.io" }]   # CI identity
//! [provider.limits]
//! memory-mib = 64
//! ```

use crate::os_store::StoreMode;
use crate::request::parse_request_url;
use crate::trusted_file::{FileError, Writers, read_optional};
use credence_signing::manifest::valid_name;
use credence_signing::{Limits, Origin};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// Configs larger than this are refused unread.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
use url::Url;

#[derive(Debug, Clone)]
pub struct Config {
    pub store: StoreMode,
    pub providers: Vec<ProviderConfig>,
    /// `[agent] idle`: how long the agent waits for a request before it exits.
    pub agent_idle: std::time::Duration,
    /// `[remote]`: what remote sessions may ask for (nothing by default).
    pub remote: crate::remote::policy::RemotePolicy,
}

/// The agent's idle exit when `[agent] idle` is not set.
pub const DEFAULT_AGENT_IDLE: std::time::Duration = std::time::Duration::from_secs(30 * 60);

impl Default for Config {
    fn default() -> Self {
        Config {
            store: StoreMode::default(),
            providers: Vec::new(),
            agent_idle: DEFAULT_AGENT_IDLE,
            remote: Default::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    /// File name of the component inside `providers/`.
    pub component: String,
    /// The signed provider name this instance runs. Its settings (a client secret) are
    /// meant for that provider only, so a component signed under any other name, however
    /// validly, is refused.
    pub provider: String,
    /// If set, the key id of the publisher that must have signed the component.
    pub publisher: Option<String>,
    pub serves: Vec<ServePrefix>,
    pub granted_origins: BTreeSet<Origin>,
    pub settings: BTreeMap<String, String>,
    pub limits: Limits,
    /// The CI identity tokens this instance may ask for (`workload-identity`).
    pub id_token_grants: Vec<IdTokenGrant>,
}

/// Where a granted identity token comes from. Only sources the host reads itself: a
/// provider never sees the environment or the files they live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdTokenSource {
    /// GitHub Actions: `ACTIONS_ID_TOKEN_REQUEST_URL` and `_TOKEN` of a job with
    /// `permissions: id-token: write`.
    GithubActions,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdTokenGrant {
    pub source: IdTokenSource,
    pub audience: String,
}

/// A URL prefix a provider serves: scheme, host and port must match exactly, and the
/// path must start with `path` at a segment boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServePrefix {
    pub origin: Origin,
    pub path: String,
}

impl ServePrefix {
    pub fn parse(text: &str) -> Result<ServePrefix, String> {
        let url = parse_request_url(text)?;
        if url.query().is_some() {
            return Err(format!("{text:?}: a served prefix has no query"));
        }
        let origin = Origin::of_url(&url).map_err(|e| {
            if url.scheme() == "http" {
                // The one thing a user can do about it, said in terms of what `serves` means.
                let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
                format!(
                    "{text:?}: credence hands credentials only to https URLs, since plain http would send them in clear; for a registry on this machine, serve http://127.0.0.1{port}/ or http://[::1]{port}/ (not `localhost`, which a resolver may send elsewhere)"
                )
            } else {
                e.to_string()
            }
        })?;
        Ok(ServePrefix {
            origin,
            path: url.path().trim_end_matches('/').to_owned(),
        })
    }

    pub fn matches(&self, url: &Url) -> bool {
        let Ok(origin) = Origin::of_url(url) else {
            return false;
        };
        if origin != self.origin {
            return false;
        }
        let path = url.path();
        // "/api" serves "/api" and "/api/..." but not "/apis".
        path.strip_prefix(self.path.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

impl std::fmt::Display for ServePrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}/", self.origin, self.path)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Read(FileError),
    #[error("{path} is not a valid credence config: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    store: StoreMode,
    /// Spanned: an error about an entry names the line it starts on.
    #[serde(default)]
    provider: Vec<toml::Spanned<RawProvider>>,
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    remote: crate::remote::policy::RawRemote,
}

/// The 1-based line and column of byte `at` in `text`.
fn line_and_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawAgent {
    /// A duration such as `30m`, `2h` or `90s`.
    idle: Option<String>,
}

/// A duration as the config writes it: jiff's friendly form (`30m`, `1h30m`, `90s`). The
/// error starts with the value, for the caller to put the key in front.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let span: jiff::Span = text
        .parse()
        .map_err(|e| format!("= {text:?} is not a duration such as \"30m\" or \"2h\": {e}"))?;
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|e| format!("= {text:?}: {e}"))?;
    std::time::Duration::try_from(d).map_err(|_| format!("= {text:?} is negative"))
}

/// `[agent] idle`: jiff's friendly durations (`30m`, `1h30m`, `90s`), at least a second and
/// at most a week.
fn agent_idle(raw: &RawAgent) -> Result<std::time::Duration, String> {
    let Some(text) = &raw.idle else {
        return Ok(DEFAULT_AGENT_IDLE);
    };
    let d = parse_duration(text).map_err(|e| format!("[agent] idle {e}"))?;
    if d < std::time::Duration::from_secs(1) || d > std::time::Duration::from_secs(7 * 86_400) {
        return Err(format!("[agent] idle = {text:?} must be between 1 s and 7 days"));
    }
    Ok(d)
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawProvider {
    name: String,
    component: Option<String>,
    provider: Option<String>,
    publisher: Option<String>,
    #[serde(default)]
    serves: Vec<String>,
    #[serde(default)]
    grant_origins: Vec<String>,
    #[serde(default)]
    settings: BTreeMap<String, String>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    grant_id_token: Vec<IdTokenGrant>,
}

impl Config {
    /// A missing file is an empty config: credence then serves nothing. The file decides
    /// which code gets which secrets, so one that others could have written is refused.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = read_optional(path, MAX_CONFIG_BYTES, Writers::UserOnly).map_err(ConfigError::Read)?;
        let Some(bytes) = bytes else {
            return Ok(Config::default());
        };
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::Invalid {
            path: path.to_owned(),
            message: "the file is not UTF-8".into(),
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => {
                let (line, column) = line_and_column(text, span.start);
                format!("line {line}, column {column}: {}", e.message())
            }
            None => e.message().to_owned(),
        })?;
        let mut seen = HashSet::new();
        let mut providers = Vec::new();
        for entry in raw.provider {
            let (line, _) = line_and_column(text, entry.span().start);
            let p = entry.into_inner();
            let provider = Self::provider(p, &mut seen).map_err(|e| format!("line {line}: {e}"))?;
            providers.push(provider);
        }
        Ok(Config {
            store: raw.store,
            providers,
            agent_idle: agent_idle(&raw.agent)?,
            remote: crate::remote::policy::RemotePolicy::from_raw(raw.remote)?,
        })
    }

    /// One `[[provider]]` entry, checked.
    fn provider(p: RawProvider, seen: &mut HashSet<String>) -> Result<ProviderConfig, String> {
        if !valid_name(&p.name) {
            return Err(format!(
                "provider name {:?} must be 1-64 characters of a-z, 0-9 and '-', starting with a letter",
                p.name
            ));
        }
        if !seen.insert(p.name.clone()) {
            return Err(format!("provider {:?} is configured twice", p.name));
        }
        let component = p.component.unwrap_or_else(|| format!("{}.wasm", p.name));
        if component.contains(['/', '\\']) || component.starts_with('.') || !component.ends_with(".wasm") {
            return Err(format!(
                "provider {:?}: component {component:?} must be a plain `.wasm` file name inside providers/",
                p.name
            ));
        }
        let provider = match p.provider {
            Some(name) if valid_name(&name) => name,
            Some(name) => {
                return Err(format!(
                    "provider {:?}: provider = {name:?} is not a provider name (a-z, 0-9, '-')",
                    p.name
                ));
            }
            None => {
                let stem = component.trim_end_matches(".wasm");
                if !valid_name(stem) {
                    return Err(format!(
                        "provider {:?}: component {component:?} is not named after a provider, so say which signed provider it must be: `provider = \"<name>\"`",
                        p.name
                    ));
                }
                stem.to_owned()
            }
        };
        let publisher = p
            .publisher
            .map(|k| {
                credence_signing::trust::normalise_hex(&k, 32).ok_or_else(|| {
                    format!(
                        "provider {:?}: publisher = {k:?} is not a key id (32 hex digits; `credence trust list` shows them)",
                        p.name
                    )
                })
            })
            .transpose()?;
        let serves = p
            .serves
            .iter()
            .map(|s| ServePrefix::parse(s).map_err(|e| format!("provider {:?}: serves {e}", p.name)))
            .collect::<Result<Vec<_>, _>>()?;
        let granted_origins = p
            .grant_origins
            .iter()
            .map(|o| Origin::parse(o).map_err(|e| format!("provider {:?}: grant-origins: {e}", p.name)))
            .collect::<Result<_, _>>()?;
        Ok(ProviderConfig {
            name: p.name,
            component,
            provider,
            publisher,
            serves,
            granted_origins,
            settings: p.settings,
            limits: p.limits,
            id_token_grants: p.grant_id_token,
        })
    }

    /// The providers that serve `url`, in config order.
    pub fn providers_for<'a>(&'a self, url: &'a Url) -> impl Iterator<Item = &'a ProviderConfig> + 'a {
        self.providers
            .iter()
            .filter(move |p| p.serves.iter().any(|s| s.matches(url)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn a_prefix_serves_its_path_at_segment_boundaries_only() {
        let p = ServePrefix::parse("https://r.example/api/").unwrap();
        assert!(p.matches(&url("https://r.example/api")));
        assert!(p.matches(&url("https://R.EXAMPLE:443/api/crates/x")));
        assert!(!p.matches(&url("https://r.example/apis")));
        assert!(!p.matches(&url("https://r.example:8443/api/x")));
        assert!(!p.matches(&url("https://r.example.evil.example/api/x")));
        let root = ServePrefix::parse("https://r.example").unwrap();
        assert!(root.matches(&url("https://r.example/anything")));
    }

    #[test]
    fn providers_are_chosen_in_config_order_and_only_where_served() {
        let c = Config::parse(
            r#"
[[provider]]
name = "a"
serves = ["https://r.example/"]
[[provider]]
name = "b"
serves = ["https://r.example/private"]
"#,
        )
        .unwrap();
        let u = url("https://r.example/private/x");
        let names: Vec<_> = c.providers_for(&u).map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(c.providers_for(&url("https://other.example/")).count(), 0);
    }

    #[test]
    fn an_instance_pins_its_component_stem_or_the_provider_it_names() {
        let c = Config::parse(
            "[[provider]]\nname = \"feed\"\ncomponent = \"token-exchange.wasm\"\n[[provider]]\nname = \"b\"\ncomponent = \"x.wasm\"\nprovider = \"token-exchange\"\npublisher = \"ABCDEF0123456789ABCDEF0123456789\"\n",
        )
        .unwrap();
        assert_eq!(c.providers[0].provider, "token-exchange");
        assert_eq!(c.providers[0].publisher, None);
        assert_eq!(c.providers[1].provider, "token-exchange");
        assert_eq!(
            c.providers[1].publisher.as_deref(),
            Some("abcdef0123456789abcdef0123456789")
        );
    }

    #[test]
    fn bad_configs_explain_themselves() {
        for (text, needle) in [
            ("[[provider]]\nname = \"A\"", "provider name"),
            (
                "[[provider]]\nname = \"a\"\ncomponent = \"../x.wasm\"",
                "plain `.wasm` file name",
            ),
            (
                "[[provider]]\nname = \"a\"\nserves = [\"http://localhost:8080\"]",
                "serve http://127.0.0.1:8080/ or http://[::1]:8080/",
            ),
            (
                "[[provider]]\nname = \"a\"\nserves = [\"http://r.example\"]",
                "hands credentials only to https URLs",
            ),
            (
                "[[provider]]\nname = \"a\"\ngrant-origins = [\"https://x.example/path\"]",
                "must not have a path",
            ),
            ("[[provider]]\nname = \"a\"\nfilesystem = true", "unknown field"),
            ("[[provider]]\nname = \"a\"\n[[provider]]\nname = \"a\"", "twice"),
            (
                "[[provider]]\nname = \"a\"\ncomponent = \"My_Provider.wasm\"",
                "say which signed provider it must be",
            ),
            ("[[provider]]\nname = \"a\"\nprovider = \"B\"", "is not a provider name"),
            ("[[provider]]\nname = \"a\"\npublisher = \"xyz\"", "is not a key id"),
        ] {
            let err = Config::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn config_errors_name_the_line_of_the_entry_or_of_the_syntax_error() {
        let two = "store = \"file\"\n\n[[provider]]\nname = \"good\"\n\n[[provider]]\nname = \"b\"\nserves = [\"http://r.example\"]\n";
        let err = Config::parse(two).unwrap_err();
        assert!(err.starts_with("line 6: provider \"b\": serves"), "{err}");
        let syntax = "[[provider]]\nname = \"a\"\nserves = [\"https://r.example/\"\n";
        let err = Config::parse(syntax).unwrap_err();
        assert!(err.starts_with("line 3, column "), "{err}");
        let unknown = "[[provider]]\nname = \"a\"\nfilesystem = true\n";
        let err = Config::parse(unknown).unwrap_err();
        assert!(err.starts_with("line "), "{err}");
        assert!(err.contains("unknown field"), "{err}");
    }
}
