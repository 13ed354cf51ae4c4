//! git's credential-helper protocol (`credential.helper = credence git`, or a
//! `git-credential-credence` symlink): `get` / `store` / `erase`, `key=value` lines.
//!
//! Answers `username`/`password` (+ `password_expiry_utc`), or, when git offers
//! `capability[]=authtype` and the provider gave a ready-made `Authorization` header with a
//! scheme other than Basic, `authtype` + `credential` (+ `ephemeral` unless the credential
//! may be kept). `store` tells credence the credential worked, `erase` that it was refused:
//! the next `get` is then a retry. Interactivity: `GIT_TERMINAL_PROMPT=0` means none.

use super::{MAX_INPUT, MAX_LINE, Tool, check_value, request};
use crate::request::{CachePolicy, Protocol, Refusal};
use crate::resolver::Verdict;
use std::process::ExitCode;

#[derive(Debug, Default, PartialEq)]
pub struct GitRequest {
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub username: Option<String>,
    pub capabilities: Vec<String>,
    pub wwwauth: Vec<String>,
}

/// Parses git's attributes, refusing anything that could smuggle a second attribute in.
pub fn parse(input: &[u8]) -> Result<GitRequest, String> {
    if input.len() > MAX_INPUT {
        return Err(format!("the input is larger than {MAX_INPUT} bytes"));
    }
    let text = std::str::from_utf8(input).map_err(|_| "the input is not UTF-8".to_owned())?;
    let mut req = GitRequest::default();
    for line in text.split('\n') {
        if line.is_empty() {
            break;
        }
        if line.len() + 1 > MAX_LINE {
            return Err(format!("a line is longer than {MAX_LINE} bytes"));
        }
        let (key, value) = line.split_once('=').ok_or_else(|| "a line has no `=`".to_owned())?;
        check_value(key, value)?;
        check_value("attribute name", key)?;
        match key {
            "protocol" => req.protocol = Some(value.to_owned()),
            "host" => req.host = Some(value.to_owned()),
            "path" => req.path = Some(value.to_owned()),
            "username" => req.username = Some(value.to_owned()),
            "capability[]" if value.is_empty() => req.capabilities.clear(),
            "capability[]" => req.capabilities.push(value.to_owned()),
            "wwwauth[]" if value.is_empty() => req.wwwauth.clear(),
            "wwwauth[]" => req.wwwauth.push(value.to_owned()),
            "url" => {
                let url = url::Url::parse(value).map_err(|e| format!("the url attribute is not a URL: {e}"))?;
                if url.password().is_some() {
                    return Err("the url attribute carries a password".into());
                }
                req.protocol = Some(url.scheme().to_owned());
                req.host = url.host_str().map(|h| match url.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_owned(),
                });
                let path = url.path().trim_start_matches('/');
                req.path = (!path.is_empty()).then(|| path.to_owned());
                if !url.username().is_empty() {
                    req.username = Some(url.username().to_owned());
                }
            }
            // password, password_expiry_utc, oauth_refresh_token, authtype, credential,
            // ephemeral, state[], continue, and whatever git adds later: not needed to answer.
            _ => {}
        }
    }
    Ok(req)
}

impl GitRequest {
    /// The URL being asked about; `None` for what credence does not serve (non-HTTP
    /// protocols such as `cert` or `smtp`).
    pub fn url(&self) -> Result<Option<String>, String> {
        // A request without protocol or host must never match "anything" (CVE-2020-11008).
        let protocol = self.protocol.as_deref().ok_or("the request has no protocol")?;
        let host = self
            .host
            .as_deref()
            .filter(|h| !h.is_empty())
            .ok_or("the request has no host")?;
        if !matches!(protocol, "https" | "http") {
            return Ok(None);
        }
        if host.contains(['/', '@', '?', '#', '\\']) {
            return Err(format!("the host {host:?} is not a host name"));
        }
        let path = self.path.as_deref().unwrap_or("");
        Ok(Some(format!("{protocol}://{host}/{path}")))
    }
}

pub fn run(args: &[String], mut tool: Tool) -> ExitCode {
    // The operation is git's last word; configured arguments come before it.
    let Some(operation) = args.last().map(String::as_str) else {
        eprintln!("credence git: expected get, store or erase (see `credence setup git`)");
        return ExitCode::from(2);
    };
    if !matches!(operation, "get" | "store" | "erase") {
        // Helpers ignore operations they do not know, for git's forward compatibility.
        return ExitCode::SUCCESS;
    }
    let input = match tool.read_all().and_then(|i| parse(&i)) {
        Ok(i) => i,
        Err(e) => return fail(&e),
    };
    let url = match input.url() {
        Ok(Some(url)) => url,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => return fail(&e),
    };
    let mut req = match request(&url, Protocol::Git, "read") {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    req.username_hint = input.username.clone();
    req.challenge_headers = input
        .wwwauth
        .iter()
        .map(|v| ("WWW-Authenticate".to_owned(), v.clone()))
        .collect();
    req.interactive = tool
        .var("GIT_TERMINAL_PROMPT")
        .map_or(true, |v| !matches!(v.as_str(), "0" | "false" | "no" | "off"));
    let resolver = match tool.resolver() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    match operation {
        "store" => {
            resolver.verdict(&req, Verdict::Accepted);
            ExitCode::SUCCESS
        }
        "erase" => {
            resolver.verdict(&req, Verdict::Rejected);
            ExitCode::SUCCESS
        }
        _ => match resolver.resolve(&req, tool.prompts()) {
            Ok(answer) => {
                let out = render(&answer.credential, &input, req.username_hint.as_deref());
                if !tool.answer(out.as_bytes()) {
                    return ExitCode::from(1);
                }
                ExitCode::SUCCESS
            }
            // Nothing on stdout: git goes on to its next helper or its own prompt.
            Err(Refusal::NotServed(_) | Refusal::NotFound { .. }) => ExitCode::SUCCESS,
            Err(e) => fail(&e.to_string()),
        },
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("credence: {message}");
    ExitCode::from(1)
}

fn render(c: &crate::request::Credential, input: &GitRequest, hint: Option<&str>) -> String {
    let mut out = String::new();
    let authtype_capable = input.capabilities.iter().any(|c| c == "authtype");
    // A ready-made header goes out as git's `authtype` form only if the server's challenge
    // (when git passed one) asks for that scheme; a Basic-only server gets user + password.
    let server_takes = |scheme: &str| {
        input.wwwauth.is_empty()
            || input.wwwauth.iter().any(|w| {
                w.split_whitespace()
                    .next()
                    .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
            })
    };
    let scheme_form = super::authorization(c).and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        (!scheme.eq_ignore_ascii_case("basic") && server_takes(scheme)).then(|| (scheme.to_owned(), rest.to_owned()))
    });
    match scheme_form {
        Some((scheme, credential)) if authtype_capable => {
            out.push_str(&format!(
                "capability[]=authtype\nauthtype={scheme}\ncredential={credential}\n"
            ));
            if c.cache != CachePolicy::UntilExpiry {
                out.push_str("ephemeral=1\n");
            }
        }
        _ => {
            let user = c.username.as_deref().or(hint).unwrap_or("credence");
            out.push_str(&format!("username={user}\npassword={}\n", c.secret.expose()));
        }
    }
    if let Some(t) = c.expires_at {
        out.push_str(&format!("password_expiry_utc={t}\n"));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_parses_with_capabilities_and_challenges() {
        let r = parse(b"capability[]=authtype\ncapability[]=state\nprotocol=https\nhost=git.example:8443\npath=org/repo.git\nwwwauth[]=Bearer realm=\"x\"\nunknown=ignored\n").unwrap();
        assert_eq!(r.capabilities, ["authtype", "state"]);
        assert_eq!(r.url().unwrap().unwrap(), "https://git.example:8443/org/repo.git");
        assert_eq!(r.wwwauth.len(), 1);
    }

    #[test]
    fn injection_and_incomplete_requests_are_refused() {
        assert!(parse(b"protocol=https\nhost=a.example\rhost=evil.example\n").is_err());
        assert!(parse(b"protocol=https\nhost=a.example\0evil\n").is_err());
        assert!(parse(b"protocol=https\nnonsense\n").is_err());
        assert!(parse(format!("protocol=https\nhost={}\n", "a".repeat(70_000)).as_bytes()).is_err());
        assert!(parse(b"host=a.example\n").unwrap().url().is_err());
        assert!(parse(b"protocol=https\n").unwrap().url().is_err());
        assert!(parse(b"protocol=https\nhost=a@evil.example\n").unwrap().url().is_err());
        assert_eq!(
            parse(b"protocol=cert\nhost=\npath=/k.p12\n").unwrap().url(),
            Err("the request has no host".into())
        );
        assert_eq!(parse(b"protocol=smtp\nhost=mail.example\n").unwrap().url(), Ok(None));
    }
}
