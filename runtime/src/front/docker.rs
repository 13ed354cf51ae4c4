//! docker's credential-helper protocol (`"credsStore": "credence"` with a
//! `docker-credential-credence` symlink): one argument, `get` / `store` / `erase` / `list` /
//! `version`; errors are written to **stdout** with exit status 1, as docker expects.
//! `erase` is `docker logout`: what is stored for the registry is forgotten.

use super::{MAX_LINE, check_value, open_broker, request};
use crate::request::{Protocol, Refusal};
use serde::Serialize;
use std::io::Write;
use std::process::ExitCode;

/// The exact text docker compares against to mean "no credentials here".
pub const NOT_FOUND: &str = "credentials not found in native keychain";

#[derive(Serialize)]
struct Credentials<'a> {
    #[serde(rename = "ServerURL")]
    server_url: &'a str,
    #[serde(rename = "Username")]
    username: &'a str,
    #[serde(rename = "Secret")]
    secret: &'a str,
}

fn out(text: &str, code: u8) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
    ExitCode::from(code)
}

/// Docker names registries by host (`registry.example:5000`) or, for Docker Hub, by URL.
pub fn server_url(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("no credentials server URL".into());
    }
    if s.len() > MAX_LINE {
        return Err(format!("the server URL is longer than {MAX_LINE} bytes"));
    }
    check_value("server URL", s)?;
    Ok(if s.contains("://") {
        s.to_owned()
    } else {
        format!("https://{s}/")
    })
}

pub fn run(args: &[String]) -> ExitCode {
    let [action] = args else {
        eprintln!("usage: docker-credential-credence <store|get|erase|list|version>");
        return ExitCode::from(1);
    };
    match action.as_str() {
        "version" | "--version" | "-v" => out(
            concat!("docker-credential-credence (credence) ", env!("CARGO_PKG_VERSION")),
            0,
        ),
        "list" => out("{}", 0),
        "store" => {
            // Read it all even when refusing, so docker is not left writing into a closed pipe.
            let _ = super::read_stdin_bounded();
            out(
                "credence does not store credentials: its providers supply them; configure one in credence's config.toml",
                1,
            )
        }
        "get" | "erase" => {
            let raw = match super::read_stdin_bounded() {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) => return out(&e, 1),
            };
            let server = match server_url(&raw) {
                Ok(s) => s,
                Err(e) => return out(&e, 1),
            };
            let req = match request(&server, Protocol::Docker, "pull") {
                Ok(r) => r,
                Err(e) => return out(&e, 1),
            };
            let broker = match open_broker() {
                Ok(b) => b,
                Err(e) => return out(&e, 1),
            };
            if action == "erase" {
                // `docker logout`: forget what is stored for the registry. Docker erases
                // only then, never after a refused pull, so it is no rejection: the next
                // `get` is a first request, which a fixed-token provider answers.
                return match broker.log_out(&req) {
                    Ok(_) => ExitCode::SUCCESS,
                    Err(e) => out(&format!("cannot forget what is stored for {server}: {e}"), 1),
                };
            }
            // Only ever an answer for the host asked about: a failure is a failure, never a
            // fallback to another registry (CVE-2021-41092).
            match broker.get(&req) {
                Ok(answer) => {
                    let c = &answer.credential;
                    // A credential without a user name is an identity token to docker.
                    let username = c.username.as_deref().unwrap_or("<token>");
                    let json = serde_json::to_string(&Credentials {
                        server_url: raw.trim(),
                        username,
                        secret: c.secret.expose(),
                    })
                    .expect("serialises");
                    out(&json, 0)
                }
                Err(Refusal::NotServed(_) | Refusal::NotFound { .. }) => out(NOT_FOUND, 1),
                Err(e) => out(&e.to_string(), 1),
            }
        }
        other => out(
            &format!("unknown action {other:?}; expected store, get, erase, list or version"),
            1,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_server_names_become_urls() {
        assert_eq!(
            server_url("registry.example:5000\n").unwrap(),
            "https://registry.example:5000/"
        );
        assert_eq!(
            server_url("https://index.docker.io/v1/").unwrap(),
            "https://index.docker.io/v1/"
        );
        assert!(server_url("").is_err());
        assert!(server_url("a.example\rb").is_err());
    }
}
