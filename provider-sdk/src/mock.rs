//! A host for native `cargo test`: scripted HTTP responses, scripted answers to prompts
//! and sign-ins, a virtual clock that `wait` advances, and a record of every call.
//!
//! ```
//! use credence_provider::mock::MockHost;
//! use credence_provider::{Host, HttpRequest};
//!
//! let mut host = MockHost::new();
//! host.respond("POST", "https://login.example/token", 200, r#"{"access_token":"t"}"#);
//! let r = host.fetch(HttpRequest {
//!     method: "POST".into(),
//!     url: "https://login.example/token".into(),
//!     headers: vec![],
//!     body: vec![],
//! });
//! assert_eq!(r.unwrap().status, 200);
//! assert_eq!(host.requests.len(), 1);
//! ```

use crate::{
    AuthorizationRequest, AuthorizationResponse, AuthorizeError, DeviceCode, FetchError, Host, HttpRequest,
    HttpResponse, IdTokenError, PromptError,
};
use std::collections::VecDeque;

/// One scripted exchange: the request it expects and the answer it gives.
struct Exchange {
    method: String,
    url: String,
    response: HttpResponse,
}

pub struct MockHost {
    script: VecDeque<Exchange>,
    answers: VecDeque<Result<String, PromptError>>,
    authorizations: VecDeque<Result<AuthorizationResponse, AuthorizeError>>,
    id_tokens: Vec<(String, String)>,
    /// Every request the provider sent, in order.
    pub requests: Vec<HttpRequest>,
    /// Every message shown or asked.
    pub shown: Vec<String>,
    pub device_codes: Vec<DeviceCode>,
    pub dismissed: usize,
    /// Every `wait`, in milliseconds.
    pub waits: Vec<u32>,
    pub authorize_requests: Vec<AuthorizationRequest>,
    /// Unix seconds; `wait` advances it.
    pub now: u64,
    /// What `show_device_code` and `authorize` answer when the tool cannot prompt.
    pub interactive: bool,
}

impl Default for MockHost {
    fn default() -> Self {
        Self::new()
    }
}

impl MockHost {
    pub fn new() -> Self {
        MockHost {
            script: VecDeque::new(),
            answers: VecDeque::new(),
            authorizations: VecDeque::new(),
            id_tokens: Vec::new(),
            requests: Vec::new(),
            shown: Vec::new(),
            device_codes: Vec::new(),
            dismissed: 0,
            waits: Vec::new(),
            authorize_requests: Vec::new(),
            now: 1_700_000_000,
            interactive: true,
        }
    }

    /// The next request must be `method url`; it gets `status` and `body` (JSON).
    pub fn respond(&mut self, method: &str, url: &str, status: u16, body: &str) -> &mut Self {
        self.script.push_back(Exchange {
            method: method.into(),
            url: url.into(),
            response: HttpResponse {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body: body.as_bytes().to_vec(),
            },
        });
        self
    }

    /// The next `ask` gets `answer`.
    pub fn answer(&mut self, answer: &str) -> &mut Self {
        self.answers.push_back(Ok(answer.into()));
        self
    }

    /// The next `authorize` returns `code`, as if the browser came back with it.
    pub fn authorize_with(&mut self, code: &str) -> &mut Self {
        self.authorizations.push_back(Ok(AuthorizationResponse {
            code: code.into(),
            redirect_uri: "http://127.0.0.1:49152/callback".into(),
            code_verifier: "mock-verifier-of-forty-three-characters-00".into(),
            extra: Vec::new(),
        }));
        self
    }

    /// The next `authorize` fails with `error`.
    pub fn authorize_fails(&mut self, error: AuthorizeError) -> &mut Self {
        self.authorizations.push_back(Err(error));
        self
    }

    /// `id_token(audience)` answers `token`, as a CI job granted that audience would.
    pub fn grant_id_token(&mut self, audience: &str, token: &str) -> &mut Self {
        self.id_tokens.push((audience.into(), token.into()));
        self
    }

    /// The form body of request `i`, decoded.
    pub fn form_of(&self, i: usize) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.requests[i].body).into_owned().collect()
    }

    /// Whether every scripted exchange was used.
    pub fn script_done(&self) -> bool {
        self.script.is_empty()
    }
}

impl Host for MockHost {
    fn fetch(&mut self, req: HttpRequest) -> Result<HttpResponse, FetchError> {
        let expected = self.script.pop_front();
        let record = HttpRequest {
            method: req.method.clone(),
            url: req.url.clone(),
            headers: req.headers.clone(),
            body: req.body.clone(),
        };
        self.requests.push(record);
        match expected {
            Some(e) if e.method == req.method && e.url == req.url => Ok(e.response),
            Some(e) => panic!(
                "the provider sent {} {}, but the script expected {} {}",
                req.method, req.url, e.method, e.url
            ),
            None => panic!("the provider sent {} {} after the script ended", req.method, req.url),
        }
    }

    fn ask(&mut self, message: &str, _secret: bool) -> Result<String, PromptError> {
        if !self.interactive {
            return Err(PromptError::NotInteractive);
        }
        self.shown.push(message.into());
        self.answers.pop_front().unwrap_or(Err(PromptError::Cancelled))
    }

    fn show(&mut self, message: &str) -> Result<(), PromptError> {
        if !self.interactive {
            return Err(PromptError::NotInteractive);
        }
        self.shown.push(message.into());
        Ok(())
    }

    fn show_device_code(&mut self, code: &DeviceCode) -> Result<(), PromptError> {
        if !self.interactive {
            return Err(PromptError::NotInteractive);
        }
        self.device_codes.push(code.clone());
        Ok(())
    }

    fn dismiss(&mut self) {
        self.dismissed += 1;
    }

    fn wait(&mut self, ms: u32) -> Result<(), PromptError> {
        assert!(ms <= 60_000, "the host waits at most 60 s per call; asked {ms} ms");
        self.waits.push(ms);
        self.now += u64::from(ms.div_ceil(1000));
        Ok(())
    }

    fn authorize(&mut self, req: &AuthorizationRequest) -> Result<AuthorizationResponse, AuthorizeError> {
        if !self.interactive {
            return Err(AuthorizeError::NotInteractive);
        }
        self.authorize_requests.push(req.clone());
        self.authorizations.pop_front().unwrap_or(Err(AuthorizeError::Timeout))
    }

    fn id_token(&mut self, audience: &str) -> Result<String, IdTokenError> {
        self.id_tokens
            .iter()
            .find(|(a, _)| a == audience)
            .map(|(_, t)| t.clone())
            .ok_or_else(|| IdTokenError::Denied(format!("the audience {audience:?} is not granted")))
    }

    fn now(&self) -> u64 {
        self.now
    }
}
