//! The organisation's policy on this machine: a root public key pinned where the user
//! cannot write (`/etc/credence/root.pub`, `%ProgramData%\credence\root.pub`), and the
//! policy bundle it signs beside it (`policy.json`). Both, and every directory above them,
//! must be root's alone; `CREDENCE_POLICY_DIR` moves them for tests, accepts the user's own
//! files, and says so on every run.
//!
//! No policy directory (or an empty one) means no organisation policy: the user's
//! `trust.toml` decides alone. Anything else that is not a valid bundle in force fails
//! closed: no provider runs until it is fixed.

use crate::paths::Paths;
use crate::trusted_file::{FileError, Writers, read_optional};
use credence_signing::bundle::{MAX_BUNDLE_BYTES, Seen, verify_bundle};
use credence_signing::{PublicKey, VerifiedBundle};
use std::path::PathBuf;

pub const POLICY_DIR_ENV: &str = "CREDENCE_POLICY_DIR";
pub const ROOT_FILE: &str = "root.pub";
pub const BUNDLE_FILE: &str = "policy.json";

/// Where the organisation's files live, and who may have written them.
#[derive(Clone, Debug)]
pub struct PolicyDir {
    pub dir: PathBuf,
    pub writers: Writers,
    /// Set when `CREDENCE_POLICY_DIR` moved it.
    pub overridden: bool,
    /// Set when `CREDENCE_POLICY_DIR` was given on a machine whose organisation pinned a
    /// root key in the system directory: the override is ignored.
    pub override_refused: bool,
}

impl PolicyDir {
    /// The system directory, or `CREDENCE_POLICY_DIR` where the system directory pins no
    /// root key: on a machine an organisation manages, no process of the user can move its
    /// policy away with an environment variable.
    pub fn from_env() -> PolicyDir {
        let system = PolicyDir {
            dir: system_dir(),
            writers: Writers::RootOnly,
            overridden: false,
            override_refused: false,
        };
        // Refused wherever the system directory exists (or cannot be looked at): only a
        // machine with no organisation policy at all lets a test move it.
        let system_present =
            !matches!(std::fs::symlink_metadata(&system.dir), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        match std::env::var_os(POLICY_DIR_ENV).filter(|v| !v.is_empty()) {
            Some(_) if system_present => PolicyDir {
                override_refused: true,
                ..system
            },
            Some(dir) => PolicyDir {
                dir: PathBuf::from(dir),
                writers: Writers::UserOnly,
                overridden: true,
                override_refused: false,
            },
            None => system,
        }
    }

    pub fn root_file(&self) -> PathBuf {
        self.dir.join(ROOT_FILE)
    }

    pub fn bundle_file(&self) -> PathBuf {
        self.dir.join(BUNDLE_FILE)
    }

    /// The warning every run under `CREDENCE_POLICY_DIR` gives.
    pub fn override_warning(&self) -> Option<String> {
        if self.override_refused {
            return Some(format!(
                "{POLICY_DIR_ENV} is ignored: this machine has an organisation policy directory, {}",
                self.dir.display()
            ));
        }
        self.overridden.then(|| {
            format!(
                "{POLICY_DIR_ENV}={} replaces {} for the organisation's policy: for tests only, since the user can write it",
                self.dir.display(),
                system_dir().display()
            )
        })
    }
}

/// Fixed, never from `%ProgramData%`: the user sets their own environment.
#[cfg(windows)]
fn system_dir() -> PathBuf {
    PathBuf::from("C:\\ProgramData\\credence")
}

#[cfg(not(windows))]
fn system_dir() -> PathBuf {
    PathBuf::from("/etc/credence")
}

/// The bundle in force, `None` when there is no organisation policy here.
pub fn load(paths: &Paths, dir: &PolicyDir) -> Result<Option<VerifiedBundle>, String> {
    let Some(roots) = pinned_roots(dir)? else {
        if dir.bundle_file().exists() {
            return Err(format!(
                "{} is there, and no root key is pinned beside it ({}), so it cannot be verified and no provider runs\n  hint: pin the organisation's root key: `sudo install -m 0644 root.pub {}`",
                dir.bundle_file().display(),
                dir.root_file().display(),
                dir.root_file().display()
            ));
        }
        return Ok(None);
    };
    let path = dir.bundle_file();
    let Some(bytes) = read_optional(&path, MAX_BUNDLE_BYTES as u64, dir.writers).map_err(|e| in_policy_dir(&e))? else {
        return Err(format!(
            "the organisation's root key is pinned in {}, and no policy bundle is installed, so no provider runs\n  hint: install the bundle your security team sent: `sudo credence policy install <bundle>`",
            dir.root_file().display()
        ));
    };
    let seen = seen(paths);
    let verified = verify_bundle(&bytes, &roots, seen.as_ref(), crate::state_store::now_unix()).map_err(|r| {
        format!(
            "{}: {r}, so no provider runs\n  hint: `credence policy show` says what is in force; install a current bundle from your security team with `sudo credence policy install <bundle>`",
            path.display()
        )
    })?;
    if seen.is_none_or(|s| verified.bundle.sequence > s.sequence || s.digest.is_none()) {
        record_seen(paths, &verified);
    }
    Ok(Some(verified))
}

/// Every pinned root key, `None` when none is pinned (no `root.pub`).
pub fn pinned_roots(dir: &PolicyDir) -> Result<Option<Vec<PublicKey>>, String> {
    if let Err(e) = crate::trusted_file::check_dir_chain_for(&dir.dir, dir.writers) {
        return Err(in_policy_dir(&e));
    }
    let Some(bytes) = read_optional(&dir.root_file(), 64 << 10, dir.writers).map_err(|e| in_policy_dir(&e))? else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8", dir.root_file().display()))?;
    let roots = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| PublicKey::parse(l).map_err(|e| format!("{}: {e}", dir.root_file().display())))
        .collect::<Result<Vec<_>, _>>()?;
    if roots.is_empty() {
        return Err(format!(
            "{} pins no key, so no policy bundle can be verified and no provider runs",
            dir.root_file().display()
        ));
    }
    Ok(Some(roots))
}

fn in_policy_dir(e: &FileError) -> String {
    format!("the organisation's policy directory cannot be trusted, so no provider runs: {e}")
}

fn seen_file(paths: &Paths) -> PathBuf {
    paths.trust_state.join("policy-seen.json")
}

/// The newest bundle this user's credence has accepted: its sequence and digest.
pub fn seen(paths: &Paths) -> Option<Seen> {
    let bytes = crate::trusted_file::read_file(&seen_file(paths), 4096, Writers::UserOnly).ok()?;
    let v = serde_json::from_slice::<serde_json::Value>(&bytes).ok()?;
    Some(Seen {
        sequence: v["sequence"].as_u64()?,
        digest: v["digest"].as_str().map(str::to_owned),
    })
}

/// Records `bundle` as the newest seen (best effort: a run that cannot write it still
/// refuses nothing newer, and the next one records it).
pub fn record_seen(paths: &Paths, bundle: &VerifiedBundle) {
    let _ = crate::private_dir::ensure_private_dir(&paths.trust_state);
    let body =
        serde_json::json!({ "sequence": bundle.bundle.sequence, "digest": hex::encode(bundle.digest) }).to_string();
    if let Err(e) = crate::private_dir::write_private_file(&paths.trust_state, "policy-seen.json", body.as_bytes()) {
        tracing::debug!("cannot record the policy bundle sequence seen: {e}");
    }
}

/// What `credence policy install` does once the bundle verified: replace `policy.json` by
/// rename (0644: every user reads it).
pub fn install(dir: &PolicyDir, bytes: &[u8]) -> Result<(), String> {
    crate::signing_cli::write_file_atomically(&dir.dir, BUNDLE_FILE, bytes, 0o644).map_err(|e| {
        let hint = if dir.overridden {
            String::new()
        } else {
            format!("\n  hint: {} is root's: run it with sudo", dir.dir.display())
        };
        format!("{e}{hint}")
    })
}

/// The files whose change changes the trust in force (watched by the agent, stamped by
/// stored credentials).
pub fn files(dir: &PolicyDir) -> [PathBuf; 2] {
    [dir.root_file(), dir.bundle_file()]
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir_with_root(path: &std::path::Path) {
        let root = credence_signing::SecretKey::from_seed([4; 32]).public();
        std::fs::write(path.join(ROOT_FILE), format!("{root}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn a_policy_dir_that_is_not_roots_alone_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("credence");
        std::fs::create_dir(&path).unwrap();
        dir_with_root(&path);
        let system = PolicyDir {
            dir: path.clone(),
            writers: Writers::RootOnly,
            overridden: false,
            override_refused: false,
        };
        let me = crate::private_dir::current_uid();
        if me != 0 {
            // Owned by this user: fine for the test override, not for the system directory.
            let err = pinned_roots(&system).unwrap_err();
            assert!(err.contains("not to root"), "{err}");
            let user = PolicyDir {
                writers: Writers::UserOnly,
                overridden: true,
                ..system.clone()
            };
            assert_eq!(pinned_roots(&user).unwrap().unwrap().len(), 1);
            return;
        }
        // As root: root's own directory is trusted; one given to another user, or one its
        // group can write, is not.
        assert_eq!(pinned_roots(&system).unwrap().unwrap().len(), 1);
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let err = pinned_roots(&system).unwrap_err();
        assert!(
            err.contains("not to root") && err.contains("cannot be trusted"),
            "{err}"
        );
        std::os::unix::fs::chown(&path, Some(0), None).unwrap();
        std::os::unix::fs::chown(path.join(ROOT_FILE), Some(65534), None).unwrap();
        assert!(pinned_roots(&system).unwrap_err().contains("not to root"));
        std::os::unix::fs::chown(path.join(ROOT_FILE), Some(0), None).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(pinned_roots(&system).unwrap_err().contains("writable by its group"));
    }

    #[test]
    fn a_pinned_root_without_a_bundle_and_a_bundle_without_a_root_fail_closed() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths {
            home: tmp.path().join("home"),
            cache: tmp.path().join("cache"),
            trust_state: tmp.path().join("state"),
            state: tmp.path().join("state"),
        };
        let path = tmp.path().join("credence");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = PolicyDir {
            dir: path.clone(),
            writers: Writers::UserOnly,
            overridden: true,
            override_refused: false,
        };
        assert!(load(&paths, &dir).unwrap().is_none(), "an empty directory is no policy");
        std::fs::write(dir.bundle_file(), "{}").unwrap();
        assert!(
            load(&paths, &dir)
                .unwrap_err()
                .contains("no root key is pinned beside it")
        );
        std::fs::remove_file(dir.bundle_file()).unwrap();
        dir_with_root(&path);
        assert!(
            load(&paths, &dir)
                .unwrap_err()
                .contains("no policy bundle is installed")
        );
        std::fs::write(dir.root_file(), "# nothing\n").unwrap();
        assert!(load(&paths, &dir).unwrap_err().contains("pins no key"));
    }
}
