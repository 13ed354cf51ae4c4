//! The audit trail: one JSON line per decision, appended to
//! `$XDG_STATE_HOME/credence/audit.jsonl` (0600). It says who asked (protocol, operation,
//! URL without userinfo or query), which providers were considered and what each one was
//! (name, version, digest, signer key ids) or why it was refused, every capability use
//! (HTTP method, origin, status; prompts by kind), limits hit, the outcome and the time it
//! took. Secrets never appear: a credential is named only by a fingerprint, the first 8 hex
//! digits of sha-256 over a per-installation random key and the secret, which tells two
//! answers apart without revealing either. Schema in README.md ("Audit trail").

use crate::private_dir::{ensure_private_dir, write_private_file};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    /// Unix seconds.
    pub time: u64,
    pub protocol: String,
    pub operation: String,
    pub url: String,
    pub is_retry: bool,
    pub interactive: bool,
    pub providers: Vec<Attempt>,
    /// `credential`, `not-served`, `not-found`, `needs-interaction`, `denied`, `failed`,
    /// `rejected` (the tool said the credential was refused), `accepted`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Attempt {
    /// The instance name in config.toml.
    pub instance: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default)]
    pub signers: Vec<String>,
    /// `stored` (answered from a stored credential), `loaded`, or `refused: <why>`.
    pub verdict: String,
    #[serde(default)]
    pub uses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// What the provider answered: `credential`, `not-mine`, `not-found`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

pub struct AuditLog {
    dir: PathBuf,
}

impl AuditLog {
    pub fn new(dir: PathBuf) -> Self {
        AuditLog { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    /// Appends one record. Failing to audit is logged, never fatal to the tool's request.
    pub fn append(&self, record: &Record) {
        if let Err(e) = self.try_append(record) {
            tracing::warn!("cannot write the audit trail {}: {e}", self.path().display());
        }
    }

    fn try_append(&self, record: &Record) -> std::io::Result<()> {
        ensure_private_dir(&self.dir)?;
        let mut options = std::fs::OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(self.path())?;
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        // One write per record, so concurrent credence processes never interleave lines.
        file.write_all(&line)
    }

    /// The first 8 hex digits of sha-256(installation key ‖ secret).
    pub fn fingerprint(&self, secret: &str) -> String {
        let key = self.installation_key();
        let mut h = Sha256::new();
        h.update(b"credence audit fingerprint v1\0");
        h.update(key);
        h.update(secret.as_bytes());
        hex::encode(&h.finalize()[..4])
    }

    fn installation_key(&self) -> [u8; 32] {
        let path = self.dir.join("audit.key");
        if let Ok(bytes) = std::fs::read(&path) {
            if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
                return key;
            }
        }
        let mut key = [0u8; 32];
        if getrandom::fill(&mut key).is_ok() {
            let _ = write_private_file(&self.dir, "audit.key", &key);
        }
        key
    }

    pub fn read(&self) -> std::io::Result<Vec<Record>> {
        let text = match std::fs::read_to_string(self.path()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    }
}
