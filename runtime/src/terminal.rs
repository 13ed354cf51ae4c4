//! Where a provider's prompts reach the user: the terminal the requesting tool runs on. The
//! text is neutralised before it is shown, so a provider can neither draw on the terminal
//! nor pass itself off as credence or another provider. No wasmtime here: the thin client
//! renders an agent's prompts with this same code.

use crate::request::CredentialRequest;
use std::io::{BufRead, BufReader, Read, Write};

const MAX_MESSAGE_CHARS: usize = 1024;
/// The longest answer read from the terminal.
pub const MAX_ANSWER_BYTES: usize = 4096;

/// Where prompts are shown. The real one is the terminal; tests substitute their own.
pub trait Terminal: Send + 'static {
    /// Shows `line` and reads one answer, hidden when `secret`. `Ok(None)` is end of input.
    fn ask(&mut self, line: &str, secret: bool) -> std::io::Result<Option<String>>;
    fn show(&mut self, line: &str) -> std::io::Result<()>;
    /// Whether a prompt can be shown at all (see [`interactive_only_with_a_terminal`]).
    fn can_prompt(&self) -> bool {
        true
    }
    /// Whether whoever asked has gone, so a sign-in still waiting for them can end.
    fn gone(&self) -> bool {
        false
    }
}

/// Whether the reading end of `fd` (a pipe or socket to whoever asked) has closed.
#[cfg(unix)]
pub fn peer_closed(fd: std::os::fd::RawFd) -> bool {
    // A stream socket's peer shutting down is RDHUP on Linux; HUP or ERR elsewhere, and for
    // a pipe whose reader closed.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const RDHUP: libc::c_short = libc::POLLRDHUP;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const RDHUP: libc::c_short = 0;
    let mut p = libc::pollfd {
        fd,
        events: RDHUP,
        revents: 0,
    };
    // SAFETY: one pollfd on the stack, a zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & (libc::POLLHUP | libc::POLLERR | RDHUP | libc::POLLNVAL) != 0
}

/// A request is interactive only when the tool allows prompts *and* one can be shown: a
/// provider told it may prompt where there is no terminal fails at its prompt instead of
/// answering `needs-interaction` (which the tools report as "run interactively").
pub fn interactive_only_with_a_terminal(request: &CredentialRequest, terminal: &dyn Terminal) -> CredentialRequest {
    let mut request = request.clone();
    request.interactive = request.interactive && terminal.can_prompt();
    request
}

/// The controlling terminal, `/dev/tty`.
pub struct ControllingTerminal;

impl Terminal for ControllingTerminal {
    fn ask(&mut self, line: &str, secret: bool) -> std::io::Result<Option<String>> {
        if secret {
            // rpassword writes the prompt to and reads from the terminal, with echo off.
            return rpassword::prompt_password(format!("{line}: ")).map(Some);
        }
        let mut tty = std::fs::OpenOptions::new().read(true).write(true).open(tty_path())?;
        write!(tty, "{line}: ")?;
        tty.flush()?;
        let mut text = String::new();
        let mut reader = BufReader::new(tty.take(MAX_ANSWER_BYTES as u64 + 1));
        if reader.read_line(&mut text)? == 0 {
            return Ok(None);
        }
        Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()))
    }

    fn show(&mut self, line: &str) -> std::io::Result<()> {
        let mut tty = std::fs::OpenOptions::new().write(true).open(tty_path())?;
        writeln!(tty, "{line}")
    }

    /// The tool that ran this process closed its end of stdout: it is not waiting any more.
    #[cfg(unix)]
    fn gone(&self) -> bool {
        peer_closed(1)
    }

    /// The process has a controlling terminal: without one (a CI job, a daemon, a tool
    /// that started credence in a new session) `/dev/tty` does not open.
    fn can_prompt(&self) -> bool {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(tty_path())
            .is_ok()
    }
}

fn tty_path() -> &'static str {
    if cfg!(windows) { "CONOUT$" } else { "/dev/tty" }
}

/// Untrusted text made inert for a terminal: control characters (ANSI escapes, CR,
/// backspace), bidi overrides and invisible characters are shown as `\u{..}` escapes, and
/// the length is capped.
pub fn neutralise(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE_CHARS));
    let mut spaces = 0;
    for (i, c) in text.chars().enumerate() {
        if i == MAX_MESSAGE_CHARS {
            out.push('…');
            break;
        }
        // A run of spaces as wide as the terminal wraps what follows onto a line of its
        // own, where it could pass for one of credence's: runs are cut short.
        spaces = if c == ' ' { spaces + 1 } else { 0 };
        match spaces {
            0..=MAX_SPACE_RUN => push_neutralised(&mut out, c),
            RUN_CUT => out.push('…'),
            _ => {}
        }
    }
    out
}

/// Spaces in a row that a message keeps; the rest of the run is shown as one `…`.
const MAX_SPACE_RUN: usize = 8;
const RUN_CUT: usize = MAX_SPACE_RUN + 1;

/// [`neutralise`], but capped at `max_bytes` of output (escapes included), ending in `…`
/// when cut: for records that must stay within a size, such as the audit trail's.
pub fn neutralise_within(text: &str, max_bytes: usize) -> String {
    // Nearly every audited string (a URL, a verdict, a method) is plain printable ASCII that
    // fits: it comes back unchanged, so say so without rebuilding it character by character.
    if text.len() <= max_bytes && text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return text.to_owned();
    }
    const CUT: &str = "…";
    let budget = max_bytes.saturating_sub(CUT.len());
    let mut out = String::with_capacity(text.len().min(max_bytes));
    let mut piece = String::new();
    // Where to cut if the rest does not fit: text that fits whole is never marked.
    let mut cut_at = 0;
    for c in text.chars() {
        piece.clear();
        push_neutralised(&mut piece, c);
        if out.len() + piece.len() > max_bytes {
            out.truncate(cut_at);
            out.push_str(CUT);
            return out;
        }
        out.push_str(&piece);
        if out.len() <= budget {
            cut_at = out.len();
        }
    }
    out
}

fn push_neutralised(out: &mut String, c: char) {
    if c.is_control() || is_invisible_or_bidi(c) {
        out.push_str(&format!("\\u{{{:x}}}", c as u32));
    } else {
        out.push(c);
    }
}

/// Characters a terminal shows as nothing (or that reorder what follows): a provider could
/// hide text with them, or make two messages look alike.
pub fn is_invisible_or_bidi(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF9..=0xFFFB | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
}
