//! GOAUTH's URL argument and response head on stdin (separated by the first NUL), through
//! `front::goauth::parse_request` as `front::goauth::run` uses them.
#![no_main]

mod common;

use credence::front::goauth;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (url, head) = common::split_nul(data);
    let url = String::from_utf8_lossy(url);
    let head = String::from_utf8_lossy(head);
    let Ok(req) = goauth::parse_request(&url, &head) else {
        return;
    };
    common::assert_request(&req);
    assert_eq!(req.url.scheme(), "https");
    for (name, value) in &req.challenge_headers {
        assert_eq!(name, "WWW-Authenticate");
        common::assert_clean("challenge", value);
    }
});
