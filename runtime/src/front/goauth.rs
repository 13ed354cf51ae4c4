//! Go's `GOAUTH` command protocol (`GOAUTH='credence goauth'`). The first run has no
//! arguments: credence answers nothing rather than run every provider up front. After a
//! 4xx, go runs it again with the URL as last argument and the response head on stdin; the
//! answer is the served URL prefix, a blank line, header lines and a blank line, LF only.

use super::{Tool, auth_headers, check_value, request};
use crate::request::{CredentialRequest, Protocol, Refusal};
use std::process::ExitCode;

fn fail(message: &str) -> ExitCode {
    eprintln!("credence: {message}");
    ExitCode::from(1)
}

/// The `WWW-Authenticate` headers of the response head go sends on stdin.
pub fn challenges(head: &str) -> Result<Vec<(String, String)>, String> {
    let mut lines = head.split('\n');
    let status = lines.next().unwrap_or("");
    check_value("status line", status)?;
    let mut out = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        check_value("header", line)?;
        let (name, value) = line.split_once(':').ok_or("a header line has no `:`")?;
        if name.trim().eq_ignore_ascii_case("www-authenticate") {
            out.push(("WWW-Authenticate".to_owned(), value.trim().to_owned()));
        }
    }
    Ok(out)
}

/// The request for `url`, carrying the challenges of the response head `head`.
pub fn parse_request(url: &str, head: &str) -> Result<CredentialRequest, String> {
    let mut req = request(url, Protocol::Goauth, "get")?;
    if req.url.scheme() != "https" {
        return Err("GOAUTH is only for https URLs".into());
    }
    req.challenge_headers = challenges(head)?;
    Ok(req)
}

pub fn run(args: &[String], mut tool: Tool) -> ExitCode {
    let Some(url) = args.last() else {
        return ExitCode::SUCCESS;
    };
    let head = match tool.read_all() {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => return fail(&e),
    };
    let req = match parse_request(url, &head) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let resolver = match tool.resolver() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let answer = match resolver.resolve(&req, tool.prompts()) {
        Ok(a) => a,
        Err(Refusal::NotServed(_) | Refusal::NotFound { .. }) => return ExitCode::SUCCESS,
        Err(e) => return fail(&e.to_string()),
    };
    // The prefix the provider serves covers every module path under it.
    let prefix = answer
        .serves
        .clone()
        .unwrap_or_else(|| crate::request::shown_url(&req.url));
    let mut out = format!("{prefix}\n\n");
    for (k, v) in auth_headers(&answer.credential) {
        out.push_str(&format!("{k}: {v}\n"));
    }
    out.push('\n');
    if !tool.answer(out.as_bytes()) {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
