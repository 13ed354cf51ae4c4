//! `credence relay`: the remote end of a stdio carrier (`credence remote exec -- docker exec
//! -i C credence relay`). It listens on a private socket inside the remote and carries each
//! connection to the user's machine over its own stdin and stdout; the remote's tools reach
//! it with `CREDENCE_AGENT_SOCK` set to that socket. It holds no secret and decides nothing:
//! the session's policy is applied on the user's machine.

use crate::agent::endpoint::{bind_private, peer, socket_dir};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `$XDG_RUNTIME_DIR/credence/relay.sock`, or `/tmp/credence-<uid>/relay.sock`.
pub fn default_socket() -> PathBuf {
    crate::agent::endpoint::runtime_dir().join("relay.sock")
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
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dir = socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| format!("--listen {} has no directory", socket.display()))?;
    // Nobody else may reach the socket, or swap it: the directory is the user's, 0700.
    socket_dir(dir, "the relay's directory")?;
    // A socket left by an earlier relay of this user goes; anything else stays and is an error.
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        if meta.file_type().is_socket() && meta.uid() == crate::private_dir::current_uid() {
            let _ = std::fs::remove_file(socket);
        }
    }
    let listener = bind_private(socket)?;
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
