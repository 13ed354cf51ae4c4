//! A hostile provider meets hostile servers and a hostile network: names that resolve to
//! loopback, servers that never answer, trickle, flood headers or send a gigabyte, redirect
//! loops, oversized requests, handle hoarding and a prompt nobody answers. Each ends within
//! its limit with its own message, nothing reaches a server it should not (the servers count
//! their connections), and the next request in the same home works.

use credence_tests::{
    RawServer, Reply, TestServer, assert_refused_then_healthy, hostile_home, read_request_head, write_counted,
};
use std::time::{Duration, Instant};

/// The audit record of the (first) request for the hostile provider's URL.
fn hostile_audit(home: &credence_tests::Home) -> serde_json::Value {
    let trail = std::fs::read_to_string(home.state().join("credence/audit.jsonl")).unwrap();
    trail
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["url"].as_str().is_some_and(|u| u.contains("evil.example")))
        .expect("an audit record for the hostile request")
}

fn fetch_settings(target: &str) -> String {
    format!(r#"attack = "fetch", target = "{target}""#)
}

#[test]
fn a_granted_name_that_resolves_to_loopback_is_refused_and_never_dialled() {
    let server = RawServer::start(|_, _| {});
    // The user granted a *name*; whoever runs its DNS can point it at loopback (rebinding).
    let origin = format!("https://localhost:{}", server.port);
    let home = hostile_home(
        std::slice::from_ref(&origin),
        &fetch_settings(&format!("{origin}/token")),
        "",
    );
    assert_refused_then_healthy(
        &home,
        "localhost resolves only to addresses a provider may not reach through a name: 127.0.0.1 (loopback)",
        3,
    );
    assert_eq!(server.hits(), 0, "no connection was ever made to the loopback server");
    let uses = hostile_audit(&home)["providers"][0]["uses"].to_string();
    assert!(uses.contains("denied: localhost resolves only to"), "{uses}");
}

#[test]
fn the_granted_loopback_literal_itself_is_reachable() {
    // The escape hatch the refusal names: grant the address, not a name for it.
    let server = TestServer::start(|_| Reply::json(200, "{}"));
    let home = hostile_home(
        &[server.origin()],
        &fetch_settings(&format!("{}/token", server.origin())),
        "",
    );
    let run = home.run(&["get", "https://evil.example/"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.stdout, format!("reached {}/token: HTTP 200\n", server.origin()));
    assert_eq!(server.hits(), 1);
}

#[test]
fn a_server_that_never_answers_is_cut_off_by_the_wall_clock() {
    let server = RawServer::start(|mut stream, _| {
        read_request_head(&mut stream);
        std::thread::sleep(Duration::from_secs(60));
        drop(stream);
    });
    let home = hostile_home(&[server.origin()], &fetch_settings(&server.origin()), "wall-ms = 1500");
    let started = Instant::now();
    let run = assert_refused_then_healthy(&home, "provider hostile exceeded its wall-clock limit of 1500 ms", 3);
    assert!(run.elapsed < Duration::from_secs(20), "took {:?}", run.elapsed);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(server.hits(), 1);
}

#[test]
fn a_server_that_trickles_one_byte_a_second_is_cut_off_by_the_wall_clock() {
    let server = RawServer::start(|mut stream, sent| {
        read_request_head(&mut stream);
        if !write_counted(&mut stream, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", sent) {
            return;
        }
        for _ in 0..1000 {
            if !write_counted(&mut stream, b"x", sent) {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let home = hostile_home(&[server.origin()], &fetch_settings(&server.origin()), "wall-ms = 2500");
    let run = assert_refused_then_healthy(&home, "provider hostile exceeded its wall-clock limit of 2500 ms", 3);
    assert!(run.elapsed < Duration::from_secs(20), "took {:?}", run.elapsed);
}

#[test]
fn a_million_response_headers_are_refused_as_too_large() {
    let server = RawServer::start(|mut stream, sent| {
        read_request_head(&mut stream);
        if !write_counted(&mut stream, b"HTTP/1.1 200 OK\r\n", sent) {
            return;
        }
        let thousand: Vec<u8> = (0..1000).flat_map(|i| format!("X-H{i}: v\r\n").into_bytes()).collect();
        for _ in 0..1000 {
            if !write_counted(&mut stream, &thousand, sent) {
                return;
            }
        }
        let _ = write_counted(&mut stream, b"\r\n", sent);
    });
    let home = hostile_home(&[server.origin()], &fetch_settings(&server.origin()), "");
    assert_refused_then_healthy(
        &home,
        "TooLarge(\"the response head (status line and headers) is larger than the client accepts\")",
        3,
    );
}

#[test]
fn a_gigabyte_response_body_is_cut_off_at_the_body_limit() {
    const GIB: usize = 1 << 30;
    let server = RawServer::start(|mut stream, sent| {
        read_request_head(&mut stream);
        if !write_counted(
            &mut stream,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            sent,
        ) {
            return;
        }
        let mut chunk = b"10000\r\n".to_vec();
        chunk.extend(std::iter::repeat_n(b'z', 1 << 16));
        chunk.extend_from_slice(b"\r\n");
        for _ in 0..(GIB >> 16) {
            if !write_counted(&mut stream, &chunk, sent) {
                return;
            }
        }
        let _ = write_counted(&mut stream, b"0\r\n\r\n", sent);
    });
    let home = hostile_home(&[server.origin()], &fetch_settings(&server.origin()), "");
    assert_refused_then_healthy(&home, "TooLarge(\"the response body exceeds 4194304 bytes\")", 3);
    assert!(
        server.sent() < 64 << 20,
        "credence stopped reading long before a gigabyte: the server got {} bytes out",
        server.sent()
    );
}

#[test]
fn a_declared_gigabyte_is_refused_before_reading_the_body() {
    let server = RawServer::start(|mut stream, sent| {
        read_request_head(&mut stream);
        let _ = write_counted(
            &mut stream,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\nzzzz",
            sent,
        );
        std::thread::sleep(Duration::from_secs(30));
    });
    let home = hostile_home(&[server.origin()], &fetch_settings(&server.origin()), "wall-ms = 20000");
    let run = assert_refused_then_healthy(&home, "TooLarge(\"the response body exceeds 4194304 bytes\")", 3);
    assert!(
        run.elapsed < Duration::from_secs(10),
        "no waiting for the body: {:?}",
        run.elapsed
    );
}

#[test]
fn a_redirect_loop_is_stopped_by_the_request_limit() {
    // Every answer redirects to the next hop on the same origin, forever.
    let server = TestServer::start(|seen| {
        let host = seen
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let n: u32 = seen.url.trim_start_matches("/hop/").parse().unwrap_or(0);
        Reply::redirect(&format!("http://{host}/hop/{}", n + 1))
    });
    let home = hostile_home(
        &[server.origin()],
        &format!(r#"attack = "redirect-loop", target = "{}/hop/0""#, server.origin()),
        "",
    );
    assert_refused_then_healthy(
        &home,
        "provider hostile exceeded its limit of 64 HTTP requests in one call",
        3,
    );
    assert_eq!(server.hits(), 64, "the 65th request never left the host");
    // The audit trail shows the limit and every request, the refused 65th included.
    let attempt = &hostile_audit(&home)["providers"][0];
    assert_eq!(
        attempt["limit"], "exceeded its limit of 64 HTTP requests in one call",
        "{attempt}"
    );
    let uses = attempt["uses"].as_array().unwrap();
    assert_eq!(uses.len(), 65, "{attempt}");
    assert!(uses[0].as_str().unwrap().ends_with(": HTTP 302"), "{attempt}");
    assert!(
        uses[64]
            .as_str()
            .unwrap()
            .contains("denied: the limit of 64 HTTP requests"),
        "{attempt}"
    );
}

#[test]
fn a_request_body_over_the_limit_is_refused_before_sending() {
    let server = TestServer::start(|_| Reply::json(200, "{}"));
    let home = hostile_home(
        &[server.origin()],
        &format!(
            r#"attack = "huge-request-body", mib = "32", target = "{}/upload""#,
            server.origin()
        ),
        "memory-mib = 128",
    );
    assert_refused_then_healthy(
        &home,
        "InvalidRequest(\"request body of 33554432 bytes exceeds the limit of 1048576\")",
        3,
    );
    assert_eq!(server.hits(), 0);
}

#[test]
fn hoarding_handles_is_stopped_by_the_handle_limit() {
    let home = hostile_home(&[], r#"attack = "hoard-handles""#, "");
    assert_refused_then_healthy(&home, "provider hostile exceeded its limit of 256 open handles", 3);
}

#[test]
fn a_prompt_nobody_answers_is_cut_off_by_the_wall_clock() {
    // A real terminal (script(1) allocates a pty) on which nobody ever types.
    let home = hostile_home(&[], r#"attack = "prompt-anyway""#, "wall-ms = 1500");
    let command = format!(
        "'{}' get https://evil.example/",
        credence_tests::credence_exe().display()
    );
    let terminal = home.on_terminal(&command, &[], Duration::from_secs(30));
    let screen = terminal.text;
    assert_eq!(terminal.code, Some(3), "{screen}");
    assert!(
        screen.contains("[credence] provider \"hostile\" says: password please"),
        "the prompt is labelled with the verified provider name: {screen}"
    );
    assert!(
        screen.contains("provider hostile exceeded its wall-clock limit of 1500 ms"),
        "{screen}"
    );
    let next = home.run(&["get", "https://good.example/"]);
    assert_eq!(next.stdout, "still-works\n", "{next:#?}");
}

/// Runs the hostile provider fetching `{origin}/token` (granted) with `HTTPS_PROXY` set to a
/// proxy on 127.0.0.1 that records each request head it gets and refuses it.
fn fetch_through_a_recording_proxy(origin: &str) -> (credence_tests::Run, RawServer, Vec<String>) {
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    let proxy = RawServer::start(move |mut stream, sent| {
        let head = read_request_head(&mut stream);
        seen.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
        let _ = write_counted(
            &mut stream,
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
            sent,
        );
    });
    let home = hostile_home(&[origin.to_owned()], &fetch_settings(&format!("{origin}/token")), "");
    let run = home.run_with(&["get", "https://evil.example/"], &[("HTTPS_PROXY", &proxy.origin())]);
    let heads = heads.lock().unwrap().clone();
    (run, proxy, heads)
}

#[test]
fn provider_fetches_go_through_the_users_proxy() {
    let (run, _proxy, heads) = fetch_through_a_recording_proxy("https://127.0.0.1:9");
    assert_eq!(run.code, Some(3), "the proxy refused the tunnel: {run:#?}");
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].starts_with("CONNECT 127.0.0.1:9 HTTP/1.1\r\n"), "{heads:?}");
}

#[test]
fn behind_a_proxy_a_name_that_resolves_to_loopback_is_still_refused() {
    let (run, proxy, heads) = fetch_through_a_recording_proxy("https://localhost:9");
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr
            .contains("localhost resolves only to addresses a provider may not reach through a name"),
        "{}",
        run.stderr
    );
    assert_eq!(proxy.hits(), 0, "nothing was sent to the proxy: {heads:?}");
}
