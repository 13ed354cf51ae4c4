//! The audit trail and secret hygiene: every decision is one JSON line that says who asked,
//! which provider (identity, signers), what it did and what came of it, and no secret ever
//! reaches a log line, an error message or the audit file.

use credence_tests::{Home, Reply, TestServer, manifest};

const CLIENT_SECRET: &str = "cs-5ecret-Zq81";
const ACCESS_TOKEN: &str = "at-T0ken-Vx42";
const REFRESH_TOKEN: &str = "rt-Refr3sh-Kp77";
const STATIC_TOKEN: &str = "st-Stat1c-Hw09";

fn world() -> (Home, TestServer, TestServer) {
    let tokens = TestServer::start(|req| {
        if req.body.contains(CLIENT_SECRET) || req.body.contains(REFRESH_TOKEN) {
            Reply::json(
                200,
                &format!(r#"{{"access_token":"{ACCESS_TOKEN}","expires_in":30,"refresh_token":"{REFRESH_TOKEN}"}}"#),
            )
        } else {
            Reply::json(401, "{}")
        }
    });
    let target = TestServer::start(|_| Reply::json(200, "{}"));
    let home = Home::new();
    home.install(
        "token-exchange",
        "token-exchange",
        &manifest("token-exchange", &[tokens.origin()], &[]),
    );
    home.install("static-token", "static-token", &manifest("static-token", &[], &[]));
    home.install("hostile", "hostile", &manifest("hostile", &[], &["show"]));
    let key = home.keygen("publisher");
    home.trust(&key, "p", "publisher", "token-exchange,static-token,hostile");
    for stem in ["token-exchange", "static-token", "hostile"] {
        home.sign(stem, &key, &[]);
    }
    home.write_config(&format!(
        r#"
[[provider]]
name = "feed"
component = "token-exchange.wasm"
serves = ["https://feed.example/"]
grant-origins = ["{o}"]
settings = {{ token-url = "{o}/token", client-id = "ci", client-secret = "{CLIENT_SECRET}" }}

[[provider]]
name = "registry"
component = "static-token.wasm"
serves = ["https://registry.example/"]
settings = {{ token = "{STATIC_TOKEN}", header = "bearer" }}

[[provider]]
name = "greedy"
component = "hostile.wasm"
serves = ["https://greedy.example/"]
settings = {{ attack = "infinite-loop" }}
limits = {{ cpu-ms = 200 }}

[[provider]]
name = "sneaky"
component = "hostile.wasm"
serves = ["https://sneaky.example/"]
settings = {{ attack = "undeclared-host", target = "{t}/steal" }}
"#,
        o = tokens.origin(),
        t = target.origin()
    ));
    (home, tokens, target)
}

fn records(home: &Home, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["audit", "--json"];
    args.extend_from_slice(extra);
    let run = home.run(&args);
    assert_eq!(run.code, Some(0), "{run:#?}");
    run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn each_decision_is_one_audit_line_naming_provider_uses_and_outcome() {
    let (home, tokens, target) = world();
    assert_eq!(
        home.run(&["get", "https://feed.example/v3/index.json?sig=abc"]).code,
        Some(0)
    );
    assert_eq!(
        home.run(&["git", "get"]).code,
        Some(1),
        "no input: refused before any decision"
    );
    assert_eq!(home.run(&["get", "https://nobody.example/"]).code, Some(1));
    assert_eq!(home.run(&["get", "https://greedy.example/"]).code, Some(3));
    assert_eq!(home.run(&["get", "https://sneaky.example/"]).code, Some(3));
    assert_eq!(target.hits(), 0);

    let all = records(&home, &[]);
    assert_eq!(all.len(), 4, "{all:#?}");
    let feed = &all[0];
    assert_eq!(feed["protocol"], "generic");
    assert_eq!(
        feed["url"], "https://feed.example/v3/index.json",
        "no query in the audit trail"
    );
    assert_eq!(feed["outcome"], "credential");
    assert_eq!(feed["source"], "provider");
    assert_eq!(feed["credential_fingerprint"].as_str().unwrap().len(), 8);
    let attempt = &feed["providers"][0];
    assert_eq!(attempt["instance"], "feed");
    assert_eq!(attempt["provider"], "token-exchange");
    assert_eq!(attempt["version"], "0.1.0");
    assert_eq!(attempt["sha256"].as_str().unwrap().len(), 64);
    assert!(attempt["signers"][0].as_str().unwrap().starts_with("publisher "));
    assert_eq!(attempt["uses"][0], format!("fetch POST {}: HTTP 200", tokens.origin()));
    assert_eq!(all[1]["outcome"], "not-served");
    assert_eq!(all[2]["providers"][0]["limit"], "exceeded its CPU time limit of 200 ms");
    assert!(
        all[3]["providers"][0]["uses"][0]
            .as_str()
            .unwrap()
            .contains("is not an allowed origin"),
        "{:#?}",
        all[3]
    );

    assert_eq!(records(&home, &["--provider", "greedy"]).len(), 1);
    assert_eq!(records(&home, &["--provider", "token-exchange"]).len(), 1);
    assert_eq!(records(&home, &["--since", "1h"]).len(), 4);
    assert_eq!(records(&home, &["--since", "4102444800"]).len(), 0);
    let text = home.run(&["audit"]);
    assert_eq!(text.stdout.lines().count(), 4, "{}", text.stdout);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let path = home.state().join("credence/audit.jsonl");
        assert_eq!(std::fs::metadata(path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

#[test]
fn the_same_secret_has_the_same_fingerprint_and_a_git_erase_is_audited_as_rejected() {
    let (home, _, _) = world();
    home.run(&["get", "https://registry.example/"]);
    home.run(&["get", "https://registry.example/"]);
    let all = records(&home, &[]);
    assert_eq!(all[0]["credential_fingerprint"], all[1]["credential_fingerprint"]);
    assert_eq!(
        home.run_stdin(&["git", "erase"], b"protocol=https\nhost=registry.example\n", &[])
            .code,
        Some(0)
    );
    assert_eq!(records(&home, &[]).last().unwrap()["outcome"], "rejected");
}

#[test]
fn an_audit_trail_that_cannot_be_written_is_a_warning_on_stderr_not_a_failed_fetch() {
    let (home, _, _) = world();
    // The state dir is a file: nothing under it can be created.
    let blocked = home.dir.path().join("blocked");
    std::fs::write(&blocked, b"").unwrap();
    let run = home.run_with(
        &["get", "https://registry.example/"],
        &[("XDG_STATE_HOME", blocked.to_str().unwrap())],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(
        run.stdout,
        format!("{STATIC_TOKEN}\n"),
        "stdout is the protocol's alone"
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("credence: warning: cannot write the audit trail")),
        "{}",
        run.stderr
    );
}

/// Every secret the scenarios use, in every form it could leak in.
fn secrets() -> Vec<String> {
    let mut v: Vec<String> = [CLIENT_SECRET, ACCESS_TOKEN, REFRESH_TOKEN, STATIC_TOKEN]
        .iter()
        .map(|s| s.to_string())
        .collect();
    use base64::Engine;
    v.push(base64::engine::general_purpose::STANDARD.encode(format!("credence:{STATIC_TOKEN}")));
    v
}

#[test]
fn with_the_most_verbose_logging_no_secret_reaches_a_log_an_error_or_the_audit_trail() {
    let (home, _, _) = world();
    let trace = [("CREDENCE_LOG", "trace")];
    let mut captured = String::new();
    let mut run = |args: &[&str], stdin: &str| {
        let r = home.run_stdin(args, stdin.as_bytes(), &trace);
        captured.push_str(&r.stderr);
        r
    };
    // Successes, a refresh through provider state, retries, failures, every protocol.
    run(&["get", "https://feed.example/"], "");
    run(&["get", "https://feed.example/", "--retry"], "");
    run(&["get", "https://feed.example/"], "");
    run(&["get", "https://registry.example/"], "");
    run(&["get", "https://greedy.example/"], "");
    run(&["get", "https://sneaky.example/"], "");
    run(&["git", "get"], "protocol=https\nhost=feed.example\n");
    run(
        &["git", "erase"],
        &format!("protocol=https\nhost=feed.example\nusername=credence\npassword={ACCESS_TOKEN}\n"),
    );
    run(
        &["git", "store"],
        &format!("protocol=https\nhost=feed.example\nusername=credence\npassword={ACCESS_TOKEN}\n"),
    );
    run(
        &["--cargo-plugin"],
        "{\"v\":1,\"registry\":{\"index-url\":\"sparse+https://registry.example/\"},\"kind\":\"get\",\"operation\":\"read\"}\n",
    );
    run(&["docker", "get"], "registry.example");
    run(&["bazel", "get"], r#"{"uri":"https://registry.example/x"}"#);
    run(&["keyring", "get", "registry.example", "u"], "");
    run(&["nuget-v1", "-uri", "https://feed.example/v3/index.json"], "");
    run(&["providers"], "");
    run(&["audit"], "");
    assert!(
        captured.contains("TRACE") || captured.contains("DEBUG"),
        "verbose logging was on"
    );

    let audit = std::fs::read_to_string(home.state().join("credence/audit.jsonl")).unwrap();
    assert!(audit.lines().count() >= 10);
    for secret in secrets() {
        assert!(
            !captured.contains(&secret),
            "secret {secret:?} in stderr/logs:\n{captured}"
        );
        assert!(!audit.contains(&secret), "secret {secret:?} in the audit trail");
    }
}

#[test]
fn audit_since_with_a_non_ascii_unit_or_a_huge_age_is_a_usage_error_not_a_panic() {
    let home = Home::new();
    for bad in ["5é", "999999999999999999d", "yesterday"] {
        let run = home.run(&["audit", "--since", bad]);
        assert_eq!(run.code, Some(2), "{bad:?}: {run:#?}");
        assert!(
            run.stderr.contains("is not Unix seconds, an RFC 3339 time"),
            "{bad:?}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    for good in ["2026-01-01T00:00:00Z", "1h30m", "7d", "0"] {
        let run = home.run(&["audit", "--since", good]);
        assert_eq!(run.code, Some(0), "{good:?}: {run:#?}");
    }
}

#[test]
fn a_forged_fetch_method_cannot_forge_or_bloat_the_audit_trail_or_the_log() {
    // A method that sets the terminal title, clears the screen and starts a forged line,
    // padded to 16 KiB and sent 64 times (it used to make one 12 MB audit line).
    let server = TestServer::start(|_| Reply::json(200, "{}"));
    let settings = format!(
        r#"attack = "forged-method", repeat = "64", pad-kib = "16", target = "{}/x""#,
        server.origin()
    );
    let home = credence_tests::hostile_home(&[server.origin()], &settings, "");
    let run = home.run_with(&["get", "https://evil.example/"], &[("CREDENCE_LOG", "credence=debug")]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(server.hits(), 0, "the method was refused before sending");
    let forged = |text: &str| text.contains('\x1b') || text.contains('\r') || text.contains('\x07');
    assert!(!forged(&run.stderr), "raw escapes in the debug log: {:?}", run.stderr);
    assert!(
        run.stderr.contains("provider fetch"),
        "the fetches were logged: {}",
        run.stderr
    );
    assert!(
        run.stderr.lines().all(|l| !l.starts_with("{\"forged\"")),
        "a forged log line: {}",
        run.stderr
    );

    let file = std::fs::read_to_string(home.state().join("credence/audit.jsonl")).unwrap();
    assert_eq!(file.lines().count(), 1, "one decision, one line");
    assert!(file.len() <= 16 * 1024 + 1, "a bounded record: {} bytes", file.len());
    let text = home.run(&["audit"]);
    assert_eq!(text.code, Some(0), "{text:#?}");
    assert_eq!(text.stdout.lines().count(), 1, "{:?}", text.stdout);
    assert!(
        !forged(&text.stdout),
        "raw escapes in `credence audit`: {:?}",
        text.stdout
    );
    assert!(text.stdout.contains("fetch GET\\u{1b}]0;pwned"), "{}", text.stdout);
    assert!(text.stdout.contains("more uses not recorded"), "{}", text.stdout);
}
