//! docker's server name on stdin, through `front::docker::server_url` and `front::request`,
//! as `front::docker::run` uses them for `get` and `erase`.
#![no_main]

mod common;

use credence::front::{self, docker};
use credence::request::Protocol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let Ok(server) = docker::server_url(&raw) else { return };
    common::assert_clean("server URL", &server);
    let name = raw.trim();
    if !name.contains("://") {
        assert_eq!(server, format!("https://{name}/"));
    }
    let Ok(req) = front::request(&server, Protocol::Docker, "pull") else {
        return;
    };
    common::assert_request(&req);
});
