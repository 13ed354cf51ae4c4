//! The sandboxed runtime end to end: the real `credence` binary, real provider components
//! and HTTP servers on 127.0.0.1.

use credence_tests::{Home, Reply, TestServer, manifest};

const UNSIGNED: &str = "--allow-unsigned";

/// A home with `static-token` serving https://registry.example/ (no network needed).
fn static_home() -> Home {
    let home = Home::new();
    home.install("static-token", "static-token", &manifest("static-token", &[], &[]));
    home.write_config(
        r#"
[[provider]]
name = "corp"
component = "static-token.wasm"
serves = ["https://registry.example/"]
[provider.settings]
token = "tok-static-123"
username = "ci"
"#,
    );
    home
}

#[test]
fn static_token_answers_from_its_settings() {
    let home = static_home();
    let run = home.run(&[UNSIGNED, "get", "https://registry.example/index/config.json", "--json"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let json = run.json();
    assert_eq!(json["secret"], "tok-static-123");
    assert_eq!(json["username"], "ci");
    assert_eq!(json["provider"], "corp");
    assert_eq!(json["source"], "provider");

    let plain = home.run(&[UNSIGNED, "get", "https://registry.example/"]);
    assert_eq!(plain.stdout, "tok-static-123\n");
}

#[test]
fn unsigned_providers_do_not_run_without_the_development_flag() {
    let home = static_home();
    let run = home.run(&["get", "https://registry.example/"]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(run.stderr.contains("provider corp is not signed"), "{}", run.stderr);
    assert!(run.stderr.contains("--allow-unsigned"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
    let run = home.run(&[UNSIGNED, "get", "https://registry.example/"]);
    assert!(run.stderr.contains("warning: --allow-unsigned"), "{}", run.stderr);
}

#[test]
fn a_url_no_provider_serves_is_not_mine() {
    let home = static_home();
    for url in [
        "https://other.example/",
        "https://registry.example:8443/",
        "https://registry.example.evil.example/",
    ] {
        let run = home.run(&[UNSIGNED, "get", url]);
        assert_eq!(run.code, Some(1), "{url}: {run:#?}");
        assert!(run.stderr.contains("no configured provider serves"), "{}", run.stderr);
        assert!(run.stdout.is_empty());
    }
}

#[test]
fn not_mine_moves_on_to_the_next_provider() {
    let home = Home::new();
    home.install("hostile", "hostile", &manifest("hostile", &[], &[]));
    home.install("static-token", "static-token", &manifest("static-token", &[], &[]));
    home.write_config(
        r#"
[[provider]]
name = "first"
component = "hostile.wasm"
serves = ["https://registry.example/"]
settings = { attack = "not-mine" }
[[provider]]
name = "second"
component = "static-token.wasm"
serves = ["https://registry.example/"]
settings = { token = "from-second" }
"#,
    );
    let run = home.run(&[UNSIGNED, "get", "https://registry.example/", "--json"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.json()["provider"], "second");
    assert_eq!(run.json()["secret"], "from-second");
}

#[test]
fn bad_request_urls_are_refused_before_any_provider_runs() {
    let home = static_home();
    let run = home.run(&[UNSIGNED, "get", "https://ci:hunter2@registry.example/"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("carries a user name or password"), "{}", run.stderr);
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
    let long = format!("https://registry.example/{}", "a".repeat(70_000));
    let run = home.run(&[UNSIGNED, "get", &long]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("the limit is 65536"), "{}", run.stderr);
}

fn token_server(expires_in: u64) -> TestServer {
    TestServer::start(move |req| {
        if req.method != "POST" || req.url != "/token" {
            return Reply::json(404, "{}");
        }
        let token = if req.body.contains("grant_type=refresh_token") {
            "tok-refreshed"
        } else {
            "tok-exchanged"
        };
        if req.body.contains("client_secret=wrong") {
            return Reply::json(401, r#"{"error":"invalid_client"}"#);
        }
        Reply::json(
            200,
            &format!(r#"{{"access_token":"{token}","expires_in":{expires_in},"refresh_token":"rt-1"}}"#),
        )
    })
}

fn exchange_home(server: &TestServer, secret: &str) -> Home {
    let home = Home::new();
    home.install(
        "token-exchange",
        "token-exchange",
        &manifest("token-exchange", &[server.origin()], &[]),
    );
    home.write_config(&format!(
        r#"
[[provider]]
name = "feed"
component = "token-exchange.wasm"
serves = ["https://feed.example/"]
grant-origins = ["{origin}"]
[provider.settings]
token-url = "{origin}/token"
client-id = "ci-bot"
client-secret = "{secret}"
"#,
        origin = server.origin()
    ));
    home
}

#[test]
fn token_exchange_trades_client_credentials_for_a_bearer_token() {
    let server = token_server(3600);
    let home = exchange_home(&server, "cs-very-secret");
    let run = home.run(&[UNSIGNED, "get", "https://feed.example/v3/index.json", "--json"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let json = run.json();
    assert_eq!(json["secret"], "tok-exchanged");
    assert_eq!(json["headers"][0][0], "Authorization");
    assert_eq!(json["headers"][0][1], "Bearer tok-exchanged");
    assert_eq!(json["cache"], "until-expiry");
    assert!(json["expires_at"].as_u64().unwrap() > 1_700_000_000);
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].body.contains("grant_type=client_credentials"),
        "{:?}",
        seen[0].body
    );
    assert!(seen[0].body.contains("client_secret=cs-very-secret"));
    assert!(
        seen[0]
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.contains("form-urlencoded"))
    );
}

#[test]
fn a_stored_credential_answers_without_running_the_provider_until_a_retry() {
    let server = token_server(3600);
    let home = exchange_home(&server, "cs");
    let url = "https://feed.example/v3/index.json";
    assert_eq!(home.run(&[UNSIGNED, "get", url, "--json"]).json()["source"], "provider");
    let second = home.run(&[UNSIGNED, "get", url, "--json"]);
    assert_eq!(second.json()["source"], "stored");
    assert_eq!(second.json()["secret"], "tok-exchanged");
    assert_eq!(
        server.hits(),
        1,
        "the stored credential must not call the token endpoint"
    );

    // A retry means the server refused it: ask the provider again, with is-retry set, so
    // it starts from the client credentials rather than the stored refresh token.
    let retry = home.run(&[UNSIGNED, "get", url, "--json", "--retry"]);
    assert_eq!(retry.json()["source"], "provider");
    assert_eq!(server.hits(), 2);
    assert!(server.seen()[1].body.contains("grant_type=client_credentials"));

    let forget = home.run(&["forget", "--provider", "feed"]);
    assert_eq!(forget.code, Some(0), "{forget:#?}");
    assert_eq!(home.run(&[UNSIGNED, "get", url, "--json"]).json()["source"], "provider");
    assert_eq!(server.hits(), 3);
}

#[test]
fn provider_state_carries_a_refresh_token_between_runs() {
    // Tokens that expire within the host's safety margin are not stored, so every run
    // asks the provider, which then uses the refresh token it kept in its state.
    let server = token_server(10);
    let home = exchange_home(&server, "cs");
    let config = std::fs::read_to_string(home.home().join("config.toml")).unwrap();
    home.write_config(&format!("store = \"file\"\n{config}"));
    let url = "https://feed.example/";
    assert_eq!(
        home.run(&[UNSIGNED, "get", url, "--json"]).json()["secret"],
        "tok-exchanged"
    );
    assert_eq!(
        home.run(&[UNSIGNED, "get", url, "--json"]).json()["secret"],
        "tok-refreshed"
    );
    assert!(server.seen()[1].body.contains("refresh_token=rt-1"));
    let state_file = home.state().join("credence/state/feed/state.bin");
    assert_eq!(std::fs::read(&state_file).unwrap(), b"rt-1");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&state_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    home.run(&["logout"]);
    assert!(!state_file.exists());
}

/// Whether this Linux machine lets us use the kernel keyring (a container's seccomp
/// profile may forbid it): decides which of the two behaviours the next test expects.
#[cfg(target_os = "linux")]
fn kernel_keyring_usable() -> bool {
    // SAFETY: keyctl(KEYCTL_GET_PERSISTENT, own uid, KEY_SPEC_SESSION_KEYRING) takes no
    // pointers; it is the call credence's OS store needs to work.
    unsafe { libc::syscall(libc::SYS_keyctl, 22, -1, -3) >= 0 }
}

/// Every file under `dir`, with its bytes.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

#[cfg(target_os = "linux")]
#[test]
fn secrets_go_to_the_kernel_keyring_never_to_disk_and_forget_removes_them() {
    let server = token_server(3600);
    let home = exchange_home(&server, "cs");
    let url = "https://feed.example/v3/index.json";
    let listing = home.run(&[UNSIGNED, "providers"]).stdout;
    if !kernel_keyring_usable() {
        assert!(
            listing.contains("stored credentials and state: 0600 files"),
            "{listing}"
        );
        return;
    }
    assert!(
        listing.contains("stored credentials and state: the Linux kernel keyring"),
        "{listing}"
    );
    assert_eq!(home.run(&[UNSIGNED, "get", url, "--json"]).json()["source"], "provider");
    let stored = home.run(&[UNSIGNED, "get", url, "--json"]);
    assert_eq!(stored.json()["source"], "stored", "{stored:#?}");
    assert_eq!(stored.json()["secret"], "tok-exchanged");
    assert_eq!(server.hits(), 1);

    // Neither the token nor the refresh token the provider kept is on disk anywhere.
    let state_dir = home.state().join("credence");
    let files = files_under(&state_dir);
    for (path, bytes) in &files {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains("tok-exchanged") && !text.contains("rt-1"),
            "{} holds a secret",
            path.display()
        );
    }
    let markers: Vec<_> = files
        .iter()
        .filter(|(p, _)| p.to_string_lossy().ends_with(".in-os-store"))
        .collect();
    assert_eq!(markers.len(), 2, "a state and a credential marker: {files:#?}");
    // The kernel lists them (descriptions only) in this user's keys.
    let keys = || std::fs::read_to_string("/proc/keys").unwrap();
    let service = {
        use sha2::Digest;
        let state = std::fs::canonicalize(home.state().join("credence/state")).unwrap();
        format!(
            "credence {}",
            &hex::encode(sha2::Sha256::digest(state.as_os_str().as_encoded_bytes()))[..16]
        )
    };
    let listed = keys();
    let timeout_of = |what: &str| {
        listed
            .lines()
            .find(|l| l.contains(&format!("keyring-rs:feed/{what}")) && l.contains(&service))
            .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {what} key in {listed}"))
    };
    // The state is kept until forgotten; the credential only until it expires (an hour).
    assert_eq!(timeout_of("state@"), "perm");
    let credential_timeout = timeout_of("credential/");
    assert!(
        ["59m", "60m", "1h"].contains(&credential_timeout.as_str()),
        "the kernel drops the credential when it expires: timeout {credential_timeout}"
    );

    let forget = home.run(&["forget"]);
    assert_eq!(forget.code, Some(0), "{forget:#?}");
    // The kernel collects invalidated keys a moment later; until then they are flagged `i`.
    let after = keys();
    let live: Vec<_> = after
        .lines()
        .filter(|l| l.contains(&service))
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|flags| !flags.contains('i')))
        .collect();
    assert!(
        live.is_empty(),
        "forget leaves nothing of this home in the keyring: {live:#?}"
    );
    assert!(files_under(&state_dir.join("state")).is_empty());
    assert_eq!(home.run(&[UNSIGNED, "get", url, "--json"]).json()["source"], "provider");
    assert_eq!(server.hits(), 2);
    assert!(
        server.seen()[1].body.contains("grant_type=client_credentials"),
        "the refresh token was forgotten too"
    );
}

#[test]
fn a_refused_client_secret_is_denied_not_retried_elsewhere() {
    let server = token_server(3600);
    let home = exchange_home(&server, "wrong");
    let run = home.run(&[UNSIGNED, "get", "https://feed.example/"]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(run.stderr.contains("provider feed refused"), "{}", run.stderr);
    assert!(!run.stderr.contains("wrong"), "no secret in errors: {}", run.stderr);
}

#[test]
fn an_origin_the_user_did_not_grant_is_denied_even_if_declared() {
    let server = token_server(3600);
    let home = exchange_home(&server, "cs");
    // Same provider and manifest, but the user grants nothing.
    let config = std::fs::read_to_string(home.home().join("config.toml")).unwrap();
    home.write_config(&config.replace(&format!("grant-origins = [\"{}\"]", server.origin()), ""));
    let run = home.run(&[UNSIGNED, "get", "https://feed.example/"]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr.contains("not an allowed origin (allowed: none)"),
        "{}",
        run.stderr
    );
    assert_eq!(server.hits(), 0);
}

#[test]
fn providers_lists_each_provider_with_its_effective_capabilities() {
    let server = token_server(3600);
    let home = exchange_home(&server, "cs");
    let run = home.run(&[UNSIGNED, "providers", "--json"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let p = &run.json()[0];
    assert_eq!(p["name"], "feed");
    assert_eq!(p["status"], "ok");
    assert_eq!(p["effective_origins"][0], server.origin());
    assert_eq!(p["sha256"].as_str().unwrap().len(), 64);
    assert!(
        p["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i.as_str().unwrap().starts_with("credence:provider/http@"))
    );
    let unsigned = home.run(&["providers"]);
    assert!(
        unsigned.stdout.contains("refused: provider feed is not signed"),
        "{}",
        unsigned.stdout
    );
}

#[test]
fn static_token_without_its_token_setting_says_which_config_line_to_add() {
    let (home, _) = Home::signed_static_token();
    home.write_config(
        "[[provider]]\nname = \"registry\"\ncomponent = \"static-token.wasm\"\nserves = [\"https://registry.example/\"]\n",
    );
    let run = home.run(&["get", "https://registry.example/"]);
    assert_ne!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stderr
            .contains("add `token = \"...\"` to this provider's [provider.settings] table in config.toml"),
        "{}",
        run.stderr
    );
}

#[test]
fn completion_scripts_complete_credences_commands_and_an_unknown_shell_is_a_usage_error() {
    let home = Home::new();
    let bash = home.run(&["completions", "bash"]);
    assert_eq!(bash.code, Some(0), "{bash:#?}");
    // Sourced by a real bash, the script completes `credence tr` to `trust`.
    let completed = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{}\nCOMP_WORDS=(credence tr); COMP_CWORD=1; _credence credence tr credence; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            bash.stdout
        ))
        .output()
        .expect("bash");
    let words = String::from_utf8_lossy(&completed.stdout);
    assert!(words.lines().any(|w| w == "trust"), "{words:?} {completed:?}");
    for shell in ["zsh", "fish"] {
        let run = home.run(&["completions", shell]);
        assert_eq!(run.code, Some(0), "{run:#?}");
        assert!(run.stdout.contains("trust"), "{shell}");
    }
    let tcsh = home.run(&["completions", "tcsh"]);
    assert_eq!(tcsh.code, Some(2), "{tcsh:#?}");
    assert!(
        tcsh.stderr.contains("bash"),
        "the usage error lists the shells: {}",
        tcsh.stderr
    );
}

/// From a publisher's files to a working instance in one command: `install --serves`
/// writes the config entry, and the setting the manifest marks secret comes from stdin.
#[test]
fn install_with_serves_writes_a_working_config_entry_and_takes_secret_settings_only_off_argv() {
    let server = token_server(3600);
    let home = Home::new();
    let key = home.keygen("publisher");
    home.trust(&key, "Publisher", "publisher", "token-exchange");
    let declared = "[settings.token-url]\nrequired = true\n[settings.client-id]\nrequired = true\n[settings.client-secret]\nrequired = true\nsecret = true\ndescription = \"the client secret\"\n";
    home.install(
        "token-exchange",
        "token-exchange",
        &format!("{}{declared}", manifest("token-exchange", &[server.origin()], &[])),
    );
    home.sign("token-exchange", &key, &[]);
    // The publisher's two files, somewhere outside the home (a download).
    let download = home.dir.path().join("download");
    std::fs::create_dir_all(&download).unwrap();
    for f in ["token-exchange.wasm", "token-exchange.statement.json"] {
        std::fs::rename(home.provider_file(f), download.join(f)).unwrap();
    }
    let wasm = download.join("token-exchange.wasm");
    let wasm = wasm.to_str().unwrap();
    home.write_config("# my config\nstore = \"file\"\n");
    let token_url = format!("token-url={}/token", server.origin());
    let grant = server.origin();
    let base = [
        "install",
        wasm,
        "--serves",
        "https://feed.example/",
        "--grant",
        &grant,
        "--setting",
        &token_url,
    ];

    let on_argv = home.run(
        &[
            &base[..],
            &["--setting", "client-id=ci", "--setting", "client-secret=oops"],
        ]
        .concat(),
    );
    assert_eq!(on_argv.code, Some(2), "{on_argv:#?}");
    assert!(
        on_argv.stderr.contains("marks the setting client-secret secret"),
        "{}",
        on_argv.stderr
    );
    let missing = home.run_stdin(&base, b"s3cret\n", &[]);
    assert_eq!(missing.code, Some(2), "{missing:#?}");
    assert!(
        missing.stderr.contains("add `--setting client-id=...`"),
        "{}",
        missing.stderr
    );
    let outside = home.run(&[
        "install",
        wasm,
        "--serves",
        "https://feed.example/",
        "--grant",
        "https://elsewhere.example",
    ]);
    assert_eq!(outside.code, Some(2), "{outside:#?}");
    assert!(
        outside.stderr.contains("may call only what it declares"),
        "{}",
        outside.stderr
    );
    assert!(
        !home.provider_file("token-exchange.wasm").exists(),
        "nothing was installed by a refused command"
    );

    let done = home.run_stdin(&[&base[..], &["--setting", "client-id=ci"]].concat(), b"s3cret\n", &[]);
    assert_eq!(done.code, Some(0), "{done:#?}");
    assert!(
        done.stderr.contains("added instance \"token-exchange\""),
        "{}",
        done.stderr
    );
    assert!(!done.stderr.contains("s3cret") && !done.stdout.contains("s3cret"));
    let config = std::fs::read_to_string(home.home().join("config.toml")).unwrap();
    assert!(
        config.starts_with("# my config\nstore = \"file\"\n"),
        "the rest of the file stays: {config}"
    );
    assert!(config.contains("client-secret = \"s3cret\""), "{config}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.home().join("config.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "it holds a secret now");
    }
    let get = home.run(&["get", "https://feed.example/"]);
    assert_eq!(
        (get.code, get.stdout.as_str()),
        (Some(0), "tok-exchanged\n"),
        "{get:#?}"
    );
    assert!(server.seen()[0].body.contains("client_secret=s3cret"));

    let twice = home.run_stdin(&[&base[..], &["--setting", "client-id=ci"]].concat(), b"s3cret\n", &[]);
    assert_eq!(twice.code, Some(2), "{twice:#?}");
    assert!(
        twice
            .stderr
            .contains("has an instance named \"token-exchange\" already"),
        "{}",
        twice.stderr
    );
}
