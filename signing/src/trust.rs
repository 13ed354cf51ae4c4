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
//! keys = ["<key id>"]                # 32 hex digits, any case (kept in lower case)
//! statements = ["<statement digest, 64 hex>"]
//!
//! [policy]
//! require = { publisher = 1, auditor = 2 }  # distinct trusted keys per role; default publisher = 1
//! expired = "refuse"                 # or "warn"
//!
//! [floor]                            # written by credence: the highest sequence accepted
//! token-exchange = 3                 # per provider name (the rollback floor)
//! ```
//!
//! The rollback floor lives here, with the keys it protects: deleting or corrupting it
//! means deleting or corrupting the trust store, which fails closed (nothing runs).

use crate::keys::{KeyId, PublicKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// Where a key's trust comes from. Never read from a file: the loader of the trust in force
/// sets it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyOrigin {
    /// The user's `trust.toml` (or a key rotated from one there).
    #[default]
    Local,
    /// The organisation's policy bundle (or a key rotated from one there).
    Bundle,
}

/// A key that handed its trust to a successor: its signatures count only on statements
/// issued up to the end of the rotation's grace period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retired {
    pub successor: KeyId,
    pub signs_until: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrustedKey {
    pub name: String,
    pub role: Role,
    pub public_key: String,
    pub providers: Vec<String>,
    /// Unix time after which the key's signatures no longer count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<u64>,
    #[serde(skip)]
    pub origin: KeyOrigin,
    /// The key this one succeeds, by a rotation.
    #[serde(skip)]
    pub successor_of: Option<KeyId>,
    #[serde(skip)]
    pub retired: Option<Retired>,
}

impl TrustedKey {
    pub fn key(&self) -> Result<PublicKey, String> {
        PublicKey::parse(&self.public_key).map_err(|e| format!("key {:?}: {e}", self.name))
    }

    /// The key's id, derived from its public key (`None` if the line is not a key).
    pub fn key_id(&self) -> Option<KeyId> {
        PublicKey::key_id_of_line(&self.public_key)
    }

    pub fn may_sign_for(&self, provider: &str) -> bool {
        self.providers.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => provider.starts_with(prefix),
            None => p == provider,
        })
    }
}

/// Revoked key ids and statement digests, normalised to lower-case hex when read: hex is
/// case-insensitive, and an entry that would never match anything is refused rather than
/// silently revoking nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Revocations {
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub statements: Vec<String>,
}

impl Revocations {
    /// Each entry in lower case, sorted, once; an entry that is not a key id (32 hex
    /// digits) or a statement digest (64) is refused.
    pub fn normalise(&mut self) -> Result<(), String> {
        for (list, digits, what) in [
            (&mut self.keys, 32, "revoked.keys: a key id is 32 hex digits"),
            (
                &mut self.statements,
                64,
                "revoked.statements: a statement digest is 64 hex digits",
            ),
        ] {
            for entry in list.iter_mut() {
                *entry = normalise_hex(entry, digits).ok_or_else(|| format!("{what}, not {entry:?}"))?;
            }
            list.sort();
            list.dedup();
        }
        Ok(())
    }
}

/// `s` as lower-case hex if it is exactly `digits` hex digits.
pub fn normalise_hex(s: &str, digits: usize) -> Option<String> {
    (s.len() == digits && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

/// How many distinct trusted keys of each role a statement needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Required {
    pub publisher: u32,
    pub auditor: u32,
}

impl Required {
    pub fn of(&self, role: Role) -> u32 {
        match role {
            Role::Publisher => self.publisher,
            Role::Auditor => self.auditor,
        }
    }
}

impl Default for Required {
    fn default() -> Self {
        Required {
            publisher: 1,
            auditor: 0,
        }
    }
}

impl std::fmt::Display for Required {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} publisher", self.publisher)?;
        if self.auditor > 0 {
            write!(
                f,
                " + {} distinct auditor{}",
                self.auditor,
                if self.auditor == 1 { "" } else { "s" }
            )?;
        }
        Ok(())
    }
}

/// `require` is written as a table (`{ publisher = 1, auditor = 2 }`); the older list form
/// (`["publisher", "auditor", "auditor"]`) still reads, each entry counting once, so a
/// repeated role means what its writer meant: that many distinct keys.
impl<'de> Deserialize<'de> for Required {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            List(Vec<Role>),
            Table(Table),
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "kebab-case", deny_unknown_fields)]
        struct Table {
            #[serde(default)]
            publisher: u32,
            #[serde(default)]
            auditor: u32,
        }
        match Form::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "policy.require must be a table such as { publisher = 1, auditor = 2 } (or a list of roles)",
            )
        })? {
            Form::List(roles) => Ok(Required {
                publisher: roles.iter().filter(|r| **r == Role::Publisher).count() as u32,
                auditor: roles.iter().filter(|r| **r == Role::Auditor).count() as u32,
            }),
            Form::Table(t) => Ok(Required {
                publisher: t.publisher,
                auditor: t.auditor,
            }),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub require: Required,
    /// What an expired statement means; unset is `refuse` (or, under a policy bundle, what
    /// the bundle says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired: Option<ExpiredPolicy>,
}

impl Policy {
    pub fn expired(&self) -> ExpiredPolicy {
        self.expired.unwrap_or_default()
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
    /// The rollback floor: the highest statement sequence accepted per provider name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub floor: BTreeMap<String, u64>,
    /// Key rotations accepted with `credence trust rotate`, as their publishers signed them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rotation: Vec<crate::rotation::Rotation>,
    /// The organisation's rules, when a policy bundle is in force (never in `trust.toml`).
    #[serde(skip)]
    pub org: Option<OrgPolicy>,
}

/// What a policy bundle decides beyond keys, policy and revocations, which are merged into
/// the trust store in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgPolicy {
    pub organisation: String,
    pub sequence: u64,
    pub expires_at: u64,
    /// The bundle's digest, lower-case hex.
    pub digest: String,
    pub allow_unsigned: bool,
    pub local_keys: bool,
    pub max_statement_age_days: Option<u64>,
    pub providers: Vec<crate::bundle::AllowedProvider>,
    pub upgrades: crate::bundle::Upgrades,
}

impl OrgPolicy {
    /// How messages name the bundle.
    pub fn label(&self) -> String {
        format!("{} (policy bundle sequence {})", self.organisation, self.sequence)
    }

    /// Whether the organisation lets this release run: its name listed, its version in the
    /// listed range, its component the pinned one where one is pinned, its statement not
    /// older than the maximum age. `issued_at` is `None` when it is not known (then a
    /// maximum age refuses).
    pub fn admits(
        &self,
        name: &str,
        version: &str,
        component_sha256: &str,
        issued_at: Option<u64>,
        now: u64,
    ) -> Result<(), String> {
        let Some(allowed) = self.providers.iter().find(|p| p.matches_name(name)) else {
            return Err(format!("provider {name:?} is not in its list of allowed providers"));
        };
        let in_range = semver::Version::parse(version)
            .is_ok_and(|v| semver::VersionReq::parse(&allowed.versions).is_ok_and(|r| r.matches(&v)));
        if !in_range {
            return Err(format!(
                "version {version} of {name:?} is outside the versions it allows ({})",
                allowed.versions
            ));
        }
        if let Some(pinned) = allowed.sha256.as_ref().filter(|d| *d != component_sha256) {
            return Err(format!(
                "the component of {name:?} has sha256 {component_sha256}, and it pins {pinned}"
            ));
        }
        if let Some(days) = self.max_statement_age_days {
            let oldest = now.saturating_sub(days.saturating_mul(86_400));
            match issued_at {
                // A date ahead of this clock would stay young for as long as it is ahead.
                Some(t) if t > now.saturating_add(crate::rotation::MAX_CLOCK_SKEW_S) => {
                    return Err(format!(
                        "the statement is dated {t} (Unix time), in the future, and the maximum age cannot bound it"
                    ));
                }
                Some(t) if t >= oldest => {}
                Some(t) => {
                    return Err(format!(
                        "the statement was issued {} days ago, and it accepts statements up to {days} days old",
                        now.saturating_sub(t) / 86_400
                    ));
                }
                None => return Err("the statement's issue time is not known".into()),
            }
        }
        Ok(())
    }
}

/// The most distinct signatures a policy may ask for (a statement carries at most 16).
pub const MAX_REQUIRED: u32 = 15;

/// Every key parses, may sign for some provider, and is listed once.
pub fn check_keys(keys: &[TrustedKey]) -> Result<(), String> {
    let mut ids = std::collections::BTreeSet::new();
    for k in keys {
        let id = k.key()?.key_id();
        if k.providers.is_empty() {
            return Err(format!(
                "key {:?} may sign for no provider; list names in `providers`",
                k.name
            ));
        }
        if !ids.insert(id.clone()) {
            return Err(format!(
                "key {id} is listed twice; a key has one role and one list of providers"
            ));
        }
    }
    Ok(())
}

/// One publisher, and never a threshold no statement could meet.
pub fn check_required(required: &Required) -> Result<(), String> {
    if required.publisher != 1 {
        return Err(format!(
            "policy.require.publisher is {}; a statement names exactly one publisher, so it must be 1",
            required.publisher
        ));
    }
    if required.auditor > MAX_REQUIRED {
        return Err(format!(
            "policy.require.auditor is {}; at most {MAX_REQUIRED} auditors can countersign a statement",
            required.auditor
        ));
    }
    Ok(())
}

impl TrustStore {
    pub fn parse(text: &str) -> Result<TrustStore, String> {
        let mut store: TrustStore = toml::from_str(text).map_err(|e| e.message().trim_end().to_owned())?;
        check_keys(&store.key)?;
        check_required(&store.policy.require)?;
        for r in &store.rotation {
            r.check_fields()?;
        }
        store.revoked.normalise()?;
        for name in store.floor.keys() {
            if !crate::manifest::valid_name(name) {
                return Err(format!("floor: {name:?} is not a provider name"));
            }
        }
        Ok(store)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a trust store always serialises")
    }

    pub fn find(&self, id: &KeyId) -> Option<&TrustedKey> {
        self.key.iter().find(|k| k.key_id().as_ref() == Some(id))
    }

    pub fn key_revoked(&self, id: &KeyId) -> bool {
        self.revoked.keys.iter().any(|k| k.eq_ignore_ascii_case(&id.0))
    }

    pub fn statement_revoked(&self, digest_hex: &str) -> bool {
        self.revoked
            .statements
            .iter()
            .any(|d| d.eq_ignore_ascii_case(digest_hex))
    }

    /// The highest sequence accepted so far for provider `name`.
    pub fn floor(&self, name: &str) -> Option<u64> {
        self.floor.get(name).copied()
    }

    /// The trust in force: the user's store, under the organisation's bundle when one is in
    /// force, with every valid key rotation applied.
    ///
    /// With a bundle its keys are the trust roots; the user's keys are kept (so a refusal
    /// can say why they do not count) but count only if the bundle allows local keys, and a
    /// key in both keeps the bundle's entry. The user's store can only narrow: revocations
    /// are the union, each role needs the larger count, and an expired statement is
    /// refused if either says so. The rollback floor and rotations are the user's.
    pub fn in_force(local: &TrustStore, bundle: Option<&crate::bundle::VerifiedBundle>, now: u64) -> TrustStore {
        let mut store = local.clone();
        if let Some(v) = bundle {
            let b = &v.bundle;
            let mut keys: Vec<TrustedKey> = b
                .keys
                .iter()
                .cloned()
                .map(|k| TrustedKey {
                    origin: KeyOrigin::Bundle,
                    ..k
                })
                .collect();
            for k in &local.key {
                if !keys.iter().any(|b| b.key_id() == k.key_id()) {
                    keys.push(k.clone());
                }
            }
            store.key = keys;
            store.revoked.keys.extend(b.revoked.keys.iter().cloned());
            store.revoked.statements.extend(b.revoked.statements.iter().cloned());
            for list in [&mut store.revoked.keys, &mut store.revoked.statements] {
                list.sort();
                list.dedup();
            }
            store.policy.require.auditor = b.policy.require.auditor.max(local.policy.require.auditor);
            store.policy.expired = Some(match (b.policy.expired(), local.policy.expired) {
                (ExpiredPolicy::Warn, None | Some(ExpiredPolicy::Warn)) => ExpiredPolicy::Warn,
                _ => ExpiredPolicy::Refuse,
            });
            store.org = Some(OrgPolicy {
                organisation: b.organisation.clone(),
                sequence: b.sequence,
                expires_at: b.expires_at,
                digest: hex::encode(v.digest),
                allow_unsigned: b.allow_unsigned,
                local_keys: b.local_keys,
                max_statement_age_days: b.max_statement_age_days,
                providers: b.providers.clone(),
                upgrades: b.upgrades,
            });
        }
        crate::rotation::apply_rotations(&mut store, now);
        store
    }

    /// The first key of `id`'s rotation chain: what distinct-signer counts count.
    pub fn lineage(&self, id: &KeyId) -> KeyId {
        let mut at = id.clone();
        // Bounded by the number of keys: a chain never revisits a key (a key rotates once,
        // to a key not yet trusted), and the bound holds even if it did.
        for _ in 0..self.key.len() {
            match self.find(&at).and_then(|k| k.successor_of.clone()) {
                Some(previous) => at = previous,
                None => break,
            }
        }
        at
    }

    /// Whether the organisation's bundle keeps this key from counting (a key of the user's
    /// own store, when the bundle does not allow local keys).
    pub fn local_key_forbidden(&self, key: &TrustedKey) -> bool {
        key.origin == KeyOrigin::Local && self.org.as_ref().is_some_and(|o| !o.local_keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "credence-ed25519-pub:IVL40Zt5HSRFMkLhXy6rbLfP+ntqXtMAl5YOBpiB2xI=";

    fn store(extra: &str) -> Result<TrustStore, String> {
        TrustStore::parse(&format!(
            "[[key]]\nname = \"k\"\nrole = \"auditor\"\npublic-key = \"{KEY}\"\nproviders = [\"*\"]\n{extra}"
        ))
    }

    #[test]
    fn require_counts_roles_in_the_list_form_and_reads_the_table_form() {
        let list = store("[policy]\nrequire = [\"publisher\", \"auditor\", \"auditor\"]\n").unwrap();
        assert_eq!(
            list.policy.require,
            Required {
                publisher: 1,
                auditor: 2
            }
        );
        let table = store("[policy]\nrequire = { publisher = 1, auditor = 2 }\n").unwrap();
        assert_eq!(table.policy.require, list.policy.require);
        assert_eq!(
            TrustStore::parse(&table.to_toml()),
            Ok(table.clone()),
            "{}",
            table.to_toml()
        );
        assert_eq!(table.policy.require.to_string(), "1 publisher + 2 distinct auditors");
        for bad in [
            "[policy]\nrequire = [\"auditor\"]\n",
            "[policy]\nrequire = { publisher = 2 }\n",
            "[policy]\nrequire = { publisher = 1, auditor = 99 }\n",
            "[policy]\nrequire = { publisher = 1, auditors = 1 }\n",
        ] {
            assert!(store(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn revocations_are_case_insensitive_hex_and_junk_is_refused() {
        let upper = "ABCDEF0123456789ABCDEF0123456789";
        let s = store(&format!("[revoked]\nkeys = [\"{upper}\"]\n")).unwrap();
        assert_eq!(s.revoked.keys, [upper.to_ascii_lowercase()]);
        assert!(s.key_revoked(&KeyId(upper.to_ascii_lowercase())));
        assert!(s.key_revoked(&KeyId(upper.into())));
        for junk in [
            "keys = [\"xyz\"]",
            "keys = [\"abc\"]",
            &format!("statements = [\"{upper}\"]"),
        ] {
            let err = store(&format!("[revoked]\n{junk}\n")).unwrap_err();
            assert!(err.contains("hex digits"), "{junk}: {err}");
        }
    }

    #[test]
    fn a_key_listed_twice_and_a_floor_for_a_bad_name_are_refused() {
        let twice =
            format!("[[key]]\nname = \"again\"\nrole = \"publisher\"\npublic-key = \"{KEY}\"\nproviders = [\"x\"]\n");
        assert!(store(&twice).unwrap_err().contains("listed twice"));
        assert!(store("[floor]\n\"Bad Name\" = 3\n").is_err());
        assert_eq!(store("[floor]\nx = 3\n").unwrap().floor("x"), Some(3));
    }
}
