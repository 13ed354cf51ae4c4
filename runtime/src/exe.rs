//! The two programs: `credence` (this crate, what tools run) and `credence-host` (the
//! providers' host: the loading gate, the sandbox, the agent), installed side by side.

use std::ffi::OsString;
use std::path::PathBuf;

/// The program called `name` in the directory of the running one.
pub fn sibling(name: &str) -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    Some(me.parent()?.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
}

/// The host program beside this one.
pub fn host() -> Result<PathBuf, String> {
    let path = sibling("credence-host").ok_or("cannot tell where the credence program is")?;
    if !path.is_file() {
        return Err(format!(
            "{} is missing; credence-host is installed beside credence (reinstall both)",
            path.display()
        ));
    }
    Ok(path)
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
