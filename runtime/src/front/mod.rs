//! Protocol front ends: one module per tool, each a codec from its wire format to the one
//! internal `CredentialRequest` and from the resolver's answer or refusal back to its own
//! success and error forms. A front end reads and writes only the [`Tool`] it is handed
//! and asks only the [`Resolver`] it is handed (the agent, or the in-process host), so the
//! same codec runs in the thin client, in the host and against a fake resolver in tests. No
//! protocol logic lives in the resolver or the sandbox, and nothing but protocol bytes is
//! ever written to stdout.

pub mod bazel;
pub mod cargo;
pub mod docker;
pub mod git;
pub mod goauth;
pub mod keyring;
pub mod kubectl;
pub mod nuget;

use crate::request::{Credential, CredentialRequest, LATEST_EXPIRY, Protocol, parse_request_url};
use crate::resolver::Resolver;
use crate::terminal::{ControllingTerminal, Terminal};
use std::ffi::OsString;
use std::io::{BufRead, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;

/// The most any front end reads from a tool in one exchange.
pub const MAX_INPUT: usize = 1 << 20;
/// The longest line a line-framed protocol accepts (git's own limit is 65535 bytes).
pub const MAX_LINE: usize = 64 << 10;

/// What a front end gets from its driver: the tool's stdin and stdout, its environment,
/// where prompts go, and the resolver to ask (opened only when a request needs it, so
/// an error in the config is reported in the tool's own error form).
pub struct Tool {
    pub stdin: Box<dyn BufRead + Send>,
    pub stdout: Box<dyn Write + Send>,
    pub env: Arc<dyn Fn(&str) -> Option<String> + Send + Sync>,
    pub resolver: OpenResolver,
    /// A fresh prompt sink per request (the controlling terminal in a real run).
    pub terminal: Arc<dyn Fn() -> Box<dyn Terminal> + Send + Sync>,
}

/// Opens the resolver a process-level driver hands its front end.
pub type OpenResolver = Arc<dyn Fn() -> Result<Arc<dyn Resolver>, String> + Send + Sync>;

impl Tool {
    /// The real process: stdin, stdout, the environment and the controlling terminal.
    pub fn process(resolver: OpenResolver) -> Tool {
        Tool {
            stdin: Box::new(std::io::BufReader::new(std::io::stdin())),
            stdout: Box::new(std::io::stdout()),
            env: Arc::new(|name| std::env::var(name).ok()),
            resolver,
            terminal: Arc::new(|| Box::new(ControllingTerminal)),
        }
    }

    pub fn var(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    pub fn resolver(&self) -> Result<Arc<dyn Resolver>, String> {
        (self.resolver)()
    }

    pub fn prompts(&self) -> Box<dyn Terminal> {
        (self.terminal)()
    }

    /// All of stdin, refusing more than `MAX_INPUT` bytes.
    pub fn read_all(&mut self) -> Result<Vec<u8>, String> {
        let mut buf = Vec::new();
        self.stdin
            .by_ref()
            .take(MAX_INPUT as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        crate::exe::record_stdin(&buf);
        if buf.len() > MAX_INPUT {
            return Err(format!("the input is larger than {MAX_INPUT} bytes"));
        }
        Ok(buf)
    }

    /// Writes the whole answer and flushes it; false if the tool has gone.
    pub fn answer(&mut self, bytes: &[u8]) -> bool {
        self.stdout.write_all(bytes).and_then(|()| self.stdout.flush()).is_ok()
    }
}

/// Which front end a tool ran: from the program name (a symlink such as
/// `git-credential-credence`) or from the first argument, before clap is involved. The
/// returned arguments are the front end's own.
pub fn front_end(args: &[OsString]) -> Option<(FrontEnd, Vec<String>)> {
    let program = args
        .first()
        .map(std::path::Path::new)
        .and_then(|p| p.file_stem())
        .and_then(|s| s.to_str())
        .unwrap_or("");
    let rest: Vec<String> = args.iter().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let first = rest.first().map(String::as_str);
    let lower = program.to_ascii_lowercase();
    let tail = || rest[1..].to_vec();
    Some(match (program, first) {
        ("git-credential-credence", _) => (FrontEnd::Git, rest),
        ("docker-credential-credence", _) => (FrontEnd::Docker, rest),
        ("nuget-plugin-credence", _) => (FrontEnd::NugetPlugin, rest),
        ("keyring", _) => (FrontEnd::Keyring, rest),
        ("credence-bazel", _) => (FrontEnd::Bazel, rest),
        _ if lower.starts_with("credentialprovider") => (FrontEnd::NugetV1, rest),
        (_, Some("--cargo-plugin")) => (FrontEnd::Cargo, Vec::new()),
        (_, Some("cargo")) if rest.get(1).map(String::as_str) == Some("--cargo-plugin") => {
            (FrontEnd::Cargo, Vec::new())
        }
        (_, Some("git")) => (FrontEnd::Git, tail()),
        (_, Some("docker")) => (FrontEnd::Docker, tail()),
        (_, Some("nuget")) => (FrontEnd::NugetPlugin, tail()),
        (_, Some("nuget-v1")) => (FrontEnd::NugetV1, tail()),
        (_, Some("bazel")) => (FrontEnd::Bazel, tail()),
        (_, Some("goauth")) => (FrontEnd::Goauth, tail()),
        (_, Some("keyring")) => (FrontEnd::Keyring, tail()),
        (_, Some("kubectl")) => (FrontEnd::Kubectl, tail()),
        _ => return None,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontEnd {
    Git,
    Docker,
    NugetPlugin,
    NugetV1,
    Keyring,
    Bazel,
    Cargo,
    Goauth,
    Kubectl,
}

impl FrontEnd {
    /// Runs the front end over `tool` to the exit code the tool expects.
    pub fn run(self, args: &[String], tool: Tool) -> ExitCode {
        match self {
            FrontEnd::Git => git::run(args, tool),
            FrontEnd::Docker => docker::run(args, tool),
            FrontEnd::NugetPlugin => nuget::run_plugin(args, tool),
            FrontEnd::NugetV1 => nuget::run_v1(args, tool),
            FrontEnd::Keyring => keyring::run(args, tool),
            FrontEnd::Bazel => bazel::run(args, tool),
            FrontEnd::Cargo => cargo::run(tool),
            FrontEnd::Goauth => goauth::run(args, tool),
            FrontEnd::Kubectl => kubectl::run(args, tool),
        }
    }

    /// Whether the conversation is long-running (one process, many requests), so the
    /// process keeps running whatever the resolver does.
    pub fn is_conversation(self) -> bool {
        matches!(self, FrontEnd::Cargo | FrontEnd::NugetPlugin)
    }
}

/// One `\n`-terminated line of at most `max` bytes (without the `\n`), or `None` at EOF.
/// An error leaves the reader inside the over-long line, whose tail is no line of its own:
/// the caller must end the session there, not read on.
pub fn read_line_bounded(reader: &mut impl BufRead, max: usize) -> Result<Option<Vec<u8>>, String> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(max as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > max {
        return Err(format!("a line is longer than {max} bytes"));
    }
    Ok(Some(line))
}

/// CR, LF, NUL and other control characters inside a value are how a second field is
/// smuggled into a line protocol (git CVE-2020-5260, CVE-2024-52006): refused everywhere.
pub fn check_value(field: &str, value: &str) -> Result<(), String> {
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!(
            "the {field} field contains control characters (CR, LF, NUL or similar)"
        ));
    }
    Ok(())
}

/// A request for `url` as a tool sent it: validated, without userinfo or fragment.
pub fn request(url: &str, protocol: Protocol, operation: &str) -> Result<CredentialRequest, String> {
    check_value("URL", url)?;
    Ok(CredentialRequest {
        url: parse_request_url(url)?,
        protocol,
        operation: operation.to_owned(),
        is_retry: false,
        interactive: false,
        username_hint: None,
        challenge_headers: Vec::new(),
    })
}

/// The credential as HTTP headers: the provider's own, else Basic with a user name, else Bearer.
pub fn auth_headers(c: &Credential) -> Vec<(String, String)> {
    if !c.headers.is_empty() {
        return c.headers.iter().map(|(k, v)| (k.clone(), v.expose().clone())).collect();
    }
    let value = match &c.username {
        Some(user) => {
            use base64::Engine;
            let pair = format!("{user}:{}", c.secret.expose());
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
        }
        None => format!("Bearer {}", c.secret.expose()),
    };
    vec![("Authorization".to_owned(), value)]
}

/// The value of the credential's `Authorization` header, if the provider supplied one.
pub fn authorization(c: &Credential) -> Option<String> {
    c.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.expose().clone())
}

/// Unix seconds as RFC 3339 UTC without fractional seconds (what Bazel's parser needs);
/// times past [`LATEST_EXPIRY`] are written as it.
pub fn rfc3339(unix: u64) -> String {
    let secs = i64::try_from(unix.min(LATEST_EXPIRY)).expect("LATEST_EXPIRY fits an i64");
    // Civil time in UTC rather than `jiff::Timestamp`, whose range ends a day before year
    // 9999 does (it leaves room for any UTC offset).
    let time = jiff::civil::date(1970, 1, 1)
        .at(0, 0, 0, 0)
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .expect("LATEST_EXPIRY is within year 9999");
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_no_fraction_and_is_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(rfc3339(LATEST_EXPIRY), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn control_characters_in_values_are_refused() {
        for bad in ["a\nb", "a\rb", "a\0b", "a\x1b[2Jb"] {
            assert!(check_value("host", bad).is_err(), "{bad:?}");
        }
        assert!(check_value("host", "a\tb").is_ok());
    }

    #[test]
    fn lines_are_bounded() {
        let mut input = std::io::Cursor::new(format!("{}\nshort\n", "x".repeat(100)));
        assert!(read_line_bounded(&mut input, 50).is_err());
        let mut input = std::io::Cursor::new("one\ntwo");
        assert_eq!(read_line_bounded(&mut input, 50).unwrap().unwrap(), b"one");
        assert_eq!(read_line_bounded(&mut input, 50).unwrap().unwrap(), b"two");
        assert_eq!(read_line_bounded(&mut input, 50).unwrap(), None);
    }
}
