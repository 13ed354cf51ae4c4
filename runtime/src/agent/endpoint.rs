//! Where an agent listens, and who may talk to it. A Unix socket, never TCP and never an
//! abstract socket (those have no permissions: CVE-2020-15257), in a directory that only
//! the user can enter, checked before every bind and every connect; each side checks the
//! other's uid with `SO_PEERCRED`. The socket name carries a digest of the credence home,
//! so a client of another home (another `CREDENCE_HOME`, other XDG dirs) never reaches this
//! agent, and the handshake checks it again.

use crate::paths::Paths;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The longest socket path `sockaddr_un` takes on Linux (108 bytes with the NUL); macOS
/// takes 104.
const MAX_SOCKET_PATH: usize = 100;

#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `$XDG_RUNTIME_DIR/credence`, or `/tmp/credence-<uid>` without it: 0700, the user's.
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// Held (`flock`) by the running agent for its whole life: whoever takes it starts one.
    /// In the home's state dir (private, 0700), not beside the socket: clients of one home
    /// that see different `XDG_RUNTIME_DIR`s (a login shell, cron, a CI service) still
    /// share one lock, so one home never gets two agents.
    pub lock: PathBuf,
    /// Where the running agent says it listens (its socket path, in the state dir): how a
    /// client whose `XDG_RUNTIME_DIR` differs from the agent's finds it.
    pub whereabouts: PathBuf,
    /// The home's private state dir, which holds `lock` and `whereabouts`.
    pub state: PathBuf,
    /// Identifies the home this agent serves: its config, trust, state and cache dirs.
    pub home: String,
}

impl Endpoint {
    pub fn of(paths: &Paths) -> Result<Endpoint, String> {
        let dir = runtime_dir();
        let home = home_digest(paths);
        let socket = dir.join(format!("agent-{}.sock", &home[..16]));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(format!(
                "the agent's socket path {} is longer than a Unix socket path may be; set XDG_RUNTIME_DIR to a shorter directory",
                socket.display()
            ));
        }
        Ok(Endpoint {
            lock: paths.trust_state.join("agent.lock"),
            whereabouts: paths.trust_state.join("agent.socket"),
            state: paths.trust_state.clone(),
            socket,
            dir,
            home,
        })
    }

    /// Creates the directory 0700 if it is missing (created with that mode, never chmod'ed
    /// after: git's order) and checks it.
    pub fn prepare_dir(&self) -> Result<(), String> {
        socket_dir(&self.dir, "the agent directory")?;
        crate::private_dir::ensure_private_dir(&self.state)
            .map_err(|e| format!("cannot use the state dir {}: {e}", self.state.display()))
    }

    /// The socket the running agent named, if it is not ours: a path in a directory that
    /// passes [`check_dir`] too.
    pub fn announced_socket(&self) -> Option<PathBuf> {
        let bytes = crate::private_dir::read_private_file(&self.whereabouts, 4096).ok()??;
        let path = PathBuf::from(String::from_utf8(bytes).ok()?.trim_end());
        if path == self.socket || !path.is_absolute() || path.as_os_str().len() > MAX_SOCKET_PATH {
            return None;
        }
        check_dir(path.parent()?).ok()?;
        Some(path)
    }
}

impl Endpoint {
    /// Opens the agent lock (0600, never through a symlink) and tries to take it without
    /// waiting: the file, and whether this process now holds it (`false`: an agent does).
    pub fn try_lock(&self) -> Result<(std::fs::File, bool), String> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.lock)
            .map_err(|e| format!("cannot open the agent lock {}: {e}", self.lock.display()))?;
        // SAFETY: flock on a descriptor we own.
        let held = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        Ok((file, held))
    }
}

/// `$XDG_RUNTIME_DIR/credence`, or `/tmp/credence-<uid>` without it: where this user's
/// sockets live (the agent's, its sessions', a relay's).
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(d) if d.is_absolute() => d.join("credence"),
        _ => std::env::temp_dir().join(format!("credence-{}", crate::private_dir::current_uid())),
    }
}

/// Creates a socket directory 0700 if it is missing (created with that mode, never
/// chmod'ed after: git's order) and checks it with [`check_dir`]. `what` names it in errors.
pub fn socket_dir(dir: &Path, what: &str) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {what} {}: {e}", dir.display())),
        }
    }
    check_dir(dir)
}

/// Listens on `socket` (in a directory [`socket_dir`] made) with the socket itself 0600.
#[cfg(unix)]
pub fn bind_private(socket: &Path) -> Result<std::os::unix::net::UnixListener, String> {
    use std::os::unix::fs::PermissionsExt;
    let listener = std::os::unix::net::UnixListener::bind(socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot make {} private: {e}", socket.display()))?;
    Ok(listener)
}

/// The digest that names a home: every directory an agent reads or writes for it.
pub fn home_digest(paths: &Paths) -> String {
    let mut h = Sha256::new();
    h.update(b"credence agent home v1");
    for dir in [&paths.home, &paths.cache, &paths.state, &paths.trust_state] {
        let dir = absolute(dir);
        let bytes = dir.as_os_str().as_encoded_bytes();
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    hex::encode(h.finalize())
}

fn absolute(dir: &Path) -> PathBuf {
    if dir.is_absolute() {
        dir.to_owned()
    } else {
        std::env::current_dir()
            .map(|c| c.join(dir))
            .unwrap_or_else(|_| dir.to_owned())
    }
}

/// The agent directory is the user's own, not a symlink, and nobody else may enter it.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::symlink_metadata(dir)
            .map_err(|e| format!("cannot inspect the agent directory {}: {e}", dir.display()))?;
        if meta.file_type().is_symlink() || !meta.is_dir() {
            return Err(format!(
                "the agent directory {} is not a directory (a symlink?); remove it and run credence again",
                dir.display()
            ));
        }
        let me = crate::private_dir::current_uid();
        if meta.uid() != me {
            return Err(format!(
                "the agent directory {} belongs to uid {}, not to you (uid {me}); remove it or set XDG_RUNTIME_DIR",
                dir.display(),
                meta.uid()
            ));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "the permissions on the agent directory {} are too loose ({:o}); run `chmod 700 {}`",
                dir.display(),
                meta.permissions().mode() & 0o777,
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Who is on the other end of a Unix socket, as the kernel recorded it at connect time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
}

#[cfg(target_os = "linux")]
pub fn peer(fd: &impl std::os::fd::AsRawFd) -> std::io::Result<Peer> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Peer {
        pid: cred.pid,
        uid: cred.uid,
    })
}

#[cfg(all(unix, not(target_os = "linux")))]
pub fn peer(fd: &impl std::os::fd::AsRawFd) -> std::io::Result<Peer> {
    let (mut uid, mut gid) = (0, 0);
    // SAFETY: both out-pointers are valid.
    if unsafe { libc::getpeereid(fd.as_raw_fd(), &mut uid, &mut gid) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Peer { pid: 0, uid })
}

/// The identity of the host program a client would start: an agent of another build (a
/// replaced binary, another version) is told apart by it in the handshake.
pub fn build_id(host: &Path) -> String {
    #[cfg(unix)]
    let identity = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(host)
            .map(|m| {
                format!(
                    "{:x}:{:x}:{:x}:{}.{}",
                    m.dev(),
                    m.ino(),
                    m.size(),
                    m.mtime(),
                    m.mtime_nsec()
                )
            })
            .unwrap_or_default()
    };
    #[cfg(not(unix))]
    let identity = String::new();
    format!(
        "credence {} protocol {} host {identity}",
        env!("CARGO_PKG_VERSION"),
        super::wire::PROTOCOL
    )
}
