//! git's `key=value` attributes on stdin, through `front::git::parse`, `GitRequest::url` and
//! `front::request`, as `front::git::run` uses them.
#![no_main]

mod common;

use credence::front::{self, git};
use credence::request::Protocol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = git::parse(data) else { return };
    // Every attribute may be written back to git (the user name is), so none may carry a
    // second line.
    for (field, value) in [
        ("protocol", &input.protocol),
        ("host", &input.host),
        ("path", &input.path),
        ("username", &input.username),
    ] {
        if let Some(v) = value {
            common::assert_clean(field, v);
        }
    }
    for v in input.capabilities.iter().chain(&input.wwwauth) {
        common::assert_clean("capability[] or wwwauth[]", v);
    }
    let Ok(Some(url)) = input.url() else { return };
    common::assert_clean("url", &url);
    let protocol = input.protocol.as_deref().expect("a URL needs a protocol");
    let host = input.host.as_deref().expect("a URL needs a host");
    let Ok(req) = front::request(&url, Protocol::Git, "read") else {
        return;
    };
    common::assert_request(&req);
    assert_eq!(req.url.scheme(), protocol);
    // The path must never change which server is asked about (CVE-2020-11008 and kin).
    let bare = url::Url::parse(&format!("{protocol}://{host}/")).expect("the host parsed once already");
    assert_eq!(req.url.host_str(), bare.host_str(), "{url:?}");
    assert_eq!(req.url.port_or_known_default(), bare.port_or_known_default(), "{url:?}");
});
