//! The `keyring` command line (NUL-separated arguments), through `front::keyring::parse` and
//! `Invocation::credential_request`, as `front::keyring::run` uses them for `get`.
#![no_main]

mod common;

use credence::front::keyring;
use credence::request::Protocol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let args = common::args(data);
    let Ok(inv) = keyring::parse(&args) else { return };
    // Plain `get` answers with the password only, so it needs the user name up front.
    assert!(
        inv.command != "get" || inv.creds_mode || inv.username.is_some(),
        "{inv:?}"
    );
    if inv.command != "get" {
        return;
    }
    let Ok(req) = inv.credential_request() else { return };
    common::assert_request(&req);
    assert_eq!(req.protocol, Protocol::Keyring);
    assert_eq!(req.username_hint, inv.username);
});
