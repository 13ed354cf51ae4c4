//! A self-contained tour of credence on built-in defaults: a temporary home, the sample
//! providers, and a mock package feed on 127.0.0.1 that wants a bearer token.

use credence_tests::{Home, Reply, TestServer, manifest};
use std::sync::{Arc, Mutex};

fn step(title: &str) {
    println!("\n== {title}");
}

fn show(home: &Home, args: &[&str]) -> credence_tests::Run {
    println!("$ credence {}", args.join(" "));
    let run = home.run(args);
    for line in run.stdout.lines() {
        println!("  {line}");
    }
    for line in run.stderr.lines() {
        println!("  (stderr) {line}");
    }
    println!("  (exit {})", run.code.map_or("signal".into(), |c| c.to_string()));
    run
}

fn main() {
    // The mock feed: /token trades client credentials for a session token, and
    // /v3/index.json answers only with that token.
    let issued: Arc<Mutex<Vec<String>>> = Arc::default();
    let tokens = issued.clone();
    let feed = TestServer::start(move |req| match (req.method.as_str(), req.url.as_str()) {
        ("POST", "/token") if req.body.contains("client_secret=demo-client-secret") => {
            let token = format!("session-{}", tokens.lock().unwrap().len() + 1);
            tokens.lock().unwrap().push(token.clone());
            Reply::json(200, &format!(r#"{{"access_token":"{token}","expires_in":3600}}"#))
        }
        ("POST", "/token") => Reply::json(401, r#"{"error":"invalid_client"}"#),
        (_, "/v3/index.json") => {
            let auth = req
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.clone());
            match auth {
                Some(v) if tokens.lock().unwrap().iter().any(|t| v == format!("Bearer {t}")) => {
                    Reply::json(200, r#"{"version":"3.0.0","resources":[]}"#)
                }
                _ => Reply::json(401, r#"{"error":"token required"}"#),
            }
        }
        _ => Reply::json(404, "{}"),
    });
    let origin = feed.origin();

    let home = Home::new();
    home.install(
        "token-exchange",
        "token-exchange",
        &manifest("token-exchange", &[origin.clone()], &[]),
    );
    home.install("static-token", "static-token", &manifest("static-token", &[], &[]));
    home.install("hostile", "hostile", &manifest("hostile", &[], &[]));
    home.write_config(&format!(
        r#"# Written by the demo in a temporary CREDENCE_HOME.
[[provider]]
name = "feed"
component = "token-exchange.wasm"
serves = ["{origin}/v3/"]
grant-origins = ["{origin}"]
[provider.settings]
token-url = "{origin}/token"
client-id = "demo"
client-secret = "demo-client-secret"

[[provider]]
name = "registry"
component = "static-token.wasm"
serves = ["https://registry.example/"]
settings = {{ token = "static-registry-token" }}

[[provider]]
name = "greedy"
component = "hostile.wasm"
serves = ["https://greedy.example/"]
settings = {{ attack = "infinite-loop" }}
limits = {{ cpu-ms = 200 }}
"#
    ));
    println!("credence demo: home {}, mock feed {origin}", home.home().display());

    step("A publisher key, trusted for the sample providers, signs each component with its manifest");
    let key = home.keygen("demo-publisher");
    println!("  public key: {}  (key id {})", key.public, key.id);
    home.trust(
        &key,
        "Demo publisher",
        "publisher",
        "token-exchange,static-token,hostile",
    );
    for stem in ["token-exchange", "static-token", "hostile"] {
        let digest = home.sign(stem, &key, &[]);
        println!("  signed {stem}.wasm -> {stem}.statement.json (statement digest {digest})");
    }

    step("What a reviewer sees: credence inspect");
    let component = home.provider_file("token-exchange.wasm");
    show(&home, &["inspect", component.to_str().unwrap()]);

    step("Which providers are configured, and what may each do?");
    show(&home, &["providers"]);

    step("A tool asks for the feed: token-exchange trades the client secret for a session token");
    let url = format!("{origin}/v3/index.json");
    let run = show(&home, &["get", &url, "--json"]);
    let token = run.json()["secret"].as_str().unwrap_or_default().to_owned();

    step("The token opens the feed");
    let status = http_get(&feed, "/v3/index.json", &token);
    println!("  GET {url} with the token -> HTTP {status}");

    step("Asked again: the stored credential answers until it expires; no provider runs");
    show(&home, &["get", &url, "--json"]);
    println!("  token endpoint calls so far: {}", issued.lock().unwrap().len());

    step("A static token for another registry");
    show(&home, &["get", "https://registry.example/index/config.json"]);

    step("A URL nobody serves is not mine (exit 1)");
    show(&home, &["get", "https://elsewhere.example/"]);

    step("A provider that never returns is stopped by its CPU limit (exit 3)");
    show(&home, &["get", "https://greedy.example/"]);

    step("One flipped bit in a signed component: refused before it is compiled (exit 3)");
    let path = home.provider_file("static-token.wasm");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    show(&home, &["get", "https://registry.example/index/config.json"]);

    step("Every answer above came from one agent, started by the first request");
    show(&home, &["agent", "status"]);

    step("Forget stored state and credentials");
    show(&home, &["logout"]);

    step("Stop the agent (it also stops by itself after 30 idle minutes)");
    show(&home, &["agent", "stop"]);
}

/// A plain HTTP/1.1 GET to the mock feed with a bearer token; returns the status code.
fn http_get(server: &TestServer, path: &str, token: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect to the mock feed");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
