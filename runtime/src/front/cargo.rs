//! cargo's credential-provider protocol v1 (`credential-provider = ["credence"]` runs
//! `credence --cargo-plugin`): a hello line, then one JSON request per line, each answered
//! with `{"Ok":…}` or `{"Err":{"kind":…}}`; exit status 0 after good answers.

use super::{MAX_INPUT, Tool, check_value, read_line_bounded, request};
use crate::request::{CachePolicy, CredentialRequest, Protocol, Refusal};
use crate::resolver::{Forget, Resolver};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Request {
    v: u32,
    registry: Registry,
    #[serde(flatten)]
    action: Action,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Registry {
    index_url: String,
    #[serde(default)]
    headers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum Action {
    Get {
        operation: String,
    },
    Login {
        token: Option<String>,
    },
    Logout,
    #[serde(other)]
    Unknown,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum Success {
    Get {
        token: String,
        cache: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        expiration: Option<u64>,
        operation_independent: bool,
    },
    Login,
    Logout,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Failure {
    UrlNotSupported,
    NotFound,
    OperationNotSupported,
    Other {
        message: String,
        #[serde(rename = "caused-by")]
        caused_by: Vec<String>,
    },
}

fn other(message: impl Into<String>) -> Failure {
    Failure::Other {
        message: message.into(),
        caused_by: Vec::new(),
    }
}

#[derive(Serialize)]
enum Answer {
    Ok(Success),
    Err(Failure),
}

pub fn run(mut tool: Tool) -> ExitCode {
    // The hello goes out before anything is read, or cargo and credence wait on each other.
    if !tool.answer(b"{\"v\":[1]}\n") {
        return ExitCode::from(1);
    }
    let resolver = tool.resolver();
    let prompts = tool.terminal.clone();
    serve(tool.stdin, tool.stdout, |line| match &resolver {
        Ok(resolver) => answer(resolver, &*prompts, line),
        Err(e) => Answer::Err(other(format!("credence cannot start: {e}"))),
    })
}

type Prompts = dyn Fn() -> Box<dyn crate::terminal::Terminal> + Send + Sync;

/// Answers each request line until EOF. A line over `MAX_INPUT` gets one error and ends
/// the session: the reader stops inside it, and its tail is no request of cargo's, so
/// reading on would answer requests nobody sent (a 10 MB line got ten answers).
fn serve(mut input: impl BufRead, mut output: impl Write, mut answer: impl FnMut(&[u8]) -> Answer) -> ExitCode {
    loop {
        let (reply, framing_lost) = match read_line_bounded(&mut input, MAX_INPUT) {
            Ok(None) => return ExitCode::SUCCESS,
            Ok(Some(line)) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Some(line)) => (answer(&line), false),
            Err(e) => (Answer::Err(other(e)), true),
        };
        let text = serde_json::to_string(&reply).expect("answers serialise");
        if writeln!(output, "{text}").and_then(|()| output.flush()).is_err() || framing_lost {
            return ExitCode::from(1);
        }
    }
}

fn answer(resolver: &Arc<dyn Resolver>, prompts: &Prompts, line: &[u8]) -> Answer {
    match parse_request(line).and_then(|parsed| handle(&**resolver, prompts, parsed)) {
        Ok(s) => Answer::Ok(s),
        Err(f) => Answer::Err(f),
    }
}

/// One request line from cargo, checked and mapped to the internal request.
pub struct ParsedRequest {
    action: Action,
    pub request: CredentialRequest,
}

/// Everything about a request line that needs no provider, answered in cargo's error forms.
pub fn parse_request(line: &[u8]) -> Result<ParsedRequest, Failure> {
    let req: Request = serde_json::from_slice(line).map_err(|e| other(format!("malformed request from cargo: {e}")))?;
    if req.v != 1 {
        return Err(other(format!(
            "credential provider protocol version {} is not supported; credence speaks 1",
            req.v
        )));
    }
    let index = &req.registry.index_url;
    check_value("index-url", index).map_err(other)?;
    let url = index.strip_prefix("sparse+").unwrap_or(index);
    let operation = match &req.action {
        Action::Get { operation } => operation.clone(),
        Action::Login { .. } => "login".into(),
        Action::Logout => "logout".into(),
        Action::Unknown => return Err(Failure::OperationNotSupported),
    };
    check_value("operation", &operation).map_err(other)?;
    let mut request = request(url, Protocol::Cargo, &operation).map_err(other)?;
    // The headers are the 401 that made cargo ask, on first use too (an `auth-required`
    // registry answers cargo's token-less first request with one): a challenge, not a sign
    // that a token was refused. Cargo has no retry flag; when it refuses a token it tells
    // the user to run `cargo login`, which is its one "fetch a fresh credential" signal.
    for header in &req.registry.headers {
        check_value("headers", header).map_err(other)?;
        if let Some((name, value)) = header.split_once(':') {
            request
                .challenge_headers
                .push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    // Nor an interactive flag; prompts go to the terminal when there is one (the broker
    // checks that one can be opened).
    request.interactive = true;
    Ok(ParsedRequest {
        action: req.action,
        request,
    })
}

fn handle(resolver: &dyn Resolver, prompts: &Prompts, parsed: ParsedRequest) -> Result<Success, Failure> {
    let ParsedRequest { action, mut request } = parsed;
    match action {
        Action::Get { .. } => {
            let answer = resolver.resolve(&request, prompts()).map_err(failure)?;
            let c = answer.credential;
            let token = super::authorization(&c).unwrap_or_else(|| c.secret.expose().clone());
            let (cache, expiration) = match (c.cache, c.expires_at) {
                (CachePolicy::Never, _) => ("never", None),
                (CachePolicy::UntilExpiry, Some(t)) => ("expires", Some(t)),
                _ => ("session", None),
            };
            Ok(Success::Get {
                token,
                cache,
                expiration,
                operation_independent: true,
            })
        }
        Action::Login { token: Some(_) } => Err(other(
            "credence takes tokens from its providers, not from `cargo login`; put the token in the provider's settings in credence's config.toml",
        )),
        Action::Login { token: None } => {
            // Login means: get a fresh credential now, prompting if the provider needs to.
            // Not a retry: nothing says the server refused anything (it is also how a user
            // sets a registry up), and a fixed-token provider would refuse its own token.
            // So the credentials stored for every operation are dropped, and the provider
            // runs as for a read, whose answer the next `get` finds stored.
            for operation in OPERATIONS {
                request.operation = (*operation).to_owned();
                resolver.forget(Forget::Stored(request.clone())).map_err(failure)?;
            }
            request.operation = "read".into();
            resolver.resolve(&request, prompts()).map_err(failure)?;
            Ok(Success::Login)
        }
        Action::Logout => {
            resolver.forget(Forget::LoggedOut(request)).map_err(failure)?;
            Ok(Success::Logout)
        }
        Action::Unknown => Err(Failure::OperationNotSupported),
    }
}

/// The operations cargo's `get` names.
const OPERATIONS: &[&str] = &["read", "publish", "yank", "unyank", "owners"];

fn failure(r: Refusal) -> Failure {
    match r {
        Refusal::NotServed(_) => Failure::UrlNotSupported,
        Refusal::NotFound { .. } => Failure::NotFound,
        other_refusal => other(other_refusal.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_have_cargo_exact_shape() {
        let ok = Answer::Ok(Success::Get {
            token: "t".into(),
            cache: "expires",
            expiration: Some(5),
            operation_independent: true,
        });
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"Ok":{"kind":"get","token":"t","cache":"expires","expiration":5,"operation_independent":true}}"#
        );
        assert_eq!(
            serde_json::to_string(&Answer::Err(Failure::UrlNotSupported)).unwrap(),
            r#"{"Err":{"kind":"url-not-supported"}}"#
        );
        assert_eq!(
            serde_json::to_string(&Answer::Err(other("x"))).unwrap(),
            r#"{"Err":{"kind":"other","message":"x","caused-by":[]}}"#
        );
        assert_eq!(
            serde_json::to_string(&Answer::Ok(Success::Logout)).unwrap(),
            r#"{"Ok":{"kind":"logout"}}"#
        );
    }

    #[test]
    fn a_401_challenge_in_the_headers_is_not_a_retry() {
        let parsed = parse_request(
            br#"{"v":1,"registry":{"index-url":"sparse+https://r.example/index/","headers":["WWW-Authenticate: Cargo login_url=\"https://r.example/me\"","Content-Type: application/json"]},"kind":"get","operation":"read"}"#,
        )
        .unwrap_or_else(|_| panic!("parses"));
        assert!(!parsed.request.is_retry, "the challenge comes on first use too");
        assert_eq!(
            parsed.request.challenge_headers[0],
            (
                "WWW-Authenticate".to_owned(),
                "Cargo login_url=\"https://r.example/me\"".to_owned()
            )
        );
    }

    #[test]
    fn an_over_long_line_gets_one_error_and_ends_the_session() {
        // 10 MiB on one line, then what would be a request if the tail were read as lines.
        let mut input = vec![b'x'; 10 << 20];
        input.extend_from_slice(b"\n{\"v\":1}\n");
        let mut output = Vec::new();
        let mut answered = 0;
        let code = serve(std::io::Cursor::new(input), &mut output, |_| {
            answered += 1;
            Answer::Err(Failure::NotFound)
        });
        assert_eq!(answered, 0, "no part of the line is taken as a request");
        let text = String::from_utf8(output).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.starts_with(r#"{"Err":{"kind":"other","message":"a line is longer than"#),
            "{text}"
        );
        assert_eq!(code, ExitCode::from(1));
    }

    #[test]
    fn requests_parse_like_cargo_sends_them_and_ignore_extra_fields() {
        let r: Request = serde_json::from_str(
            r#"{"v":1,"registry":{"index-url":"sparse+https://r.example/index/","name":"r","headers":["WWW-Authenticate: Cargo login_url=x"],"extra-x":1},"kind":"get","operation":"read","args":["cargo"],"extra-y":2}"#,
        )
        .unwrap();
        assert!(matches!(r.action, Action::Get { ref operation } if operation == "read"));
        let r: Request = serde_json::from_str(r#"{"v":1,"registry":{"index-url":"x"},"kind":"future-kind"}"#).unwrap();
        assert!(matches!(r.action, Action::Unknown));
    }
}
