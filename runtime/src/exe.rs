//! The two programs: `credence` (this crate, what tools run) and `credence-host` (the
//! providers' host: the loading gate, the sandbox, the agent), installed side by side.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The program called `name` in the directory of the running one.
pub fn sibling(name: &str) -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    Some(me.parent()?.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
}

/// The host program beside this one.
pub fn host() -> Result<PathBuf, String> {
    let path = sibling("credence-host").ok_or("cannot tell where the credence program is")?;
    if !path.is_file() {
        let dir = path.parent().unwrap_or(Path::new("."));
        // cargo install puts programs in <root>/bin.
        let how = match (dir.file_name(), dir.parent()) {
            (Some(bin), Some(root)) if bin == "bin" => format!(
                "from a credence checkout, `cargo install --locked --path runtime/host --root {}`; or copy credence-host of the same release into {}",
                root.display(),
                dir.display()
            ),
            _ => format!("copy credence-host of the same build into {}", dir.display()),
        };
        return Err(format!(
            "{} is missing: credence hands requests to credence-host, which must be beside it; {how}",
            path.display()
        ));
    }
    Ok(path)
}

/// What a one-shot front end has read of stdin, and the arguments it ran with, so that the
/// host can still take over after the agent turned out unable to answer.
static REPLAY: std::sync::Mutex<Option<(Vec<OsString>, Vec<u8>)>> = std::sync::Mutex::new(None);

/// Starts recording: `args` now, stdin as the front end reads it (`record_stdin`).
pub fn enable_replay(args: &[OsString]) {
    *REPLAY.lock().unwrap_or_else(|e| e.into_inner()) = Some((args.to_vec(), Vec::new()));
}

pub fn record_stdin(bytes: &[u8]) {
    if let Some((_, input)) = REPLAY.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        input.extend_from_slice(bytes);
    }
}

/// Becomes the host with the recorded arguments and stdin (what was read, then whatever
/// the tool still sends is not there: only one-shot front ends, which read stdin whole
/// before they ask, record). Returns only if nothing was recorded.
pub fn replay_in_host() -> ! {
    let recorded = REPLAY.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some((args, input)) = recorded else {
        eprintln!("credence: error: the agent cannot answer and nothing can be replayed; run the command again");
        std::process::exit(2);
    };
    #[cfg(target_os = "linux")]
    {
        use std::io::{Seek, Write};
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: memfd_create with a valid NUL-terminated name; the fd is owned below.
        let fd = unsafe { libc::memfd_create(c"credence-stdin".as_ptr(), libc::MFD_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: a fresh descriptor nobody else owns.
            let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
            if file.write_all(&input).and_then(|()| file.rewind()).is_ok() {
                // SAFETY: dup2 onto stdin; exec follows.
                unsafe { libc::dup2(file.as_raw_fd(), 0) };
            }
        }
    }
    let code = exec_host(&args);
    std::process::exit(i32::from(code != std::process::ExitCode::SUCCESS) * 2)
}

/// Replaces this process with the host, with the same arguments and the same stdin, so
/// the host answers in this very process (same pid, nothing read yet). Returns only on
/// failure.
pub fn exec_host(args: &[OsString]) -> std::process::ExitCode {
    let host = match host() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("credence: error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut command = std::process::Command::new(&host);
    command.args(args.iter().skip(1));
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // The host picks its front end from the program name a tool ran, as this one did.
        if let Some(arg0) = args.first() {
            command.arg0(arg0);
        }
        let e = command.exec();
        eprintln!("credence: error: cannot run {}: {e}", host.display());
        std::process::ExitCode::from(2)
    }
    #[cfg(not(unix))]
    {
        match command.status() {
            Ok(s) => std::process::ExitCode::from(s.code().unwrap_or(2).clamp(0, 255) as u8),
            Err(e) => {
                eprintln!("credence: error: cannot run {}: {e}", host.display());
                std::process::ExitCode::from(2)
            }
        }
    }
}
