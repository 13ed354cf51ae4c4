//! The organisation's policy bundle: one signed file in which a security team decides, for
//! every machine it manages, which keys are trusted for which provider names, how many
//! distinct auditors must countersign, which providers (name, version range, optionally an
//! exact digest) may run at all, what is revoked, how old a statement may be, whether
//! unsigned providers may ever run, whether the user's own `trust.toml` may add keys, and
//! whether a release that may newly do more needs the user's approval.
//!
//! File format (JSON, every record an object with named fields, kebab-case):
//! ```json
//! { "bundle": { ...Bundle... },
//!   "signatures": [ { "key-id": "<32 hex>", "signature": "<base64 of 64 bytes>" } ] }
//! ```
//! Each signature is ed25519 over `"credence-policy-bundle-v1\0" || sha256(canonical(bundle))`
//! where `canonical` is RFC 8785 JSON (keys sorted, no whitespace, integers only). As with
//! statements, the verifier parses strictly and re-encodes: a file that is not exactly the
//! canonical value credence writes is malformed, so one bundle cannot mean two things.
//!
//! The security team writes the same fields as TOML (`credence policy sign` fills in
//! `format` and `issued-at` and writes the signed JSON): see docs/signing.md.

use crate::keys::{KeyId, PublicKey, SecretKey};
use crate::trust::{ExpiredPolicy, Policy, Revocations, TrustedKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const BUNDLE_FORMAT: &str = "credence-policy-bundle-v1";
pub const BUNDLE_DOMAIN: &[u8] = b"credence-policy-bundle-v1\0";
/// Bundle files larger than this are refused unread.
pub const MAX_BUNDLE_BYTES: usize = 1 << 20;
const MAX_KEYS: usize = 256;
const MAX_PROVIDERS: usize = 1024;
const MAX_REVOKED: usize = 16 * 1024;
const MAX_SIGNATURES: usize = 8;
/// The longest organisation or key name shown.
const MAX_NAME: usize = 100;
/// The largest integer every JSON reader (and RFC 8785's number form) holds exactly.
pub const MAX_EXACT_INTEGER: u64 = (1 << 53) - 1;

/// The newest bundle this user's credence has accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub sequence: u64,
    /// Its digest (lower-case hex), where recorded.
    pub digest: Option<String>,
}

/// What a release whose signed ceiling is wider than the approved one needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Upgrades {
    /// It waits, pending, until the user runs `credence approve NAME`.
    #[default]
    Ask,
    /// The bundle's own list of allowed providers is the approval: a release it admits
    /// is installed at once, however its ceiling changed.
    Bundle,
}

/// A provider the organisation lets run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AllowedProvider {
    /// A provider name, or a prefix ending in `*`.
    pub name: String,
    /// The exact component (SHA-256, lower-case hex) the organisation audited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A semver requirement such as `>=1.4.0, <2`; `*` for any.
    #[serde(default = "any_version")]
    pub versions: String,
}

fn any_version() -> String {
    "*".into()
}

impl AllowedProvider {
    pub fn matches_name(&self, provider: &str) -> bool {
        match self.name.strip_suffix('*') {
            Some(prefix) => provider.starts_with(prefix),
            None => self.name == provider,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Bundle {
    /// Whether `--allow-unsigned` (and `credence dev`) may ever run a provider.
    #[serde(default)]
    pub allow_unsigned: bool,
    /// Unix seconds. Past it the bundle fails closed, unless `on-expiry = "warn"`.
    #[serde(default)]
    pub expires_at: u64,
    #[serde(default = "bundle_format")]
    pub format: String,
    #[serde(default)]
    pub issued_at: u64,
    /// The trust roots: keys with a role and the provider names each may sign for.
    #[serde(default)]
    pub keys: Vec<TrustedKey>,
    /// Whether keys in the user's `trust.toml` count. The user's store may always narrow
    /// (revoke, require more, refuse expired statements); this says whether it may widen.
    #[serde(default)]
    pub local_keys: bool,
    /// Statements issued longer ago than this are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_statement_age_days: Option<u64>,
    /// What an expired bundle means: `refuse` (no provider runs) or `warn`.
    #[serde(default)]
    pub on_expiry: ExpiredPolicy,
    /// Who issues it, as messages name it.
    pub organisation: String,
    #[serde(default)]
    pub policy: Policy,
    /// The providers that may run; a provider not listed is refused.
    #[serde(default)]
    pub providers: Vec<AllowedProvider>,
    #[serde(default)]
    pub revoked: Revocations,
    /// Raised with every bundle: an older one is refused once a newer one was seen.
    pub sequence: u64,
    #[serde(default)]
    pub upgrades: Upgrades,
}

fn bundle_format() -> String {
    BUNDLE_FORMAT.into()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BundleSignature {
    pub key_id: String,
    pub signature: String,
}

impl BundleSignature {
    /// Adds (or replaces) `key`'s signature over `message` to `list`, kept in key-id order.
    pub fn add(list: &mut Vec<BundleSignature>, key: &SecretKey, message: &[u8]) {
        let key_id = key.public().key_id().0;
        let signature = B64.encode(key.sign(message));
        list.retain(|s| s.key_id != key_id);
        list.push(BundleSignature { key_id, signature });
        list.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    }

    /// At most `max` signatures, each by a key id of 32 lower-case hex digits, each key once.
    pub fn check_list(list: &[BundleSignature], max: usize, what: &str) -> Result<(), String> {
        if list.len() > max {
            return Err(format!("a {what} carries at most {max} signatures"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in list {
            if !lower_hex(&s.key_id, 32) || !seen.insert(s.key_id.as_str()) {
                return Err(format!(
                    "{what} signature key-id {:?}: 32 lower-case hex digits, each key once",
                    s.key_id
                ));
            }
        }
        Ok(())
    }
}

/// Reads `bytes` as exactly the value credence writes for a `T`: into the struct first (it
/// refuses a member named twice, which a `Value` would collapse to its last), then compared
/// with the JSON as read, so a field left out, a `null` or another spelling is refused and
/// one file cannot mean two things.
pub(crate) fn parse_canonical<T: serde::de::DeserializeOwned + Serialize>(
    bytes: &[u8],
    what: &str,
    not_canonical: &str,
) -> Result<T, String> {
    let parsed: T = serde_json::from_slice(bytes).map_err(|e| format!("not a {what}: {}", crate::inert(e)))?;
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not a {what}: {}", crate::inert(e)))?;
    if serde_json::to_value(&parsed).ok().as_ref() != Some(&value) {
        return Err(not_canonical.into());
    }
    Ok(parsed)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleFile {
    pub bundle: Bundle,
    pub signatures: Vec<BundleSignature>,
}

/// Why a bundle is not in force, each with its own message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BundleRefusal {
    #[error("the policy bundle is malformed: {0}")]
    Malformed(String),
    #[error(
        "the policy bundle's signature by root key {key_id} does not match its content: it was changed after it was signed"
    )]
    Tampered { key_id: String },
    #[error("the policy bundle is not signed by a pinned root key (pinned: {pinned}; signed by: {signed})")]
    NotSignedByRoot { pinned: String, signed: String },
    #[error(
        "the policy bundle has sequence {sequence}, older than sequence {seen} already seen on this machine: a rollback to an older policy"
    )]
    Older { sequence: u64, seen: u64 },
    #[error(
        "another policy bundle with sequence {sequence} was already seen on this machine: every new bundle needs a higher sequence, so one sequence cannot mean two policies"
    )]
    Replaced { sequence: u64 },
    #[error("the policy bundle of {organisation} expired at {expires_at} (Unix time; now {now})")]
    Expired {
        organisation: String,
        expires_at: u64,
        now: u64,
    },
}

fn printable_name(what: &str, name: &str) -> Result<(), String> {
    let shown = !name.trim().is_empty()
        && name.chars().count() <= MAX_NAME
        && name.chars().all(|c| c.is_alphanumeric() || " -_.,()&'/@+:".contains(c));
    if shown {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} must be 1-{MAX_NAME} letters, digits, spaces and -_.,()&'/@+: (it is shown in messages)"
        ))
    }
}

fn lower_hex(s: &str, digits: usize) -> bool {
    s.len() == digits && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The canonical form of a semver requirement, if `text` is one.
pub fn canonical_versions(text: &str) -> Result<String, String> {
    semver::VersionReq::parse(text)
        .map(|r| r.to_string())
        .map_err(|e| format!("versions {text:?} is not a semver requirement: {e}"))
}

impl Bundle {
    /// A bundle as a security team writes it (TOML), issued at `issued_at`, expiring at
    /// `expires_at` (else the source's `expires-at`), with `sequence` (else the source's):
    /// checked, its lists in canonical order, ready to sign.
    pub fn from_source(
        text: &str,
        issued_at: u64,
        expires_at: Option<u64>,
        sequence: Option<u64>,
    ) -> Result<Bundle, String> {
        let mut bundle: Bundle = toml::from_str(text).map_err(|e| crate::inert(e.message().trim_end()))?;
        bundle.format = BUNDLE_FORMAT.into();
        bundle.issued_at = issued_at;
        bundle.expires_at = expires_at.unwrap_or(bundle.expires_at);
        bundle.sequence = sequence.unwrap_or(bundle.sequence);
        for p in &mut bundle.providers {
            p.versions = canonical_versions(&p.versions)?;
            if let Some(d) = &mut p.sha256 {
                *d = d.to_ascii_lowercase();
            }
        }
        bundle.revoked.normalise()?;
        for k in &mut bundle.keys {
            k.public_key = k.key()?.to_string();
            k.origin = crate::trust::KeyOrigin::Bundle;
        }
        bundle.check_fields()?;
        Ok(bundle)
    }

    /// The RFC 8785 encoding: serde_json's map is ordered by key (the crate is built without
    /// `preserve_order`), which for these ASCII keys is JCS's order.
    pub fn canonical(&self) -> Vec<u8> {
        let value = serde_json::to_value(self).expect("a bundle always serialises");
        serde_json::to_vec(&value).expect("a value always serialises")
    }

    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.canonical()).into()
    }

    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = BUNDLE_DOMAIN.to_vec();
        m.extend_from_slice(&self.digest());
        m
    }

    /// Every rule a bundle's fields must follow, beyond their types.
    fn check_fields(&self) -> Result<(), String> {
        if self.format != BUNDLE_FORMAT {
            return Err(format!("format {:?} is not {BUNDLE_FORMAT}", self.format));
        }
        printable_name("organisation", &self.organisation)?;
        let numbers = [
            self.sequence,
            self.issued_at,
            self.expires_at,
            self.max_statement_age_days.unwrap_or(0),
        ];
        if numbers
            .into_iter()
            .chain(self.keys.iter().filter_map(|k| k.not_after))
            .any(|n| n > MAX_EXACT_INTEGER)
        {
            return Err(format!(
                "numbers are at most {MAX_EXACT_INTEGER}, which every JSON reader holds exactly"
            ));
        }
        if self.expires_at <= self.issued_at {
            return Err(
                "expires-at must be after issued-at: a bundle always expires (sign with --expires-in-days)".into(),
            );
        }
        if self.keys.len() > MAX_KEYS || self.providers.len() > MAX_PROVIDERS {
            return Err(format!("at most {MAX_KEYS} keys and {MAX_PROVIDERS} providers"));
        }
        crate::trust::check_keys(&self.keys)?;
        for k in &self.keys {
            printable_name("key name", &k.name)?;
            if PublicKey::parse(&k.public_key).map(|p| p.to_string()).as_deref() != Ok(k.public_key.as_str()) {
                return Err(format!("key {:?}: public-key is not in canonical form", k.name));
            }
        }
        crate::trust::check_required(&self.policy.require)?;
        let mut names = std::collections::BTreeSet::new();
        for p in &self.providers {
            let bare = p.name.strip_suffix('*').unwrap_or(&p.name);
            let valid = if p.name.ends_with('*') {
                bare.is_empty()
                    || bare
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            } else {
                crate::manifest::valid_name(bare)
            };
            if !valid {
                return Err(format!(
                    "providers: {:?} is not a provider name or a prefix ending in '*'",
                    p.name
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(format!("providers: {:?} is listed twice", p.name));
            }
            if canonical_versions(&p.versions)? != p.versions {
                return Err(format!(
                    "providers: {:?}: versions {:?} is not in canonical form ({:?})",
                    p.name,
                    p.versions,
                    canonical_versions(&p.versions)?
                ));
            }
            if let Some(d) = &p.sha256
                && !lower_hex(d, 64)
            {
                return Err(format!(
                    "providers: {:?}: sha256 is not 64 lower-case hex digits",
                    p.name
                ));
            }
        }
        let sorted_unique = |v: &[String]| v.windows(2).all(|w| w[0] < w[1]);
        if self.revoked.keys.len() + self.revoked.statements.len() > MAX_REVOKED
            || !self.revoked.keys.iter().all(|k| lower_hex(k, 32))
            || !self.revoked.statements.iter().all(|d| lower_hex(d, 64))
            || !sorted_unique(&self.revoked.keys)
            || !sorted_unique(&self.revoked.statements)
        {
            return Err("revoked: key ids (32) and statement digests (64) in lower-case hex, sorted, each once".into());
        }
        Ok(())
    }
}

/// A bundle whose signature chains to a pinned root.
#[derive(Clone, Debug)]
pub struct VerifiedBundle {
    pub bundle: Bundle,
    pub digest: [u8; 32],
    pub root_key_id: KeyId,
    /// Set when the bundle expired and it says only to warn.
    pub expired_warning: Option<String>,
}

impl BundleFile {
    pub fn parse(bytes: &[u8]) -> Result<BundleFile, String> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(format!(
                "the bundle file is {} bytes; the limit is {MAX_BUNDLE_BYTES}",
                bytes.len()
            ));
        }
        let file: BundleFile = parse_canonical(
            bytes,
            "policy bundle",
            "the bundle is not in canonical form: every field written, as `credence policy sign` writes it",
        )?;
        file.bundle.check_fields()?;
        if file.signatures.is_empty() {
            return Err("a bundle carries at least one signature".into());
        }
        BundleSignature::check_list(&file.signatures, MAX_SIGNATURES, "bundle")?;
        let mut file = file;
        for k in &mut file.bundle.keys {
            k.origin = crate::trust::KeyOrigin::Bundle;
        }
        Ok(file)
    }

    pub fn to_pretty(&self) -> String {
        let value = serde_json::to_value(self).expect("serialises");
        let mut s = serde_json::to_string_pretty(&value).expect("serialises");
        s.push('\n');
        s
    }

    /// Adds (or replaces) `key`'s signature over the bundle.
    pub fn sign(&mut self, key: &SecretKey) {
        BundleSignature::add(&mut self.signatures, key, &self.bundle.signing_message());
    }
}

/// Checks a bundle file against the pinned root keys, the highest bundle sequence this
/// machine has seen, and the clock.
pub fn verify_bundle(
    bytes: &[u8],
    roots: &[PublicKey],
    seen: Option<&Seen>,
    now: u64,
) -> Result<VerifiedBundle, BundleRefusal> {
    let file = BundleFile::parse(bytes).map_err(BundleRefusal::Malformed)?;
    let message = file.bundle.signing_message();
    let mut root_key_id = None;
    for s in &file.signatures {
        let Some(root) = roots.iter().find(|r| r.key_id().0 == s.key_id) else {
            continue;
        };
        let valid = crate::statement::decode_signature(&s.signature).is_some_and(|sig| root.verify(&message, &sig));
        if !valid {
            return Err(BundleRefusal::Tampered {
                key_id: s.key_id.clone(),
            });
        }
        root_key_id = Some(root.key_id());
    }
    let Some(root_key_id) = root_key_id else {
        let ids = |v: Vec<String>| if v.is_empty() { "none".to_owned() } else { v.join(", ") };
        return Err(BundleRefusal::NotSignedByRoot {
            pinned: ids(roots.iter().map(|r| r.key_id().0).collect()),
            signed: ids(file.signatures.iter().map(|s| s.key_id.clone()).collect()),
        });
    };
    let bundle = file.bundle;
    let digest = bundle.digest();
    if let Some(seen) = seen {
        if bundle.sequence < seen.sequence {
            return Err(BundleRefusal::Older {
                sequence: bundle.sequence,
                seen: seen.sequence,
            });
        }
        if bundle.sequence == seen.sequence && seen.digest.as_ref().is_some_and(|d| *d != hex::encode(digest)) {
            return Err(BundleRefusal::Replaced {
                sequence: bundle.sequence,
            });
        }
    }
    let mut expired_warning = None;
    if bundle.expires_at <= now {
        let expired = BundleRefusal::Expired {
            organisation: bundle.organisation.clone(),
            expires_at: bundle.expires_at,
            now,
        };
        match bundle.on_expiry {
            ExpiredPolicy::Refuse => return Err(expired),
            ExpiredPolicy::Warn => expired_warning = Some(expired.to_string()),
        }
    }
    Ok(VerifiedBundle {
        digest,
        bundle,
        root_key_id,
        expired_warning,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn source(root_scope: &str) -> String {
        let publisher = SecretKey::from_seed([3; 32]).public();
        format!(
            r#"organisation = "Acme security"
sequence = 2
expires-at = 4102444800
local-keys = false
max-statement-age-days = 90
[policy]
require = {{ publisher = 1, auditor = 2 }}
[[keys]]
name = "Acme build"
role = "publisher"
public-key = "{publisher}"
providers = ["{root_scope}"]
[[providers]]
name = "token-exchange"
versions = ">= 1.2"
[[providers]]
name = "acme-*"
sha256 = "{}"
[revoked]
keys = ["ABCDEF0123456789ABCDEF0123456789"]
"#,
            "AB".repeat(32)
        )
    }

    fn signed(root: &SecretKey) -> Vec<u8> {
        let bundle = Bundle::from_source(&source("acme-*"), 1_800_000_000, None, None).unwrap();
        let mut file = BundleFile {
            bundle,
            signatures: Vec::new(),
        };
        file.sign(root);
        file.to_pretty().into_bytes()
    }

    #[test]
    fn a_signed_bundle_verifies_and_reads_back_canonical() {
        let root = SecretKey::from_seed([9; 32]);
        let bytes = signed(&root);
        let v = verify_bundle(&bytes, &[root.public()], None, 1_800_000_001).unwrap();
        assert_eq!(v.bundle.providers[0].versions, ">=1.2");
        assert_eq!(v.bundle.revoked.keys, ["abcdef0123456789abcdef0123456789"]);
        assert_eq!(v.bundle.policy.require.auditor, 2);
        assert_eq!(v.bundle.keys[0].origin, crate::trust::KeyOrigin::Bundle);
        // The pretty file and the canonical encoding are one value.
        let file = BundleFile::parse(&bytes).unwrap();
        assert_eq!(file.bundle.digest(), v.digest);
        let canonical = String::from_utf8(file.bundle.canonical()).unwrap();
        assert!(
            canonical.starts_with("{\"allow-unsigned\":false,\"expires-at\":4102444800,\"format\":"),
            "{canonical}"
        );
    }

    #[test]
    fn each_way_a_bundle_is_wrong_has_its_own_refusal() {
        let root = SecretKey::from_seed([9; 32]);
        let bytes = signed(&root);
        let text = String::from_utf8(bytes.clone()).unwrap();
        let tampered = text.replace("\"sequence\": 2", "\"sequence\": 3");
        assert!(matches!(
            verify_bundle(tampered.as_bytes(), &[root.public()], None, 1_800_000_001),
            Err(BundleRefusal::Tampered { .. })
        ));
        let other = SecretKey::from_seed([10; 32]);
        assert!(matches!(
            verify_bundle(&bytes, &[other.public()], None, 1_800_000_001),
            Err(BundleRefusal::NotSignedByRoot { .. })
        ));
        let seen = |sequence, digest: Option<&str>| Seen {
            sequence,
            digest: digest.map(str::to_owned),
        };
        assert_eq!(
            verify_bundle(&bytes, &[root.public()], Some(&seen(3, None)), 1_800_000_001).unwrap_err(),
            BundleRefusal::Older { sequence: 2, seen: 3 }
        );
        let digest = hex::encode(BundleFile::parse(&bytes).unwrap().bundle.digest());
        assert!(verify_bundle(&bytes, &[root.public()], Some(&seen(2, Some(&digest))), 1_800_000_001).is_ok());
        assert_eq!(
            verify_bundle(
                &bytes,
                &[root.public()],
                Some(&seen(2, Some(&"0".repeat(64)))),
                1_800_000_001
            )
            .unwrap_err(),
            BundleRefusal::Replaced { sequence: 2 }
        );
        assert!(matches!(
            verify_bundle(&bytes, &[root.public()], None, 4_102_444_800),
            Err(BundleRefusal::Expired { .. })
        ));
        // Not canonical: a field left out, or a value in another spelling.
        let missing = text.replace("\"allow-unsigned\": false,", "");
        assert!(matches!(
            verify_bundle(missing.as_bytes(), &[root.public()], None, 1_800_000_001),
            Err(BundleRefusal::Malformed(_))
        ));
        let spelled = text.replace("\">=1.2\"", "\">= 1.2\"");
        assert!(matches!(
            verify_bundle(spelled.as_bytes(), &[root.public()], None, 1_800_000_001),
            Err(BundleRefusal::Malformed(_))
        ));
    }

    #[test]
    fn sources_with_bad_fields_are_refused_before_signing() {
        for (from, to) in [
            ("organisation = \"Acme security\"", "organisation = \"Acme\\u202e\""),
            ("expires-at = 4102444800", "expires-at = 0"),
            ("expires-at = 4102444800", "expires-at = 9007199254740993"),
            ("versions = \">= 1.2\"", "versions = \"banana\""),
            ("name = \"acme-*\"", "name = \"Acme*\""),
            ("auditor = 2", "auditor = 99"),
            ("local-keys = false", "local-keys = false\nsurprise = 1"),
        ] {
            let text = source("acme-*").replace(from, to);
            assert!(Bundle::from_source(&text, 1_800_000_000, None, None).is_err(), "{to}");
        }
    }
}
