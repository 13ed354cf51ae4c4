//! ed25519 keys as credence writes them: a public key is one short line a user can paste
//! (`credence-ed25519-pub:<base64>`); a secret key file holds the 32-byte seed and is
//! written 0600. The key id is derived from the public key, so it cannot lie.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;

const PUBLIC_PREFIX: &str = "credence-ed25519-pub:";
const SECRET_PREFIX: &str = "credence-ed25519-secret:";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a credence public key: expected one line `{PUBLIC_PREFIX}<base64 of 32 bytes>`")]
    BadPublicKey,
    #[error("not a credence secret key file")]
    BadSecretKey,
    #[error("{0}")]
    Io(String),
}

/// First 16 bytes of sha-256 over a domain prefix and the public key, in hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub String);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

fn key_id_of_bytes(bytes: &[u8; 32]) -> KeyId {
    let mut h = Sha256::new();
    h.update(b"credence-key-id-v1\0");
    h.update(bytes);
    KeyId(hex::encode(&h.finalize()[..16]))
}

impl PublicKey {
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let b64 = text.trim().strip_prefix(PUBLIC_PREFIX).ok_or(KeyError::BadPublicKey)?;
        let bytes: [u8; 32] = B64
            .decode(b64)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(KeyError::BadPublicKey)?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| KeyError::BadPublicKey)
    }

    pub fn key_id(&self) -> KeyId {
        key_id_of_bytes(self.0.as_bytes())
    }

    /// The key id of a public-key line without decoding the curve point (an ed25519 point
    /// decompression costs more than the rest of a trust-store lookup): for finding a key,
    /// whose validity `TrustStore::parse` has already checked.
    pub fn key_id_of_line(text: &str) -> Option<KeyId> {
        let b64 = text.trim().strip_prefix(PUBLIC_PREFIX)?;
        let bytes: [u8; 32] = B64.decode(b64).ok()?.try_into().ok()?;
        Some(key_id_of_bytes(&bytes))
    }

    /// Strict verification (rejects non-canonical and small-order encodings).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(bytes) = <[u8; 64]>::try_from(signature) else {
            return false;
        };
        self.0.verify_strict(message, &Signature::from_bytes(&bytes)).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", B64.encode(self.0.as_bytes()))
    }
}

/// A signing key. No Debug or Display: it never prints.
pub struct SecretKey(SigningKey);

impl SecretKey {
    pub fn generate() -> Result<SecretKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Io(format!("no randomness for a key: {e}")))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    pub fn parse(text: &str) -> Result<SecretKey, KeyError> {
        let b64 = text.trim().strip_prefix(SECRET_PREFIX).ok_or(KeyError::BadSecretKey)?;
        let seed: [u8; 32] = B64
            .decode(b64)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(KeyError::BadSecretKey)?;
        Ok(SecretKey::from_seed(seed))
    }

    pub fn read(path: &Path) -> Result<SecretKey, KeyError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| KeyError::Io(format!("cannot read {}: {e}", path.display())))?;
        SecretKey::parse(&text)
    }

    /// Writes the key file readable by this user only; refuses to overwrite.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(path)
            .map_err(|e| KeyError::Io(format!("cannot create {}: {e}", path.display())))?;
        writeln!(file, "{SECRET_PREFIX}{}", B64.encode(self.0.to_bytes())).map_err(|e| KeyError::Io(e.to_string()))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_round_trip_and_ids_are_derived() {
        let k = SecretKey::from_seed([7; 32]);
        let line = k.public().to_string();
        assert!(line.starts_with(PUBLIC_PREFIX) && line.len() < 80, "{line}");
        let p = PublicKey::parse(&line).unwrap();
        assert_eq!(p, k.public());
        assert_eq!(p.key_id().0.len(), 32);
        assert_ne!(p.key_id(), SecretKey::from_seed([8; 32]).public().key_id());
        assert!(PublicKey::parse("credence-ed25519-pub:AAAA").is_err());
        assert_eq!(
            PublicKey::key_id_of_line(&line),
            Some(p.key_id()),
            "the cheap id is the same id"
        );
        assert_eq!(PublicKey::key_id_of_line("credence-ed25519-pub:AAAA"), None);
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let k = SecretKey::from_seed([1; 32]);
        let sig = k.sign(b"hello");
        assert!(k.public().verify(b"hello", &sig));
        assert!(!k.public().verify(b"hellO", &sig));
        assert!(!SecretKey::from_seed([2; 32]).public().verify(b"hello", &sig));
        assert!(!k.public().verify(b"hello", &sig[..63]));
    }
}
