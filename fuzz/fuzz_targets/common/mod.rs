//! Invariants shared by the protocol targets, and the input shapes the front ends read.
#![allow(dead_code)]

use credence::request::CredentialRequest;
use url::Url;

/// What `front::check_value` lets through: no control character but the tab.
pub fn assert_clean(field: &str, value: &str) {
    assert!(
        !value.chars().any(|c| c.is_control() && c != '\t'),
        "{field} {value:?} passed the injection checks with a control character in it"
    );
}

/// What every request a front end hands to the broker must be: a URL as
/// `parse_request_url` accepts it.
pub fn assert_request(req: &CredentialRequest) {
    assert_request_url(&req.url);
}

/// An absolute http(s) URL with a host, no userinfo, no fragment, and nothing a line
/// protocol could be split on.
pub fn assert_request_url(url: &Url) {
    assert!(matches!(url.scheme(), "https" | "http"), "{url}");
    assert!(url.host().is_some(), "{url}");
    assert!(url.username().is_empty() && url.password().is_none(), "{url}");
    assert!(url.fragment().is_none(), "{url}");
    assert!(!url.as_str().chars().any(char::is_control), "{url:?}");
}

/// Command-line arguments as a front end sees them (`to_string_lossy` of each OsString);
/// NUL separates them because no argument can contain one.
pub fn args(data: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(data).split('\0').map(str::to_owned).collect()
}

/// Splits at the first NUL: one input into an argument and what follows it.
pub fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// The lines of a line-framed protocol, as `front::read_line_bounded` yields them.
pub fn lines(data: &[u8]) -> Vec<&[u8]> {
    if data.is_empty() {
        return Vec::new();
    }
    data.strip_suffix(b"\n")
        .unwrap_or(data)
        .split(|&b| b == b'\n')
        .collect()
}
