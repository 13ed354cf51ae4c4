//! The `keyring` command line that pip and uv run with `--keyring-provider subprocess`
//! (a `keyring` symlink to credence on `PATH`). All four shapes:
//! `get <service> <user>`, `get <service> --mode creds`,
//! `--mode=creds --output=json get <service> [<user>]`, and `set <service> <user>`
//! (refused); `del <service> <user>` forgets what is stored for the service.
//! Not found: exit 1 with no output; bad arguments: usage on stderr, exit 2.

use super::{Tool, request};
use crate::request::{CredentialRequest, Protocol, Refusal};
use crate::resolver::Forget;
use std::process::ExitCode;

#[derive(Debug, PartialEq, Eq)]
pub struct Invocation {
    pub command: String,
    pub service: String,
    pub username: Option<String>,
    pub creds_mode: bool,
    pub json: bool,
}

impl Invocation {
    /// The request a `get` makes; pip and uv ask by index URL and by bare host[:port].
    pub fn credential_request(&self) -> Result<CredentialRequest, String> {
        let url = if self.service.contains("://") {
            self.service.clone()
        } else {
            format!("https://{}/", self.service)
        };
        let mut req = request(&url, Protocol::Keyring, "download")?;
        req.username_hint = self.username.clone();
        Ok(req)
    }
}

pub fn parse(args: &[String]) -> Result<Invocation, String> {
    let mut mode = None;
    let mut output = None;
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (a.as_str(), None),
        };
        match flag {
            "--mode" => mode = Some(inline.or_else(|| it.next().cloned()).ok_or("--mode needs a value")?),
            "--output" | "-o" => output = Some(inline.or_else(|| it.next().cloned()).ok_or("--output needs a value")?),
            f if f.starts_with('-') => return Err(format!("unrecognized arguments: {a}")),
            _ => positional.push(a.clone()),
        }
    }
    let creds_mode = match mode.as_deref() {
        None | Some("password") => false,
        Some("creds") => true,
        Some(m) => return Err(format!("invalid --mode {m:?}")),
    };
    let json = match output.as_deref() {
        None | Some("plain") => false,
        Some("json") => true,
        Some(o) => return Err(format!("invalid --output {o:?}")),
    };
    let mut p = positional.into_iter();
    let command = p.next().ok_or("a command is required")?;
    let service = p.next().ok_or("a service is required")?;
    let username = p.next();
    if p.next().is_some() {
        return Err("too many arguments".into());
    }
    // The plain creds output prints the user name as a line of its own.
    if let Some(user) = &username {
        super::check_value("username", user)?;
    }
    if command == "get" && !creds_mode && username.is_none() {
        return Err("get needs a username unless --mode creds is given".into());
    }
    Ok(Invocation {
        command,
        service,
        username,
        creds_mode,
        json,
    })
}

pub fn run(args: &[String], mut tool: Tool) -> ExitCode {
    let inv = match parse(args) {
        Ok(i) => i,
        Err(e) => {
            eprintln!(
                "usage: keyring [--mode password|creds] [--output plain|json] get|set|del SERVICE [USERNAME]\nkeyring: error: {e}"
            );
            return ExitCode::from(2);
        }
    };
    match inv.command.as_str() {
        "get" | "del" => {}
        "set" => {
            let _ = tool.read_all();
            eprintln!("credence does not store passwords: its providers supply them");
            return ExitCode::from(1);
        }
        other => {
            eprintln!("keyring: error: unknown command {other:?}");
            return ExitCode::from(2);
        }
    }
    let req = match inv.credential_request() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("credence: {e}");
            return ExitCode::from(1);
        }
    };
    if inv.command == "del" {
        // The user removes what is kept for the service: a logout, as docker's `erase`.
        return match tool
            .resolver()
            .and_then(|r| match r.forget(Forget::LoggedOut(req.clone())) {
                Ok(_) | Err(Refusal::NotServed(_)) => Ok(()),
                Err(e) => Err(e.to_string()),
            }) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("credence: {e}");
                ExitCode::from(1)
            }
        };
    }
    let answer = match tool
        .resolver()
        .and_then(|r| r.resolve(&req, tool.prompts()).map_err(|e| e.to_string()))
    {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!("keyring lookup: {e}");
            return ExitCode::from(1);
        }
    };
    let c = &answer.credential;
    // PyPI-style token indexes take the user name `__token__`.
    let username = c
        .username
        .clone()
        .or(inv.username.clone())
        .unwrap_or_else(|| "__token__".into());
    let out = match (inv.creds_mode, inv.json) {
        (_, true) if inv.creds_mode => {
            serde_json::json!({ "username": username, "password": c.secret.expose() }).to_string() + "\n"
        }
        (_, true) => serde_json::json!({ "password": c.secret.expose() }).to_string() + "\n",
        (true, false) => format!("{username}\n{}\n", c.secret.expose()),
        (false, false) => format!("{}\n", c.secret.expose()),
    };
    if !tool.answer(out.as_bytes()) {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn all_four_shapes_parse() {
        assert_eq!(
            parse(&a("get pypi.example __token__")).unwrap().username.as_deref(),
            Some("__token__")
        );
        let uv = parse(&a("get https://pypi.example/simple/ --mode creds")).unwrap();
        assert!(uv.creds_mode && !uv.json);
        let pip = parse(&a("--mode=creds --output=json get https://pypi.example/simple/")).unwrap();
        assert!(pip.creds_mode && pip.json && pip.username.is_none());
        assert_eq!(parse(&a("set pypi.example bob")).unwrap().command, "set");
        assert!(parse(&a("get pypi.example")).is_err());
        assert!(
            parse(&a("--frobnicate get x y"))
                .unwrap_err()
                .contains("unrecognized arguments")
        );
    }
}
