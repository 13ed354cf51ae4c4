//! The signed statement: a detached file (`X.statement.json` beside `X.wasm`) that binds
//! one exact component to its provider identity and capability ceiling.
//!
//! File format (JSON):
//! ```json
//! { "statement": { ...Statement... },
//!   "signatures": [ { "key_id": "<32 hex>", "signature": "<base64 of 64 bytes>" } ] }
//! ```
//! Every signature (publisher's and auditors' countersignatures alike) is ed25519 over
//! `"credence-provider-statement-v1\0" || sha256(canonical(statement))`, where
//! `canonical` is RFC 8785 JSON: keys sorted, no whitespace, integers only (serde_json's
//! compact output of the structs below, whose fields are declared in sorted order). The
//! verifier never checks the bytes as they sit in the file: it parses them strictly and
//! re-encodes, so any edit of the statement changes what the signatures must cover.

use crate::Limits;
use crate::keys::{KeyId, SecretKey};
use crate::manifest::{Manifest, PromptKind, WORLDS, supported_world, valid_name, valid_version};
use crate::origin::{Origin, OriginPattern};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const FORMAT: &str = "credence-statement-v1";
pub const SIGNING_DOMAIN: &[u8] = b"credence-provider-statement-v1\0";
/// Statement files larger than this are refused unread.
pub const MAX_STATEMENT_BYTES: usize = 64 << 10;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub capabilities: Capabilities,
    pub component: ComponentRef,
    pub expires_at: Option<u64>,
    pub format: String,
    pub issued_at: u64,
    /// The publisher's key id.
    pub key_id: String,
    pub provider: ProviderId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Whether it may ask for the CI job's identity token; absent when false (statements
    /// made before it read back byte for byte).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub id_token: bool,
    pub limits: SignedLimits,
    pub origins: Vec<String>,
    pub prompts: Vec<String>,
    /// The settings the manifest declares; absent when it declares none (statements
    /// made before settings were declared read back byte for byte).
    #[serde(
        default,
        deserialize_with = "settings_named_once",
        skip_serializing_if = "std::collections::BTreeMap::is_empty"
    )]
    pub settings: std::collections::BTreeMap<String, crate::manifest::SettingSpec>,
    pub wildcard_origins: Vec<String>,
    pub world: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedLimits {
    pub cpu_ms: Option<u64>,
    /// Absent unless the manifest sets it, so statements made before it read back byte
    /// for byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive_wall_ms: Option<u64>,
    pub memory_mib: Option<u32>,
    pub wall_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentRef {
    pub sha256: String,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderId {
    pub name: String,
    pub sequence: u64,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    pub key_id: String,
    pub signature: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementFile {
    pub statement: Statement,
    pub signatures: Vec<SignatureEntry>,
}

fn sorted(items: impl Iterator<Item = String>) -> Vec<String> {
    items.collect::<std::collections::BTreeSet<_>>().into_iter().collect()
}

impl Statement {
    /// A statement for `component` with the ceiling of `manifest`, to be signed by `publisher`.
    pub fn new(
        component: &[u8],
        manifest: &Manifest,
        publisher: &KeyId,
        issued_at: u64,
        expires_at: Option<u64>,
    ) -> Statement {
        Statement {
            capabilities: Capabilities {
                id_token: manifest.id_token,
                limits: SignedLimits {
                    cpu_ms: manifest.limits.cpu_ms,
                    memory_mib: manifest.limits.memory_mib,
                    wall_ms: manifest.limits.wall_ms,
                    interactive_wall_ms: manifest.limits.interactive_wall_ms,
                },
                // The canonical order is the strings' order, which is not `Origin`'s
                // (port 8443 sorts before host "login.example.com" as an `Origin`).
                origins: sorted(manifest.origins.iter().map(Origin::to_string)),
                prompts: manifest.prompts.iter().map(|p| p.as_str().to_owned()).collect(),
                settings: manifest.settings.clone(),
                wildcard_origins: sorted(manifest.wildcard_origins.iter().map(OriginPattern::to_string)),
                world: manifest.world.clone(),
            },
            component: ComponentRef {
                sha256: hex::encode(Sha256::digest(component)),
                size: component.len() as u64,
            },
            expires_at,
            format: FORMAT.to_owned(),
            issued_at,
            key_id: publisher.0.clone(),
            provider: ProviderId {
                name: manifest.name.clone(),
                sequence: manifest.sequence,
                version: manifest.version.clone(),
            },
        }
    }

    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a statement always serialises")
    }

    /// sha-256 of the canonical encoding: what signatures cover and revocations name.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.canonical()).into()
    }

    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = SIGNING_DOMAIN.to_vec();
        m.extend_from_slice(&self.digest());
        m
    }

    /// The capability ceiling as a manifest, after checking that every field is in its
    /// one canonical spelling (so two spellings of one ceiling cannot both verify).
    pub fn ceiling(&self) -> Result<Manifest, String> {
        let c = &self.capabilities;
        if self.format != FORMAT {
            return Err(format!("format {:?} is not {FORMAT}", self.format));
        }
        if !supported_world(&c.world) {
            return Err(format!("world {:?} is not one of {}", c.world, WORLDS.join(", ")));
        }
        if !valid_name(&self.provider.name) {
            return Err(format!("provider name {:?} is not valid", self.provider.name));
        }
        if !valid_version(&self.provider.version) {
            return Err(format!(
                "provider version {:?} is not a semver version",
                self.provider.version
            ));
        }
        if self.component.sha256.len() != 64
            || !self
                .component
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err("component.sha256 is not 64 lower-case hex digits".into());
        }
        if !is_lower_hex(&self.key_id, 32) {
            return Err("key_id is not 32 lower-case hex digits".into());
        }
        let origins = c
            .origins
            .iter()
            .map(|o| canonical(o, Origin::parse(o).map(|p| p.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let wildcards = c
            .wildcard_origins
            .iter()
            .map(|o| canonical(o, OriginPattern::parse(o).map(|p| p.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let prompts = c
            .prompts
            .iter()
            .map(|p| match p.as_str() {
                "ask" => Ok(PromptKind::Ask),
                "show" => Ok(PromptKind::Show),
                "open-url" => Ok(PromptKind::OpenUrl),
                "device-code" => Ok(PromptKind::DeviceCode),
                "authorize" => Ok(PromptKind::Authorize),
                other => Err(format!("unknown prompt kind {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let sorted_unique = |v: &[String]| v.windows(2).all(|w| w[0] < w[1]);
        let prompt_names: Vec<String> = prompts.iter().map(|p| p.as_str().to_owned()).collect();
        if !sorted_unique(&c.origins)
            || !sorted_unique(&c.wildcard_origins)
            || !prompts.windows(2).all(|w| w[0] < w[1])
            || prompt_names != c.prompts
        {
            return Err("capability lists are not sorted and unique".into());
        }
        crate::manifest::check_settings(&c.settings)?;
        Ok(Manifest {
            settings: c.settings.clone(),
            name: self.provider.name.clone(),
            version: self.provider.version.clone(),
            world: c.world.clone(),
            sequence: self.provider.sequence,
            origins: origins.iter().map(|o| Origin::parse(o).expect("checked")).collect(),
            wildcard_origins: wildcards
                .iter()
                .map(|o| OriginPattern::parse(o).expect("checked"))
                .collect(),
            prompts: prompts.into_iter().collect(),
            id_token: c.id_token,
            limits: Limits {
                memory_mib: c.limits.memory_mib,
                cpu_ms: c.limits.cpu_ms,
                wall_ms: c.limits.wall_ms,
                interactive_wall_ms: c.limits.interactive_wall_ms,
            },
        })
    }
}

/// A map would keep the last of two entries with one name (and another verifier the
/// first), so one statement could mean two things: a name given twice is refused.
fn settings_named_once<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, crate::manifest::SettingSpec>, D::Error> {
    struct Once;
    impl<'de> serde::de::Visitor<'de> for Once {
        type Value = std::collections::BTreeMap<String, crate::manifest::SettingSpec>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of settings, each named once")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = std::collections::BTreeMap::new();
            while let Some((name, spec)) = map.next_entry::<String, crate::manifest::SettingSpec>()? {
                if out.contains_key(&name) {
                    return Err(serde::de::Error::custom(format!("setting {name:?} is named twice")));
                }
                out.insert(name, spec);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Once)
}

fn canonical(text: &str, parsed: Result<String, crate::OriginError>) -> Result<String, String> {
    match parsed {
        Ok(p) if p == text => Ok(p),
        Ok(p) => Err(format!("origin {text:?} is not in canonical form (expected {p:?})")),
        Err(e) => Err(e.to_string()),
    }
}

impl StatementFile {
    pub fn parse(bytes: &[u8]) -> Result<StatementFile, String> {
        if bytes.len() > MAX_STATEMENT_BYTES {
            return Err(format!(
                "the statement file is {} bytes; the limit is {MAX_STATEMENT_BYTES}",
                bytes.len()
            ));
        }
        // Straight into the structs first: they refuse a member named twice, which a
        // `Value` would quietly collapse to its last (and another verifier to its first).
        const NOT_OUR_FORMAT: &str = "the statement is not in credence's format (every record must be a JSON object with named fields, as `credence sign` writes it)";
        if let Err(e) = serde_json::from_slice::<StatementFile>(bytes) {
            // A record written as an array (serde's positional form) is named as such, not
            // as whichever field it first fails to fit.
            let positional = serde_json::from_slice::<serde_json::Value>(bytes).is_ok_and(|v| {
                let s = &v["statement"];
                [
                    s,
                    &s["capabilities"],
                    &s["capabilities"]["limits"],
                    &s["component"],
                    &s["provider"],
                ]
                .iter()
                .any(|r| r.is_array())
                    || v["signatures"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|r| r.is_array()))
            });
            return Err(if positional {
                NOT_OUR_FORMAT.into()
            } else {
                format!("not a statement file: {}", crate::inert(e))
            });
        }
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not a statement file: {}", crate::inert(e)))?;
        let file: StatementFile =
            serde_json::from_value(value.clone()).map_err(|e| format!("not a statement file: {}", crate::inert(e)))?;
        // serde also reads a struct from a positional array; the format is objects only, so
        // whatever does not read back as the value credence writes is refused.
        if serde_json::to_value(&file).ok().as_ref() != Some(&value) {
            return Err(NOT_OUR_FORMAT.into());
        }
        file.statement.ceiling()?;
        if file.signatures.len() > 16 {
            return Err("more than 16 signatures".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &file.signatures {
            if !is_lower_hex(&s.key_id, 32) {
                return Err(format!(
                    "signature key_id {:?} is not 32 lower-case hex digits",
                    s.key_id
                ));
            }
            if !seen.insert(s.key_id.as_str()) {
                return Err(format!("key {} signed twice; each key signs once", s.key_id));
            }
        }
        Ok(file)
    }

    pub fn to_pretty(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("serialises");
        s.push('\n');
        s
    }

    /// Adds (or replaces) `key`'s signature over the statement.
    pub fn sign(&mut self, key: &SecretKey) {
        let key_id = key.public().key_id().0;
        let signature = B64.encode(key.sign(&self.statement.signing_message()));
        self.signatures.retain(|s| s.key_id != key_id);
        self.signatures.push(SignatureEntry { key_id, signature });
    }
}

fn is_lower_hex(s: &str, digits: usize) -> bool {
    s.len() == digits && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn decode_signature(text: &str) -> Option<Vec<u8>> {
    B64.decode(text).ok().filter(|b| b.len() == 64)
}
