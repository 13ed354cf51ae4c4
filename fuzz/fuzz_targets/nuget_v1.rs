//! nuget.exe's v1 arguments (NUL-separated), through `front::nuget::parse_v1_args` and
//! `front::request`, as `front::nuget::run_v1` uses them.
#![no_main]

mod common;

use credence::front::{self, nuget};
use credence::request::Protocol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let args = common::args(data);
    let parsed = nuget::parse_v1_args(&args);
    let Some(uri) = parsed.uri else { return };
    let Ok(req) = front::request(&uri, Protocol::Nuget, "download") else {
        return;
    };
    common::assert_request(&req);
});
