//! cargo's JSON request lines on stdin, through `front::cargo::parse_request` as
//! `front::cargo::run` feeds them (blank lines skipped).
#![no_main]

mod common;

use credence::front::cargo;
use credence::request::Protocol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for line in common::lines(data) {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(parsed) = cargo::parse_request(line) else {
            continue;
        };
        let req = &parsed.request;
        common::assert_request(req);
        assert_eq!(req.protocol, Protocol::Cargo);
        common::assert_clean("operation", &req.operation);
        for (name, value) in &req.challenge_headers {
            common::assert_clean("header name", name);
            common::assert_clean("header value", value);
        }
        // A 401's headers are the server's challenge (sent on first use too), never a
        // retry: cargo has no retry signal but `login`.
        assert!(!req.is_retry);
        assert!(req.interactive);
    }
});
