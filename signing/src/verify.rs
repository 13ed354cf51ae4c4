//! Verification: a component, its statement file and the trust store in, a typed verdict
//! out that says exactly why a provider is refused.

use crate::keys::KeyId;
use crate::manifest::Manifest;
use crate::statement::{StatementFile, decode_signature};
use crate::trust::{ExpiredPolicy, Role, TrustStore};
use sha2::{Digest, Sha256};
use std::fmt;

/// A statement whose signatures satisfy the policy, for this exact component.
#[derive(Clone, Debug)]
pub struct Verified {
    pub file: StatementFile,
    /// The capability ceiling the signatures cover.
    pub ceiling: Manifest,
    pub component_sha256: [u8; 32],
    pub statement_digest: [u8; 32],
    pub signers: Vec<Signer>,
    /// Set when the statement expired and the policy says only to warn.
    pub expired_warning: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signer {
    pub key_id: KeyId,
    pub name: String,
    pub role: Role,
    /// The first key of its rotation chain (itself if it never was rotated to): a key and
    /// its successor are one signer, so a rotation cannot make one auditor count twice.
    pub lineage: KeyId,
}

/// What one signature in the file amounts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureCheck {
    Trusted(Signer),
    UnknownKey(KeyId),
    BadSignature(KeyId),
    RevokedKey {
        key_id: KeyId,
        name: String,
    },
    KeyExpired {
        key_id: KeyId,
        name: String,
        not_after: u64,
    },
    NotAllowedFor {
        key_id: KeyId,
        name: String,
        provider: String,
    },
    /// A key of the user's `trust.toml`, under a policy bundle that lets no local key count.
    LocalKeyForbidden {
        key_id: KeyId,
        name: String,
        organisation: String,
    },
    /// A key rotated to a successor, on a statement issued after its grace period.
    Retired {
        key_id: KeyId,
        name: String,
        successor: KeyId,
        signs_until: u64,
    },
}

impl fmt::Display for SignatureCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureCheck::Trusted(s) => write!(f, "trusted: {} {} ({})", s.role, s.key_id, s.name),
            SignatureCheck::UnknownKey(id) => write!(f, "key {id} is not in the trust store"),
            SignatureCheck::BadSignature(id) => write!(f, "the signature by key {id} does not match the statement"),
            SignatureCheck::RevokedKey { key_id, name } => write!(f, "key {key_id} ({name}) is revoked"),
            SignatureCheck::KeyExpired {
                key_id,
                name,
                not_after,
            } => {
                write!(f, "key {key_id} ({name}) expired at {not_after} (Unix time)")
            }
            SignatureCheck::NotAllowedFor { key_id, name, provider } => {
                write!(
                    f,
                    "key {key_id} ({name}) is not allowed to sign for provider {provider:?}"
                )
            }
            SignatureCheck::LocalKeyForbidden {
                key_id,
                name,
                organisation,
            } => write!(
                f,
                "key {key_id} ({name}) is in trust.toml, and the policy bundle of {organisation} lets no key from trust.toml count"
            ),
            SignatureCheck::Retired {
                key_id,
                name,
                successor,
                signs_until,
            } => write!(
                f,
                "key {key_id} ({name}) was rotated to {successor}, and counts only on statements issued until {signs_until} (Unix time); this one was issued later"
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the statement is malformed: {0}")]
    Malformed(String),
    #[error(
        "the component does not match its statement: sha-256 {actual} ({actual_size} bytes), statement says {expected} ({expected_size} bytes)"
    )]
    DigestMismatch {
        expected: String,
        expected_size: u64,
        actual: String,
        actual_size: u64,
    },
    #[error("the statement {digest} is revoked in the trust store")]
    RevokedStatement { digest: String },
    #[error("the statement expired at {expires_at} (Unix time; now {now})")]
    Expired { expires_at: u64, now: u64 },
    #[error("no trusted {role} signature: {reason}")]
    MissingSignature { role: Role, reason: String },
    #[error(
        "sequence {sequence} of provider {provider:?} is below {highest}, already seen: a rollback to an older release"
    )]
    Rollback {
        provider: String,
        sequence: u64,
        highest: u64,
    },
    #[error("the policy of {organisation} does not allow it: {reason}")]
    Organisation { organisation: String, reason: String },
}

impl Refusal {
    /// A next step for the user, where there is one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Refusal::MissingSignature {
                role: Role::Publisher, ..
            } => Some(
                "if you trust the publisher, add their key: `credence trust add <key> --name <who> --role publisher --providers <name>`",
            ),
            Refusal::MissingSignature {
                role: Role::Auditor, ..
            } => Some(
                "your policy requires an auditor's countersignature: `credence countersign --key <auditor key> <statement>`",
            ),
            Refusal::Organisation { .. } => Some(
                "your organisation's security team decides which providers run here: ask them to add this release to the policy bundle (`credence policy show` lists what it allows)",
            ),
            Refusal::DigestMismatch { .. } => Some(
                "the component was changed after it was signed: if you built it, sign it again (`credence sign <component> --key <your secret key>`); if a publisher sent it, install both files from them again",
            ),
            _ => None,
        }
    }
}

pub struct Input<'a> {
    pub component: &'a [u8],
    pub statement: &'a [u8],
    pub trust: &'a TrustStore,
    /// The highest sequence already accepted for this provider name.
    pub highest_sequence: Option<u64>,
    pub now: u64,
}

/// Checks every signature in the file, without applying the policy (for `inspect`).
pub fn check_signatures(file: &StatementFile, trust: &TrustStore, now: u64) -> Vec<SignatureCheck> {
    let message = file.statement.signing_message();
    let provider = &file.statement.provider.name;
    let issued_at = Some(file.statement.issued_at);
    file.signatures
        .iter()
        .map(|entry| {
            let id = KeyId(entry.key_id.clone());
            let Some(key) = trust.find(&id) else {
                return SignatureCheck::UnknownKey(id);
            };
            let valid =
                decode_signature(&entry.signature).is_some_and(|sig| key.key().is_ok_and(|k| k.verify(&message, &sig)));
            if !valid {
                return SignatureCheck::BadSignature(id);
            }
            check_key(trust, &id, provider, issued_at, now)
        })
        .collect()
}

/// What the trust store says today of a key whose signature is valid: trusted (with its
/// role), revoked, expired, not allowed for `provider`, a local key the organisation does
/// not let count, or retired before the statement was issued (`issued_at`; `None` when not
/// known, which a retired key never satisfies). Also used on the stored-credential path,
/// where the signature was verified when the credential was made.
pub fn check_key(trust: &TrustStore, id: &KeyId, provider: &str, issued_at: Option<u64>, now: u64) -> SignatureCheck {
    let Some(key) = trust.find(id) else {
        return SignatureCheck::UnknownKey(id.clone());
    };
    let name = key.name.clone();
    if trust.key_revoked(id) {
        return SignatureCheck::RevokedKey {
            key_id: id.clone(),
            name,
        };
    }
    if let Some(not_after) = key.not_after.filter(|t| *t < now) {
        return SignatureCheck::KeyExpired {
            key_id: id.clone(),
            name,
            not_after,
        };
    }
    if trust.local_key_forbidden(key) {
        return SignatureCheck::LocalKeyForbidden {
            key_id: id.clone(),
            name,
            organisation: trust.org.as_ref().map(|o| o.label()).unwrap_or_default(),
        };
    }
    if let Some(retired) = key
        .retired
        .as_ref()
        .filter(|r| issued_at.is_none_or(|t| t > r.signs_until))
    {
        return SignatureCheck::Retired {
            key_id: id.clone(),
            name,
            successor: retired.successor.clone(),
            signs_until: retired.signs_until,
        };
    }
    if !key.may_sign_for(provider) {
        return SignatureCheck::NotAllowedFor {
            key_id: id.clone(),
            name,
            provider: provider.to_owned(),
        };
    }
    SignatureCheck::Trusted(Signer {
        key_id: id.clone(),
        name,
        role: key.role,
        lineage: trust.lineage(id),
    })
}

/// Applies the policy to checked signatures: the key the statement names must be a trusted
/// publisher, and `require.auditor` *distinct* trusted auditor keys other than it must have
/// signed. A key counts once however often it appears. Returns the signers that satisfy it.
pub fn apply_policy(
    checks: &[(&str, SignatureCheck)],
    publisher_key_id: &str,
    policy: &crate::trust::Policy,
) -> Result<Vec<Signer>, Refusal> {
    let mut signers = Vec::new();
    // The publisher: only the signature of the key the statement names counts.
    let named: Vec<&SignatureCheck> = checks
        .iter()
        .filter(|(id, _)| id.eq_ignore_ascii_case(publisher_key_id))
        .map(|(_, c)| c)
        .collect();
    match named.iter().find(|c| matches!(c, SignatureCheck::Trusted(_))) {
        Some(SignatureCheck::Trusted(s)) if s.role == Role::Publisher => signers.push(s.clone()),
        Some(SignatureCheck::Trusted(s)) => {
            return Err(Refusal::MissingSignature {
                role: Role::Publisher,
                reason: format!(
                    "the key the statement names, {} ({}), is trusted as {}, not as publisher",
                    s.key_id, s.name, s.role
                ),
            });
        }
        _ => {
            let reason = named
                .first()
                .map(|c| c.to_string())
                .unwrap_or_else(|| format!("the statement is not signed by the key it names ({publisher_key_id})"));
            return Err(Refusal::MissingSignature {
                role: Role::Publisher,
                reason,
            });
        }
    }
    let needed = policy.require.auditor as usize;
    if needed > 0 {
        let mut auditors: Vec<Signer> = Vec::new();
        for (_, c) in checks {
            if let SignatureCheck::Trusted(s) = c
                && s.role == Role::Auditor
                && !auditors.iter().any(|a| a.lineage == s.lineage)
            {
                auditors.push(s.clone());
            }
        }
        if auditors.len() < needed {
            let untrusted = checks
                .iter()
                .filter(|(id, _)| !id.eq_ignore_ascii_case(publisher_key_id))
                .find(|(_, c)| !matches!(c, SignatureCheck::Trusted(_)))
                .map(|(_, c)| format!("; {c}"))
                .unwrap_or_default();
            let reason = match (needed, auditors.len()) {
                (1, 0) => format!("no auditor has countersigned the statement{untrusted}"),
                (n, have) => {
                    format!("the policy requires {n} distinct trusted auditors and {have} countersigned{untrusted}")
                }
            };
            return Err(Refusal::MissingSignature {
                role: Role::Auditor,
                reason,
            });
        }
        signers.extend(auditors);
    }
    Ok(signers)
}

/// One requirement of the policy and the signatures that meet it, as `inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub role: Role,
    pub needed: u32,
    pub satisfied_by: Vec<Signer>,
}

impl Requirement {
    pub fn missing(&self) -> u32 {
        self.needed.saturating_sub(self.satisfied_by.len() as u32)
    }
}

/// How the checked signatures meet each requirement of `policy`, counted exactly as
/// [`apply_policy`] counts them: the publisher only by the key the statement names, each
/// auditor key once.
pub fn requirements(
    checks: &[(&str, SignatureCheck)],
    publisher_key_id: &str,
    policy: &crate::trust::Policy,
) -> Vec<Requirement> {
    let trusted = |role: Role, named_only: bool| {
        let mut signers: Vec<Signer> = Vec::new();
        for (id, c) in checks {
            if let SignatureCheck::Trusted(s) = c
                && s.role == role
                && (!named_only || id.eq_ignore_ascii_case(publisher_key_id))
                && !signers.iter().any(|a| a.lineage == s.lineage)
            {
                signers.push(s.clone());
            }
        }
        signers
    };
    let mut out = vec![Requirement {
        role: Role::Publisher,
        needed: policy.require.publisher,
        satisfied_by: trusted(Role::Publisher, true),
    }];
    if policy.require.auditor > 0 {
        out.push(Requirement {
            role: Role::Auditor,
            needed: policy.require.auditor,
            satisfied_by: trusted(Role::Auditor, false),
        });
    }
    out
}

pub fn verify(input: Input<'_>) -> Result<Verified, Refusal> {
    let file = StatementFile::parse(input.statement).map_err(Refusal::Malformed)?;
    verify_parsed(file, input)
}

/// [`verify`] of a statement file already parsed from `input.statement` (the caller needed
/// its provider name first, to look up the rollback floor).
pub fn verify_parsed(file: StatementFile, input: Input<'_>) -> Result<Verified, Refusal> {
    let statement = &file.statement;
    let ceiling = statement.ceiling().map_err(Refusal::Malformed)?;

    let actual: [u8; 32] = Sha256::digest(input.component).into();
    if hex::encode(actual) != statement.component.sha256 || input.component.len() as u64 != statement.component.size {
        return Err(Refusal::DigestMismatch {
            expected: statement.component.sha256.clone(),
            expected_size: statement.component.size,
            actual: hex::encode(actual),
            actual_size: input.component.len() as u64,
        });
    }

    let digest = statement.digest();
    if input.trust.statement_revoked(&hex::encode(digest)) {
        return Err(Refusal::RevokedStatement {
            digest: hex::encode(digest),
        });
    }

    let checks = check_signatures(&file, input.trust, input.now);
    let paired: Vec<(&str, SignatureCheck)> = file.signatures.iter().map(|e| e.key_id.as_str()).zip(checks).collect();
    let signers = apply_policy(&paired, &statement.key_id, &input.trust.policy)?;

    if let Some(org) = &input.trust.org {
        org.admits(
            &statement.provider.name,
            &statement.provider.version,
            &statement.component.sha256,
            Some(statement.issued_at),
            input.now,
        )
        .map_err(|reason| Refusal::Organisation {
            organisation: org.label(),
            reason,
        })?;
    }

    let mut expired_warning = None;
    if let Some(expires_at) = statement.expires_at.filter(|t| *t <= input.now) {
        match input.trust.policy.expired() {
            ExpiredPolicy::Refuse => {
                return Err(Refusal::Expired {
                    expires_at,
                    now: input.now,
                });
            }
            ExpiredPolicy::Warn => {
                expired_warning = Some(
                    Refusal::Expired {
                        expires_at,
                        now: input.now,
                    }
                    .to_string(),
                )
            }
        }
    }

    if let Some(highest) = input.highest_sequence.filter(|h| statement.provider.sequence < *h) {
        return Err(Refusal::Rollback {
            provider: statement.provider.name.clone(),
            sequence: statement.provider.sequence,
            highest,
        });
    }

    Ok(Verified {
        ceiling,
        component_sha256: actual,
        statement_digest: digest,
        signers,
        expired_warning,
        file,
    })
}
