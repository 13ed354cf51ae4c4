//! Outgoing HTTP for providers: only to the origins the provider declares *and* the user
//! grants, exact scheme + host + port, redirects handed back (never followed), and every
//! size and time bounded.

use super::address_policy::{self, ForbiddenAddress};
use credence_signing::Origin;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::Duration;
use url::Url;

#[derive(Clone, Debug)]
pub struct HttpLimits {
    pub max_request_body: usize,
    pub max_response_body: usize,
    pub max_request_headers: usize,
    pub max_response_headers: usize,
    pub max_header_bytes: usize,
    pub connect_timeout: Duration,
    pub total_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_request_body: 1 << 20,
            max_response_body: 4 << 20,
            max_request_headers: 64,
            // hyper refuses a response head with more headers than this before we see it.
            max_response_headers: 100,
            max_header_bytes: 64 << 10,
            connect_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("denied: {0}")]
    Denied(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("timed out")]
    Timeout,
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("transport error: {0}")]
    Transport(String),
}

/// Headers a provider may not set: they belong to the connection, the proxy or the host.
/// Every `Proxy-*` name is refused too ([`is_host_owned_header`]): they are meant for a
/// proxy, and a provider has no business talking to the user's proxy.
const FORBIDDEN_REQUEST_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "http2-settings",
];

/// Whether a header (a lower-case `HeaderName`) is the host's, not the provider's.
fn is_host_owned_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    FORBIDDEN_REQUEST_HEADERS.contains(&name) || name.starts_with("proxy-")
}

const ALLOWED_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The effective HTTP capability of one provider.
pub struct HttpCapability {
    /// Declared ∩ granted; empty means no HTTP at all.
    origins: BTreeSet<Origin>,
    limits: HttpLimits,
    client: OnceLock<Result<reqwest::Client, String>>,
}

/// A request that passed the policy, ready to send.
struct Checked {
    method: reqwest::Method,
    url: Url,
    origin: Origin,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl HttpCapability {
    pub fn new(origins: BTreeSet<Origin>, limits: HttpLimits) -> Self {
        HttpCapability {
            origins,
            limits,
            client: OnceLock::new(),
        }
    }

    pub fn origins(&self) -> &BTreeSet<Origin> {
        &self.origins
    }

    /// The origin of a request URL, if the policy lets it through.
    pub fn origin_of(&self, url: &str) -> Result<Origin, FetchError> {
        let parsed =
            Url::parse(url).map_err(|e| FetchError::InvalidRequest(format!("{url:?} is not an absolute URL: {e}")))?;
        let origin = Origin::of_url(&parsed).map_err(|e| FetchError::Denied(e.to_string()))?;
        if !self.origins.contains(&origin) {
            let allowed = if self.origins.is_empty() {
                "none".to_owned()
            } else {
                self.origins
                    .iter()
                    .map(|o| o.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(FetchError::Denied(format!(
                "{origin} is not an allowed origin (allowed: {allowed})"
            )));
        }
        Ok(origin)
    }

    fn check(&self, req: HttpRequest) -> Result<Checked, FetchError> {
        let origin = self.origin_of(&req.url)?;
        let url = Url::parse(&req.url).map_err(|e| FetchError::InvalidRequest(e.to_string()))?;
        if !ALLOWED_METHODS.contains(&req.method.as_str()) {
            return Err(FetchError::InvalidRequest(format!(
                "method {:?} is not allowed",
                req.method
            )));
        }
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|e| FetchError::InvalidRequest(e.to_string()))?;
        if req.body.len() > self.limits.max_request_body {
            return Err(FetchError::InvalidRequest(format!(
                "request body of {} bytes exceeds the limit of {}",
                req.body.len(),
                self.limits.max_request_body
            )));
        }
        if req.headers.len() > self.limits.max_request_headers {
            return Err(FetchError::InvalidRequest(format!(
                "{} request headers exceed the limit of {}",
                req.headers.len(),
                self.limits.max_request_headers
            )));
        }
        let mut headers = HeaderMap::new();
        let mut header_bytes = 0;
        for (name, value) in &req.headers {
            header_bytes += name.len() + value.len();
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| FetchError::InvalidRequest(format!("invalid header name {name:?}")))?;
            if is_host_owned_header(&name) {
                return Err(FetchError::InvalidRequest(format!(
                    "header {name} is set by the host, not the provider"
                )));
            }
            // HeaderValue refuses CR, LF and NUL, which would split the request.
            let value = HeaderValue::from_str(value).map_err(|_| {
                FetchError::InvalidRequest(format!("header {name} has a value with control characters"))
            })?;
            headers.append(name, value);
        }
        if header_bytes > self.limits.max_header_bytes {
            return Err(FetchError::InvalidRequest(format!(
                "request headers exceed {} bytes",
                self.limits.max_header_bytes
            )));
        }
        Ok(Checked {
            method,
            url,
            origin,
            headers,
            body: req.body,
        })
    }

    fn client(&self) -> Result<&reqwest::Client, FetchError> {
        self.client
            .get_or_init(|| {
                reqwest::Client::builder()
                    // Redirects go back to the provider, whose next fetch is checked again.
                    .redirect(reqwest::redirect::Policy::none())
                    // reqwest honours HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY itself.
                    .dns_resolver(address_policy::resolver())
                    .connect_timeout(self.limits.connect_timeout)
                    .read_timeout(self.limits.total_timeout)
                    .use_rustls_tls()
                    .user_agent(concat!("credence/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("cannot set up the HTTP client: {e}"))
            })
            .as_ref()
            .map_err(|e| FetchError::Transport(e.clone()))
    }

    /// Sends one request, within the time left to the whole provider call.
    /// Returns the response and the origin it went to (for the audit trail).
    pub async fn fetch(&self, req: HttpRequest, time_left: Duration) -> Result<(HttpResponse, Origin), FetchError> {
        let checked = self.check(req)?;
        let origin = checked.origin.clone();
        let budget = self.limits.total_timeout.min(time_left);
        match tokio::time::timeout(budget, self.send(checked)).await {
            Ok(result) => result.map(|r| (r, origin)),
            Err(_) => Err(FetchError::Timeout),
        }
    }

    async fn send(&self, checked: Checked) -> Result<HttpResponse, FetchError> {
        // Through a proxy our resolver never sees the provider's host, so vet it first.
        if !address_policy::proxy_hosts().is_empty() {
            if let Some(url::Host::Domain(name)) = checked.url.host() {
                address_policy::resolve_vetted(name)
                    .await
                    .map_err(|e| FetchError::Denied(e.to_string()))?;
            }
        }
        let client = self.client()?;
        let mut response = client
            .request(checked.method, checked.url)
            .headers(checked.headers)
            .body(checked.body)
            .send()
            .await
            .map_err(transport_error)?;
        if response.headers().len() > self.limits.max_response_headers {
            return Err(FetchError::TooLarge(format!(
                "the response has {} headers; the limit is {}",
                response.headers().len(),
                self.limits.max_response_headers
            )));
        }
        let limit = self.limits.max_response_body;
        if response.content_length().is_some_and(|len| len > limit as u64) {
            return Err(FetchError::TooLarge(format!("the response body exceeds {limit} bytes")));
        }
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > limit {
                return Err(FetchError::TooLarge(format!("the response body exceeds {limit} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse { status, headers, body })
    }
}

fn transport_error(e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        return FetchError::Timeout;
    }
    // The URL inside reqwest's message adds nothing the provider does not know.
    let e = e.without_url();
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        if let Some(forbidden) = cause.downcast_ref::<ForbiddenAddress>() {
            return FetchError::Denied(forbidden.to_string());
        }
        // hyper exposes no predicate for its "too large" parse error to clients, only the text.
        if cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_parse() && h.to_string().contains("too large"))
        {
            return FetchError::TooLarge(
                "the response head (status line and headers) is larger than the client accepts".into(),
            );
        }
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    FetchError::Transport(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(origins: &[&str]) -> HttpCapability {
        HttpCapability::new(
            origins.iter().map(|o| Origin::parse(o).unwrap()).collect(),
            HttpLimits::default(),
        )
    }

    fn get(url: &str) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            url: url.into(),
            headers: vec![],
            body: vec![],
        }
    }

    #[test]
    fn fetch_to_undeclared_origin_is_denied() {
        let c = cap(&["https://allowed.example"]);
        assert!(c.check(get("https://allowed.example/token")).is_ok());
        for bad in [
            "https://allowed.example.evil.example/",
            "https://allowed.example:8443/",
            "http://allowed.example/",
            "https://allowed.example@evil.example/",
            "https://evil.example/?https://allowed.example",
        ] {
            assert!(matches!(c.check(get(bad)), Err(FetchError::Denied(_))), "{bad}");
        }
    }

    #[test]
    fn authority_confusion_in_fetch_urls_is_denied_and_equal_spellings_are_one_origin() {
        let c = cap(&["https://allowed.example", "http://127.0.0.1:8080"]);
        // Spellings `url` normalises to the granted origin are that origin.
        for same in [
            "https://ALLOWED.example/x",
            "https://allowed.example:443/x",
            "http://2130706433:8080/x",
            "http://0177.0.0.1:8080/x",
            "http://0x7f.1:8080/x",
            // WHATWG: `\\` is `/` here, so this is a path on allowed.example. The check and
            // the request use the same parsed `Url`, so no parser differential is possible.
            "https://allowed.example\\@evil.example/x",
        ] {
            assert!(c.check(get(same)).is_ok(), "{same}");
        }
        for other in [
            "https://allowed.example./x",
            "https://xn--allwed-5ya.example/x",
            "https://аllowed.example/x",
            "https://allowed.example%2eevil.example/x",
            "https://[::ffff:127.0.0.1]:8080/x",
            "http://[::1]:8080/x",
            "http://127.0.0.2:8080/x",
            "https://127.0.0.1:8080/x",
            "ftp://allowed.example/x",
        ] {
            assert!(
                matches!(
                    c.check(get(other)),
                    Err(FetchError::Denied(_) | FetchError::InvalidRequest(_))
                ),
                "{other}"
            );
        }
    }

    #[test]
    fn no_origins_means_no_http() {
        assert!(
            matches!(cap(&[]).check(get("https://allowed.example/")), Err(FetchError::Denied(m)) if m.contains("none"))
        );
    }

    #[test]
    fn host_owned_headers_and_split_attempts_are_invalid() {
        let c = cap(&["https://allowed.example"]);
        for (name, value) in [
            ("Host", "evil.example"),
            ("Transfer-Encoding", "chunked"),
            ("Proxy-Authorization", "Basic x"),
            ("X-A", "b\r\nHost: evil.example"),
            ("X-A\r\n", "b"),
            ("X-A", "b\0"),
        ] {
            let mut r = get("https://allowed.example/");
            r.headers.push((name.into(), value.into()));
            assert!(
                matches!(c.check(r), Err(FetchError::InvalidRequest(_))),
                "{name:?}: {value:?}"
            );
        }
        let mut r = get("https://allowed.example/");
        r.method = "CONNECT".into();
        assert!(matches!(c.check(r), Err(FetchError::InvalidRequest(_))));
    }

    #[test]
    fn a_proxy_header_of_any_name_is_refused() {
        let c = cap(&["https://allowed.example"]);
        for name in [
            "Proxy-Foo",
            "proxy-authorization",
            "PROXY-CONNECTION",
            "Proxy-Authenticate",
            "proxy-",
        ] {
            let mut r = get("https://allowed.example/");
            r.headers.push((name.into(), "x".into()));
            assert!(
                matches!(c.check(r), Err(FetchError::InvalidRequest(m)) if m.contains("set by the host")),
                "{name}"
            );
        }
        // Only the prefix is reserved: a name that merely contains `proxy` is the provider's.
        let mut r = get("https://allowed.example/");
        r.headers.push(("X-Proxy-Hint".into(), "x".into()));
        assert!(c.check(r).is_ok());
    }

    #[test]
    fn oversized_requests_are_refused_before_sending() {
        let c = cap(&["https://allowed.example"]);
        let mut r = get("https://allowed.example/");
        r.body = vec![0; (1 << 20) + 1];
        assert!(matches!(c.check(r), Err(FetchError::InvalidRequest(_))));
        let mut r = get("https://allowed.example/");
        r.headers = (0..65).map(|i| (format!("x-{i}"), "v".into())).collect();
        assert!(matches!(c.check(r), Err(FetchError::InvalidRequest(_))));
    }
}
