//! docker's credential-helper protocol (`"credsStore": "credence"` with a
//! `docker-credential-credence` symlink): one argument, `get` / `store` / `erase` / `list` /
//! `version`; errors are written to **stdout** with exit status 1, as docker expects.
//! `erase` is `docker logout`: what is stored for the registry is forgotten.

use super::{MAX_LINE, Tool, check_value, request};
use crate::request::{Protocol, Refusal};
use crate::resolver::Forget;
use serde::Serialize;
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

fn out(tool: &mut Tool, text: &str, code: u8) -> ExitCode {
    tool.answer(format!("{text}\n").as_bytes());
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

pub fn run(args: &[String], mut tool: Tool) -> ExitCode {
    let [action] = args else {
        eprintln!("usage: docker-credential-credence <store|get|erase|list|version>");
        return ExitCode::from(1);
    };
    match action.as_str() {
        "version" | "--version" | "-v" => out(
            &mut tool,
            concat!("docker-credential-credence (credence) ", env!("CARGO_PKG_VERSION")),
            0,
        ),
        "list" => out(&mut tool, "{}", 0),
        "store" => {
            // Read it all even when refusing, so docker is not left writing into a closed pipe.
            let _ = tool.read_all();
            out(
                &mut tool,
                "credence does not store credentials: its providers supply them; configure one in credence's config.toml",
                1,
            )
        }
        "get" | "erase" => {
            let raw = match tool.read_all() {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) => return out(&mut tool, &e, 1),
            };
            let server = match server_url(&raw) {
                Ok(s) => s,
                Err(e) => return out(&mut tool, &e, 1),
            };
            let req = match request(&server, Protocol::Docker, "pull") {
                Ok(r) => r,
                Err(e) => return out(&mut tool, &e, 1),
            };
            let resolver = match tool.resolver() {
                Ok(r) => r,
                Err(e) => return out(&mut tool, &e, 1),
            };
            if action == "erase" {
                // `docker logout`: forget what is stored for the registry. Docker erases
                // only then, never after a refused pull, so it is no rejection: the next
                // `get` is a first request, which a fixed-token provider answers.
                return match resolver.forget(Forget::LoggedOut(req)) {
                    Ok(_) | Err(Refusal::NotServed(_)) => ExitCode::SUCCESS,
                    Err(e) => out(&mut tool, &format!("cannot forget what is stored for {server}: {e}"), 1),
                };
            }
            // Only ever an answer for the host asked about: a failure is a failure, never a
            // fallback to another registry (CVE-2021-41092).
            match resolver.resolve(&req, tool.prompts()) {
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
                    out(&mut tool, &json, 0)
                }
                Err(Refusal::NotServed(_) | Refusal::NotFound { .. }) => out(&mut tool, NOT_FOUND, 1),
                Err(e) => out(&mut tool, &e.to_string(), 1),
            }
        }
        other => out(
            &mut tool,
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
