//! The Bazel / EngFlow credential-helper spec (`--credential_helper=credence-bazel`, a
//! symlink, or a wrapper running `credence bazel`): `get`, stdin `{"uri": …}`, stdout
//! `{"headers": {name: [values]}, "expires": RFC 3339 without fractional seconds}`.
//! Bazel cannot prompt, so providers run non-interactively. A URI no provider serves gets
//! `{}` ("no credentials needed"), so an unscoped helper does not break public downloads.

use super::{Tool, auth_headers, request, rfc3339};
use crate::request::{CredentialRequest, Protocol, Refusal};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::process::ExitCode;

#[derive(Deserialize)]
struct Request {
    uri: String,
}

/// Bazel's `{"uri": …}` as the internal request.
pub fn parse_request(input: &[u8]) -> Result<CredentialRequest, String> {
    let req: Request = serde_json::from_slice(input).map_err(|e| format!("malformed request from Bazel: {e}"))?;
    request(&req.uri, Protocol::Bazel, "get")
}

fn fail(message: &str) -> ExitCode {
    eprintln!("credence: {message}");
    ExitCode::from(1)
}

pub fn run(args: &[String], mut tool: Tool) -> ExitCode {
    if args.first().map(String::as_str) != Some("get") {
        eprintln!("usage: credence-bazel get  (reads {{\"uri\": ...}} on stdin)");
        return ExitCode::from(2);
    }
    let input = match tool.read_all() {
        Ok(i) => i,
        Err(e) => return fail(&e),
    };
    let request = match parse_request(&input) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let resolver = match tool.resolver() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let json = match resolver.resolve(&request, tool.prompts()) {
        Ok(answer) => {
            let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, v) in auth_headers(&answer.credential) {
                headers.entry(k).or_default().push(v);
            }
            let mut value = serde_json::json!({ "headers": headers });
            if let Some(t) = answer.credential.expires_at {
                value["expires"] = rfc3339(t).into();
            }
            value.to_string()
        }
        Err(Refusal::NotServed(_)) => "{}".to_owned(),
        Err(e) => return fail(&e.to_string()),
    };
    if !tool.answer(format!("{json}\n").as_bytes()) {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
