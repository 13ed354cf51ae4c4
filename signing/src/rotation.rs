//! Key rotation: a publisher (or auditor) hands its trust to a successor key with a signed
//! rotation, signed by the current key and by the successor (which proves the publisher
//! holds it), and countersigned by as many distinct trusted auditors as the policy asks of
//! a publisher's statements. Trust follows it for the same role and provider names; the old
//! key then counts only on statements issued up to the end of the grace period, so
//! releases already out keep verifying until they expire and nothing new can be signed
//! with a key that was retired.
//!
//! File format (JSON, kebab-case; the same fields are kept under `[[rotation]]` in
//! `trust.toml`):
//! ```json
//! { "format": "credence-key-rotation-v1", "from": "<old key id>", "grace-days": 30,
//!   "issued-at": 1790000000, "signatures": [ { "key-id": "...", "signature": "..." } ],
//!   "to": "credence-ed25519-pub:..." }
//! ```
//! Each signature is ed25519 over `"credence-key-rotation-v1\0" || sha256(canonical(r))`,
//! where `r` is the object without `signatures`, in RFC 8785 form.

use crate::bundle::BundleSignature;
use crate::keys::{KeyId, PublicKey, SecretKey};
use crate::trust::{Retired, Role, TrustStore, TrustedKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const ROTATION_FORMAT: &str = "credence-key-rotation-v1";
pub const ROTATION_DOMAIN: &[u8] = b"credence-key-rotation-v1\0";
/// The longest grace period: a retired key should stop signing soon.
pub const MAX_GRACE_DAYS: u64 = 365;
/// How far ahead of this machine's clock a signed date may be: the signer's clock may be a
/// little ahead, and a date further out would stretch what it bounds (a grace period).
pub const MAX_CLOCK_SKEW_S: u64 = 600;
const MAX_ROTATION_BYTES: usize = 16 << 10;
const MAX_SIGNATURES: usize = 18;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Rotation {
    pub format: String,
    /// The retiring key's id.
    pub from: String,
    pub grace_days: u64,
    pub issued_at: u64,
    pub signatures: Vec<BundleSignature>,
    /// The successor's public key line.
    pub to: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Claim<'a> {
    format: &'a str,
    from: &'a str,
    grace_days: u64,
    issued_at: u64,
    to: &'a str,
}

impl Rotation {
    /// A rotation from `from` to `to`, signed by both.
    pub fn new(from: &SecretKey, to: &SecretKey, grace_days: u64, issued_at: u64) -> Rotation {
        let mut r = Rotation {
            format: ROTATION_FORMAT.into(),
            from: from.public().key_id().0,
            grace_days,
            issued_at,
            signatures: Vec::new(),
            to: to.public().to_string(),
        };
        r.sign(from);
        r.sign(to);
        r
    }

    pub fn signing_message(&self) -> Vec<u8> {
        let claim = Claim {
            format: &self.format,
            from: &self.from,
            grace_days: self.grace_days,
            issued_at: self.issued_at,
            to: &self.to,
        };
        let mut m = ROTATION_DOMAIN.to_vec();
        m.extend_from_slice(&Sha256::digest(serde_json::to_vec(&claim).expect("serialises")));
        m
    }

    /// Adds (or replaces) `key`'s signature, e.g. an auditor's countersignature.
    pub fn sign(&mut self, key: &SecretKey) {
        let message = self.signing_message();
        BundleSignature::add(&mut self.signatures, key, &message);
    }

    pub fn parse(bytes: &[u8]) -> Result<Rotation, String> {
        if bytes.len() > MAX_ROTATION_BYTES {
            return Err(format!("a rotation file is at most {MAX_ROTATION_BYTES} bytes"));
        }
        let r: Rotation = crate::bundle::parse_canonical(
            bytes,
            "key rotation",
            "the rotation is not in the form `credence trust rotate` writes",
        )?;
        r.check_fields()?;
        Ok(r)
    }

    pub fn to_pretty(&self) -> String {
        let value = serde_json::to_value(self).expect("serialises");
        let mut s = serde_json::to_string_pretty(&value).expect("serialises");
        s.push('\n');
        s
    }

    pub fn check_fields(&self) -> Result<(), String> {
        if self.format != ROTATION_FORMAT {
            return Err(format!("rotation format {:?} is not {ROTATION_FORMAT}", self.format));
        }
        if crate::trust::normalise_hex(&self.from, 32).as_deref() != Some(self.from.as_str()) {
            return Err("rotation `from` is not a key id (32 lower-case hex digits)".into());
        }
        let to = self.successor()?;
        if to.key_id().0 == self.from {
            return Err("a key cannot rotate to itself".into());
        }
        if to.to_string() != self.to {
            return Err("rotation `to` is not a public key in canonical form".into());
        }
        if self.grace_days > MAX_GRACE_DAYS {
            return Err(format!("grace-days is at most {MAX_GRACE_DAYS}"));
        }
        if self.issued_at > crate::bundle::MAX_EXACT_INTEGER {
            return Err("issued-at is not a time".into());
        }
        BundleSignature::check_list(&self.signatures, MAX_SIGNATURES, "rotation")?;
        Ok(())
    }

    pub fn successor(&self) -> Result<PublicKey, String> {
        PublicKey::parse(&self.to).map_err(|e| format!("rotation `to`: {e}"))
    }

    /// The last issue time at which the retiring key's statements still count.
    pub fn signs_until(&self) -> u64 {
        self.issued_at.saturating_add(self.grace_days.saturating_mul(86_400))
    }

    fn signed_by(&self, key: &PublicKey) -> bool {
        let id = key.key_id().0;
        let message = self.signing_message();
        self.signatures.iter().any(|s| {
            s.key_id == id
                && crate::statement::decode_signature(&s.signature).is_some_and(|sig| key.verify(&message, &sig))
        })
    }
}

/// Whether a key's signature counts for the store at `issued_at` (rotation or statement):
/// trusted, not revoked, not expired by then, allowed by the organisation, not retired.
fn counts(store: &TrustStore, key: &TrustedKey, issued_at: u64) -> bool {
    key.key_id().is_some_and(|id| !store.key_revoked(&id))
        && key.not_after.is_none_or(|t| issued_at <= t)
        && !store.local_key_forbidden(key)
        && key.retired.as_ref().is_none_or(|r| issued_at <= r.signs_until)
}

/// Whether `r` hands the trust of one of `store`'s keys to its successor at `now`; why not
/// if not.
pub fn check_rotation(r: &Rotation, store: &TrustStore, now: u64) -> Result<(), String> {
    r.check_fields()?;
    if let Some(org) = store.org.as_ref().filter(|o| !o.local_keys) {
        // A rotation is kept in trust.toml and trusts a new key: a widening, which only the
        // bundle makes where it lets no trust.toml key count.
        return Err(format!(
            "the policy bundle of {} lets nothing in trust.toml add a key, rotations included: the successor reaches this machine in the bundle's next release",
            org.label()
        ));
    }
    if r.issued_at > now.saturating_add(MAX_CLOCK_SKEW_S) {
        return Err(format!(
            "the rotation is dated {} (Unix time), in the future: it counts from then",
            r.issued_at
        ));
    }
    let from_id = KeyId(r.from.clone());
    let Some(from) = store.find(&from_id) else {
        return Err(format!("key {from_id} is not trusted here, so it cannot hand on trust"));
    };
    if let Some(retired) = &from.retired {
        return Err(format!(
            "key {from_id} ({}) was already rotated to {}",
            from.name, retired.successor
        ));
    }
    if !counts(store, from, r.issued_at) {
        return Err(format!(
            "key {from_id} ({}) is revoked, expired, or not allowed by the organisation's policy bundle",
            from.name
        ));
    }
    let from_key = from.key()?;
    if !r.signed_by(&from_key) {
        return Err(format!("the rotation is not signed by the retiring key {from_id}"));
    }
    let to = r.successor()?;
    if !r.signed_by(&to) {
        return Err(format!(
            "the rotation is not signed by its successor key {}, so nothing shows the publisher holds it",
            to.key_id()
        ));
    }
    let needed = store.policy.require.auditor as usize;
    if from.role == Role::Publisher && needed > 0 {
        // Auditors as statements count them: scoped to every name the key signs for, and a
        // key and its own successor once.
        let mut lineages: Vec<KeyId> = store
            .key
            .iter()
            .filter(|k| k.role == Role::Auditor && counts(store, k, r.issued_at))
            .filter(|k| from.providers.iter().all(|p| k.may_sign_for(p)))
            .filter(|k| k.key().is_ok_and(|p| r.signed_by(&p)))
            .filter_map(|k| k.key_id().map(|id| store.lineage(&id)))
            .collect();
        lineages.sort();
        lineages.dedup();
        let auditors = lineages.len();
        if auditors < needed {
            return Err(format!(
                "the policy requires {needed} distinct trusted auditors to countersign, and {auditors} did: `credence countersign --key <auditor key> <rotation file>`"
            ));
        }
    }
    Ok(())
}

/// The keys that more than one rotation hands on: a key in more than one hand, or a
/// stolen key racing its owner. None of their rotations applies.
pub fn contested(rotations: &[Rotation]) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeMap::new();
    let mut out = std::collections::BTreeSet::new();
    for r in rotations {
        if let Some(other) = seen.insert(r.from.as_str(), r)
            && other != r
        {
            out.insert(r.from.clone());
        }
    }
    out
}

/// Applies every valid rotation in `store.rotation` at `now`, along chains (A to B, then B
/// to C): each retiring key is marked with its grace end, and its successor trusted with the
/// same role, provider names, expiry and origin. Invalid ones, and every rotation of a key
/// that two different rotations hand on, do nothing (`credence trust list` says why).
pub fn apply_rotations(store: &mut TrustStore, now: u64) {
    let contested = contested(&store.rotation);
    let mut pending: Vec<Rotation> = store.rotation.clone();
    pending.retain(|r| !contested.contains(&r.from));
    pending.sort_by_key(|r| r.issued_at);
    pending.dedup();
    let mut applied = vec![false; pending.len()];
    loop {
        let mut progressed = false;
        for (i, r) in pending.iter().enumerate() {
            if applied[i] || check_rotation(r, store, now).is_err() {
                continue;
            }
            let Ok(successor) = r.successor() else { continue };
            let from_id = KeyId(r.from.clone());
            let Some(from) = store.key.iter_mut().find(|k| k.key_id().as_ref() == Some(&from_id)) else {
                continue;
            };
            from.retired = Some(Retired {
                successor: successor.key_id(),
                signs_until: r.signs_until(),
            });
            let inherited = TrustedKey {
                name: from.name.clone(),
                role: from.role,
                public_key: r.to.clone(),
                providers: from.providers.clone(),
                // A successor never outlives the key it succeeds.
                not_after: from.not_after,
                origin: from.origin,
                successor_of: Some(from_id),
                retired: None,
            };
            if store.find(&successor.key_id()).is_none() {
                store.key.push(inherited);
            }
            applied[i] = true;
            progressed = true;
        }
        if !progressed {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(keys: &[(&SecretKey, Role)], auditors: u32) -> TrustStore {
        let mut store = TrustStore::default();
        for (k, role) in keys {
            store.key.push(TrustedKey {
                name: format!("{role}"),
                role: *role,
                public_key: k.public().to_string(),
                providers: vec!["acme-*".into()],
                not_after: None,
                origin: Default::default(),
                successor_of: None,
                retired: None,
            });
        }
        store.policy.require.auditor = auditors;
        store
    }

    #[test]
    fn a_rotation_signed_by_both_keys_hands_on_trust_along_chains() {
        let (a, b, c) = (
            SecretKey::from_seed([1; 32]),
            SecretKey::from_seed([2; 32]),
            SecretKey::from_seed([3; 32]),
        );
        let mut store = store_with(&[(&a, Role::Publisher)], 0);
        let ab = Rotation::new(&a, &b, 30, 1_000);
        assert_eq!(Rotation::parse(ab.to_pretty().as_bytes()), Ok(ab.clone()));
        store.rotation = vec![Rotation::new(&b, &c, 0, 2_000), ab];
        let store = TrustStore::in_force(&store, None, 10_000);
        let b_key = store.find(&b.public().key_id()).unwrap();
        assert_eq!(
            (b_key.role, b_key.providers.clone()),
            (Role::Publisher, vec!["acme-*".to_owned()])
        );
        assert_eq!(
            store
                .find(&a.public().key_id())
                .unwrap()
                .retired
                .as_ref()
                .unwrap()
                .signs_until,
            1_000 + 30 * 86_400
        );
        assert!(
            store.find(&c.public().key_id()).is_some(),
            "B's own rotation to C applies after A's"
        );
    }

    #[test]
    fn rotations_missing_a_signature_or_from_an_unknown_or_revoked_key_do_nothing() {
        let (a, b, x) = (
            SecretKey::from_seed([1; 32]),
            SecretKey::from_seed([2; 32]),
            SecretKey::from_seed([9; 32]),
        );
        let store = store_with(&[(&a, Role::Publisher)], 0);
        let mut only_old = Rotation::new(&a, &b, 30, 1_000);
        only_old.signatures.retain(|s| s.key_id == a.public().key_id().0);
        assert!(
            check_rotation(&only_old, &store, 10_000)
                .unwrap_err()
                .contains("successor")
        );
        let mut edited = Rotation::new(&a, &b, 30, 1_000);
        edited.grace_days = 300;
        assert!(
            check_rotation(&edited, &store, 10_000)
                .unwrap_err()
                .contains("not signed by the retiring key")
        );
        assert!(
            check_rotation(&Rotation::new(&x, &b, 30, 1_000), &store, 10_000)
                .unwrap_err()
                .contains("not trusted")
        );
        let mut revoked = store.clone();
        revoked.revoked.keys.push(a.public().key_id().0);
        assert!(check_rotation(&Rotation::new(&a, &b, 30, 1_000), &revoked, 10_000).is_err());
        // A key rotates once: a second successor is refused.
        let mut twice = store.clone();
        twice.rotation = vec![Rotation::new(&a, &b, 30, 1_000), Rotation::new(&a, &x, 30, 2_000)];
        let twice = TrustStore::in_force(&twice, None, 10_000);
        assert!(twice.find(&x.public().key_id()).is_none());
    }

    #[test]
    fn a_publisher_rotation_needs_the_auditors_the_policy_requires() {
        let (a, b, aud) = (
            SecretKey::from_seed([1; 32]),
            SecretKey::from_seed([2; 32]),
            SecretKey::from_seed([5; 32]),
        );
        let store = store_with(&[(&a, Role::Publisher), (&aud, Role::Auditor)], 1);
        let mut r = Rotation::new(&a, &b, 30, 1_000);
        assert!(check_rotation(&r, &store, 10_000).unwrap_err().contains("auditors"));
        r.sign(&aud);
        assert_eq!(check_rotation(&r, &store, 10_000), Ok(()));
    }

    #[test]
    fn an_auditor_and_its_own_successor_are_one_auditor() {
        let (p, a, a2) = (
            SecretKey::from_seed([1; 32]),
            SecretKey::from_seed([5; 32]),
            SecretKey::from_seed([6; 32]),
        );
        let mut store = store_with(&[(&p, Role::Publisher), (&a, Role::Auditor)], 2);
        store.rotation = vec![Rotation::new(&a, &a2, 30, 1_000)];
        let store = TrustStore::in_force(&store, None, 10_000);
        let check =
            |k: &SecretKey| crate::verify::check_key(&store, &k.public().key_id(), "acme-x", Some(2_000), 10_000);
        let checks = [
            (p.public().key_id().0, check(&p)),
            (a.public().key_id().0, check(&a)),
            (a2.public().key_id().0, check(&a2)),
        ];
        let paired: Vec<(&str, crate::verify::SignatureCheck)> =
            checks.iter().map(|(id, c)| (id.as_str(), c.clone())).collect();
        assert!(
            matches!(paired[2].1, crate::verify::SignatureCheck::Trusted(_)),
            "{:?}",
            paired[2].1
        );
        let err = crate::verify::apply_policy(&paired, &p.public().key_id().0, &store.policy).unwrap_err();
        assert!(
            err.to_string()
                .contains("2 distinct trusted auditors and 1 countersigned"),
            "{err}"
        );
    }

    #[test]
    fn two_rotations_of_one_key_both_do_nothing_and_a_successor_keeps_the_expiry() {
        let (a, b, x) = (
            SecretKey::from_seed([1; 32]),
            SecretKey::from_seed([2; 32]),
            SecretKey::from_seed([9; 32]),
        );
        let mut store = store_with(&[(&a, Role::Publisher)], 0);
        store.key[0].not_after = Some(5_000);
        // The real rotation, and one dated earlier by whoever else holds the key.
        store.rotation = vec![Rotation::new(&a, &b, 30, 2_000), Rotation::new(&a, &x, 30, 1_000)];
        let contested = TrustStore::in_force(&store, None, 10_000);
        assert!(contested.find(&b.public().key_id()).is_none() && contested.find(&x.public().key_id()).is_none());
        assert!(contested.find(&a.public().key_id()).unwrap().retired.is_none());
        store.rotation.pop();
        let one = TrustStore::in_force(&store, None, 3_000);
        assert_eq!(
            one.find(&b.public().key_id()).unwrap().not_after,
            Some(5_000),
            "no successor outlives its key"
        );
        // A rotation dated ahead of the clock counts only once its time comes.
        let ahead = Rotation::new(&a, &b, 30, 3_000 + MAX_CLOCK_SKEW_S + 1);
        assert!(
            check_rotation(
                &ahead,
                &TrustStore::in_force(&store_with(&[(&a, Role::Publisher)], 0), None, 3_000),
                3_000
            )
            .unwrap_err()
            .contains("in the future")
        );
    }

    #[test]
    fn a_publisher_rotation_counts_only_auditors_scoped_to_its_names() {
        let (a, b, aud) = (
            SecretKey::from_seed([1; 32]),
            SecretKey::from_seed([2; 32]),
            SecretKey::from_seed([5; 32]),
        );
        let mut store = store_with(&[(&a, Role::Publisher), (&aud, Role::Auditor)], 1);
        store.key[1].providers = vec!["other-*".into()];
        let mut r = Rotation::new(&a, &b, 30, 1_000);
        r.sign(&aud);
        assert!(check_rotation(&r, &store, 10_000).unwrap_err().contains("auditors"));
    }
}
