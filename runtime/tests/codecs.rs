//! Every front end as a codec, in-process, against a fake resolver: the exact bytes a tool
//! sends in, the exact bytes it gets back, the exit code, and the requests the resolver
//! was asked. No provider, no agent, no process: what the tool sees is decided here.

use credence::front::{FrontEnd, Tool, front_end};
use credence::request::{Answer, CachePolicy, Credential, CredentialRequest, Protocol, Refusal, Source};
use credence::resolver::{Forget, Forgotten, Resolver, Verdict};
use credence::secret::Secret;
use credence::terminal::Terminal;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

/// What the resolver was told, in order.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Resolve {
        url: String,
        protocol: Protocol,
        operation: String,
        interactive: bool,
        retry: bool,
        user: Option<String>,
    },
    Verdict(String, Verdict),
    LoggedOut(String),
    Stored(String, String),
    Provider(Option<String>),
}

struct Fake {
    answer: Box<dyn Fn(&CredentialRequest) -> Result<Answer, Refusal> + Send + Sync>,
    calls: Mutex<Vec<Call>>,
}

impl Resolver for Fake {
    fn resolve(&self, r: &CredentialRequest, _prompts: Box<dyn Terminal>) -> Result<Answer, Refusal> {
        self.calls.lock().unwrap().push(Call::Resolve {
            url: r.url.to_string(),
            protocol: r.protocol,
            operation: r.operation.clone(),
            interactive: r.interactive,
            retry: r.is_retry,
            user: r.username_hint.clone(),
        });
        (self.answer)(r)
    }
    fn verdict(&self, r: &CredentialRequest, v: Verdict) {
        self.calls.lock().unwrap().push(Call::Verdict(r.url.to_string(), v));
    }
    fn forget(&self, what: Forget) -> Result<Forgotten, Refusal> {
        self.calls.lock().unwrap().push(match what {
            Forget::LoggedOut(r) => Call::LoggedOut(r.url.to_string()),
            Forget::Stored(r) => Call::Stored(r.url.to_string(), r.operation),
            Forget::Provider(p) => Call::Provider(p),
        });
        Ok(Forgotten {
            count: 1,
            store: "files".into(),
        })
    }
}

struct NoTerminal;
impl Terminal for NoTerminal {
    fn ask(&mut self, _: &str, _: bool) -> std::io::Result<Option<String>> {
        Err(std::io::Error::other("no terminal in a codec test"))
    }
    fn show(&mut self, _: &str) -> std::io::Result<()> {
        Err(std::io::Error::other("no terminal in a codec test"))
    }
    fn can_prompt(&self) -> bool {
        false
    }
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);
impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn token(secret: &str, user: Option<&str>, expires_at: Option<u64>, cache: CachePolicy) -> Credential {
    Credential {
        username: user.map(str::to_owned),
        secret: Secret::new(secret.to_owned()),
        headers: Vec::new(),
        expires_at,
        cache,
        refresh_at: None,
    }
}

fn answered(c: Credential) -> impl Fn(&CredentialRequest) -> Result<Answer, Refusal> + Send + Sync {
    move |_| {
        Ok(Answer {
            credential: c.clone(),
            provider: "p".into(),
            source: Source::Provider,
            serves: Some("https://mod.example/team/".into()),
        })
    }
}

struct Outcome {
    code: ExitCode,
    stdout: String,
    calls: Vec<Call>,
}

/// Input that ends only once the output holds `until` (as NuGet keeps its pipe open until
/// it has its answers), or after 10 s.
struct InputUntil {
    input: std::io::Cursor<Vec<u8>>,
    output: Shared,
    until: Option<String>,
}

impl std::io::Read for InputUntil {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.input.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        if let Some(until) = &self.until {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !String::from_utf8_lossy(&self.output.0.lock().unwrap()).contains(until.as_str())
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        Ok(0)
    }
}

/// Runs the front end `argv` picks, as a tool would run it, with `stdin` and `env`.
fn run(
    argv: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
    answer: impl Fn(&CredentialRequest) -> Result<Answer, Refusal> + Send + Sync + 'static,
) -> Outcome {
    run_until(argv, stdin, None, env, answer)
}

fn run_until(
    argv: &[&str],
    stdin: &str,
    until: Option<&str>,
    env: &[(&str, &str)],
    answer: impl Fn(&CredentialRequest) -> Result<Answer, Refusal> + Send + Sync + 'static,
) -> Outcome {
    let args: Vec<OsString> = argv.iter().map(OsString::from).collect();
    let (front, rest) = front_end(&args).unwrap_or_else(|| panic!("{argv:?} names no front end"));
    let fake = Arc::new(Fake {
        answer: Box::new(answer),
        calls: Mutex::new(Vec::new()),
    });
    let stdout = Shared::default();
    let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let resolver: Arc<dyn Resolver> = fake.clone();
    let tool = Tool {
        stdin: Box::new(std::io::BufReader::new(InputUntil {
            input: std::io::Cursor::new(stdin.as_bytes().to_vec()),
            output: stdout.clone(),
            until: until.map(str::to_owned),
        })),
        stdout: Box::new(stdout.clone()),
        env: Arc::new(move |k| env.get(k).cloned()),
        resolver: Arc::new(move || Ok(resolver.clone())),
        terminal: Arc::new(|| Box::new(NoTerminal)),
    };
    let code = front.run(&rest, tool);
    let out = String::from_utf8(stdout.0.lock().unwrap().clone()).expect("UTF-8 output");
    let calls = fake.calls.lock().unwrap().clone();
    Outcome {
        code,
        stdout: out,
        calls,
    }
}

fn resolve(url: &str, protocol: Protocol, operation: &str, interactive: bool, user: Option<&str>) -> Call {
    Call::Resolve {
        url: url.into(),
        protocol,
        operation: operation.into(),
        interactive,
        retry: false,
        user: user.map(str::to_owned),
    }
}

#[test]
fn git_get_answers_user_password_and_expiry_and_names_the_url_with_its_path() {
    let out = run(
        &["git-credential-credence", "get"],
        "protocol=https\nhost=git.example\npath=org/repo.git\nusername=alice\n\n",
        &[],
        answered(token("tok", None, Some(1_767_225_600), CachePolicy::UntilExpiry)),
    );
    assert_eq!(out.code, ExitCode::SUCCESS);
    assert_eq!(
        out.stdout,
        "username=alice\npassword=tok\npassword_expiry_utc=1767225600\n\n"
    );
    assert_eq!(
        out.calls,
        [resolve(
            "https://git.example/org/repo.git",
            Protocol::Git,
            "read",
            true,
            Some("alice")
        )]
    );
}

#[test]
fn git_with_authtype_gets_the_bearer_form_marked_ephemeral_unless_it_may_be_kept() {
    let mut c = token("ignored", None, None, CachePolicy::Session);
    c.headers = vec![("Authorization".into(), Secret::new("Bearer abc".into()))];
    let out = run(
        &["credence", "git", "get"],
        "capability[]=authtype\nprotocol=https\nhost=git.example\nwwwauth[]=Bearer realm=\"x\"\n\n",
        &[("GIT_TERMINAL_PROMPT", "0")],
        answered(c),
    );
    assert_eq!(
        out.stdout,
        "capability[]=authtype\nauthtype=Bearer\ncredential=abc\nephemeral=1\n\n"
    );
    assert_eq!(
        out.calls,
        [resolve("https://git.example/", Protocol::Git, "read", false, None)]
    );
}

#[test]
fn git_store_and_erase_are_verdicts_and_what_nobody_serves_is_silence() {
    let input = "protocol=https\nhost=git.example\n\n";
    let store = run(
        &["credence", "git", "store"],
        input,
        &[],
        answered(token("t", None, None, CachePolicy::Never)),
    );
    let erase = run(
        &["credence", "git", "erase"],
        input,
        &[],
        answered(token("t", None, None, CachePolicy::Never)),
    );
    assert_eq!((store.stdout.as_str(), erase.stdout.as_str()), ("", ""));
    assert_eq!(
        store.calls,
        [Call::Verdict("https://git.example/".into(), Verdict::Accepted)]
    );
    assert_eq!(
        erase.calls,
        [Call::Verdict("https://git.example/".into(), Verdict::Rejected)]
    );
    let none = run(&["credence", "git", "get"], input, &[], |r| {
        Err(Refusal::NotServed(r.url.to_string()))
    });
    assert_eq!((none.code, none.stdout.as_str()), (ExitCode::SUCCESS, ""));
    let smuggled = run(
        &["credence", "git", "get"],
        "protocol=https\nhost=git.example\rhost=evil\n\n",
        &[],
        answered(token("t", None, None, CachePolicy::Never)),
    );
    assert_eq!((smuggled.code, smuggled.stdout.as_str()), (ExitCode::from(1), ""));
    assert!(smuggled.calls.is_empty(), "nothing smuggled reaches the resolver");
}

#[test]
fn cargo_answers_each_line_in_cargo_s_shapes_and_login_drops_every_operation_first() {
    let input = concat!(
        r#"{"v":1,"registry":{"index-url":"sparse+https://r.example/index/"},"kind":"get","operation":"read"}"#,
        "\n",
        r#"{"v":1,"registry":{"index-url":"sparse+https://r.example/index/"},"kind":"login"}"#,
        "\n",
        r#"{"v":1,"registry":{"index-url":"sparse+https://r.example/index/"},"kind":"logout"}"#,
        "\n",
        r#"{"v":1,"registry":{"index-url":"sparse+https://none.example/"},"kind":"get","operation":"read"}"#,
        "\n",
    );
    let out = run(&["credence", "--cargo-plugin"], input, &[], |r| {
        if r.url.host_str() == Some("none.example") {
            return Err(Refusal::NotServed(r.url.to_string()));
        }
        Ok(Answer {
            credential: token("tok", None, Some(1_767_225_600), CachePolicy::UntilExpiry),
            provider: "p".into(),
            source: Source::Stored,
            serves: None,
        })
    });
    assert_eq!(
        out.stdout,
        concat!(
            "{\"v\":[1]}\n",
            r#"{"Ok":{"kind":"get","token":"tok","cache":"expires","expiration":1767225600,"operation_independent":true}}"#,
            "\n",
            r#"{"Ok":{"kind":"login"}}"#,
            "\n",
            r#"{"Ok":{"kind":"logout"}}"#,
            "\n",
            r#"{"Err":{"kind":"url-not-supported"}}"#,
            "\n",
        )
    );
    let url = "https://r.example/index/";
    let mut expected = vec![resolve(url, Protocol::Cargo, "read", true, None)];
    for op in ["read", "publish", "yank", "unyank", "owners"] {
        expected.push(Call::Stored(url.into(), op.into()));
    }
    expected.push(resolve(url, Protocol::Cargo, "read", true, None));
    expected.push(Call::LoggedOut(url.into()));
    expected.push(resolve("https://none.example/", Protocol::Cargo, "read", true, None));
    assert_eq!(out.calls, expected);
}

#[test]
fn docker_get_erase_and_not_found_are_docker_s_exact_forms() {
    let get = run(
        &["docker-credential-credence", "get"],
        "registry.example:5000\n",
        &[],
        answered(token("tok", None, None, CachePolicy::Never)),
    );
    assert_eq!(
        get.stdout,
        "{\"ServerURL\":\"registry.example:5000\",\"Username\":\"<token>\",\"Secret\":\"tok\"}\n"
    );
    assert_eq!(
        get.calls,
        [resolve(
            "https://registry.example:5000/",
            Protocol::Docker,
            "pull",
            false,
            None
        )]
    );
    let erase = run(&["credence", "docker", "erase"], "registry.example", &[], |r| {
        Err(Refusal::NotServed(r.url.to_string()))
    });
    assert_eq!((erase.code, erase.stdout.as_str()), (ExitCode::SUCCESS, ""));
    assert_eq!(erase.calls, [Call::LoggedOut("https://registry.example/".into())]);
    let missing = run(&["credence", "docker", "get"], "registry.example", &[], |r| {
        Err(Refusal::NotFound {
            url: r.url.to_string(),
            detail: String::new(),
        })
    });
    assert_eq!(
        (missing.code, missing.stdout.as_str()),
        (ExitCode::from(1), "credentials not found in native keychain\n")
    );
}

#[test]
fn bazel_gets_headers_and_an_rfc3339_expiry_and_an_unserved_uri_gets_no_headers() {
    let out = run(
        &["credence-bazel", "get"],
        r#"{"uri":"https://blobs.example/a/b"}"#,
        &[],
        answered(token("tok", None, Some(1_767_225_600), CachePolicy::UntilExpiry)),
    );
    assert_eq!(
        out.stdout,
        "{\"expires\":\"2026-01-01T00:00:00Z\",\"headers\":{\"Authorization\":[\"Bearer tok\"]}}\n"
    );
    assert_eq!(
        out.calls,
        [resolve(
            "https://blobs.example/a/b",
            Protocol::Bazel,
            "get",
            false,
            None
        )]
    );
    let none = run(
        &["credence", "bazel", "get"],
        r#"{"uri":"https://public.example/"}"#,
        &[],
        |r| Err(Refusal::NotServed(r.url.to_string())),
    );
    assert_eq!(none.stdout, "{}\n");
}

#[test]
fn goauth_names_the_served_prefix_then_the_headers() {
    let out = run(
        &["credence", "goauth", "https://mod.example/team/pkg"],
        "",
        &[],
        answered(token("tok", Some("u"), None, CachePolicy::Never)),
    );
    assert_eq!(
        out.stdout,
        "https://mod.example/team/\n\nAuthorization: Basic dTp0b2s=\n\n"
    );
}

#[test]
fn keyring_answers_the_password_or_the_pair_and_del_is_a_logout() {
    let get = run(
        &["keyring", "get", "https://pypi.example/simple/", "__token__"],
        "",
        &[],
        answered(token("tok", None, None, CachePolicy::Never)),
    );
    assert_eq!(get.stdout, "tok\n");
    assert_eq!(
        get.calls,
        [resolve(
            "https://pypi.example/simple/",
            Protocol::Keyring,
            "download",
            false,
            Some("__token__")
        )]
    );
    let creds = run(
        &["keyring", "--mode", "creds", "get", "pypi.example", ""],
        "",
        &[],
        answered(token("tok", Some("bob"), None, CachePolicy::Never)),
    );
    assert_eq!(creds.stdout, "bob\ntok\n");
    let del = run(&["keyring", "del", "pypi.example", "bob"], "", &[], |r| {
        Err(Refusal::NotServed(r.url.to_string()))
    });
    assert_eq!(
        (del.code, del.calls),
        (ExitCode::SUCCESS, vec![Call::LoggedOut("https://pypi.example/".into())])
    );
}

#[test]
fn kubectl_gets_an_exec_credential_of_the_version_it_asked_for() {
    let info = r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false,"cluster":{"server":"https://k8s.example:6443"}}}"#;
    let out = run(
        &["credence", "kubectl"],
        "",
        &[("KUBERNETES_EXEC_INFO", info)],
        answered(token("tok", None, Some(1_767_225_600), CachePolicy::UntilExpiry)),
    );
    assert_eq!(
        out.stdout,
        "{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"expirationTimestamp\":\"2026-01-01T00:00:00Z\",\"token\":\"tok\"}}\n"
    );
    assert_eq!(
        out.calls,
        [resolve(
            "https://k8s.example:6443/",
            Protocol::Kubectl,
            "get",
            false,
            None
        )]
    );
}

#[test]
fn nuget_v1_answers_one_object_with_its_exit_codes() {
    let ok = run(
        &[
            "CredentialProviderCredence.exe",
            "-uri",
            "https://feed.example/v3/index.json",
            "-NonInteractive",
        ],
        "",
        &[],
        answered(token("tok", None, None, CachePolicy::Never)),
    );
    assert_eq!(ok.code, ExitCode::SUCCESS);
    assert_eq!(
        ok.stdout,
        "{\"Message\":\"\",\"Password\":\"tok\",\"Username\":\"credence\"}\n"
    );
    assert_eq!(
        ok.calls,
        [resolve(
            "https://feed.example/v3/index.json",
            Protocol::Nuget,
            "download",
            false,
            None
        )]
    );
    let none = run(
        &["credence", "nuget-v1", "-uri", "https://feed.example/"],
        "",
        &[],
        |r| Err(Refusal::NotServed(r.url.to_string())),
    );
    assert_eq!(none.code, ExitCode::from(1));
}

#[test]
fn nuget_v2_answers_handshake_and_credentials_by_request_id() {
    let input = concat!(
        r#"{"RequestId":"h","Type":"Request","Method":"Handshake","Payload":{"ProtocolVersion":"2.0.0","MinimumProtocolVersion":"1.0.0"}}"#,
        "\n",
        r#"{"RequestId":"c1","Type":"Request","Method":"GetAuthenticationCredentials","Payload":{"Uri":"https://feed.example/v3/index.json","IsRetry":true,"IsNonInteractive":true,"CanShowDialog":false}}"#,
        "\n",
    );
    let out = run_until(
        &["nuget-plugin-credence", "-Plugin"],
        input,
        Some("\"RequestId\":\"c1\",\"Type\":\"Response\""),
        &[],
        answered(token("tok", Some("me"), None, CachePolicy::Never)),
    );
    assert_eq!(out.code, ExitCode::SUCCESS);
    let lines: Vec<serde_json::Value> = out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        lines[0]["Method"], "Handshake",
        "our own handshake goes out first: {lines:?}"
    );
    let reply = |id: &str| {
        lines
            .iter()
            .find(|l| l["RequestId"] == id && l["Type"] == "Response")
            .cloned()
    };
    assert_eq!(
        reply("h").unwrap()["Payload"],
        serde_json::json!({"ResponseCode":"Success","ProtocolVersion":"2.0.0"})
    );
    assert_eq!(
        reply("c1").unwrap()["Payload"],
        serde_json::json!({"Username":"me","Password":"tok","AuthenticationTypes":["Basic"],"ResponseCode":"Success"})
    );
    assert_eq!(
        out.calls,
        [Call::Resolve {
            url: "https://feed.example/v3/index.json".into(),
            protocol: Protocol::Nuget,
            operation: "download".into(),
            interactive: false,
            retry: true,
            user: None,
        }]
    );
}

#[test]
fn a_program_name_or_first_word_picks_the_front_end_and_anything_else_is_the_cli() {
    let pick =
        |argv: &[&str]| front_end(&argv.iter().map(OsString::from).collect::<Vec<_>>()).map(|(f, rest)| (f, rest));
    assert_eq!(
        pick(&["/usr/bin/git-credential-credence", "get"]),
        Some((FrontEnd::Git, vec!["get".into()]))
    );
    assert_eq!(
        pick(&["credence", "cargo", "--cargo-plugin"]).map(|p| p.0),
        Some(FrontEnd::Cargo)
    );
    assert_eq!(
        pick(&["CREDENTIALPROVIDER.Credence.exe", "-uri", "x"]).map(|p| p.0),
        Some(FrontEnd::NugetV1)
    );
    assert_eq!(pick(&["credence", "get", "https://x.example/"]), None);
}
