//! The audit trail: one JSON line per decision, appended to
//! `$XDG_STATE_HOME/credence/audit.jsonl` (0600). It says who asked (protocol, operation,
//! URL without userinfo or query), which providers were considered and what each one was
//! (name, version, digest, signer key ids) or why it was refused, every capability use
//! (HTTP method, origin, status; prompts by kind), limits hit, the outcome and the time it
//! took. Secrets never appear: a credential is named only by a fingerprint, the first 8 hex
//! digits of sha-256 over a per-installation random key and the secret, which tells two
//! answers apart without revealing either. Schema in README.md ("Audit trail").
//!
//! Much of a record is the provider's to choose (a fetch method, a refusal's message, its
//! name and version), so every string is neutralised like a prompt (no escape sequence,
//! CR or LF reaches whoever reads the trail) and bounded: each string to
//! [`MAX_FIELD_BYTES`], each record to [`MAX_RECORD_BYTES`], and the file is rotated to
//! `audit.jsonl.1` (one generation) once it would pass [`MAX_FILE_BYTES`].

use crate::capability::prompt::neutralise_within;
use crate::private_dir::{ensure_private_dir, write_private_file};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;

/// One string in a record, after neutralising (escapes count).
pub const MAX_FIELD_BYTES: usize = 1 << 10;
/// One record as a JSON line. Capability uses are what grows, so they are dropped first.
pub const MAX_RECORD_BYTES: usize = 16 << 10;
/// The file before it is rotated: about 20,000 typical records.
pub const MAX_FILE_BYTES: u64 = 8 << 20;
/// When nothing else is left to drop, every string is cut to this.
const LAST_RESORT_FIELD_BYTES: usize = 128;
/// Signers beyond these are not recorded (a statement has a publisher and an auditor or two).
const MAX_SIGNERS: usize = 8;

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
    /// The agent's client: who asked (the process as the kernel named it at connect time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<Client>,
    /// Where the answer came from: `hit` (the agent's memory), `stored`, `miss` (a provider
    /// ran), `negative` (a recent refusal answered again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// A request from a remote session: which, and what its policy decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<Remote>,
}

/// The remote session a request came from, as the user's machine named it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Remote {
    /// The label given with `credence remote ... --label`.
    pub label: String,
    /// How it is reached (`ssh DEST`, `exec docker exec -i ...`, `socket`).
    pub carrier: String,
    pub session: String,
    /// `allowed`, `not-allowed` (outside `allow`), `operation-refused`, `ended`, `malformed`.
    pub decision: String,
    /// `not-needed`, `session`, `host`, `request`, `denied`, `timed-out`, `too-many`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
}

/// The process on the other end of the agent's socket. The pid and executable are for
/// reading the trail, not identities: only the uid is checked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Client {
    pub pid: i32,
    pub uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
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

impl Record {
    /// The record as it may be written and shown: every string neutralised and cut to
    /// [`MAX_FIELD_BYTES`], and the whole within [`MAX_RECORD_BYTES`] as JSON, by dropping
    /// capability uses (the last ones first, leaving a note of how many), then providers,
    /// then cutting every string shorter still.
    pub fn bounded(mut self) -> Record {
        self.each_string(|s| *s = neutralise_within(s, MAX_FIELD_BYTES));
        for a in &mut self.providers {
            if a.signers.len() > MAX_SIGNERS {
                let more = a.signers.len() - MAX_SIGNERS + 1;
                a.signers.truncate(MAX_SIGNERS - 1);
                a.signers.push(format!("… {more} more signers not recorded"));
            }
        }
        let mut dropped_uses = vec![0usize; self.providers.len()];
        let mut dropped_providers = 0;
        while self.json_len() > MAX_RECORD_BYTES {
            let most = (0..self.providers.len())
                .filter(|&i| self.providers[i].uses.len() > usize::from(dropped_uses[i] > 0))
                .max_by_key(|&i| self.providers[i].uses.len());
            if let Some(i) = most {
                let uses = &mut self.providers[i].uses;
                // Drop half of what is left at a time: a record of a thousand uses is cut
                // in a few passes, not a thousand.
                if dropped_uses[i] > 0 {
                    uses.pop();
                }
                let keep = uses.len() / 2;
                dropped_uses[i] += uses.len() - keep;
                uses.truncate(keep);
                uses.push(format!(
                    "… {} more uses not recorded (audit record limit of {} KiB)",
                    dropped_uses[i],
                    MAX_RECORD_BYTES >> 10
                ));
            } else if self.providers.len() > 1 + usize::from(dropped_providers > 0) {
                if dropped_providers > 0 {
                    self.providers.pop();
                }
                let keep = self.providers.len() / 2;
                dropped_providers += self.providers.len() - keep;
                self.providers.truncate(keep);
                dropped_uses.truncate(keep);
                self.providers.push(Attempt {
                    instance: format!("… {dropped_providers} more providers not recorded"),
                    verdict: String::new(),
                    ..Default::default()
                });
                dropped_uses.push(0);
            } else {
                self.each_string(|s| {
                    if s.len() > LAST_RESORT_FIELD_BYTES {
                        *s = neutralise_within(s, LAST_RESORT_FIELD_BYTES);
                    }
                });
                break;
            }
        }
        self
    }

    fn json_len(&self) -> usize {
        serde_json::to_vec(self).map_or(usize::MAX, |v| v.len())
    }

    fn each_string(&mut self, mut f: impl FnMut(&mut String)) {
        for s in [
            &mut self.protocol,
            &mut self.operation,
            &mut self.url,
            &mut self.outcome,
        ] {
            f(s);
        }
        let exe = self.client.as_mut().and_then(|c| c.exe.as_mut());
        for s in [
            &mut self.source,
            &mut self.credential_fingerprint,
            &mut self.error,
            &mut self.cache,
        ]
        .into_iter()
        .flatten()
        .chain(exe)
        {
            f(s);
        }
        for a in &mut self.providers {
            f(&mut a.instance);
            f(&mut a.verdict);
            for s in [
                &mut a.provider,
                &mut a.version,
                &mut a.sha256,
                &mut a.limit,
                &mut a.answer,
            ]
            .into_iter()
            .flatten()
            {
                f(s);
            }
            a.signers.iter_mut().for_each(&mut f);
            a.uses.iter_mut().for_each(&mut f);
        }
    }
}

/// The audit file this process appends to, and when it last looked whether the name still
/// means it.
struct KeptFile {
    file: std::fs::File,
    /// When the name and the size were last read from the file system.
    looked: std::time::Instant,
    /// The size then, plus what was appended through this descriptor since.
    size: u64,
}

pub struct AuditLog {
    dir: PathBuf,
    /// The file as last opened for appending, kept (the agent appends thousands of times):
    /// used while the name still means it, reopened after a rotation by anyone.
    file: std::sync::Mutex<Option<KeptFile>>,
    /// The fingerprint key, read once per process.
    key: std::sync::OnceLock<[u8; 32]>,
}

impl AuditLog {
    pub fn new(dir: PathBuf) -> Self {
        AuditLog {
            dir,
            file: std::sync::Mutex::new(None),
            key: std::sync::OnceLock::new(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    /// The previous generation, kept after a rotation.
    pub fn rotated_path(&self) -> PathBuf {
        self.dir.join("audit.jsonl.1")
    }

    /// Appends one record. Failing to audit is logged, never fatal to the tool's request.
    pub fn append(&self, record: &Record) {
        if let Err(e) = self.try_append(record) {
            tracing::warn!("cannot write the audit trail {}: {e}", self.path().display());
        }
    }

    fn try_append(&self, record: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&record.clone().bounded())?;
        line.push(b'\n');
        let mut kept = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // The kept descriptor, while the name still means its file (another credence may
        // have rotated or removed it: looked at every 100 ms; lines written in between go
        // to the file that was rotated, still part of the trail); else the file opened again.
        // Its size is what it was when last looked at plus what this process appended since:
        // others append too, so the trail may pass its bound by what they wrote in 100 ms,
        // and a rotation looks at the real size first.
        let still = kept.take().and_then(|k| {
            if k.looked.elapsed() < std::time::Duration::from_millis(100) {
                return Some(k);
            }
            let held = k.file.metadata().ok()?;
            let named = std::fs::symlink_metadata(self.path()).ok()?;
            same_file(&held, &named).then(|| KeptFile {
                size: held.len(),
                looked: std::time::Instant::now(),
                file: k.file,
            })
        });
        let mut k = match still {
            Some(k) => k,
            None => {
                ensure_private_dir(&self.dir)?;
                let file = self.open_for_append()?;
                KeptFile {
                    size: file.metadata()?.len(),
                    looked: std::time::Instant::now(),
                    file,
                }
            }
        };
        if k.size + line.len() as u64 > MAX_FILE_BYTES {
            // Under a lock shared by every credence of this home: two writers that both
            // found the name still meaning the full file would otherwise both rename, and
            // the second would move the first one's fresh file over the generation kept.
            let _rotating = self.rotation_lock()?;
            let opened = k.file.metadata()?;
            // Only if the name still means the file we opened: a concurrent credence may
            // have rotated it already, and renaming its fresh file would drop a generation.
            let current = std::fs::symlink_metadata(self.path())?;
            if same_file(&opened, &current) && opened.len() + line.len() as u64 > MAX_FILE_BYTES {
                std::fs::rename(self.path(), self.rotated_path())?;
            }
            let file = self.open_for_append()?;
            k = KeptFile {
                size: file.metadata()?.len(),
                looked: std::time::Instant::now(),
                file,
            };
        }
        // One write per record, so concurrent credence processes never interleave lines.
        let written = k.file.write_all(&line);
        if written.is_ok() {
            k.size += line.len() as u64;
        }
        *kept = Some(k);
        written
    }

    /// `flock` on `audit.lock` beside the trail, held until the file is dropped.
    fn rotation_lock(&self) -> std::io::Result<std::fs::File> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(self.dir.join("audit.lock"))?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a descriptor we own; released when it is closed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(file)
    }

    fn open_for_append(&self) -> std::io::Result<std::fs::File> {
        let mut options = std::fs::OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(self.path())
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
        *self.key.get_or_init(|| self.read_or_make_key())
    }

    fn read_or_make_key(&self) -> [u8; 32] {
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

    /// Every record, oldest first: the rotated generation, then the current file. Each is
    /// bounded again on the way out, so a record written by an older credence (or edited
    /// by hand) is shown as safely as a new one.
    pub fn read(&self) -> std::io::Result<Vec<Record>> {
        let mut records = Vec::new();
        for path in [self.rotated_path(), self.path()] {
            let text = match std::fs::read(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            records.extend(
                text.split(|&b| b == b'\n')
                    .filter_map(|l| serde_json::from_slice::<Record>(l).ok())
                    .map(Record::bounded),
            );
        }
        Ok(records)
    }
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.len() == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORGED: &str = "GET\x1b]0;pwned\x07\x1b[2J\r\n{\"forged\":true} <forged line>";

    fn record_with_uses(method: &str, uses: usize) -> Record {
        Record {
            protocol: "generic".into(),
            operation: "get".into(),
            url: "https://evil.example/".into(),
            outcome: "credential".into(),
            providers: vec![Attempt {
                instance: "hostile".into(),
                verdict: "loaded".into(),
                uses: (0..uses)
                    .map(|_| {
                        format!("fetch {method} http://127.0.0.1:1: invalid request: method {method:?} is not allowed")
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn no_terminal_controls(text: &str) -> bool {
        !text.chars().any(|c| c.is_control() && c != '\n')
    }

    #[test]
    fn a_forged_fetch_method_is_written_as_one_inert_record() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path().to_owned());
        log.append(&record_with_uses(FORGED, 1));
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert_eq!(text.lines().count(), 1);
        let records = log.read().unwrap();
        assert_eq!(records.len(), 1);
        let shown = &records[0].providers[0].uses[0];
        assert!(no_terminal_controls(shown) && !shown.contains('\n'), "{shown:?}");
        assert!(
            shown.starts_with("fetch GET\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{d}\\u{a}"),
            "{shown}"
        );
    }

    #[test]
    fn a_16_kib_method_repeated_64_times_makes_a_bounded_record() {
        let method = format!("{FORGED}{}", "A".repeat(16 << 10));
        let bounded = record_with_uses(&method, 64).bounded();
        let line = serde_json::to_vec(&bounded).unwrap();
        assert!(line.len() <= MAX_RECORD_BYTES, "{} bytes", line.len());
        let uses = &bounded.providers[0].uses;
        assert!(uses.len() > 1, "the first uses are kept: {uses:?}");
        assert!(
            uses.last().unwrap().contains("more uses not recorded"),
            "{:?}",
            uses.last()
        );
        assert!(uses.iter().all(|u| u.len() <= MAX_FIELD_BYTES));
    }

    #[test]
    fn a_record_of_many_providers_and_long_fields_still_fits() {
        let mut r = record_with_uses(&"B".repeat(4096), 3);
        r.error = Some("\u{202e}".repeat(100_000));
        r.providers = (0..500).map(|_| r.providers[0].clone()).collect();
        let line = serde_json::to_vec(&r.bounded()).unwrap();
        assert!(line.len() <= MAX_RECORD_BYTES, "{} bytes", line.len());
    }

    /// Bytes appended to the trail by someone else (another credence), then the 100 ms after
    /// which this process's kept descriptor looks at the file's size again.
    fn another_process_appends(log: &AuditLog, bytes: &[u8]) {
        std::fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .unwrap()
            .write_all(bytes)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(120));
    }

    #[test]
    fn writers_rotating_at_once_keep_the_previous_generation_and_every_line() {
        // Each log has its own descriptors, as separate credence processes would.
        for round in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let first = AuditLog::new(dir.path().to_owned());
            let mut old = record_with_uses("GET", 1);
            old.operation = "old".into();
            first.append(&old);
            let filler = vec![b' '; MAX_FILE_BYTES as usize - 600];
            another_process_appends(&first, &filler);
            let writers: Vec<AuditLog> = (0..8).map(|_| AuditLog::new(dir.path().to_owned())).collect();
            let barrier = std::sync::Barrier::new(writers.len());
            std::thread::scope(|s| {
                for (i, log) in writers.iter().enumerate() {
                    let barrier = &barrier;
                    s.spawn(move || {
                        let mut r = record_with_uses("GET", 1);
                        r.operation = format!("w{i}");
                        barrier.wait();
                        log.append(&r);
                    });
                }
            });
            let ops: Vec<String> = first.read().unwrap().into_iter().map(|r| r.operation).collect();
            assert!(
                ops.contains(&"old".to_owned()),
                "round {round}: the previous generation was lost: {ops:?}"
            );
            for i in 0..8 {
                assert!(ops.contains(&format!("w{i}")), "round {round}: line w{i} lost: {ops:?}");
            }
        }
    }

    #[test]
    fn what_this_process_appends_counts_toward_the_limit_between_looks_at_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path().to_owned());
        let record = record_with_uses("GET", 1);
        log.append(&record);
        let one = std::fs::metadata(log.path()).unwrap().len();
        let filler = vec![b' '; (MAX_FILE_BYTES - 3 * one) as usize];
        another_process_appends(&log, &filler);
        // This append looks at the file (its size is read); the next ones, within 100 ms,
        // only count what they add.
        log.append(&record);
        assert!(!log.rotated_path().exists());
        log.append(&record);
        log.append(&record);
        assert!(
            log.rotated_path().exists(),
            "the limit was reached by this process's own lines"
        );
        assert!(std::fs::metadata(log.path()).unwrap().len() <= one);
    }

    #[test]
    fn the_audit_file_is_rotated_at_its_size_limit_and_both_generations_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path().to_owned());
        let mut first = record_with_uses("GET", 1);
        first.operation = "first".into();
        log.append(&first);
        // Fill the file to just under the limit, as a long history would.
        let filler = vec![b' '; MAX_FILE_BYTES as usize - 100];
        another_process_appends(&log, &filler);
        let mut second = record_with_uses("GET", 1);
        second.operation = "second".into();
        log.append(&second);
        assert!(std::fs::metadata(log.rotated_path()).unwrap().len() > MAX_FILE_BYTES - 200);
        assert!(std::fs::metadata(log.path()).unwrap().len() < 1024);
        let operations: Vec<String> = log.read().unwrap().into_iter().map(|r| r.operation).collect();
        assert_eq!(operations, ["first", "second"]);
        // The next rotation replaces the previous generation: at most two files, ever.
        another_process_appends(&log, &filler);
        log.append(&first);
        let operations: Vec<String> = log.read().unwrap().into_iter().map(|r| r.operation).collect();
        assert_eq!(operations, ["second", "first"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(log.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
