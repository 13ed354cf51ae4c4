//! Conformance of every front end, driving the real binary over stdin/stdout as each tool
//! does: success forms, error forms and exit codes, and injection attempts that must be
//! answered in the protocol's error form without any provider running.

use credence_tests::{Home, NuGet, Reply, TestServer, credence_exe, manifest};
use std::time::{Duration, Instant};

/// Signed static-token for https://registry.example/ and token-exchange for
/// https://feed.example/ (whose token server counts every call).
struct World {
    home: Home,
    tokens: TestServer,
}

fn world_with_delay(delay: Duration) -> World {
    let tokens = TestServer::start(move |req| {
        std::thread::sleep(delay);
        if req.url == "/token" {
            Reply::json(200, r#"{"access_token":"tok-feed","expires_in":7200}"#)
        } else {
            Reply::json(404, "{}")
        }
    });
    let home = Home::new();
    home.install("static-token", "static-token", &manifest("static-token", &[], &[]));
    home.install(
        "token-exchange",
        "token-exchange",
        &manifest("token-exchange", &[tokens.origin()], &[]),
    );
    let key = home.keygen("publisher");
    home.trust(&key, "p", "publisher", "static-token,token-exchange");
    home.sign("static-token", &key, &[]);
    home.sign("token-exchange", &key, &[]);
    home.write_config(&format!(
        r#"
[[provider]]
name = "registry"
component = "static-token.wasm"
serves = ["https://registry.example/"]
settings = {{ token = "tok-static", username = "ci" }}

[[provider]]
name = "feed"
component = "token-exchange.wasm"
serves = ["https://feed.example/"]
grant-origins = ["{o}"]
settings = {{ token-url = "{o}/token", client-id = "c", client-secret = "s" }}
"#,
        o = tokens.origin()
    ));
    World { home, tokens }
}

fn world() -> World {
    world_with_delay(Duration::ZERO)
}

impl World {
    fn run(&self, args: &[&str], stdin: &str) -> credence_tests::Run {
        self.home.run_stdin(args, stdin.as_bytes(), &[])
    }
    fn run_env(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> credence_tests::Run {
        self.home.run_stdin(args, stdin.as_bytes(), env)
    }
}

// ---------------------------------------------------------------- cargo

fn cargo_exchange(w: &World, request: &str) -> Vec<String> {
    let run = w.run(&["--cargo-plugin"], &format!("{request}\n"));
    assert_eq!(run.code, Some(0), "{run:#?}");
    run.stdout.lines().map(str::to_owned).collect()
}

#[test]
fn cargo_hello_comes_first_and_get_answers_with_cache_and_expiry() {
    let w = world();
    let lines = cargo_exchange(
        &w,
        r#"{"v":1,"registry":{"index-url":"sparse+https://feed.example/index/","name":"feed"},"kind":"get","operation":"read","args":[]}"#,
    );
    assert_eq!(lines[0], r#"{"v":[1]}"#);
    let answer: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(answer["Ok"]["kind"], "get");
    assert_eq!(answer["Ok"]["token"], "Bearer tok-feed");
    assert_eq!(answer["Ok"]["cache"], "expires");
    assert!(answer["Ok"]["expiration"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(answer["Ok"]["operation_independent"], true);
}

#[test]
fn cargo_error_forms() {
    let w = world();
    let unserved = cargo_exchange(
        &w,
        r#"{"v":1,"registry":{"index-url":"sparse+https://other.example/"},"kind":"get","operation":"read"}"#,
    );
    assert_eq!(unserved[1], r#"{"Err":{"kind":"url-not-supported"}}"#);
    let version = cargo_exchange(
        &w,
        r#"{"v":2,"registry":{"index-url":"https://feed.example/"},"kind":"get","operation":"read"}"#,
    );
    assert!(
        version[1].starts_with(r#"{"Err":{"kind":"other","message":"credential provider protocol version 2"#),
        "{}",
        version[1]
    );
    let unknown = cargo_exchange(
        &w,
        r#"{"v":1,"registry":{"index-url":"https://feed.example/"},"kind":"frobnicate"}"#,
    );
    assert_eq!(unknown[1], r#"{"Err":{"kind":"operation-not-supported"}}"#);
    let garbage = cargo_exchange(&w, "not json");
    assert!(
        garbage[1].starts_with(r#"{"Err":{"kind":"other","message":"malformed request"#),
        "{}",
        garbage[1]
    );
    let logout = cargo_exchange(
        &w,
        r#"{"v":1,"registry":{"index-url":"sparse+https://feed.example/"},"kind":"logout"}"#,
    );
    assert_eq!(logout[1], r#"{"Ok":{"kind":"logout"}}"#);
    assert_eq!(w.tokens.hits(), 0);
}

#[test]
fn a_cargo_401_challenge_on_first_use_does_not_make_a_fixed_token_provider_refuse() {
    let w = world();
    // What real cargo sends first for an `auth-required` registry: the 401's headers.
    let challenged = |url: &str| {
        format!(
            r#"{{"v":1,"registry":{{"index-url":"sparse+{url}","headers":["WWW-Authenticate: Cargo login_url=\"https://registry.example/me\""]}},"kind":"get","operation":"read"}}"#
        )
    };
    let first = cargo_exchange(&w, &challenged("https://registry.example/index/"));
    let answer: serde_json::Value = serde_json::from_str(&first[1]).unwrap();
    assert_eq!(answer["Ok"]["token"], "tok-static", "{}", first[1]);
    // The headers do not skip a stored token either: only `login` fetches afresh.
    let get = r#"{"v":1,"registry":{"index-url":"https://feed.example/"},"kind":"get","operation":"read"}"#;
    cargo_exchange(&w, get);
    cargo_exchange(&w, &challenged("https://feed.example/"));
    assert_eq!(w.tokens.hits(), 1, "a challenge is answered from the stored token");
    let login = cargo_exchange(
        &w,
        r#"{"v":1,"registry":{"index-url":"https://feed.example/"},"kind":"login","login-url":"https://feed.example/me"}"#,
    );
    assert_eq!(login[1], r#"{"Ok":{"kind":"login"}}"#);
    assert_eq!(w.tokens.hits(), 2, "login runs the provider");
    cargo_exchange(&w, get);
    assert_eq!(w.tokens.hits(), 2, "and the next get finds login's token stored");
    let static_login = cargo_exchange(
        &w,
        r#"{"v":1,"registry":{"index-url":"https://registry.example/"},"kind":"login"}"#,
    );
    assert_eq!(static_login[1], r#"{"Ok":{"kind":"login"}}"#, "login is no refusal");
}

#[test]
fn a_10_mb_cargo_line_gets_one_error_and_ends_the_session() {
    let w = world();
    let get = r#"{"v":1,"registry":{"index-url":"https://registry.example/"},"kind":"get","operation":"read"}"#;
    // The tail of the long line, and a real request after it, must not be answered.
    let mut input = vec![b'x'; 10 << 20];
    input.extend_from_slice(format!("\n{get}\n").as_bytes());
    let run = w.home.run_stdin(&["--cargo-plugin"], &input, &[]);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "the hello and one error: {lines:?}");
    assert!(
        lines[1].starts_with(r#"{"Err":{"kind":"other","message":"a line is longer than 1048576 bytes"#),
        "{}",
        lines[1]
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
}

#[test]
fn a_10_mb_nuget_line_ends_the_plugin_session_without_answers() {
    let w = world();
    let mut n = NuGet::start(&w.home, &[]);
    let hello = n.next(Duration::from_secs(10));
    assert_eq!(hello["Method"], "Handshake");
    let long = "x".repeat(10 << 20);
    // The plugin stops reading after the limit: the rest of the write may fail.
    let _ = std::io::Write::write_all(&mut n.stdin, format!("{long}\n{{\"RequestId\":\"1\",\"Type\":\"Request\",\"Method\":\"Handshake\",\"Payload\":{{\"ProtocolVersion\":\"2.0.0\",\"MinimumProtocolVersion\":\"1.0.0\"}}}}\n").as_bytes());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = n.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the plugin kept reading");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    assert!(
        matches!(
            n.lines.recv_timeout(Duration::from_secs(10)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        ),
        "nothing is answered after an over-long line"
    );
}

// ---------------------------------------------------------------- git

#[test]
fn git_get_answers_username_password_and_expiry() {
    let w = world();
    let run = w.run(&["git", "get"], "protocol=https\nhost=registry.example\n");
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.stdout, "username=ci\npassword=tok-static\n\n");
    let feed = w.run(&["git", "get"], "protocol=https\nhost=feed.example\nusername=bob\n");
    assert!(
        feed.stdout
            .starts_with("username=bob\npassword=tok-feed\npassword_expiry_utc="),
        "{}",
        feed.stdout
    );
}

#[test]
fn git_authtype_capability_is_used_only_when_offered_and_challenged_for() {
    let w = world();
    let offered = w.run(
        &["git", "get"],
        "capability[]=authtype\ncapability[]=state\nprotocol=https\nhost=feed.example\nwwwauth[]=Bearer realm=\"x\"\n",
    );
    assert!(
        offered
            .stdout
            .starts_with("capability[]=authtype\nauthtype=Bearer\ncredential=tok-feed\npassword_expiry_utc="),
        "{}",
        offered.stdout
    );
    let basic_only = w.run(
        &["git", "get"],
        "capability[]=authtype\nprotocol=https\nhost=feed.example\nwwwauth[]=Basic realm=\"x\"\n",
    );
    assert!(
        basic_only.stdout.starts_with("username=credence\npassword=tok-feed\n"),
        "{}",
        basic_only.stdout
    );
    let not_offered = w.run(&["git", "get"], "protocol=https\nhost=feed.example\n");
    assert!(
        not_offered.stdout.starts_with("username=credence\npassword=tok-feed\n"),
        "{}",
        not_offered.stdout
    );
}

#[test]
fn git_unserved_and_unknown_are_silent() {
    let w = world();
    let other = w.run(&["git", "get"], "protocol=https\nhost=other.example\n");
    assert_eq!((other.code, other.stdout.as_str()), (Some(0), ""));
    let cert = w.run(&["git", "get"], "protocol=smtp\nhost=mail.example\n");
    assert_eq!((cert.code, cert.stdout.as_str()), (Some(0), ""));
    let future = w.run(&["git", "capability"], "");
    assert_eq!((future.code, future.stdout.as_str()), (Some(0), ""));
}

#[test]
fn git_path_is_part_of_the_url_when_git_sends_it() {
    let w = world();
    let home = &w.home;
    let config = std::fs::read_to_string(home.home().join("config.toml")).unwrap();
    home.write_config(&config.replace(
        "serves = [\"https://registry.example/\"]",
        "serves = [\"https://registry.example/team-a\"]",
    ));
    let with_path = w.run(
        &["git", "get"],
        "protocol=https\nhost=registry.example\npath=team-a/repo.git\n",
    );
    assert_eq!(with_path.stdout, "username=ci\npassword=tok-static\n\n");
    let other_path = w.run(
        &["git", "get"],
        "protocol=https\nhost=registry.example\npath=team-b/repo.git\n",
    );
    assert_eq!(other_path.stdout, "");
}

// ---------------------------------------------------------------- docker

#[test]
fn docker_get_list_version_and_errors_on_stdout() {
    let w = world();
    let get = w.run(&["docker", "get"], "registry.example");
    assert_eq!(get.code, Some(0), "{get:#?}");
    assert_eq!(
        get.stdout,
        "{\"ServerURL\":\"registry.example\",\"Username\":\"ci\",\"Secret\":\"tok-static\"}\n"
    );
    let token = w.run(&["docker", "get"], "https://feed.example/");
    assert!(token.stdout.contains("\"Username\":\"<token>\""), "{}", token.stdout);
    let missing = w.run(&["docker", "get"], "other.example");
    assert_eq!(
        (missing.code, missing.stdout.as_str()),
        (Some(1), "credentials not found in native keychain\n")
    );
    assert_eq!(w.run(&["docker", "list"], "unused").stdout, "{}\n");
    assert!(
        w.run(&["docker", "version"], "")
            .stdout
            .starts_with("docker-credential-credence (credence) ")
    );
    let store = w.run(
        &["docker", "store"],
        r#"{"ServerURL":"registry.example","Username":"u","Secret":"s"}"#,
    );
    assert_eq!(store.code, Some(1));
    assert!(store.stdout.contains("does not store credentials"));
    let usage = w.run(&["docker"], "");
    assert_eq!(usage.code, Some(1));
    assert!(usage.stdout.is_empty());
}

#[test]
fn docker_logout_does_not_make_a_fixed_token_provider_refuse_the_next_get() {
    let w = world();
    let get = |host: &str| w.run(&["docker", "get"], host);
    assert_eq!(get("registry.example").code, Some(0));
    // `docker logout registry.example` erases every spelling of the registry.
    for spelling in [
        "registry.example",
        "http://registry.example",
        "https://registry.example",
    ] {
        let erase = w.run(&["docker", "erase"], spelling);
        assert_eq!(erase.code, Some(0), "{erase:#?}");
    }
    let after = get("registry.example");
    assert_eq!(after.code, Some(0), "{after:#?}");
    assert_eq!(after.json()["Secret"], "tok-static");
    // What was stored is forgotten: the next get runs the provider again.
    get("feed.example");
    get("feed.example");
    assert_eq!(w.tokens.hits(), 1);
    assert_eq!(w.run(&["docker", "erase"], "feed.example").code, Some(0));
    assert_eq!(get("feed.example").code, Some(0));
    assert_eq!(w.tokens.hits(), 2);
    let audit = w.run(&["audit", "--json"], "");
    assert!(audit.stdout.contains(r#""outcome":"logged-out""#), "{}", audit.stdout);
    assert!(!audit.stdout.contains(r#""outcome":"rejected""#), "{}", audit.stdout);
}

// ---------------------------------------------------------------- bazel, goauth, keyring, kubectl

#[test]
fn bazel_get_answers_headers_and_rfc3339_expiry_without_fractions() {
    let w = world();
    let run = w.run(&["bazel", "get"], r#"{"uri":"https://feed.example/cas/abc"}"#);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let j = run.json();
    assert_eq!(j["headers"]["Authorization"][0], "Bearer tok-feed");
    let expires = j["expires"].as_str().unwrap();
    assert_eq!(expires.len(), 20, "{expires}");
    assert!(expires.ends_with('Z') && !expires.contains('.'), "{expires}");
    let basic = w
        .run(&["bazel", "get"], r#"{"uri":"https://registry.example/x"}"#)
        .json();
    assert_eq!(basic["headers"]["Authorization"][0], "Basic Y2k6dG9rLXN0YXRpYw==");
    assert_eq!(
        w.run(&["bazel", "get"], r#"{"uri":"https://other.example/x"}"#).stdout,
        "{}\n"
    );
    let bad = w.run(&["bazel", "get"], r#"{"url":"https://feed.example/"}"#);
    assert_eq!(bad.code, Some(1));
    assert!(bad.stdout.is_empty() && bad.stderr.contains("malformed request"));
}

#[test]
fn goauth_answers_the_served_prefix_and_headers_lf_only() {
    let w = world();
    let first = w.run(&["goauth"], "");
    assert_eq!((first.code, first.stdout.as_str()), (Some(0), ""));
    let run = w.run(
        &["goauth", "https://feed.example/mod/x?go-get=1"],
        "HTTP/1.1 401 Unauthorized\nWww-Authenticate: Bearer\n\n",
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(
        run.stdout,
        "https://feed.example/\n\nAuthorization: Bearer tok-feed\n\n"
    );
    assert_eq!(
        w.run(&["goauth", "https://other.example/x"], "HTTP/1.1 401 Unauthorized\n\n")
            .stdout,
        ""
    );
}

#[test]
fn keyring_answers_all_four_command_shapes() {
    let w = world();
    let plain = w.run(&["keyring", "get", "registry.example", "ci"], "");
    assert_eq!((plain.code, plain.stdout.as_str()), (Some(0), "tok-static\n"));
    let uv = w.run(
        &["keyring", "get", "https://registry.example/simple/", "--mode", "creds"],
        "",
    );
    assert_eq!(uv.stdout, "ci\ntok-static\n");
    let pip = w.run(
        &[
            "keyring",
            "--mode=creds",
            "--output=json",
            "get",
            "https://registry.example/simple/",
        ],
        "",
    );
    assert_eq!(pip.json(), serde_json::json!({"username":"ci","password":"tok-static"}));
    let missing = w.run(&["keyring", "get", "other.example", "ci"], "");
    assert_eq!((missing.code, missing.stdout.as_str()), (Some(1), ""));
    let set = w.run(&["keyring", "set", "registry.example", "ci"], "pw\n");
    assert_eq!(set.code, Some(1));
    let bad = w.run(&["keyring", "--bogus", "get", "x", "y"], "");
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("unrecognized arguments"));
}

#[test]
fn kubectl_exec_credential_with_expiration() {
    let w = world();
    let info = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false,"cluster":{"server":"https://feed.example/k8s"}}}"#;
    let run = w.run_env(&["kubectl"], "", &[("KUBERNETES_EXEC_INFO", info)]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let j = run.json();
    assert_eq!(j["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(j["kind"], "ExecCredential");
    assert_eq!(j["status"]["token"], "tok-feed");
    assert!(j["status"]["expirationTimestamp"].as_str().unwrap().ends_with('Z'));
    let none = w.run_env(
        &["kubectl"],
        "",
        &[(
            "KUBERNETES_EXEC_INFO",
            r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#,
        )],
    );
    assert_eq!(none.code, Some(1));
    assert!(none.stderr.contains("provideClusterInfo"), "{}", none.stderr);
}

#[test]
fn a_provider_expiry_of_u64_max_or_year_10000_reaches_each_tool_as_a_time_it_can_parse() {
    for claimed in [u64::MAX.to_string(), "253402300800".to_owned()] {
        let home = credence_tests::hostile_home(
            &[],
            &format!(r#"attack = "far-future-expiry", expires-at = "{claimed}""#),
            "",
        );
        // Twice each: the provider's answer, then the stored one.
        for _ in 0..2 {
            let cargo = home.run_stdin(
                &["--cargo-plugin"],
                br#"{"v":1,"registry":{"index-url":"sparse+https://evil.example/index/"},"kind":"get","operation":"read"}
"#,
                &[],
            );
            let answer: serde_json::Value = serde_json::from_str(cargo.stdout.lines().nth(1).unwrap()).unwrap();
            // cargo deserialises `expiration` as an i64.
            assert_eq!(
                answer["Ok"]["expiration"].as_i64(),
                Some(253_402_300_799),
                "{claimed}: {answer}"
            );
            let kubectl = home.run_with(
                &["kubectl"],
                &[(
                    "KUBERNETES_EXEC_INFO",
                    r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false,"cluster":{"server":"https://evil.example/"}}}"#,
                )],
            );
            assert_eq!(kubectl.code, Some(0), "{kubectl:#?}");
            assert_eq!(kubectl.json()["status"]["expirationTimestamp"], "9999-12-31T23:59:59Z");
            let bazel = home.run_stdin(&["bazel", "get"], br#"{"uri":"https://evil.example/x"}"#, &[]);
            assert_eq!(bazel.code, Some(0), "{bazel:#?}");
            assert_eq!(bazel.json()["expires"], "9999-12-31T23:59:59Z");
            let git = home.run_stdin(&["git", "get"], b"protocol=https\nhost=evil.example\n", &[]);
            assert!(git.stdout.contains("password_expiry_utc=253402300799\n"), "{git:#?}");
            let generic = home.run(&["get", "https://evil.example/", "--json"]);
            assert_eq!(generic.json()["expires_at"], 253_402_300_799_u64);
        }
    }
}

// ---------------------------------------------------------------- NuGet

#[test]
fn nuget_v1_exit_codes() {
    let w = world();
    let ok = w.run(
        &[
            "nuget-v1",
            "-uri",
            "https://feed.example/v3/index.json",
            "-NonInteractive",
            "-verbosity",
            "detailed",
        ],
        "",
    );
    assert_eq!(ok.code, Some(0), "{ok:#?}");
    assert_eq!(ok.json()["Password"], "tok-feed");
    let na = w.run(&["nuget-v1", "-Uri", "https://other.example/v3/index.json"], "");
    assert_eq!(na.code, Some(1));
    let bad = w.run(&["nuget-v1", "-uri", "https://user:pw@feed.example/"], "");
    assert_eq!(bad.code, Some(2));
    assert!(!bad.stdout.contains("pw@"), "{}", bad.stdout);
}

fn nuget_session(w: &World, env: &[(&str, &str)]) -> NuGet {
    NuGet::session(&w.home, env)
}

#[test]
fn nuget_v2_full_conversation_then_close() {
    let w = world();
    let mut n = nuget_session(&w, &[]);
    let creds = n.request(
        "a6",
        "GetAuthenticationCredentials",
        serde_json::json!({"Uri": "https://feed.example/v3/index.json", "IsRetry": false, "IsNonInteractive": true, "CanShowDialog": false}),
    );
    assert_eq!(creds["Method"], "GetAuthenticationCredentials");
    assert_eq!(creds["Payload"]["ResponseCode"], "Success");
    assert_eq!(creds["Payload"]["Password"], "tok-feed");
    assert_eq!(creds["Payload"]["AuthenticationTypes"], serde_json::json!(["Basic"]));
    let other = n.request(
        "a7",
        "GetAuthenticationCredentials",
        serde_json::json!({"Uri": "https://other.example/v3/index.json", "IsRetry": false, "IsNonInteractive": true, "CanShowDialog": false}),
    );
    assert_eq!(other["Payload"]["ResponseCode"], "Error");
    let fault = request_fault(&mut n, "a8", "Frobnicate");
    assert_eq!(fault["Type"], "Fault");
    n.send(serde_json::json!({"RequestId": "a9", "Type": "Request", "Method": "Close"}));
    let status = n.child.wait().unwrap();
    assert!(status.success());
}

fn request_fault(n: &mut NuGet, id: &str, method: &str) -> serde_json::Value {
    n.send(serde_json::json!({"RequestId": id, "Type": "Request", "Method": method, "Payload": {}}));
    n.next(Duration::from_secs(10))
}

#[test]
fn nuget_v2_a_slow_request_survives_a_short_timeout_only_through_progress() {
    // The token endpoint takes 1.5 s; NuGet's timer here is 500 ms (standing in for 30 s),
    // restarted by every Progress message for the request.
    let w = world_with_delay(Duration::from_millis(1500));
    let mut n = nuget_session(&w, &[("CREDENCE_NUGET_PROGRESS_MS", "150")]);
    n.send(serde_json::json!({"RequestId": "slow", "Type": "Request", "Method": "GetAuthenticationCredentials",
        "Payload": {"Uri": "https://feed.example/v3/index.json", "IsRetry": false, "IsNonInteractive": true, "CanShowDialog": false}}));
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let mut progress = 0;
    loop {
        let m = n
            .lines
            .recv_timeout(timeout)
            .expect("NuGet would have timed the request out: no Progress within 500 ms");
        assert_eq!(m["RequestId"], "slow");
        match m["Type"].as_str() {
            Some("Progress") => progress += 1,
            Some("Response") => {
                assert_eq!(m["Payload"]["ResponseCode"], "Success");
                break;
            }
            other => panic!("unexpected {other:?}: {m}"),
        }
    }
    assert!(started.elapsed() > timeout, "the request really outlived the timeout");
    assert!(progress >= 3, "{progress} progress messages");
    n.send(serde_json::json!({"RequestId": "c", "Type": "Request", "Method": "Close"}));
    assert!(n.child.wait().unwrap().success());
}

#[test]
fn nuget_v2_refuses_an_incompatible_handshake() {
    let w = world();
    let mut n = NuGet::start(&w.home, &[]);
    let _ours = n.next(Duration::from_secs(10));
    let hs = n.request(
        "h",
        "Handshake",
        serde_json::json!({"ProtocolVersion": "1.0.0", "MinimumProtocolVersion": "1.0.0"}),
    );
    assert_eq!(hs["Payload"], serde_json::json!({"ResponseCode": "Error"}));
    drop(n.stdin);
    assert!(n.child.wait().unwrap().success());
}

// ---------------------------------------------------------------- dispatch by program name

#[cfg(unix)]
#[test]
fn tools_find_credence_under_their_own_program_names() {
    let w = world();
    let bin = w.home.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in [
        "git-credential-credence",
        "docker-credential-credence",
        "keyring",
        "credence-bazel",
    ] {
        std::os::unix::fs::symlink(credence_exe(), bin.join(name)).unwrap();
    }
    let git = w.home.run_program(
        &bin.join("git-credential-credence"),
        &["get"],
        b"protocol=https\nhost=registry.example\n",
        &[],
    );
    assert_eq!(git.stdout, "username=ci\npassword=tok-static\n\n");
    let docker = w.home.run_program(
        &bin.join("docker-credential-credence"),
        &["get"],
        b"registry.example",
        &[],
    );
    assert!(docker.stdout.contains("\"Secret\":\"tok-static\""), "{docker:#?}");
    let keyring = w
        .home
        .run_program(&bin.join("keyring"), &["get", "registry.example", "ci"], b"", &[]);
    assert_eq!(keyring.stdout, "tok-static\n");
    let bazel = w.home.run_program(
        &bin.join("credence-bazel"),
        &["get"],
        br#"{"uri":"https://registry.example/"}"#,
        &[],
    );
    assert!(bazel.stdout.contains("Basic "), "{bazel:#?}");
}

#[test]
fn setup_prints_each_tools_configuration_line() {
    let w = world();
    let git = w.run(&["setup", "git"], "");
    assert!(
        git.stdout.starts_with("git config --global credential.helper '"),
        "{}",
        git.stdout
    );
    assert!(git.stdout.contains(" git'"), "{}", git.stdout);
    let cargo = w.run(&["setup", "cargo"], "");
    assert!(
        cargo
            .stdout
            .contains("global-credential-providers = [\"cargo:token\", "),
        "{}",
        cargo.stdout
    );
    for tool in ["docker", "nuget", "bazel", "goauth", "keyring", "kubectl"] {
        let r = w.run(&["setup", tool], "");
        assert_eq!(r.code, Some(0), "{tool}: {r:#?}");
        assert!(!r.stdout.is_empty());
    }
    let cargo_home = w.home.dir.path().join("cargo-home");
    let write = w.run_env(
        &["setup", "cargo", "--write"],
        "",
        &[("CARGO_HOME", cargo_home.to_str().unwrap())],
    );
    assert_eq!(write.code, Some(0), "{write:#?}");
    let written = std::fs::read_to_string(cargo_home.join("config.toml")).unwrap();
    assert!(written.contains("global-credential-providers"), "{written}");
}

#[test]
fn setup_git_makes_git_send_the_path_a_served_prefix_needs() {
    let home = Home::new();
    home.write_config(
        "[[provider]]\nname = \"team\"\ncomponent = \"static-token.wasm\"\nserves = [\"https://git.example/team/\", \"https://other.example/\"]\nsettings = { token = \"t\" }\n",
    );
    let shown = home.run(&["setup", "git"]);
    assert_eq!(shown.code, Some(0), "{shown:#?}");
    assert!(
        shown
            .stdout
            .contains("git config --global credential.https://git.example.useHttpPath true\n"),
        "{}",
        shown.stdout
    );
    assert!(
        !shown.stdout.contains("credential.https://other.example.useHttpPath"),
        "a prefix without a path needs no paths: {}",
        shown.stdout
    );
    assert!(
        shown.stderr.contains("serves https://git.example/team/") && shown.stderr.contains("useHttpPath"),
        "{}",
        shown.stderr
    );
    // `--write` runs both lines against this home's global git config ($HOME/.gitconfig).
    let written = home.run(&["setup", "git", "--write"]);
    assert_eq!(written.code, Some(0), "{written:#?}");
    let config = home.dir.path().join(".gitconfig");
    let get = |key: &str| {
        let out = std::process::Command::new("git")
            .args(["config", "--file", config.to_str().unwrap(), "--get", key])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(get("credential.https://git.example.usehttppath"), "true");
    assert!(
        get("credential.helper").ends_with(" git"),
        "{}",
        get("credential.helper")
    );
}

// ---------------------------------------------------------------- injection

#[test]
fn injection_in_every_protocol_is_refused_in_its_error_form_before_any_provider_runs() {
    let w = world();
    let big = "a".repeat(1 << 20);
    for evil in ["\r", "\n", "\0"] {
        // cargo: JSON strings can carry control characters.
        let esc = serde_json::to_string(&format!("https://feed.example/{evil}x")).unwrap();
        let r = cargo_exchange(
            &w,
            &format!(r#"{{"v":1,"registry":{{"index-url":{esc}}},"kind":"get","operation":"read"}}"#),
        );
        assert!(
            r[1].contains(r#""kind":"other""#) && r[1].contains("control characters"),
            "{r:?}"
        );
        // git: inside a value.
        let g = w.run(
            &["git", "get"],
            &format!("protocol=https\nhost=feed.example{evil}host=evil.example\n"),
        );
        if evil != "\n" {
            assert_eq!((g.code, g.stdout.as_str()), (Some(1), ""), "{evil:?}: {g:#?}");
        } else {
            // An LF ends the line: `host=evil.example` is then a second, later host line,
            // which must not be answered for feed.example.
            assert!(!g.stdout.contains("tok-feed"), "{g:#?}");
        }
        // docker, bazel, keyring, kubectl, nuget v1.
        let d = w.run(&["docker", "get"], &format!("feed.example{evil}evil"));
        assert_eq!(d.code, Some(1), "{evil:?}: {d:#?}");
        let b = w.run(&["bazel", "get"], &format!(r#"{{"uri":{esc}}}"#));
        assert_eq!(b.code, Some(1), "{b:#?}");
        // (argv cannot carry a NUL at all, so the argv protocols are tried with CR and LF.)
        if evil != "\0" {
            let k = w.run(&["keyring", "get", &format!("feed.example{evil}x"), "u"], "");
            assert_eq!(k.code, Some(1));
            // The plain creds output prints the user name on a line of its own.
            let k = w.run(
                &[
                    "keyring",
                    "--mode",
                    "creds",
                    "get",
                    "feed.example",
                    &format!("u{evil}x"),
                ],
                "",
            );
            assert_eq!((k.code, k.stdout.as_str()), (Some(2), ""), "{evil:?}: {k:#?}");
            let n = w.run(&["nuget-v1", "-uri", &format!("https://feed.example/{evil}")], "");
            assert_eq!(n.code, Some(2));
        }
        let info = format!(
            r#"{{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{{"interactive":false,"cluster":{{"server":{esc}}}}}}}"#
        );
        assert_eq!(
            w.run_env(&["kubectl"], "", &[("KUBERNETES_EXEC_INFO", &info)]).code,
            Some(1)
        );
    }
    // A URL with userinfo, a lookalike host, a 1 MiB line.
    let userinfo = cargo_exchange(
        &w,
        r#"{"v":1,"registry":{"index-url":"https://feed.example@evil.example/"},"kind":"get","operation":"read"}"#,
    );
    assert!(userinfo[1].contains(r#""kind":"other""#), "{userinfo:?}");
    let lookalike = w.run(&["git", "get"], "protocol=https\nhost=feed.example.evil.example\n");
    assert_eq!((lookalike.code, lookalike.stdout.as_str()), (Some(0), ""));
    assert_eq!(
        w.run(&["docker", "get"], "feed.example.evil.example").stdout,
        "credentials not found in native keychain\n"
    );
    let huge_git = w.run(&["git", "get"], &format!("protocol=https\nhost={big}\n"));
    assert_eq!((huge_git.code, huge_git.stdout.as_str()), (Some(1), ""));
    let huge_cargo = w.run(&["--cargo-plugin"], &format!("{big}{big}\n"));
    assert!(
        huge_cargo
            .stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains(r#""kind":"other""#)),
        "{huge_cargo:#?}"
    );
    assert_eq!(w.run(&["docker", "get"], &big).code, Some(1));
    assert_eq!(w.tokens.hits(), 0, "no provider ran for any of these");
}

#[test]
fn setup_write_keeps_other_helpers_and_comments_and_a_second_run_changes_nothing() {
    let home = Home::new();
    let gitconfig = home.dir.path().join(".gitconfig");
    std::fs::write(&gitconfig, "[credential]\n\thelper = cache --timeout=60\n").unwrap();
    let git_helpers = || {
        let out = std::process::Command::new("git")
            .args([
                "config",
                "--file",
                gitconfig.to_str().unwrap(),
                "--get-all",
                "credential.helper",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let first = home.run(&["setup", "git", "--write"]);
    assert_eq!(first.code, Some(0), "{first:#?}");
    assert!(first.stderr.contains("credence is added after it"), "{}", first.stderr);
    let helpers = git_helpers();
    assert_eq!(helpers.len(), 2, "{helpers:?}");
    assert_eq!(helpers[0], "cache --timeout=60");
    assert!(helpers[1].ends_with("credence git"), "{helpers:?}");
    let again = home.run(&["setup", "git", "--write"]);
    assert_eq!(again.code, Some(0), "{again:#?}");
    assert!(again.stderr.contains("nothing to add"), "{}", again.stderr);
    assert_eq!(git_helpers(), helpers, "the second run adds nothing");

    let cargo_home = home.dir.path().join("cargo-home");
    std::fs::create_dir_all(&cargo_home).unwrap();
    let cargo_config = cargo_home.join("config.toml");
    std::fs::write(
        &cargo_config,
        "# my registries\n[registry]\nglobal-credential-providers = [\"cargo:token\", \"cargo:libsecret\"]\n",
    )
    .unwrap();
    let cargo = |args: &[&str]| home.run_with(args, &[("CARGO_HOME", cargo_home.to_str().unwrap())]);
    let first = cargo(&["setup", "cargo", "--write"]);
    assert_eq!(first.code, Some(0), "{first:#?}");
    let written = std::fs::read_to_string(&cargo_config).unwrap();
    assert!(written.starts_with("# my registries\n"), "the comment stays: {written}");
    let doc: toml::Table = toml::from_str(&written).unwrap();
    let list: Vec<&str> = doc["registry"]["global-credential-providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(&list[..2], ["cargo:token", "cargo:libsecret"], "{list:?}");
    assert!(
        list.len() == 3 && list[2].ends_with("credence"),
        "credence last, asked first: {list:?}"
    );
    let again = cargo(&["setup", "cargo", "--write"]);
    assert_eq!(again.code, Some(0), "{again:#?}");
    assert!(again.stderr.contains("nothing changed"), "{}", again.stderr);
    assert_eq!(std::fs::read_to_string(&cargo_config).unwrap(), written);
}

/// git hands a credential that worked to every helper it asked (`store`): a `store` helper
/// kept for an origin credence serves would write credence's token to ~/.git-credentials.
#[test]
fn after_setup_git_another_storing_helper_never_sees_credences_tokens_for_served_origins() {
    let (home, _) = Home::signed_static_token();
    let gitconfig = home.dir.path().join(".gitconfig");
    let stored = home.dir.path().join("git-credentials");
    std::fs::write(
        &gitconfig,
        format!("[credential]\n\thelper = store --file {}\n", stored.display()),
    )
    .unwrap();
    let setup = home.run(&["setup", "git", "--write"]);
    assert_eq!(setup.code, Some(0), "{setup:#?}");
    let git = |action: &str, input: &str| {
        let mut child = std::process::Command::new("git")
            .args(["credential", action])
            .env_clear()
            .env("HOME", home.dir.path())
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("CREDENCE_HOME", home.home())
            .env("XDG_STATE_HOME", home.state())
            .env("XDG_CACHE_HOME", home.cache())
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let fill = git("fill", "protocol=https\nhost=registry.example\n\n");
    assert!(fill.status.success(), "{fill:?}");
    let answer = String::from_utf8_lossy(&fill.stdout).into_owned();
    assert!(answer.contains("password=signed-token\n"), "{answer}");
    let approve = git("approve", &answer);
    assert!(approve.status.success(), "{approve:?}");
    let leaked = std::fs::read_to_string(&stored).unwrap_or_default();
    assert!(
        !leaked.contains("signed-token"),
        "the store helper kept credence's token: {leaked}"
    );
    // Other hosts still use the user's own helper.
    let other = git(
        "approve",
        "protocol=https\nhost=elsewhere.example\nusername=u\npassword=p\n\n",
    );
    assert!(other.status.success(), "{other:?}");
    assert!(std::fs::read_to_string(&stored).unwrap().contains("elsewhere.example"));
    // A second run changes nothing.
    let before = std::fs::read_to_string(&gitconfig).unwrap();
    assert_eq!(home.run(&["setup", "git", "--write"]).code, Some(0));
    assert_eq!(std::fs::read_to_string(&gitconfig).unwrap(), before);
}
