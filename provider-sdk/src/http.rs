//! HTTP helpers on top of [`Host::fetch`]: form POSTs, JSON, Basic authentication.

use crate::{Error, Host, HttpRequest, HttpResponse, Result};
use base64::Engine as _;

/// `application/x-www-form-urlencoded` of `pairs`.
pub fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish().into_bytes()
}

/// The `Authorization` value of HTTP Basic (RFC 7617).
pub fn basic(username: &str, password: &str) -> String {
    let raw = format!("{username}:{password}");
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

/// POSTs a form and asks for JSON back.
pub fn post_form(
    host: &mut dyn Host,
    url: &str,
    pairs: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Result<HttpResponse> {
    send(
        host,
        "POST",
        url,
        Some("application/x-www-form-urlencoded"),
        headers,
        form(pairs),
    )
}

/// POSTs `body` as JSON and asks for JSON back.
pub fn post_json(
    host: &mut dyn Host,
    url: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> Result<HttpResponse> {
    send(
        host,
        "POST",
        url,
        Some("application/json"),
        headers,
        body.to_string().into_bytes(),
    )
}

/// GETs `url` asking for JSON.
pub fn get_json(host: &mut dyn Host, url: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
    send(host, "GET", url, None, headers, Vec::new())
}

/// One request that asks for JSON back, its body of `content_type`.
fn send(
    host: &mut dyn Host,
    method: &str,
    url: &str,
    content_type: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<HttpResponse> {
    let mut all: Vec<(String, String)> = content_type
        .map(|t| ("Content-Type".to_owned(), t.to_owned()))
        .into_iter()
        .collect();
    all.push(("Accept".to_owned(), "application/json".to_owned()));
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Ok(host.fetch(HttpRequest {
        method: method.into(),
        url: url.into(),
        headers: all,
        body,
    })?)
}

/// The body as JSON of type `T`.
pub fn json<T: serde::de::DeserializeOwned>(response: &HttpResponse) -> Result<T> {
    serde_json::from_slice(&response.body).map_err(Error::from)
}
