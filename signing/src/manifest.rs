//! The provider manifest: what a provider declares it needs. It is the ceiling of what it
//! may do; the user's config grants a subset, and the host enforces the intersection.
//!
//! ```toml
//! name = "token-exchange"
//! version = "0.1.0"
//! world = "credence:provider/provider@0.2.0"   # or @0.1.0
//! sequence = 1                    # optional; raise it with every release (rollback protection)
//! origins = ["https://login.example.com"]
//! wildcard-origins = []            # optional, e.g. "https://*.corp.example", "http://127.0.0.1:*"
//! prompts = []                     # any of "ask", "show", "open-url", "device-code", "authorize"
//! id-token = false                 # optional: may ask for the CI job's identity token
//! [limits]                         # optional; the host's defaults apply otherwise
//! memory-mib = 64
//! cpu-ms = 5000
//! wall-ms = 60000
//! interactive-wall-ms = 900000    # once a call shows a device code or authorizes
//! [settings.client-secret]         # optional: the settings it reads, for `credence install`
//! description = "the client secret of your app registration"
//! required = true
//! secret = true                    # read from the terminal or stdin, never from argv
//! ```

use crate::origin::{Origin, OriginError, OriginPattern};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The newest world; a manifest written today declares it.
pub const WORLD: &str = "credence:provider/provider@0.2.0";
/// Every world this credence runs: 0.1.0 providers keep running unchanged.
pub const WORLDS: &[&str] = &["credence:provider/provider@0.1.0", WORLD];

/// Whether this credence runs providers of `world`.
pub fn supported_world(world: &str) -> bool {
    WORLDS.contains(&world)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptKind {
    Ask,
    Show,
    OpenUrl,
    /// `flow.show-device-code` (world 0.2.0): an RFC 8628 device code.
    DeviceCode,
    /// `flow.authorize` (world 0.2.0): an authorization code with PKCE through the host's
    /// loopback listener and the user's browser.
    Authorize,
}

impl PromptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PromptKind::Ask => "ask",
            PromptKind::Show => "show",
            PromptKind::OpenUrl => "open-url",
            PromptKind::DeviceCode => "device-code",
            PromptKind::Authorize => "authorize",
        }
    }
}

/// Resource limits; `None` means "the host's default".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Limits {
    pub memory_mib: Option<u32>,
    pub cpu_ms: Option<u64>,
    pub wall_ms: Option<u64>,
    /// The wall clock of a call once it shows a device code or authorizes.
    pub interactive_wall_ms: Option<u64>,
}

impl Limits {
    /// Each limit is the smaller of the two where both are set.
    pub fn min(self, other: Limits) -> Limits {
        fn m<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        Limits {
            memory_mib: m(self.memory_mib, other.memory_mib),
            cpu_ms: m(self.cpu_ms, other.cpu_ms),
            wall_ms: m(self.wall_ms, other.wall_ms),
            interactive_wall_ms: m(self.interactive_wall_ms, other.interactive_wall_ms),
        }
    }
}

/// A setting the provider reads, as its manifest declares it: `credence install` asks for
/// the required ones and reads the secret ones from the terminal or stdin, never from argv
/// (where shell history and `ps` keep them). Part of the signed ceiling, so what a
/// publisher marked secret stays marked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingSpec {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
}

/// The longest setting description credence shows.
pub const MAX_SETTING_DESCRIPTION: usize = 200;

/// A declared setting's name and description are shown to users and written into
/// `config.toml`: plain names, short printable descriptions.
pub fn check_settings(settings: &BTreeMap<String, SettingSpec>) -> Result<(), String> {
    for (name, spec) in settings {
        let plain = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !plain {
            return Err(format!(
                "setting {name:?} must be 1-64 characters of a-z, 0-9, '-' and '_', starting with a letter"
            ));
        }
        if spec.description.chars().count() > MAX_SETTING_DESCRIPTION || spec.description.chars().any(char::is_control)
        {
            return Err(format!(
                "setting {name:?}: the description must be at most {MAX_SETTING_DESCRIPTION} characters, without control characters"
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The settings it reads (none declared: nothing is known about them).
    pub settings: BTreeMap<String, SettingSpec>,
    pub name: String,
    pub version: String,
    pub world: String,
    pub sequence: u64,
    pub origins: BTreeSet<Origin>,
    pub wildcard_origins: BTreeSet<OriginPattern>,
    pub prompts: BTreeSet<PromptKind>,
    pub limits: Limits,
    /// It may ask for the CI job's identity token (`workload-identity`, world 0.2.0), for
    /// the audiences the user's config grants the instance.
    pub id_token: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is not valid TOML for a provider manifest: {0}")]
    Syntax(String),
    #[error("the provider name {0:?} must be 1-64 characters of a-z, 0-9 and '-', starting with a letter")]
    BadName(String),
    #[error("the manifest declares world {0:?}; this credence runs {runs}", runs = WORLDS.join(" and "))]
    UnsupportedWorld(String),
    #[error("the manifest declares an origin credence cannot grant: {0}")]
    Origin(#[from] OriginError),
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    world: String,
    #[serde(default = "first_sequence")]
    sequence: u64,
    #[serde(default)]
    origins: Vec<String>,
    #[serde(default)]
    wildcard_origins: Vec<String>,
    #[serde(default)]
    prompts: Vec<PromptKind>,
    #[serde(default)]
    id_token: bool,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    settings: BTreeMap<String, SettingSpec>,
}

fn first_sequence() -> u64 {
    1
}

impl Manifest {
    /// Whether this ceiling lets the provider call `origin`.
    pub fn allows(&self, origin: &Origin) -> bool {
        self.origins.contains(origin) || self.wildcard_origins.iter().any(|p| p.matches(origin))
    }

    pub fn from_toml(text: &str) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Syntax(e.message().to_owned()))?;
        if !valid_name(&raw.name) {
            return Err(ManifestError::BadName(raw.name));
        }
        if !supported_world(&raw.world) {
            return Err(ManifestError::UnsupportedWorld(raw.world));
        }
        let origins = raw.origins.iter().map(|o| Origin::parse(o)).collect::<Result<_, _>>()?;
        let wildcard_origins = raw
            .wildcard_origins
            .iter()
            .map(|o| OriginPattern::parse(o))
            .collect::<Result<_, _>>()?;
        if !valid_version(&raw.version) {
            return Err(ManifestError::Syntax(format!(
                "version {:?} is not a semver version",
                raw.version
            )));
        }
        check_settings(&raw.settings).map_err(ManifestError::Syntax)?;
        Ok(Manifest {
            settings: raw.settings,
            name: raw.name,
            version: raw.version,
            world: raw.world,
            sequence: raw.sequence,
            origins,
            wildcard_origins,
            prompts: raw.prompts.into_iter().collect(),
            id_token: raw.id_token,
            limits: raw.limits,
        })
    }
}

/// Provider names appear in prompts, logs and file names, so they are kept plain.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A version as a manifest may state it: 1 to 64 characters of semver (letters, digits,
/// `.`, `-`, `+`). The statement holds the same rule, so nothing printed from one can
/// carry a control character.
pub fn valid_version(version: &str) -> bool {
    let semver_chars = |c: char| c.is_ascii_alphanumeric() || ".-+".contains(c);
    !version.is_empty() && version.len() <= 64 && version.chars().all(semver_chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_manifest_parses() {
        let m = Manifest::from_toml(
            r#"name = "token-exchange"
version = "0.1.0"
world = "credence:provider/provider@0.1.0"
origins = ["https://Login.Example.com:443"]
prompts = ["show", "open-url"]
[limits]
memory-mib = 32
"#,
        )
        .unwrap();
        assert_eq!(
            m.origins.iter().next().unwrap().to_string(),
            "https://login.example.com"
        );
        assert!(m.prompts.contains(&PromptKind::OpenUrl));
        assert_eq!(m.limits.memory_mib, Some(32));
    }

    #[test]
    fn unknown_keys_and_bad_names_are_refused() {
        let base = "version = \"1\"\nworld = \"credence:provider/provider@0.1.0\"\n";
        assert!(matches!(
            Manifest::from_toml(&format!("name = \"x\"\n{base}filesystem = true")),
            Err(ManifestError::Syntax(_))
        ));
        assert!(matches!(
            Manifest::from_toml(&format!("name = \"../x\"\n{base}")),
            Err(ManifestError::BadName(_))
        ));
        assert!(matches!(
            Manifest::from_toml(&format!("name = \"x\"\n{base}origins = [\"http://evil.example\"]")),
            Err(ManifestError::Origin(OriginError::SchemeNotAllowed(..)))
        ));
    }
}
