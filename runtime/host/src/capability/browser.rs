//! Opening a sign-in URL in the user's browser, on the machine the host runs on. The host
//! chooses the program, never the provider: `CREDENCE_BROWSER` (a program run with the URL
//! as its only argument, no shell: for headless machines, and for tests), else the desktop's
//! opener. The URL is always printed too, so a failure here only costs a copy and paste.

use std::process::{Command, Stdio};

/// The environment variable naming the program that opens sign-in URLs.
pub const BROWSER_VAR: &str = "CREDENCE_BROWSER";

/// Starts the browser on `url` without waiting for it; the error says why none started.
pub fn open(url: &url::Url) -> Result<(), String> {
    let mut command = match std::env::var_os(BROWSER_VAR) {
        Some(program) if !program.is_empty() => Command::new(program),
        _ => desktop_opener()?,
    };
    command
        .arg(url.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn().map_err(|e| format!("cannot start the browser: {e}"))?;
    // Reaped in the background: a browser that stays open must not hold up the flow.
    std::thread::spawn(move || child.wait());
    Ok(())
}

fn desktop_opener() -> Result<Command, String> {
    if cfg!(target_os = "macos") {
        Ok(Command::new("open"))
    } else if cfg!(windows) {
        let mut c = Command::new("rundll32");
        c.arg("url.dll,FileProtocolHandler");
        Ok(c)
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some() {
        Ok(Command::new("xdg-open"))
    } else {
        Err(format!("no display; set {BROWSER_VAR} to a program that opens URLs"))
    }
}
