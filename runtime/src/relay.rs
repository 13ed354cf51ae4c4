//! `credence relay`: the remote end of a stdio carrier (`credence remote exec -- docker exec
//! -i C credence relay`). It listens on a private socket inside the remote and carries each
//! connection to the user's machine over its own stdin and stdout; the remote's tools reach
//! it with `CREDENCE_AGENT_SOCK` set to that socket. It holds no secret and decides nothing:
//! the session's policy is applied on the user's machine.

use crate::agent::endpoint::{check_dir, peer};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `$XDG_RUNTIME_DIR/credence/relay.sock`, or `/tmp/credence-<uid>/relay.sock`.
pub fn default_socket() -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(d) if d.is_absolute() => d.join("credence"),
        _ => std::env::temp_dir().join(format!("credence-{}", crate::private_dir::current_uid())),
    };
    dir.join("relay.sock")
}

pub fn main(listen: Option<PathBuf>) -> ExitCode {
    let socket = listen.unwrap_or_else(default_socket);
    match serve(&socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("credence relay: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(socket: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
    let dir = socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| format!("--listen {} has no directory", socket.display()))?;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    // Nobody else may reach the socket, or swap it: the directory is the user's, 0700.
    check_dir(dir)?;
    // A socket left by an earlier relay of this user goes; anything else stays and is an error.
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        if meta.file_type().is_socket() && meta.uid() == crate::private_dir::current_uid() {
            let _ = std::fs::remove_file(socket);
        }
    }
    let listener = std::os::unix::net::UnixListener::bind(socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot make {} private: {e}", socket.display()))?;
    eprintln!(
        "credence relay: carrying requests to your machine; in this remote, run tools with\n  export CREDENCE_AGENT_SOCK={}",
        socket.display()
    );
    let me = crate::private_dir::current_uid();
    let admit = move |s: &std::os::unix::net::UnixStream| match peer(s) {
        Ok(p) if p.uid == me => true,
        Ok(p) => {
            eprintln!("credence relay: refused a connection from uid {}", p.uid);
            false
        }
        Err(_) => false,
    };
    let result = crate::agent::mux::relay(listener, std::io::stdin().lock(), std::io::stdout(), admit);
    let _ = std::fs::remove_file(socket);
    result.map_err(|e| format!("the carrier broke: {e}"))
}
