//! `[remote]` in `config.toml`: what a remote session may ask for. Read only on the user's
//! machine (a policy inside the remote could be rewritten by what runs there), default deny,
//! with overrides per session label (`[remote.label.NAME]`); a label is the name the user
//! gave the session on this machine, never one the remote sends.

use crate::config::ServePrefix;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

/// How often a session needs the user's yes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Approval {
    /// One yes for the whole session.
    Once,
    /// One yes per host the session asks about.
    PerHost,
    /// A yes for every request.
    EveryRequest,
    /// No question: the allow list alone decides.
    Never,
}

impl Approval {
    pub fn name(self) -> &'static str {
        match self {
            Approval::Once => "once",
            Approval::PerHost => "per-host",
            Approval::EveryRequest => "every-request",
            Approval::Never => "never",
        }
    }
}

/// Which operations a session may ask credentials for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operations {
    /// Fetching only. cargo (`read` against `publish`, `yank`, `owners`) and NuGet say what a
    /// credential is for; git and docker ask the same way to fetch and to push, so for them
    /// the allow list is the whole control.
    ReadOnly,
    Any,
}

/// The operations every front end names for fetching.
const READ_OPERATIONS: &[&str] = &["read", "get", "pull", "download"];

/// One session's rules, after defaults and its label's overrides.
#[derive(Clone, Debug)]
pub struct RemoteRules {
    pub allow: Vec<ServePrefix>,
    pub approve: Approval,
    pub operations: Operations,
    /// Every expiry handed to the session is clipped to now + this.
    pub max_lifetime: Duration,
    /// Requests of the session answered at once; more wait.
    pub concurrency: usize,
    /// Questions (approvals, provider prompts) the session may cause per
    /// [`PROMPT_WINDOW`]; past that it gets `needs-interaction` without one.
    pub max_prompts: u32,
}

pub const PROMPT_WINDOW: Duration = Duration::from_secs(600);

/// What the policy says of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Within the allow list; `prefix` is the rule that matched.
    Allowed { prefix: String },
    /// Outside the allow list: answered as if nothing served it.
    NotAllowed,
    /// An operation a read-only session may not ask for.
    NotReadOnly,
}

impl Decision {
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Allowed { .. } => "allowed",
            Decision::NotAllowed => "not-allowed",
            Decision::NotReadOnly => "operation-refused",
        }
    }
}

impl RemoteRules {
    pub fn decide(&self, url: &Url, operation: &str) -> Decision {
        let Some(rule) = self.allow.iter().find(|p| p.matches(url)) else {
            return Decision::NotAllowed;
        };
        if self.operations == Operations::ReadOnly && !READ_OPERATIONS.contains(&operation) {
            return Decision::NotReadOnly;
        }
        Decision::Allowed {
            prefix: rule.to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RemotePolicy {
    defaults: RemoteRules,
    labels: BTreeMap<String, RawRules>,
}

impl Default for RemotePolicy {
    fn default() -> Self {
        RemotePolicy::from_raw(RawRemote::default()).expect("the defaults are valid")
    }
}

impl RemotePolicy {
    /// The rules for a session labelled `label`.
    pub fn for_label(&self, label: &str) -> RemoteRules {
        match self.labels.get(label) {
            Some(raw) => apply(self.defaults.clone(), raw).expect("checked when the config was read"),
            None => self.defaults.clone(),
        }
    }

    pub fn from_raw(raw: RawRemote) -> Result<RemotePolicy, String> {
        let base = RemoteRules {
            allow: Vec::new(),
            approve: Approval::PerHost,
            operations: Operations::ReadOnly,
            max_lifetime: Duration::from_secs(3600),
            concurrency: 4,
            max_prompts: 3,
        };
        let (rules, labels) = raw.split()?;
        let defaults = apply(base, &rules).map_err(|e| format!("[remote] {e}"))?;
        for (label, rules) in &labels {
            if !valid_label(label) {
                return Err(format!(
                    "[remote.label.{label:?}]: a label is 1-64 characters of a-z, A-Z, 0-9, '.', '_' and '-'"
                ));
            }
            apply(defaults.clone(), rules).map_err(|e| format!("[remote.label.{label}] {e}"))?;
        }
        Ok(RemotePolicy { defaults, labels })
    }
}

/// A session label as the user types it: short, and nothing a terminal would interpret.
pub fn valid_label(label: &str) -> bool {
    (1..=64).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn apply(mut rules: RemoteRules, raw: &RawRules) -> Result<RemoteRules, String> {
    if let Some(allow) = &raw.allow {
        rules.allow = allow
            .iter()
            .map(|a| ServePrefix::parse(a).map_err(|e| format!("allow {e}")))
            .collect::<Result<_, _>>()?;
    }
    if let Some(a) = raw.approve {
        rules.approve = a;
    }
    if let Some(o) = raw.operations {
        rules.operations = o;
    }
    if let Some(text) = &raw.max_lifetime {
        let d = crate::config::parse_duration(text).map_err(|e| format!("max-lifetime {e}"))?;
        if d < Duration::from_secs(60) || d > Duration::from_secs(7 * 86_400) {
            return Err(format!("max-lifetime = {text:?} must be between 1 minute and 7 days"));
        }
        rules.max_lifetime = d;
    }
    if let Some(c) = raw.concurrency {
        if !(1..=64).contains(&c) {
            return Err(format!("concurrency = {c} must be between 1 and 64"));
        }
        rules.concurrency = c;
    }
    if let Some(p) = raw.max_prompts {
        if p > 100 {
            return Err(format!("max-prompts = {p} must be at most 100"));
        }
        rules.max_prompts = p;
    }
    Ok(rules)
}

#[derive(Deserialize, Default, Clone, Debug)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawRules {
    allow: Option<Vec<String>>,
    approve: Option<Approval>,
    operations: Option<Operations>,
    max_lifetime: Option<String>,
    concurrency: Option<usize>,
    max_prompts: Option<u32>,
}

/// `[remote]` as read: its own keys are a [`RawRules`], and `label` holds one per label.
/// (serde cannot flatten a struct that refuses unknown keys, so the table is split here.)
#[derive(Deserialize, Default)]
#[serde(transparent)]
pub struct RawRemote(toml::Table);

impl RawRemote {
    fn split(mut self) -> Result<(RawRules, BTreeMap<String, RawRules>), String> {
        let labels = match self.0.remove("label") {
            Some(l) => l
                .try_into()
                .map_err(|e: toml::de::Error| format!("[remote.label]: {}", e.message()))?,
            None => BTreeMap::new(),
        };
        let rules = toml::Value::Table(self.0)
            .try_into()
            .map_err(|e: toml::de::Error| format!("[remote]: {}", e.message()))?;
        Ok((rules, labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<RemotePolicy, String> {
        #[derive(Deserialize)]
        struct Doc {
            remote: RawRemote,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| e.to_string())?;
        RemotePolicy::from_raw(doc.remote)
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn nothing_is_allowed_until_a_prefix_is_and_prefixes_match_on_segment_boundaries() {
        let none = RemotePolicy::default().for_label("dev");
        assert_eq!(
            none.decide(&url("https://git.example/acme/x"), "read"),
            Decision::NotAllowed
        );
        let p = policy("[remote]\nallow = [\"https://git.example/acme\"]\n").unwrap();
        let rules = p.for_label("dev");
        assert!(matches!(
            rules.decide(&url("https://git.example/acme/x"), "read"),
            Decision::Allowed { .. }
        ));
        assert_eq!(
            rules.decide(&url("https://git.example/acmex"), "read"),
            Decision::NotAllowed
        );
        assert_eq!(
            rules.decide(&url("https://git.example:8443/acme/x"), "read"),
            Decision::NotAllowed
        );
        assert_eq!(
            rules.decide(&url("http://git.example/acme/x"), "read"),
            Decision::NotAllowed
        );
        assert_eq!(rules.approve, Approval::PerHost);
        assert_eq!(rules.max_lifetime, Duration::from_secs(3600));
    }

    #[test]
    fn sessions_are_read_only_unless_the_policy_says_otherwise() {
        let p = policy(
            "[remote]\nallow = [\"https://crates.example/\"]\n[remote.label.release]\noperations = \"any\"\napprove = \"every-request\"\n",
        )
        .unwrap();
        let u = url("https://crates.example/api/v1/crates/new");
        assert_eq!(p.for_label("dev").decide(&u, "publish"), Decision::NotReadOnly);
        assert!(matches!(
            p.for_label("dev").decide(&u, "read"),
            Decision::Allowed { .. }
        ));
        let release = p.for_label("release");
        assert!(matches!(release.decide(&u, "publish"), Decision::Allowed { .. }));
        assert_eq!(release.approve, Approval::EveryRequest);
        // The override inherits what it does not set.
        assert_eq!(release.allow.len(), 1);
    }

    #[test]
    fn bad_values_are_refused_with_the_key_named() {
        let e = policy("[remote]\nmax-lifetime = \"10s\"\n").unwrap_err();
        assert!(e.contains("max-lifetime"), "{e}");
        let e = policy("[remote]\nallow = [\"ftp://x.example/\"]\n").unwrap_err();
        assert!(e.contains("allow"), "{e}");
        let e = policy("[remote.label.x]\nconcurrency = 0\n").unwrap_err();
        assert!(e.contains("[remote.label.x] concurrency"), "{e}");
        assert!(policy("[remote]\napprove = \"sometimes\"\n").is_err());
        assert!(policy("[remote]\nallwo = []\n").is_err());
        assert!(policy("[remote.label.\"a b\"]\n").unwrap_err().contains("label"));
    }
}
