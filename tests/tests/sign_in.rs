//! Sign-in flows end to end: the real binary, the `oauth-device` and `oauth-pkce` samples
//! (built on the SDK), a mock authorization server on 127.0.0.1, a real terminal (script(1))
//! where the user would read a code, and a stand-in browser (`CREDENCE_BROWSER`) that also
//! attacks the loopback listener.

use credence_tests::{Home, Reply, Seen, TestServer, credence_exe, sh_quote};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const URL: &str = "https://git.example/org/repo.git";
const USER_CODE: &str = "WDJB-MJHT";

fn form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%3A", ":").replace("%2F", "/")))
        .collect()
}

fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// What the authorization server saw and decided.
#[derive(Default)]
struct Log {
    device_calls: AtomicUsize,
    /// When each device-code poll arrived.
    polls: Mutex<Vec<Instant>>,
    /// The refresh token that is valid now; any other one sent is a reuse.
    current_refresh: Mutex<String>,
    refreshes: AtomicUsize,
    reused_refresh: AtomicBool,
    /// `expired_token` instead of a token.
    expire: AtomicBool,
    /// Answer `authorization_pending` forever.
    never_approve: AtomicBool,
    /// Access tokens live this long; by default less than the host's 60 s expiry margin, so
    /// every request runs the provider (and refreshes).
    long_lived: AtomicBool,
}

fn tokens(n: usize, long_lived: bool) -> Reply {
    let lifetime = if long_lived { 3600 } else { 30 };
    Reply::json(
        200,
        &format!(
            r#"{{"access_token":"at-{n}","token_type":"bearer","expires_in":{lifetime},"refresh_token":"rt-{n}"}}"#
        ),
    )
}

fn device_server() -> (TestServer, Arc<Log>) {
    let log = Arc::new(Log::default());
    let seen = log.clone();
    let server = TestServer::start(move |req: &Seen| {
        let f = form(&req.body);
        match (req.method.as_str(), req.url.as_str(), field(&f, "grant_type")) {
            ("POST", "/device", _) => {
                seen.device_calls.fetch_add(1, Ordering::SeqCst);
                assert_eq!(field(&f, "client_id"), Some("cli-1"));
                Reply::json(
                    200,
                    &format!(
                        r#"{{"device_code":"dc-1","user_code":"{USER_CODE}","verification_uri":"http://127.0.0.1:{}/activate","expires_in":600,"interval":1}}"#,
                        req.headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case("host"))
                            .and_then(|(_, v)| v.rsplit(':').next())
                            .unwrap_or("0")
                    ),
                )
            }
            ("POST", "/token", Some("urn:ietf:params:oauth:grant-type:device_code")) => {
                assert_eq!(field(&f, "device_code"), Some("dc-1"));
                let mut polls = seen.polls.lock().unwrap();
                polls.push(Instant::now());
                if seen.expire.load(Ordering::SeqCst) {
                    return Reply::json(400, r#"{"error":"expired_token"}"#);
                }
                if seen.never_approve.load(Ordering::SeqCst) {
                    return Reply::json(400, r#"{"error":"authorization_pending"}"#);
                }
                if polls.len() > 4 {
                    // Approved after a long wait.
                    *seen.current_refresh.lock().unwrap() = "rt-1".into();
                    return tokens(1, seen.long_lived.load(Ordering::SeqCst));
                }
                match polls.len() {
                    1 => Reply::json(400, r#"{"error":"authorization_pending"}"#),
                    // GitHub answers its polling errors with 200.
                    2 => Reply::json(200, r#"{"error":"authorization_pending"}"#),
                    3 => Reply::json(400, r#"{"error":"slow_down"}"#),
                    _ => {
                        *seen.current_refresh.lock().unwrap() = "rt-1".into();
                        tokens(1, seen.long_lived.load(Ordering::SeqCst))
                    }
                }
            }
            ("POST", "/token", Some("refresh_token")) => {
                let mut current = seen.current_refresh.lock().unwrap();
                if field(&f, "refresh_token") != Some(current.as_str()) {
                    seen.reused_refresh.store(true, Ordering::SeqCst);
                    return Reply::json(400, r#"{"error":"invalid_grant"}"#);
                }
                let n = seen.refreshes.fetch_add(1, Ordering::SeqCst) + 2;
                *current = format!("rt-{n}");
                tokens(n, seen.long_lived.load(Ordering::SeqCst))
            }
            _ => Reply::json(404, r#"{"error":"not_found"}"#),
        }
    });
    (server, log)
}

/// A home with `oauth-device` signed and serving git.example; `limits` in its entry.
fn device_home(server: &TestServer, limits: &str) -> Home {
    let home = Home::new();
    let origin = server.origin();
    home.install_signed(&[("oauth-device", &[origin.clone()], &["device-code"])]);
    home.write_config(&format!(
        "[[provider]]\nname = \"github\"\ncomponent = \"oauth-device.wasm\"\nserves = [\"https://git.example/\"]\ngrant-origins = [\"{origin}\"]\nlimits = {{ {limits} }}\n[provider.settings]\nclient-id = \"cli-1\"\ndevice-endpoint = \"{origin}/device\"\ntoken-endpoint = \"{origin}/token\"\n"
    ));
    home
}

fn get_on_terminal(home: &Home, env: &[(&str, &str)]) -> credence_tests::Screen {
    let command = format!("{} get {URL}", sh_quote(&credence_exe().to_string_lossy()));
    home.on_terminal(&command, env, Duration::from_secs(90))
}

#[test]
fn device_flow_polls_at_the_interval_slows_down_and_outlives_the_call_limit() {
    let (server, log) = device_server();
    // A 2 s call limit: the login below takes about 9 s, and must not be cut by it.
    let home = device_home(&server, "wall-ms = 2000");
    let screen = get_on_terminal(&home, &[]);
    assert_eq!(screen.code, Some(0), "{}", screen.text);
    assert!(screen.text.contains("at-1"), "{}", screen.text);
    assert_eq!(
        screen.text.matches(USER_CODE).count(),
        1,
        "the code is shown once:\n{}",
        screen.text
    );
    assert!(
        screen.text.contains(
            "provider \"oauth-device\" asks you to sign in for https://git.example/org/repo.git (asked by credence get)"
        ),
        "labelled with the provider, the URL and who asked:\n{}",
        screen.text
    );
    let polls = log.polls.lock().unwrap().clone();
    assert_eq!(polls.len(), 4, "pending, pending, slow_down, token");
    let gaps: Vec<Duration> = polls.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[0] >= Duration::from_secs(1) && gaps[1] >= Duration::from_secs(1),
        "{gaps:?}"
    );
    assert!(
        gaps[2] >= Duration::from_secs(6),
        "slow_down adds 5 s to the 1 s interval: {gaps:?}"
    );
    assert_eq!(log.device_calls.load(Ordering::SeqCst), 1);

    // Later requests refresh without a prompt (non-interactive: no terminal could show
    // one), and each rotated refresh token replaces the last; a used one is never sent.
    for n in 2..=3 {
        let run = home.run(&["get", URL, "--non-interactive"]);
        assert_eq!(run.code, Some(0), "{run:#?}");
        assert_eq!(run.stdout.trim(), format!("at-{n}"));
    }
    assert_eq!(log.device_calls.load(Ordering::SeqCst), 1, "no second sign-in");
    assert_eq!(log.refreshes.load(Ordering::SeqCst), 2);
    assert!(
        !log.reused_refresh.load(Ordering::SeqCst),
        "a used refresh token was sent again"
    );
    // The refresh token is in the provider's state only, never in the audit trail.
    let audit = home.run(&["audit", "--json"]);
    assert!(
        !audit.stdout.contains("rt-") && !audit.stdout.contains("at-2"),
        "{}",
        audit.stdout
    );
}

#[test]
fn an_expired_device_code_says_so_and_what_to_run() {
    let (server, log) = device_server();
    log.expire.store(true, Ordering::SeqCst);
    let home = device_home(&server, "");
    let screen = get_on_terminal(&home, &[]);
    assert_eq!(screen.code, Some(3), "{}", screen.text);
    assert!(
        screen
            .text
            .contains("the device code expired before the sign-in was completed; run the command again"),
        "{}",
        screen.text
    );
}

#[test]
fn a_non_interactive_request_exits_4_without_calling_the_device_endpoint() {
    let (server, log) = device_server();
    let home = device_home(&server, "");
    let run = home.run(&["get", URL, "--non-interactive"]);
    assert_eq!(run.code, Some(4), "{run:#?}");
    assert!(run.stderr.contains("needs interaction"), "{}", run.stderr);
    assert_eq!(log.device_calls.load(Ordering::SeqCst), 0);
    assert_eq!(server.hits(), 0);
}

#[test]
fn a_sign_in_nobody_completes_ends_at_the_interactive_wall_limit() {
    let (server, log) = device_server();
    log.never_approve.store(true, Ordering::SeqCst);
    let home = device_home(&server, "wall-ms = 1000, interactive-wall-ms = 3500");
    let started = Instant::now();
    let screen = get_on_terminal(&home, &[]);
    assert_eq!(screen.code, Some(3), "{}", screen.text);
    assert!(
        screen.text.contains("exceeded its wall-clock limit of 3500 ms"),
        "{}",
        screen.text
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// The authorization server of the code flow: `/authorize` redirects the browser back with
/// a code bound to the challenge; `/token` checks the verifier and the redirect URI.
struct CodeServer {
    server: TestServer,
    /// (challenge, redirect_uri) of the code handed out.
    issued: Arc<Mutex<Option<(String, String)>>>,
    token_checks: Arc<Mutex<Vec<String>>>,
}

fn code_server() -> CodeServer {
    use sha2::Digest as _;
    let issued: Arc<Mutex<Option<(String, String)>>> = Arc::default();
    let token_checks: Arc<Mutex<Vec<String>>> = Arc::default();
    let (iss, checks) = (issued.clone(), token_checks.clone());
    let server = TestServer::start(move |req: &Seen| {
        if req.method == "GET" && req.url.starts_with("/authorize?") {
            let query = &req.url["/authorize?".len()..];
            let q: Vec<(String, String)> = query
                .split('&')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_owned(), percent_decode(v)))
                .collect();
            let get = |k: &str| field(&q, k).unwrap_or_default().to_owned();
            *iss.lock().unwrap() = Some((get("code_challenge"), get("redirect_uri")));
            let location = format!("{}?code=code-1&state={}", get("redirect_uri"), get("state"));
            return Reply::redirect(&location);
        }
        if req.method == "POST" && req.url == "/token" {
            let f: Vec<(String, String)> = req
                .body
                .split('&')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_owned(), percent_decode(v)))
                .collect();
            let Some((challenge, redirect)) = iss.lock().unwrap().clone() else {
                return Reply::json(400, r#"{"error":"invalid_grant"}"#);
            };
            let verifier = field(&f, "code_verifier").unwrap_or_default();
            let computed = base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                sha2::Sha256::digest(verifier.as_bytes()),
            );
            let mut c = checks.lock().unwrap();
            c.push(format!("verifier-matches={}", computed == challenge));
            c.push(format!(
                "redirect-matches={}",
                field(&f, "redirect_uri") == Some(redirect.as_str())
            ));
            c.push(format!("code={}", field(&f, "code").unwrap_or_default()));
            if computed != challenge || field(&f, "redirect_uri") != Some(redirect.as_str()) {
                return Reply::json(400, r#"{"error":"invalid_grant"}"#);
            }
            return Reply::json(
                200,
                r#"{"access_token":"pkce-at","expires_in":3600,"refresh_token":"pkce-rt"}"#,
            );
        }
        Reply::json(404, "{}")
    });
    CodeServer {
        server,
        issued,
        token_checks,
    }
}

fn percent_decode(v: &str) -> String {
    let bytes = v.replace('+', " ").into_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap(), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn browser_exe() -> std::path::PathBuf {
    credence_exe().with_file_name(format!("credence-test-browser{}", std::env::consts::EXE_SUFFIX))
}

#[test]
fn authorization_code_with_pkce_through_the_hosts_loopback_listener() {
    let code = code_server();
    let origin = code.server.origin();
    let home = Home::new();
    home.install_signed(&[("oauth-pkce", &[origin.clone()], &["authorize"])]);
    home.write_config(&format!(
        "[[provider]]\nname = \"sso\"\ncomponent = \"oauth-pkce.wasm\"\nserves = [\"https://git.example/\"]\ngrant-origins = [\"{origin}\"]\n[provider.settings]\nclient-id = \"app-1\"\nauthorization-endpoint = \"{origin}/authorize\"\ntoken-endpoint = \"{origin}/token\"\n"
    ));
    let report = home.dir.path().join("browser-report.txt");
    let screen = get_on_terminal(
        &home,
        &[
            ("CREDENCE_BROWSER", browser_exe().to_str().unwrap()),
            ("CREDENCE_TEST_BROWSER_REPORT", report.to_str().unwrap()),
        ],
    );
    assert_eq!(screen.code, Some(0), "{}", screen.text);
    assert!(screen.text.contains("pkce-at"), "{}", screen.text);
    // The browser finishes its last check (the port closed) on its own time.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&report).unwrap_or_default();
        if text.contains("finished=1") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let seen = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} not in the browser's report:\n{text}"))
            .to_owned()
    };
    let url = seen("url");
    assert!(
        url.contains("code_challenge_method=S256") && url.contains("state="),
        "{url}"
    );
    let launch = seen("launch");
    assert!(
        !launch.contains("state") && !launch.contains("challenge"),
        "argv shows no state: {launch}"
    );
    assert!(seen("stray.relaunch").starts_with('4'), "{text}");
    let (_, redirect) = code
        .issued
        .lock()
        .unwrap()
        .clone()
        .expect("the browser reached /authorize");
    let port_path = redirect
        .strip_prefix("http://127.0.0.1:")
        .expect("redirect_uri on 127.0.0.1");
    let (port, path) = port_path.split_once('/').unwrap();
    assert!(port.parse::<u16>().is_ok() && path == "callback", "{redirect}");
    assert!(
        screen.text.contains(&format!("127.0.0.1%3A{port}")),
        "the URL was shown:\n{}",
        screen.text
    );
    for stray in [
        "favicon",
        "wrong-state",
        "error-without-state",
        "post",
        "foreign-host",
        "origin",
    ] {
        let status = seen(&format!("stray.{stray}"));
        assert!(status.starts_with('4'), "{stray}: {status}\n{text}");
    }
    assert_eq!(seen("callback.status"), "302");
    assert_eq!(seen("done.status"), "200");
    assert_eq!(seen("done.echoes-code"), "false");
    let closed: u64 = seen("closed-after-ms").parse().expect("the port closed");
    assert!(closed < 1000, "the port refused connections {closed} ms after success");
    let checks = code.token_checks.lock().unwrap().clone();
    assert_eq!(
        checks,
        vec!["verifier-matches=true", "redirect-matches=true", "code=code-1"]
    );
}

/// One of the two OAuth samples, its authorization server running, ready for a real tool.
struct Sample {
    crate_name: &'static str,
    prompt: &'static str,
    /// `[provider.settings]` lines.
    settings: String,
    origin: String,
    /// The access token the sign-in ends with.
    token: &'static str,
    env: Vec<(String, String)>,
    _servers: Box<dyn std::any::Any>,
}

fn device_sample() -> Sample {
    let (server, log) = device_server();
    // The tool asks more than once; the token it got first stays good.
    log.long_lived.store(true, Ordering::SeqCst);
    let origin = server.origin();
    Sample {
        crate_name: "oauth-device",
        prompt: "device-code",
        settings: format!(
            "client-id = \"cli-1\"\ndevice-endpoint = \"{origin}/device\"\ntoken-endpoint = \"{origin}/token\"\n"
        ),
        origin,
        token: "at-1",
        env: Vec::new(),
        _servers: Box::new((server, log)),
    }
}

fn pkce_sample(home: &Home) -> Sample {
    let code = code_server();
    let origin = code.server.origin();
    let report = home.dir.path().join("browser-report.txt");
    Sample {
        crate_name: "oauth-pkce",
        prompt: "authorize",
        settings: format!(
            "client-id = \"app-1\"\nauthorization-endpoint = \"{origin}/authorize\"\ntoken-endpoint = \"{origin}/token\"\n"
        ),
        origin,
        token: "pkce-at",
        env: vec![
            ("CREDENCE_BROWSER".into(), browser_exe().display().to_string()),
            ("CREDENCE_TEST_BROWSER_REPORT".into(), report.display().to_string()),
        ],
        _servers: Box::new(code),
    }
}

/// `sample` installed, signed and serving `serves`.
fn sample_home(home: &Home, sample: &Sample, serves: &str) {
    home.install_signed(&[(sample.crate_name, &[sample.origin.clone()], &[sample.prompt])]);
    home.write_config(&format!(
        "[[provider]]\nname = \"sso\"\ncomponent = \"{}.wasm\"\nserves = [\"{serves}\"]\ngrant-origins = [\"{}\"]\n[provider.settings]\n{}",
        sample.crate_name, sample.origin, sample.settings
    ));
}

fn real_git_clones_after_signing_in(sample: impl FnOnce(&Home) -> Sample) {
    let home = Home::new();
    let sample = sample(&home);
    let root = tempfile::tempdir().unwrap();
    credence_tests::seeded_bare_repo(root.path());
    let token = sample.token;
    let git_server = credence_tests::GitServer::start(root.path().to_owned(), move |user, password| {
        user == "oauth2" && password == token
    });
    let url = format!("http://127.0.0.1:{}/repo.git", git_server.port);
    sample_home(&home, &sample, &format!("http://127.0.0.1:{}/", git_server.port));
    let clone = home.dir.path().join("clone");
    // git runs a helper value that starts with '/' through the shell itself.
    let helper = format!("{} git", credence_exe().display());
    let command = format!(
        "git -c credential.helper= -c credential.helper={} clone -q {url} {}",
        sh_quote(&helper),
        sh_quote(&clone.to_string_lossy())
    );
    let mut env: Vec<(&str, &str)> = sample.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // Not GIT_TERMINAL_PROMPT=0: credence honours it as "never prompt".
    env.push(("GIT_CONFIG_NOSYSTEM", "1"));
    let screen = home.on_terminal(&command, &env, Duration::from_secs(90));
    assert_eq!(screen.code, Some(0), "{}", screen.text);
    assert!(screen.text.contains("(asked by git)"), "{}", screen.text);
    assert!(
        !screen.text.contains(sample.token),
        "no token on git's terminal:\n{}",
        screen.text
    );
    assert_eq!(
        std::fs::read_to_string(clone.join("README")).unwrap(),
        "hello from the test server\n"
    );
}

fn real_cargo_resolves_after_signing_in(sample: impl FnOnce(&Home) -> Sample) {
    let home = Home::new();
    let sample = sample(&home);
    let bearer = format!("Bearer {}", sample.token);
    let accepted = bearer.clone();
    let (registry, seen) = credence_tests::auth_required_registry(move || Some(accepted.clone()));
    let index = format!("{}/index/", registry.origin());
    sample_home(&home, &sample, &index);
    let (work, cargo_home) = credence_tests::cargo_project(&home, &index);
    let command = format!("cd {} && cargo generate-lockfile", sh_quote(&work.to_string_lossy()));
    let rustup_home = std::env::var("RUSTUP_HOME").unwrap_or_default();
    let mut env: Vec<(&str, &str)> = sample.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend([
        ("CARGO_HOME", cargo_home.to_str().unwrap()),
        ("CARGO_HTTP_MULTIPLEXING", "false"),
        ("CARGO_NET_RETRY", "0"),
        ("RUSTUP_HOME", rustup_home.as_str()),
    ]);
    let screen = home.on_terminal(&command, &env, Duration::from_secs(90));
    assert_eq!(screen.code, Some(0), "{}", screen.text);
    assert!(work.join("Cargo.lock").is_file());
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|a| a.as_deref() == Some(bearer.as_str())),
        "the registry saw the signed-in token"
    );
    assert!(
        !screen.text.contains(sample.token),
        "no token on cargo's terminal:\n{}",
        screen.text
    );
    assert!(screen.text.contains("(asked by cargo)"), "{}", screen.text);
}

#[test]
fn real_git_clones_after_a_device_code_sign_in_on_its_terminal() {
    real_git_clones_after_signing_in(|_| device_sample());
}

#[test]
fn real_git_clones_after_a_browser_sign_in() {
    real_git_clones_after_signing_in(pkce_sample);
}

#[test]
fn real_cargo_resolves_after_a_device_code_sign_in_on_its_terminal() {
    real_cargo_resolves_after_signing_in(|_| device_sample());
}

#[test]
fn real_cargo_resolves_after_a_browser_sign_in() {
    real_cargo_resolves_after_signing_in(pkce_sample);
}

/// A GitHub Actions OIDC endpoint and a registry's trusted-publishing exchange.
fn ci_servers() -> (TestServer, Arc<Mutex<Vec<String>>>) {
    let exchanged: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = exchanged.clone();
    let server = TestServer::start(move |req: &Seen| {
        let bearer = req
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        if req.method == "GET" && req.url.starts_with("/oidc?") {
            if bearer != "bearer job-request-token" {
                return Reply::json(401, "{}");
            }
            let audience = req.url.split("audience=").nth(1).unwrap_or_default().to_owned();
            let e = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s);
            let jwt = format!(
                "{}.{}.sig",
                e(r#"{"alg":"RS256"}"#),
                e(&format!(
                    r#"{{"aud":"{audience}","sub":"repo:org/app:ref:refs/heads/main"}}"#
                ))
            );
            return Reply::json(200, &format!(r#"{{"value":"{jwt}"}}"#));
        }
        if req.method == "POST" && req.url == "/exchange" {
            seen.lock().unwrap().push(req.body.clone());
            return Reply::json(200, r#"{"token":"registry-token-1","expires_in":1800}"#);
        }
        Reply::json(404, "{}")
    });
    (server, exchanged)
}

fn ci_home(server: &TestServer, granted: &str, declared: bool) -> Home {
    let home = Home::new();
    let origin = server.origin();
    let mut m = credence_tests::manifest("ci-exchange", &[origin.clone()], &[]);
    if declared {
        m.push_str("id-token = true\n");
    }
    home.install("ci-exchange", "ci-exchange", &m);
    let key = home.keygen("publisher");
    home.trust(&key, "Publisher", "publisher", "*");
    home.sign("ci-exchange", &key, &[]);
    home.write_config(&format!(
        "[[provider]]\nname = \"registry\"\ncomponent = \"ci-exchange.wasm\"\nserves = [\"https://registry.example/\"]\ngrant-origins = [\"{origin}\"]\ngrant-id-token = [{{ source = \"github-actions\", audience = \"{granted}\" }}]\n[provider.settings]\naudience = \"registry.example\"\nexchange-url = \"{origin}/exchange\"\n"
    ));
    home
}

fn in_a_ci_job(server: &TestServer) -> Vec<(String, String)> {
    vec![
        (
            "ACTIONS_ID_TOKEN_REQUEST_URL".into(),
            format!("{}/oidc?api-version=2.0", server.origin()),
        ),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN".into(), "job-request-token".into()),
    ]
}

#[test]
fn a_ci_job_exchanges_its_identity_for_a_registry_token_and_the_identity_is_never_kept() {
    let (server, exchanged) = ci_servers();
    let home = ci_home(&server, "registry.example", true);
    let job = in_a_ci_job(&server);
    let mut env: Vec<(&str, &str)> = job.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("CREDENCE_LOG", "trace"));
    let run = home.run_with(
        &[
            "get",
            "https://registry.example/api/v1/crates/new",
            "--operation",
            "publish",
        ],
        &env,
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.stdout.trim(), "registry-token-1");
    let sent = exchanged.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    let jwt = sent[0]
        .split('"')
        .nth(3)
        .expect("the exchange got {\"jwt\": ...}")
        .to_owned();
    assert!(jwt.len() > 20, "{sent:?}");
    let audit = home.run(&["audit", "--json"]);
    assert!(
        audit.stdout.contains("id-token registry.example: issued"),
        "{}",
        audit.stdout
    );
    for place in [&run.stderr, &audit.stdout] {
        assert!(
            !place.contains(&jwt) && !place.contains("job-request-token"),
            "the identity leaked: {place}"
        );
    }
}

#[test]
fn the_ci_identity_is_refused_for_an_ungranted_audience_an_undeclared_ceiling_and_outside_a_job() {
    let (server, exchanged) = ci_servers();
    let job = in_a_ci_job(&server);
    let env: Vec<(&str, &str)> = job.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let url = "https://registry.example/api/v1/crates/new";

    let other = ci_home(&server, "crates.io", true);
    let run = other.run_with(&["get", url], &env);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr.contains("is not granted to this instance") && run.stderr.contains("grant-id-token"),
        "{}",
        run.stderr
    );

    let undeclared = ci_home(&server, "registry.example", false);
    let run = undeclared.run_with(&["get", url], &env);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr.contains("did not declare `id-token = true`"),
        "{}",
        run.stderr
    );

    let granted = ci_home(&server, "registry.example", true);
    let run = granted.run(&["get", url]);
    assert_eq!(
        run.code,
        Some(1),
        "outside a job there is nothing to exchange: {run:#?}"
    );
    assert!(run.stderr.contains("no GitHub Actions identity here"), "{}", run.stderr);
    assert!(exchanged.lock().unwrap().is_empty(), "nothing reached the exchange");
}

/// `oauth-pkce` with `limits`, and a browser that notes where it was sent and never goes
/// there (the user walked away): the home, the file the browser writes, the browser.
fn pkce_with_an_idle_browser(code: &CodeServer, limits: &str) -> (Home, std::path::PathBuf, std::path::PathBuf) {
    let origin = code.server.origin();
    let home = Home::new();
    home.install_signed(&[("oauth-pkce", &[origin.clone()], &["authorize"])]);
    home.write_config(&format!(
        "[[provider]]\nname = \"sso\"\ncomponent = \"oauth-pkce.wasm\"\nserves = [\"https://git.example/\"]\ngrant-origins = [\"{origin}\"]\nlimits = {{ {limits} }}\n[provider.settings]\nclient-id = \"app-1\"\nauthorization-endpoint = \"{origin}/authorize\"\ntoken-endpoint = \"{origin}/token\"\n"
    ));
    let opened = home.dir.path().join("opened.txt");
    let browser = home.dir.path().join("browser.sh");
    std::fs::write(
        &browser,
        format!("#!/bin/sh\necho \"$1\" > {}\n", sh_quote(&opened.to_string_lossy())),
    )
    .unwrap();
    std::fs::set_permissions(&browser, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (home, opened, browser)
}

/// `host:port` of the launch address the browser was started with.
fn launched_authority(launch: &str) -> String {
    launch
        .trim()
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .expect("a loopback launch URL")
        .to_owned()
}

#[test]
fn a_sign_in_whose_tool_went_away_closes_its_port_within_a_second() {
    let code = code_server();
    let (home, opened, browser) = pkce_with_an_idle_browser(&code, "");
    let mut cmd = home.command_for(std::path::Path::new("script"));
    cmd.args([
        "--quiet",
        "--return",
        "--command",
        &format!("{} get {URL}", sh_quote(&credence_exe().to_string_lossy())),
        "/dev/null",
    ])
    .env("CREDENCE_BROWSER", &browser)
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let mut tool = cmd.spawn().expect("script(1)");
    let deadline = Instant::now() + Duration::from_secs(30);
    let launch = loop {
        if let Ok(text) = std::fs::read_to_string(&opened)
            && text.ends_with('\n')
        {
            break text.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "the browser was never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    let authority = launched_authority(&launch);
    assert!(
        std::net::TcpStream::connect(&authority).is_ok(),
        "the listener waits for the callback"
    );
    // The user presses Ctrl-C in the tool; its terminal goes away.
    tool.kill().unwrap();
    let _ = tool.wait();
    let gone = Instant::now();
    while std::net::TcpStream::connect(&authority).is_ok() {
        assert!(
            gone.elapsed() < Duration::from_secs(1),
            "the port still answers {:?} after the tool went away",
            gone.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_three_minute_device_login_is_not_cut_by_the_120_s_call_limit() {
    let (server, log) = device_server();
    log.never_approve.store(true, Ordering::SeqCst);
    // Defaults: 120 s per call, 15 minutes once a code is shown.
    let home = device_home(&server, "");
    let approve = log.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(185));
        approve.never_approve.store(false, Ordering::SeqCst);
    });
    let started = Instant::now();
    let command = format!("{} get {URL}", sh_quote(&credence_exe().to_string_lossy()));
    let screen = home.on_terminal(&command, &[], Duration::from_secs(300));
    assert_eq!(screen.code, Some(0), "{}", screen.text);
    assert!(screen.text.contains("at-1"), "{}", screen.text);
    assert!(started.elapsed() >= Duration::from_secs(180), "{:?}", started.elapsed());
}

#[test]
fn a_browser_sign_in_nobody_completes_times_out_and_closes_its_port() {
    let code = code_server();
    let (home, opened, browser) = pkce_with_an_idle_browser(&code, "wall-ms = 1000, interactive-wall-ms = 2500");
    let screen = get_on_terminal(&home, &[("CREDENCE_BROWSER", browser.to_str().unwrap())]);
    let ended = Instant::now();
    assert_eq!(screen.code, Some(3), "{}", screen.text);
    assert!(screen.text.contains("wall-clock limit of 2500 ms"), "{}", screen.text);
    let authority = launched_authority(&std::fs::read_to_string(&opened).expect("the browser was started"));
    while std::net::TcpStream::connect(&authority).is_ok() {
        assert!(
            ended.elapsed() < Duration::from_secs(1),
            "the port still answers after the timeout"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
