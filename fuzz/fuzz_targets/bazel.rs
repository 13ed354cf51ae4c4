//! Bazel's `{"uri": …}` on stdin, through `front::bazel::parse_request` as
//! `front::bazel::run` uses it.
#![no_main]

mod common;

use credence::front::bazel;
use credence::request::Protocol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = bazel::parse_request(data) else { return };
    common::assert_request(&req);
    assert_eq!(req.protocol, Protocol::Bazel);
});
