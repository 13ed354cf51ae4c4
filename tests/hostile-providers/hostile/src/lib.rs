//! One hostile provider with many faces, chosen by the `attack` setting, so the tests
//! build one component instead of one per attack.

wit_bindgen::generate!({ path: "../../../wit/v0.1", world: "provider" });

use credence::provider::http::{self, Request};
use credence::provider::prompt::{self, InputKind};
use exports::credence::provider::credential_provider::{
    CachePolicy, Credential, CredentialError, CredentialRequest, Guest,
};

struct Hostile;

// The raw WASI import behind `std::io::stderr()`, whose handle std drops at once; called
// directly, each call leaves one more handle in the host's table.
#[link(wasm_import_module = "wasi:cli/stderr@0.2.6")]
unsafe extern "C" {
    #[link_name = "get-stderr"]
    fn get_stderr() -> i32;
}

// The raw WASI clock and poll imports, to spin on pollables that are ready at once.
#[link(wasm_import_module = "wasi:clocks/monotonic-clock@0.2.6")]
unsafe extern "C" {
    #[link_name = "subscribe-duration"]
    fn subscribe_duration(nanos: i64) -> i32;
}
#[link(wasm_import_module = "wasi:io/poll@0.2.6")]
unsafe extern "C" {
    #[link_name = "[method]pollable.block"]
    fn pollable_block(pollable: i32);
}

fn setting<'a>(req: &'a CredentialRequest, key: &str) -> &'a str {
    req.settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or("")
}

fn credential(secret: String) -> Credential {
    Credential { username: None, secret, headers: Vec::new(), expires_at: None, cache: CachePolicy::Never, new_state: None }
}

fn get(url: &str) -> Result<http::Response, CredentialError> {
    http::fetch(&Request { method: "GET".into(), url: url.into(), headers: Vec::new(), body: Vec::new() })
        .map_err(|e| CredentialError::Failed(format!("fetch refused: {e:?}")))
}

impl Guest for Hostile {
    fn get_credential(req: CredentialRequest) -> Result<Credential, CredentialError> {
        match setting(&req, "attack") {
            // Burns CPU forever; only the epoch deadline stops it.
            "infinite-loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            // Sleeps (a blocking `wasi:io/poll` on a monotonic-clock pollable) for `ms`, as a
            // device-flow provider waiting between polls does, or forever.
            "sleep" => {
                let ms: u64 = setting(&req, "ms").parse().unwrap_or(u64::MAX);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(credential(format!("slept {ms} ms")))
            }
            // Burns CPU in host calls: blocks, forever, on pollables that are ready at once.
            "spin-poll" => {
                // SAFETY: WASI imports taking and returning plain handles and integers.
                let ready = unsafe { subscribe_duration(0) };
                loop {
                    unsafe { pollable_block(ready) };
                }
            }
            // Grows memory 1 MiB at a time until something gives.
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![0xA5; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            // Calls `target` (an origin nobody granted, or a server that misbehaves) and
            // returns what the host said.
            "undeclared-host" | "fetch" => {
                let target = setting(&req, "target");
                let response = get(target)?;
                Ok(credential(format!("reached {target}: HTTP {}", response.status)))
            }
            // Follows a redirect by hand, wherever it points.
            "follow-redirect" => {
                let first = get(setting(&req, "target"))?;
                let location = first
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("location"))
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| CredentialError::Failed(format!("no redirect (HTTP {})", first.status)))?;
                let second = get(&location)?;
                Ok(credential(format!("followed to {location}: HTTP {}", second.status)))
            }
            // Follows same-origin redirects by hand for as long as the server sends them.
            "redirect-loop" => {
                let mut url = setting(&req, "target").to_owned();
                for hop in 0.. {
                    let response = get(&url).map_err(|e| CredentialError::Failed(format!("hop {hop}: {e:?}")))?;
                    match response.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("location")) {
                        Some((_, location)) => url = location.clone(),
                        None => return Ok(credential(format!("loop ended after {hop} hops"))),
                    }
                }
                unreachable!()
            }
            // Fetches with a method that redraws the terminal and forges a line, padded with
            // `pad-kib` KiB, `repeat` times, for whoever reads the audit trail or the logs.
            "forged-method" => {
                let repeat: usize = setting(&req, "repeat").parse().unwrap_or(1);
                let pad_kib: usize = setting(&req, "pad-kib").parse().unwrap_or(0);
                let method = format!(
                    "GET\x1b]0;pwned\x07\x1b[2J\r\n{{\"forged\":true}} <forged line>{}",
                    "A".repeat(pad_kib << 10)
                );
                for _ in 0..repeat {
                    let _ = http::fetch(&Request {
                        method: method.clone(),
                        url: setting(&req, "target").into(),
                        headers: vec![(method.clone(), "x".into())],
                        body: Vec::new(),
                    });
                }
                Ok(credential("forged".into()))
            }
            // Hands the host a request body far over its limit.
            "huge-request-body" => {
                let mib: usize = setting(&req, "mib").parse().unwrap_or(32);
                let response = http::fetch(&Request {
                    method: "POST".into(),
                    url: setting(&req, "target").into(),
                    headers: Vec::new(),
                    body: vec![0x5A; mib << 20],
                })
                .map_err(|e| CredentialError::Failed(format!("fetch refused: {e:?}")))?;
                Ok(credential(format!("sent: HTTP {}", response.status)))
            }
            // Opens WASI handles and never closes them, to exhaust the host's resource table.
            "hoard-handles" => {
                let mut hoard = Vec::new();
                loop {
                    // SAFETY: a WASI import with no arguments that returns a new handle.
                    hoard.push(unsafe { get_stderr() });
                    std::hint::black_box(&hoard);
                }
            }
            // An answer far larger than any credential (size in MiB from `mib`).
            "huge-answer" => {
                let mib: usize = setting(&req, "mib").parse().unwrap_or(100);
                Ok(credential("x".repeat(mib << 20)))
            }
            // Tries to prompt even though the tool said non-interactive.
            "prompt-anyway" => match prompt::ask("password please", InputKind::Secret) {
                Ok(answer) => Ok(credential(answer)),
                Err(e) => Err(CredentialError::Failed(format!("prompt refused: {e:?}"))),
            },
            // Spoofs a terminal: escape sequences, a fake credence label and a bidi override.
            "spoof-prompt" => match prompt::show("\x1b[2J\x1b[H\r[credence] trusted: enter your password\u{202e}txt.exe") {
                Ok(()) => Ok(credential("shown".into())),
                Err(e) => Err(CredentialError::Failed(format!("show refused: {e:?}"))),
            },
            // Claims an expiry no tool can represent (`expires-at`, default u64::MAX).
            "far-future-expiry" => Ok(Credential {
                expires_at: Some(setting(&req, "expires-at").parse().unwrap_or(u64::MAX)),
                cache: CachePolicy::UntilExpiry,
                ..credential("far-future".into())
            }),
            // Keeps each request's URL in a `static` and answers with the one it kept
            // before: a provider instance shared between requests would hand one
            // request's data to the next. A fresh instance per request answers `fresh`.
            "leak-static" => {
                static LAST: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
                let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
                let previous = last.replace(req.url.clone());
                Ok(credential(match previous {
                    Some(previous) => format!("leaked {previous} into {}", req.url),
                    None => format!("fresh {}", req.url),
                }))
            }
            "panic" => panic!("hostile provider panicked on purpose"),
            // Declines, so the host must try the next provider.
            "not-mine" => Err(CredentialError::NotMine),
            // Smuggles a second protocol field into its answer.
            "newline-secret" => Ok(credential("token\npassword=stolen".into())),
            other => Err(CredentialError::NotFound(format!("unknown attack {other:?}"))),
        }
    }
}

export!(Hostile);
