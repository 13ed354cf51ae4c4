//! `KUBERNETES_EXEC_INFO`, then after the first NUL the exec arguments (NUL-separated),
//! through `front::kubectl::parse_request` as `front::kubectl::run` uses them.
#![no_main]

mod common;

use credence::front::kubectl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (info, rest) = common::split_nul(data);
    // std::env::var yields only UTF-8; anything else never reaches the parser.
    let Ok(info) = std::str::from_utf8(info) else { return };
    let args = if rest.is_empty() {
        Vec::new()
    } else {
        common::args(rest)
    };
    let Ok(parsed) = kubectl::parse_request(info, &args) else {
        return;
    };
    common::assert_request(&parsed.request);
    // The answer carries this apiVersion back to client-go.
    assert!(
        matches!(
            parsed.api_version.as_str(),
            "client.authentication.k8s.io/v1" | "client.authentication.k8s.io/v1beta1"
        ),
        "{:?}",
        parsed.api_version
    );
});
