//! The loopback redirect of an authorization code flow with PKCE (RFC 6749 §4.1, RFC 7636,
//! RFC 8252 §7.3), owned by the host because providers have no sockets, and because every
//! known way to get it wrong is the listener's:
//!
//! - the port is bound *before* the URL is built, and held to the end: no window in which
//!   another process takes an advertised port (GCM's `GetFreeTcpPort`);
//! - only the loopback literal, never all interfaces (a LAN host could end a login);
//! - `state` and the S256 verifier are the host's: a provider cannot pass `state`,
//!   `redirect_uri` or `code_challenge`, so it cannot weaken or replay them;
//! - a request counts only if it is a GET of the exact path, with `Host` equal to the bound
//!   literal and port (DNS rebinding) and no `Origin` (a page poking the port), and a
//!   `state` equal in constant time; an `error=` counts only with a valid `state`;
//!   everything else gets a 4xx and the flow keeps waiting (the first request does not win);
//! - the valid callback is redirected to a static `/done` page, so the code leaves the
//!   address bar, and no page echoes a parameter;
//! - the listener closes on every outcome: it is dropped with the [`Pending`] flow.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use url::Url;

/// Parameters the host sets itself, or that would let the authorization server take them
/// from elsewhere (a request object, RFC 9101; a pushed request, RFC 9126) or answer
/// somewhere the listener does not look (`response_mode`): a provider naming one is refused.
const HOST_OWNED: &[&str] = &[
    "state",
    "redirect_uri",
    "code_challenge",
    "code_challenge_method",
    "response_type",
    "response_mode",
    "request",
    "request_uri",
];
/// Browsers send every cookie for 127.0.0.1 to every port: room for them, then 431.
const MAX_HEAD: usize = 32 << 10;
const MAX_PARAMS: usize = 64;
const MAX_PARAM_BYTES: usize = 4 << 10;
/// The authorization URL a user may have to copy by hand.
const MAX_URL_BYTES: usize = 8 << 10;
/// All the time one connection gets to send its request head: connections are served side
/// by side, so a slow or idle one (a page's preconnect, a local process) holds only itself.
const CONNECTION_BUDGET: Duration = Duration::from_secs(2);
/// Connections served at once; more are closed unanswered until one finishes.
const MAX_CONNECTIONS: usize = 32;
/// After the valid callback, how long the browser has to fetch `/done`.
const DONE_GRACE: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectHost {
    Ip4,
    Ip6,
}

#[derive(Clone, Debug)]
pub struct AuthorizationRequest {
    pub endpoint: String,
    pub params: Vec<(String, String)>,
    pub redirect_path: String,
    pub redirect_host: RedirectHost,
    pub redirect_port: Option<u16>,
    pub expected_issuer: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationResponse {
    pub code: String,
    pub redirect_uri: String,
    pub code_verifier: String,
    pub extra: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeError {
    #[error("the tool runs non-interactively")]
    NotInteractive,
    #[error("the sign-in was cancelled")]
    Cancelled,
    #[error("no valid sign-in callback came in time")]
    Timeout,
    #[error("the authorization server denied access")]
    AccessDenied(Option<String>),
    #[error("the authorization server answered {}", .0.0)]
    ServerError((String, Option<String>)),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Unavailable(String),
}

/// What every connection is judged against; shared by the connections' threads.
struct Expected {
    /// `127.0.0.1:PORT` or `[::1]:PORT`: the only `Host` accepted.
    authority: String,
    path: String,
    state: String,
    verifier: String,
    redirect_uri: String,
    expected_issuer: Option<String>,
    /// `/start/<random>`: what the browser is started with, so the URL with `state` and the
    /// challenge never sits in a process's argv for other local users to read.
    launch_path: String,
    url: String,
    launched: std::sync::atomic::AtomicBool,
    /// Set before the callback's redirect is written, so the browser's `/done` that follows
    /// it is served whichever connection the listener sees first.
    called_back: std::sync::atomic::AtomicBool,
}

/// A flow whose listener is bound: the URL to show, and the wait for its callback.
pub struct Pending {
    listener: TcpListener,
    expected: std::sync::Arc<Expected>,
    url: Url,
}

/// How a wait ended, and how many requests it turned away on the way.
pub struct Outcome {
    pub result: Result<AuthorizationResponse, AuthorizeError>,
    pub strays: usize,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Checks the request, binds the listener and builds the URL to open. `endpoint_allowed`
/// says whether the provider may send the user to that origin (its effective origins).
pub fn begin(req: &AuthorizationRequest, endpoint_allowed: impl Fn(&Url) -> bool) -> Result<Pending, AuthorizeError> {
    let invalid = |m: String| Err(AuthorizeError::InvalidRequest(m));
    let mut url = match Url::parse(&req.endpoint) {
        Ok(u) => u,
        Err(e) => return invalid(format!("the authorization endpoint is not a URL: {e}")),
    };
    let loopback = matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
        || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback());
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return invalid("the authorization endpoint must be https".into());
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return invalid("the authorization endpoint may not carry a fragment or user info".into());
    }
    if !endpoint_allowed(&url) {
        return invalid(format!(
            "{} is not an origin this provider may use",
            url.origin().ascii_serialization()
        ));
    }
    if req.params.len() > MAX_PARAMS
        || req.params.iter().any(|(k, v)| k.len() + v.len() > MAX_PARAM_BYTES)
        || req.endpoint.len() > MAX_PARAM_BYTES
    {
        return invalid("the authorization request is too large".into());
    }
    let given = url.query_pairs().map(|(k, _)| k.into_owned()).collect::<Vec<_>>();
    for name in given.iter().chain(req.params.iter().map(|(k, _)| k)) {
        if HOST_OWNED.contains(&name.as_str()) {
            return invalid(format!(
                "the provider may not set `{name}`: the host sets state, redirect_uri, the PKCE challenge and how the server answers"
            ));
        }
    }
    let path = &req.redirect_path;
    let path_ok = path.starts_with('/')
        && path.len() <= 256
        && !path.contains(['?', '#', '%', '\\'])
        && !path.split('/').any(|s| s == "." || s == "..")
        && path.bytes().all(|b| b.is_ascii_graphic());
    if !path_ok || path == "/done" || path.starts_with("/start/") {
        return invalid(format!(
            "the redirect path {path:?} must start with '/' and have no query, fragment, escapes or dot segments"
        ));
    }
    if let Some(iss) = &req.expected_issuer
        && iss.len() > MAX_PARAM_BYTES
    {
        return invalid("the expected issuer is too long".into());
    }
    // A browser leaves `:80` out of `Host`, which then never equals the bound authority.
    if req.redirect_port == Some(80) {
        return invalid("a fixed redirect port of 80 cannot be checked; use another port, or none".into());
    }

    let ip: IpAddr = match req.redirect_host {
        RedirectHost::Ip4 => Ipv4Addr::LOCALHOST.into(),
        RedirectHost::Ip6 => Ipv6Addr::LOCALHOST.into(),
    };
    let listener = TcpListener::bind(SocketAddr::new(ip, req.redirect_port.unwrap_or(0)))
        .map_err(|e| AuthorizeError::Unavailable(format!("cannot listen for the sign-in callback on {ip}: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| AuthorizeError::Unavailable(e.to_string()))?;
    let bound = listener
        .local_addr()
        .map_err(|e| AuthorizeError::Unavailable(e.to_string()))?;
    let authority = bound.to_string();
    let redirect_uri = format!("http://{authority}{path}");
    let state = random_token();
    let verifier = random_token();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code");
        for (k, v) in &req.params {
            q.append_pair(k, v);
        }
        q.append_pair("redirect_uri", &redirect_uri);
        q.append_pair("state", &state);
        q.append_pair("code_challenge", &challenge);
        q.append_pair("code_challenge_method", "S256");
    }
    if url.as_str().len() > MAX_URL_BYTES {
        return invalid(format!(
            "the authorization URL would be longer than {MAX_URL_BYTES} bytes"
        ));
    }
    let expected = Expected {
        authority,
        path: path.clone(),
        state,
        verifier,
        redirect_uri,
        expected_issuer: req.expected_issuer.clone(),
        launch_path: format!("/start/{}", random_token()),
        url: url.to_string(),
        launched: Default::default(),
        called_back: Default::default(),
    };
    Ok(Pending {
        listener,
        expected: std::sync::Arc::new(expected),
        url,
    })
}

/// What one connection to the listener amounted to.
enum Visit {
    Stray,
    /// The browser opened the launch address and was sent on to the authorization URL.
    Launched,
    /// The `/done` page after the callback.
    Done,
    Callback(Result<AuthorizationResponse, AuthorizeError>),
}

impl Pending {
    /// The authorization URL, to show on the user's terminal (it carries `state`).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// What the browser is started with: a one-time address on the listener that redirects
    /// to [`Pending::url`], so no process's argv shows `state` or the challenge.
    pub fn launch_url(&self) -> Url {
        Url::parse(&format!(
            "http://{}{}",
            self.expected.authority, self.expected.launch_path
        ))
        .expect("a loopback URL parses")
    }

    /// Serves the listener until the valid callback, `deadline`, or `cancelled()`; then the
    /// listener closes (with `self`).
    pub fn wait(self, deadline: Instant, cancelled: impl Fn() -> bool) -> Outcome {
        let (tx, rx) = std::sync::mpsc::channel::<Visit>();
        let active = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut strays = 0;
        let mut called_back: Option<(Result<AuthorizationResponse, AuthorizeError>, Instant)> = None;
        loop {
            let now = Instant::now();
            match &called_back {
                Some((_, until)) if now >= *until => break,
                None if cancelled() => {
                    return Outcome {
                        result: Err(AuthorizeError::Cancelled),
                        strays,
                    };
                }
                None if now >= deadline => {
                    return Outcome {
                        result: Err(AuthorizeError::Timeout),
                        strays,
                    };
                }
                _ => {}
            }
            while let Ok(visit) = rx.try_recv() {
                match visit {
                    Visit::Stray => strays += 1,
                    Visit::Launched => {}
                    Visit::Done if called_back.is_some() => {
                        let (result, _) = called_back.take().expect("checked");
                        return Outcome { result, strays };
                    }
                    Visit::Done => strays += 1,
                    Visit::Callback(result) if called_back.is_none() => {
                        // Only a success has a `/done` to wait for.
                        if result.is_err() {
                            return Outcome { result, strays };
                        }
                        called_back = Some((result, Instant::now() + DONE_GRACE));
                    }
                    Visit::Callback(_) => strays += 1,
                }
            }
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if active.load(std::sync::atomic::Ordering::SeqCst) >= MAX_CONNECTIONS {
                        strays += 1;
                        continue;
                    }
                    active.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let (expected, tx, active) = (self.expected.clone(), tx.clone(), active.clone());
                    let budget_end = (Instant::now() + CONNECTION_BUDGET).min(deadline.max(Instant::now()));
                    std::thread::spawn(move || {
                        let visit = visit(stream, &expected, budget_end);
                        let _ = tx.send(visit);
                        active.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
                // A peer that reset before it was accepted, out of descriptors for a moment,
                // a signal: the flow goes on (accept(2) says to treat these like EAGAIN).
                Err(_) => std::thread::sleep(POLL),
            }
        }
        let (result, _) = called_back.expect("the loop ends early only after a callback");
        Outcome { result, strays }
    }
}

/// Reads and judges one connection, and answers it.
fn visit(mut stream: TcpStream, expected: &Expected, budget_end: Instant) -> Visit {
    let head = match read_head(&mut stream, budget_end) {
        Ok(h) => h,
        Err(HeadError::TooLarge) => {
            respond(&mut stream, "431 Request Header Fields Too Large", STRAY_PAGE);
            return Visit::Stray;
        }
        Err(HeadError::Io) => return Visit::Stray,
    };
    let Some(head) = parse_head(&head) else {
        respond(&mut stream, "400 Bad Request", STRAY_PAGE);
        return Visit::Stray;
    };
    let refuse = |stream: &mut TcpStream, status: &str| {
        respond(stream, status, STRAY_PAGE);
        Visit::Stray
    };
    if head.method != "GET" {
        return refuse(&mut stream, "405 Method Not Allowed");
    }
    if !head.host_is(&expected.authority) || head.has_origin {
        return refuse(&mut stream, "403 Forbidden");
    }
    let (path, query) = head.target.split_once('?').unwrap_or((&head.target, ""));
    if path == "/done" && expected.called_back.load(std::sync::atomic::Ordering::SeqCst) {
        respond(&mut stream, "200 OK", DONE_PAGE);
        return Visit::Done;
    }
    if path == expected.launch_path && query.is_empty() {
        if expected.launched.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return refuse(&mut stream, "410 Gone");
        }
        let _ = write!(
            stream,
            "HTTP/1.1 302 Found\r\nLocation: {}\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            expected.url
        );
        return Visit::Launched;
    }
    if path != expected.path {
        return refuse(&mut stream, "404 Not Found");
    }
    let mut params: Vec<(String, String)> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if params.iter().any(|(seen, _)| *seen == k) || params.len() >= MAX_PARAMS {
            return refuse(&mut stream, "400 Bad Request");
        }
        params.push((k.into_owned(), v.into_owned()));
    }
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let state_ok = get("state").is_some_and(|s| bool::from(s.as_bytes().ct_eq(expected.state.as_bytes())));
    if !state_ok {
        return refuse(&mut stream, "400 Bad Request");
    }
    // RFC 9207: the provider named the issuer, so a callback from any other (or none) is not
    // an answer to this request.
    if let Some(expected_issuer) = &expected.expected_issuer
        && get("iss") != Some(expected_issuer.as_str())
    {
        return refuse(&mut stream, "400 Bad Request");
    }
    if let Some(error) = get("error") {
        respond(&mut stream, "200 OK", FAILED_PAGE);
        let description = get("error_description").map(crate::capability::prompt::neutralise);
        let error = crate::capability::prompt::neutralise(error);
        return Visit::Callback(Err(if error == "access_denied" {
            AuthorizeError::AccessDenied(description)
        } else {
            AuthorizeError::ServerError((error, description))
        }));
    }
    let Some(code) = get("code").filter(|c| !c.is_empty()) else {
        return refuse(&mut stream, "400 Bad Request");
    };
    let code = code.to_owned();
    if expected.called_back.swap(true, std::sync::atomic::Ordering::SeqCst) {
        // A second valid callback (a replayed one): the first is the answer.
        return refuse(&mut stream, "409 Conflict");
    }
    let _ = stream.write_all(
        b"HTTP/1.1 302 Found\r\nLocation: /done\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    let extra = params
        .into_iter()
        .filter(|(k, _)| k != "code" && k != "state")
        .collect();
    Visit::Callback(Ok(AuthorizationResponse {
        code,
        redirect_uri: expected.redirect_uri.clone(),
        code_verifier: expected.verifier.clone(),
        extra,
    }))
}

struct Head {
    method: String,
    target: String,
    host: Option<String>,
    has_origin: bool,
}

impl Head {
    fn host_is(&self, authority: &str) -> bool {
        self.host.as_deref() == Some(authority)
    }
}

enum HeadError {
    TooLarge,
    Io,
}

/// Reads up to the end of the request head, within [`MAX_HEAD`] and by `budget_end`: each
/// read waits only for what is left of the budget, so a connection that trickles bytes
/// gets no more time than one that sends none.
fn read_head(stream: &mut TcpStream, budget_end: Instant) -> Result<Vec<u8>, HeadError> {
    stream.set_nonblocking(false).map_err(|_| HeadError::Io)?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        let left = budget_end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Io);
        }
        stream.set_read_timeout(Some(left)).map_err(|_| HeadError::Io)?;
        let _ = stream.set_write_timeout(Some(CONNECTION_BUDGET));
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return Err(HeadError::Io),
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Ok(head)
}

fn parse_head(bytes: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let mut hosts = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("host"));
    let host = hosts
        .next()
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::to_owned);
    if hosts.next().is_some() {
        return None;
    }
    Some(Head {
        method: req.method?.to_owned(),
        target: req.path?.to_owned(),
        host,
        has_origin: req.headers.iter().any(|h| h.name.eq_ignore_ascii_case("origin")),
    })
}

fn respond(stream: &mut TcpStream, status: &str, page: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
        page.len()
    );
}

const DONE_PAGE: &str =
    "<!doctype html><title>credence</title><p>Signed in. You can close this page and go back to your terminal.</p>\n";
const FAILED_PAGE: &str =
    "<!doctype html><title>credence</title><p>The sign-in did not complete. Your terminal says why.</p>\n";
const STRAY_PAGE: &str = "<!doctype html><title>credence</title><p>Not a sign-in callback.</p>\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> AuthorizationRequest {
        AuthorizationRequest {
            endpoint: "https://login.example/authorize".into(),
            params: vec![("client_id".into(), "app".into()), ("scope".into(), "openid".into())],
            redirect_path: "/callback".into(),
            redirect_host: RedirectHost::Ip4,
            redirect_port: None,
            expected_issuer: Some("https://login.example".into()),
        }
    }

    fn send(authority: &str, raw: &str) -> String {
        let mut s = TcpStream::connect(authority).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    fn query(url: &Url, name: &str) -> String {
        url.query_pairs().find(|(k, _)| k == name).unwrap().1.into_owned()
    }

    #[test]
    fn a_provider_cannot_set_state_redirect_uri_or_the_challenge() {
        for name in HOST_OWNED {
            let mut req = request();
            req.params.push((name.to_string(), "mine".into()));
            assert!(
                matches!(begin(&req, |_| true), Err(AuthorizeError::InvalidRequest(_))),
                "{name}"
            );
            let mut req = request();
            req.endpoint = format!("https://login.example/authorize?{name}=mine");
            assert!(matches!(begin(&req, |_| true), Err(AuthorizeError::InvalidRequest(_))));
        }
        let mut req = request();
        req.endpoint = "http://login.example/authorize".into();
        assert!(matches!(begin(&req, |_| true), Err(AuthorizeError::InvalidRequest(_))));
        assert!(matches!(
            begin(&request(), |_| false),
            Err(AuthorizeError::InvalidRequest(_))
        ));
        let mut req = request();
        req.redirect_port = Some(80);
        assert!(matches!(begin(&req, |_| true), Err(AuthorizeError::InvalidRequest(_))));
        for path in ["callback", "/a?b", "/../x", "/done", "/a%2f", "/start/x"] {
            let mut req = request();
            req.redirect_path = path.into();
            assert!(
                matches!(begin(&req, |_| true), Err(AuthorizeError::InvalidRequest(_))),
                "{path}"
            );
        }
    }

    #[test]
    fn the_url_carries_s256_of_the_verifier_and_the_bound_port_and_the_launch_url_neither() {
        let pending = begin(&request(), |_| true).unwrap();
        let url = pending.url().clone();
        let port = pending.listener.local_addr().unwrap().port();
        assert_eq!(query(&url, "redirect_uri"), format!("http://127.0.0.1:{port}/callback"));
        assert_eq!(query(&url, "code_challenge_method"), "S256");
        assert_eq!(query(&url, "response_type"), "code");
        let verifier = pending.expected.verifier.as_bytes();
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier));
        assert_eq!(query(&url, "code_challenge"), challenge);
        assert_eq!(query(&url, "state").len(), 43);
        let launch = pending.launch_url().to_string();
        assert!(
            launch.starts_with(&format!("http://127.0.0.1:{port}/start/")),
            "{launch}"
        );
        assert!(!launch.contains("state") && !launch.contains("challenge"), "{launch}");
    }

    #[test]
    fn strays_get_4xx_and_the_valid_callback_still_completes() {
        let pending = begin(&request(), |_| true).unwrap();
        let authority = pending.expected.authority.clone();
        let state = pending.expected.state.clone();
        let launch = pending.expected.launch_path.clone();
        let client = std::thread::spawn(move || {
            let h = format!("Host: {authority}\r\n");
            // Connections that send nothing, or trickle, hold only themselves.
            let _idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&authority).unwrap()).collect();
            let mut trickle = TcpStream::connect(&authority).unwrap();
            trickle.write_all(b"GET /callback?code=x").unwrap();
            let first = send(&authority, &format!("GET {launch} HTTP/1.1\r\n{h}\r\n"));
            assert!(first.starts_with("HTTP/1.1 302") && first.contains("state="), "{first}");
            let again = send(&authority, &format!("GET {launch} HTTP/1.1\r\n{h}\r\n"));
            assert!(again.starts_with("HTTP/1.1 410"), "the launch URL works once: {again}");
            let mut answers = Vec::new();
            for raw in [
                format!("GET /favicon.ico HTTP/1.1\r\n{h}\r\n"),
                format!("GET /callback?code=c&state=wrong HTTP/1.1\r\n{h}\r\n"),
                format!("GET /callback?error=access_denied HTTP/1.1\r\n{h}\r\n"),
                format!("POST /callback?code=c&state={state} HTTP/1.1\r\n{h}Content-Length: 0\r\n\r\n"),
                format!("GET /callback?code=c&state={state} HTTP/1.1\r\nHost: evil.example:80\r\n\r\n"),
                format!("GET /callback?code=c&state={state} HTTP/1.1\r\n{h}Origin: https://evil.example\r\n\r\n"),
                format!("GET /callback?code=c&state={state}&state={state} HTTP/1.1\r\n{h}\r\n"),
                format!("GET /callback?code=c&state={state}&iss=https://other.example HTTP/1.1\r\n{h}\r\n"),
                // A valid state, but no `iss`, which the provider said to expect.
                format!("GET /callback?code=c&state={state} HTTP/1.1\r\n{h}\r\n"),
                format!("GET /callback?code=the-code&state={state}&iss=https://login.example HTTP/1.1\r\n{h}\r\n"),
                format!("GET /done HTTP/1.1\r\n{h}\r\n"),
            ] {
                answers.push(send(&authority, &raw));
            }
            answers
        });
        let outcome = pending.wait(Instant::now() + Duration::from_secs(20), || false);
        let answers = client.join().unwrap();
        for (i, a) in answers[..9].iter().enumerate() {
            assert!(a.starts_with("HTTP/1.1 4"), "request {i}: {a}");
        }
        assert!(answers[9].starts_with("HTTP/1.1 302"), "{}", answers[9]);
        assert!(answers[9].contains("Location: /done"));
        assert!(answers[10].starts_with("HTTP/1.1 200") && !answers[10].contains("the-code"));
        // Nine strays, the idle and trickling connections (when their budget ran out), and the
        // second launch; the first launch is not one.
        assert!((10..=15).contains(&outcome.strays), "{}", outcome.strays);
        let outcome = outcome.result.unwrap();
        assert_eq!(outcome.code, "the-code");
        assert_eq!(
            outcome.extra,
            vec![("iss".to_owned(), "https://login.example".to_owned())]
        );
    }

    #[test]
    fn an_error_counts_only_with_the_state_and_the_port_closes_after() {
        let pending = begin(&request(), |_| true).unwrap();
        let authority = pending.expected.authority.clone();
        let state = pending.expected.state.clone();
        let client = std::thread::spawn(move || {
            send(
                &authority,
                &format!(
                    "GET /callback?error=access_denied&error_description=no&state={state}&iss=https://login.example HTTP/1.1\r\nHost: {authority}\r\n\r\n"
                ),
            )
        });
        let outcome = pending.wait(Instant::now() + Duration::from_secs(20), || false);
        assert_eq!(outcome.result, Err(AuthorizeError::AccessDenied(Some("no".into()))));
        client.join().unwrap();
        for (deadline, cancelled, expected) in [
            (Duration::ZERO, false, AuthorizeError::Timeout),
            (Duration::from_secs(20), true, AuthorizeError::Cancelled),
        ] {
            let p = begin(&request(), |_| true).unwrap();
            let authority = p.expected.authority.clone();
            assert_eq!(p.wait(Instant::now() + deadline, || cancelled).result, Err(expected));
            assert!(
                TcpStream::connect(&authority).is_err(),
                "the listener is closed after it"
            );
        }
    }
}
