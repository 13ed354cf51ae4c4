//! cargo's credential-provider protocol v1 (`credential-provider = ["credence"]` runs
//! `credence --cargo-plugin`): a hello line, then one JSON request per line, each answered
//! with `{"Ok":…}` or `{"Err":{"kind":…}}`; exit status 0 after good answers.

use super::{MAX_INPUT, check_value, open_broker, read_line_bounded, request};
use crate::broker::Broker;
use crate::request::{CachePolicy, CredentialRequest, Protocol, Refusal};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::process::ExitCode;

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

pub fn run() -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    // The hello goes out before anything is read, or cargo and credence wait on each other.
    if writeln!(stdout, r#"{{"v":[1]}}"#)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::from(1);
    }
    let broker = open_broker();
    let mut stdin = std::io::stdin().lock();
    loop {
        let answer = match read_line_bounded(&mut stdin, MAX_INPUT) {
            Ok(None) => return ExitCode::SUCCESS,
            Ok(Some(line)) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Some(line)) => match &broker {
                Ok(broker) => answer(broker, &line),
                Err(e) => Answer::Err(other(format!("credence cannot start: {e}"))),
            },
            Err(e) => Answer::Err(other(e)),
        };
        let text = serde_json::to_string(&answer).expect("answers serialise");
        if writeln!(stdout, "{text}").and_then(|()| stdout.flush()).is_err() {
            return ExitCode::from(1);
        }
    }
}

fn answer(broker: &Broker, line: &[u8]) -> Answer {
    match parse_request(line).and_then(|parsed| handle(broker, parsed)) {
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
    for header in &req.registry.headers {
        check_value("headers", header).map_err(other)?;
        if let Some((name, value)) = header.split_once(':') {
            request
                .challenge_headers
                .push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    // Cargo has no retry flag: the 401's headers are its only sign that a token failed.
    request.is_retry = !req.registry.headers.is_empty();
    // Nor an interactive flag; prompts go to the terminal when there is one.
    request.interactive = true;
    Ok(ParsedRequest {
        action: req.action,
        request,
    })
}

fn handle(broker: &Broker, parsed: ParsedRequest) -> Result<Success, Failure> {
    let ParsedRequest { action, mut request } = parsed;
    match action {
        Action::Get { .. } => {
            let answer = broker.get(&request).map_err(failure)?;
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
            request.is_retry = true;
            broker.get(&request).map_err(failure)?;
            Ok(Success::Login)
        }
        Action::Logout => {
            if broker.config().providers_for(&request.url).next().is_none() {
                return Err(Failure::UrlNotSupported);
            }
            broker.logout(&request.url).map_err(other)?;
            Ok(Success::Logout)
        }
        Action::Unknown => Err(Failure::OperationNotSupported),
    }
}

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
