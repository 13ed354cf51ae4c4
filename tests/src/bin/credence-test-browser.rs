//! A stand-in for the user's browser, run by credence through `CREDENCE_BROWSER` in the
//! sign-in tests: it records the authorization URL credence built, follows it to the mock
//! authorization server, pokes the loopback listener the way a hostile page or a confused
//! browser would, then delivers the real callback and checks that the port closes after.
//!
//! Writes one `key=value` line per observation to `$CREDENCE_TEST_BROWSER_REPORT`, ending
//! with `finished=1`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() {
    let launch = std::env::args().nth(1).expect("the URL to open");
    let report_path = std::env::var_os("CREDENCE_TEST_BROWSER_REPORT").expect("CREDENCE_TEST_BROWSER_REPORT");
    let mut report = std::fs::File::create(report_path).expect("the report file");
    let mut note = |k: &str, v: &str| {
        writeln!(report, "{k}={v}").unwrap();
        report.flush().unwrap();
    };
    // What this process was started with (its argv, which other local users can read),
    // then where that one-time address sends the browser.
    note("launch", &launch);
    let (launch_authority, launch_target) = split_url(&launch);
    let started_at = send(
        &launch_authority,
        &format!("GET {launch_target} HTTP/1.1\r\nHost: {launch_authority}\r\n\r\n"),
    );
    let url = location(&started_at).expect("the launch address redirects to the authorization URL");
    note("url", &url);
    let again = send(
        &launch_authority,
        &format!("GET {launch_target} HTTP/1.1\r\nHost: {launch_authority}\r\n\r\n"),
    );
    note("stray.relaunch", status_of(&again));
    let (authority, target) = split_url(&url);
    // The authorization server answers with the redirect to credence's listener.
    let answer = send(
        &authority,
        &format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"),
    );
    let location = location(&answer).expect("the authorization server redirects");
    note("callback", &location);
    let (callback_authority, callback_target) = split_url(&location);
    let path = callback_target.split('?').next().unwrap().to_owned();
    let h = format!("Host: {callback_authority}\r\n");
    let strays = [
        ("favicon", format!("GET /favicon.ico HTTP/1.1\r\n{h}\r\n")),
        (
            "wrong-state",
            format!("GET {path}?code=stolen&state=wrong HTTP/1.1\r\n{h}\r\n"),
        ),
        (
            "error-without-state",
            format!("GET {path}?error=access_denied HTTP/1.1\r\n{h}\r\n"),
        ),
        (
            "post",
            format!("POST {callback_target} HTTP/1.1\r\n{h}Content-Length: 0\r\n\r\n"),
        ),
        (
            "foreign-host",
            format!("GET {callback_target} HTTP/1.1\r\nHost: evil.example\r\n\r\n"),
        ),
        (
            "origin",
            format!("GET {callback_target} HTTP/1.1\r\n{h}Origin: http://evil.example\r\n\r\n"),
        ),
    ];
    for (name, raw) in strays {
        note(&format!("stray.{name}"), status_of(&send(&callback_authority, &raw)));
    }
    let valid = send(
        &callback_authority,
        &format!("GET {callback_target} HTTP/1.1\r\n{h}\r\n"),
    );
    note("callback.status", status_of(&valid));
    let done = send(&callback_authority, &format!("GET /done HTTP/1.1\r\n{h}\r\n"));
    note("done.status", status_of(&done));
    note("done.echoes-code", &done.contains("code=").to_string());
    let started = Instant::now();
    let closed_after = loop {
        if TcpStream::connect(&callback_authority).is_err() {
            break Some(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(5) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    note(
        "closed-after-ms",
        &closed_after.map_or("never".into(), |d| d.as_millis().to_string()),
    );
    note("finished", "1");
}

fn location(answer: &str) -> Option<String> {
    answer
        .lines()
        .find_map(|l| l.strip_prefix("Location: ").or_else(|| l.strip_prefix("location: ")))
        .map(|l| l.trim().to_owned())
}

/// `http://host:port/path?q` → (`host:port`, `/path?q`).
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("a loopback http URL");
    match rest.find('/') {
        Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
        None => (rest.to_owned(), "/".to_owned()),
    }
}

fn send(authority: &str, raw: &str) -> String {
    let Ok(mut s) = TcpStream::connect(authority) else {
        return "refused".into();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(raw.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or("none")
}
