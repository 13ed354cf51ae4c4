//! The user's trust store (`$CREDENCE_HOME/trust.toml`): keys with a role and the provider
//! names each may sign for, revocations, and the policy that says which signatures a
//! provider needs.
//!
//! ```toml
//! [[key]]
//! name = "Acme build team"
//! role = "publisher"                 # or "auditor"
//! public-key = "credence-ed25519-pub:..."
//! providers = ["acme-*", "token-exchange"]   # exact names, or a prefix ending in '*'
//! not-after = 1924992000             # optional, Unix seconds
//!
//! [revoked]
//! keys = ["<key id>"]
//! statements = ["<statement digest, 64 hex>"]
//!
//! [policy]
//! require = ["publisher", "auditor"] # default ["publisher"]
//! expired = "refuse"                 # or "warn"
//! ```

use crate::keys::{KeyId, PublicKey};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Publisher,
    Auditor,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Publisher => "publisher",
            Role::Auditor => "auditor",
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpiredPolicy {
    #[default]
    Refuse,
    Warn,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrustedKey {
    pub name: String,
    pub role: Role,
    pub public_key: String,
    pub providers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<u64>,
}

impl TrustedKey {
    pub fn key(&self) -> Result<PublicKey, String> {
        PublicKey::parse(&self.public_key).map_err(|e| format!("key {:?}: {e}", self.name))
    }

    pub fn may_sign_for(&self, provider: &str) -> bool {
        self.providers.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => provider.starts_with(prefix),
            None => p == provider,
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Revocations {
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub statements: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Policy {
    #[serde(default = "publisher_only")]
    pub require: Vec<Role>,
    #[serde(default)]
    pub expired: ExpiredPolicy,
}

fn publisher_only() -> Vec<Role> {
    vec![Role::Publisher]
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            require: publisher_only(),
            expired: ExpiredPolicy::Refuse,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrustStore {
    #[serde(default)]
    pub key: Vec<TrustedKey>,
    #[serde(default)]
    pub revoked: Revocations,
    #[serde(default)]
    pub policy: Policy,
}

impl TrustStore {
    pub fn parse(text: &str) -> Result<TrustStore, String> {
        let store: TrustStore = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        for k in &store.key {
            k.key()?;
            if k.providers.is_empty() {
                return Err(format!(
                    "key {:?} may sign for no provider; list names in `providers`",
                    k.name
                ));
            }
        }
        if !store.policy.require.contains(&Role::Publisher) {
            return Err("policy.require must include \"publisher\"".into());
        }
        Ok(store)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a trust store always serialises")
    }

    pub fn find(&self, id: &KeyId) -> Option<&TrustedKey> {
        self.key.iter().find(|k| k.key().is_ok_and(|p| &p.key_id() == id))
    }

    pub fn key_revoked(&self, id: &KeyId) -> bool {
        self.revoked.keys.iter().any(|k| k == &id.0)
    }

    pub fn statement_revoked(&self, digest_hex: &str) -> bool {
        self.revoked.statements.iter().any(|d| d == digest_hex)
    }
}
