//! NuGet v2 plugin messages on stdin, one per line, through `front::nuget::parse_message`,
//! the handshake (`negotiate`) and `GetAuthenticationCredentials`
//! (`AuthRequest::from_message`, `AuthRequest::credential_request`), as
//! `front::nuget::run_plugin` uses them.
#![no_main]

mod common;

use credence::front::nuget::{self, AuthRequest, Message};
use credence::request::Protocol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for line in common::lines(data) {
        let Ok(Some(msg)) = nuget::parse_message(line) else {
            continue;
        };

        let handshake = nuget::negotiate(msg.payload.as_ref());
        match handshake["ResponseCode"].as_str() {
            // credence speaks exactly 2.0.0 and never offers more than it speaks.
            Some("Success") => assert_eq!(handshake["ProtocolVersion"], "2.0.0", "{handshake}"),
            // NuGet rejects a failed handshake that carries a version.
            Some("Error") => assert!(handshake.get("ProtocolVersion").is_none(), "{handshake}"),
            _ => panic!("handshake answer without a response code: {handshake}"),
        }

        // A reply echoes the request's id and method; it must still be one line.
        let reply = Message {
            request_id: msg.request_id.clone(),
            kind: "Response".into(),
            method: msg.method.clone(),
            payload: Some(handshake),
        };
        let text = serde_json::to_string(&reply).expect("messages serialise");
        assert!(!text.contains('\n') && !text.contains('\r'), "{text:?}");
        let back = nuget::parse_message(text.as_bytes())
            .expect("a reply parses")
            .expect("a reply is not blank");
        assert_eq!(
            (back.request_id, back.method),
            (msg.request_id.clone(), msg.method.clone())
        );

        let Ok(auth) = AuthRequest::from_message(&msg) else {
            continue;
        };
        let Ok(req) = auth.credential_request() else { continue };
        common::assert_request(&req);
        assert_eq!(req.protocol, Protocol::Nuget);
    }
});
