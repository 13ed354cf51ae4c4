//! Real clients against servers on 127.0.0.1: cargo resolving from an auth-required sparse
//! registry (and `cargo login`), git cloning over smart HTTP behind Basic auth, and docker
//! logging out and then reading a manifest, all asking credence.

use credence_tests::{
    GitServer, Home, Key, Reply, TestServer, auth_required_registry, cargo_project, credence_exe, manifest,
};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// token-exchange installed and signed, serving `serves`, trading at `token_server`.
fn exchange_home(token_server: &TestServer, serves: &str, extra_settings: &str) -> (Home, Key) {
    let home = Home::new();
    home.install(
        "token-exchange",
        "token-exchange",
        &manifest("token-exchange", &[token_server.origin()], &[]),
    );
    let key = home.keygen("publisher");
    home.trust(&key, "p", "publisher", "token-exchange");
    home.sign("token-exchange", &key, &[]);
    home.write_config(&format!(
        r#"
[[provider]]
name = "feed"
component = "token-exchange.wasm"
serves = ["{serves}"]
grant-origins = ["{o}"]
[provider.settings]
token-url = "{o}/token"
client-id = "ci"
client-secret = "s3cret-client"
{extra_settings}
"#,
        o = token_server.origin()
    ));
    (home, key)
}

/// A token endpoint that issues tok-1, tok-2, ... and remembers the latest.
fn rotating_tokens() -> (TestServer, Arc<Mutex<String>>) {
    let latest = Arc::new(Mutex::new(String::new()));
    let counter = Arc::new(AtomicUsize::new(0));
    let l = latest.clone();
    let server = TestServer::start(move |req| {
        if req.url != "/token" || !req.body.contains("client_secret=s3cret-client") {
            return Reply::json(401, "{}");
        }
        let token = format!("tok-{}", counter.fetch_add(1, Ordering::SeqCst) + 1);
        *l.lock().unwrap() = token.clone();
        Reply::json(200, &format!(r#"{{"access_token":"{token}","expires_in":3600}}"#))
    });
    (server, latest)
}

fn with_credence_env(cmd: &mut Command, home: &Home) {
    cmd.env("CREDENCE_HOME", home.home())
        .env("XDG_CACHE_HOME", home.cache())
        .env("XDG_STATE_HOME", home.state())
        .env_remove("CREDENCE_LOG");
}

/// Real cargo with `args` in the project, credence in `home`; returns its output (stderr
/// as text).
fn cargo(home: &Home, (work, cargo_home): &(std::path::PathBuf, std::path::PathBuf), args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("cargo");
    cmd.args(args)
        .current_dir(work)
        .env("CARGO_HOME", cargo_home)
        // The test server speaks HTTP/1.1 only; with multiplexing cargo waits for HTTP/2.
        .env("CARGO_HTTP_MULTIPLEXING", "false")
        // Trace cargo's credential handling too: the secret-free stderr checks cover it.
        .env(
            "CARGO_LOG",
            "cargo::util::credential=trace,cargo::sources::registry::http_remote=debug",
        )
        .env("CARGO_NET_RETRY", "0");
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_") && k != "CARGO_HOME" || k == "RUSTFLAGS" {
            cmd.env_remove(k);
        }
    }
    with_credence_env(&mut cmd, home);
    let (out, _) = credence_tests::run_bounded(cmd, std::time::Duration::from_secs(40));
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn real_cargo_resolves_from_an_auth_required_sparse_registry_with_a_credence_token() {
    let (tokens, latest) = rotating_tokens();
    let latest2 = latest.clone();
    let (registry, seen_auth) = auth_required_registry(move || {
        let t = latest2.lock().unwrap();
        (!t.is_empty()).then(|| format!("Bearer {t}"))
    });
    let index = format!("{}/index/", registry.origin());
    let (home, _) = exchange_home(&tokens, &index, "");
    let project = cargo_project(&home, &index);

    let (ok, stderr) = cargo(&home, &project, &["generate-lockfile"]);
    assert!(ok, "cargo failed:\n{stderr}");
    let lock = std::fs::read_to_string(project.0.join("Cargo.lock")).unwrap();
    assert!(lock.contains("name = \"credence-demo-dep\""), "{lock}");
    assert_eq!(tokens.hits(), 1, "one token exchange");
    let auths = seen_auth.lock().unwrap().clone();
    assert!(auths.iter().any(|a| a.as_deref() == Some("Bearer tok-1")), "{auths:?}");
    assert!(
        !stderr.contains("s3cret-client") && !stderr.contains("tok-1"),
        "no secrets on cargo's console: {stderr}"
    );
}

#[test]
fn real_cargo_login_fetches_a_fresh_token_that_the_next_build_uses() {
    let (tokens, latest) = rotating_tokens();
    let latest2 = latest.clone();
    let (registry, _) = auth_required_registry(move || {
        let t = latest2.lock().unwrap();
        (!t.is_empty()).then(|| format!("Bearer {t}"))
    });
    let index = format!("{}/index/", registry.origin());
    let (home, _) = exchange_home(&tokens, &index, "");
    let project = cargo_project(&home, &index);
    let (ok, stderr) = cargo(&home, &project, &["generate-lockfile"]);
    assert!(ok, "cargo failed:\n{stderr}");
    assert_eq!(tokens.hits(), 1);

    // `cargo login` is cargo's "fetch a fresh credential": the provider exchanges again...
    let (ok, stderr) = cargo(&home, &project, &["login", "--registry", "private"]);
    assert!(ok, "cargo login failed:\n{stderr}");
    assert_eq!(tokens.hits(), 2);
    assert_eq!(latest.lock().unwrap().as_str(), "tok-2");
    // ...and the next build is answered with that token, stored, not the one it replaced.
    let (ok, stderr) = cargo(&home, &project, &["generate-lockfile"]);
    assert!(ok, "cargo after login failed:\n{stderr}");
    assert_eq!(tokens.hits(), 2, "answered from the stored fresh token");
    assert!(!stderr.contains("tok-"), "no secrets on cargo's console: {stderr}");
}

#[test]
fn real_cargo_with_a_fixed_token_is_not_refused_on_its_first_401_or_by_cargo_login() {
    // Real cargo's first provider call for an `auth-required` registry carries the 401's
    // headers; a fixed-token provider (which refuses a retry) must still answer it.
    let (registry, seen_auth) = auth_required_registry(|| Some("Bearer st-fixed-token".into()));
    let index = format!("{}/index/", registry.origin());
    let home = Home::new();
    home.install_signed(&[("static-token", &[], &[])]);
    home.write_config(&format!(
        "[[provider]]\nname = \"private\"\ncomponent = \"static-token.wasm\"\nserves = [\"{index}\"]\nsettings = {{ token = \"st-fixed-token\", header = \"bearer\" }}\n"
    ));
    let project = cargo_project(&home, &index);
    let (ok, stderr) = cargo(&home, &project, &["generate-lockfile"]);
    assert!(ok, "cargo failed:\n{stderr}");
    assert!(
        seen_auth
            .lock()
            .unwrap()
            .iter()
            .any(|a| a.as_deref() == Some("Bearer st-fixed-token"))
    );
    let (ok, stderr) = cargo(&home, &project, &["login", "--registry", "private"]);
    assert!(ok, "cargo login failed:\n{stderr}");
    let (ok, stderr) = cargo(&home, &project, &["generate-lockfile"]);
    assert!(ok, "cargo after login failed:\n{stderr}");
    assert!(
        !stderr.contains("st-fixed-token"),
        "no secrets on cargo's console: {stderr}"
    );
}

fn git(dir: &Path, home: &Home, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("HOME", home.dir.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .args([
            "-c",
            "credential.helper=",
            "-c",
            &format!("credential.helper={} git", credence_exe().display()),
        ])
        .args(args);
    with_credence_env(&mut cmd, home);
    credence_tests::run_bounded(cmd, std::time::Duration::from_secs(60)).0
}

#[test]
fn real_git_clones_with_a_credence_credential_and_a_refused_one_is_erased_then_replaced() {
    let (tokens, latest) = rotating_tokens();
    let root = tempfile::tempdir().unwrap();
    credence_tests::seeded_bare_repo(root.path());

    // The server accepts user "ci" with whichever token the endpoint issued last, unless
    // the test revokes it.
    let revoked: Arc<Mutex<Option<String>>> = Arc::default();
    let (l, r) = (latest.clone(), revoked.clone());
    let server = GitServer::start(root.path().to_owned(), move |user, password| {
        let latest = l.lock().unwrap().clone();
        user == "ci" && !latest.is_empty() && password == latest && r.lock().unwrap().as_deref() != Some(password)
    });
    let url = format!("http://127.0.0.1:{}/repo.git", server.port);
    let (home, _) = exchange_home(
        &tokens,
        &format!("http://127.0.0.1:{}/", server.port),
        "username = \"ci\"",
    );

    let work = tempfile::tempdir().unwrap();
    let clone = git(work.path(), &home, &["clone", "-q", &url, "cloned"]);
    assert!(
        clone.status.success(),
        "clone failed: {}",
        String::from_utf8_lossy(&clone.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(work.path().join("cloned/README")).unwrap(),
        "hello from the test server\n"
    );
    assert_eq!(tokens.hits(), 1);

    // The server revokes tok-1; credence still holds it (until-expiry), so the next
    // command fails and git tells credence with `erase`.
    *revoked.lock().unwrap() = Some("tok-1".into());
    let refused = git(work.path(), &home, &["ls-remote", &url]);
    assert!(!refused.status.success(), "the revoked token must fail");
    assert_eq!(tokens.hits(), 1, "the stored credential was used, no new exchange");

    // The next get is a retry: the provider exchanges again and git gets a fresh token.
    let retried = git(work.path(), &home, &["ls-remote", &url]);
    assert!(
        retried.status.success(),
        "retry failed: {}",
        String::from_utf8_lossy(&retried.stderr)
    );
    assert!(String::from_utf8_lossy(&retried.stdout).contains("refs/heads/main"));
    assert_eq!(tokens.hits(), 2);
    assert_eq!(latest.lock().unwrap().as_str(), "tok-2");
}

#[test]
fn real_docker_logout_then_a_pull_style_get_still_answers_with_a_fixed_token() {
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ci:st-docker-token")
    );
    // An image manifest whose config blob is `{}`.
    let config_digest = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    let manifest_json = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"digest":"{config_digest}"}},"layers":[]}}"#
    );
    let blob_path = format!("/v2/img/blobs/{config_digest}");
    let registry = TestServer::start(move |req| {
        let auth = req
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.as_str());
        if auth != Some(expected.as_str()) {
            let mut r = Reply::json(401, r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#);
            r.headers
                .push(("WWW-Authenticate".into(), "Basic realm=\"test\"".into()));
            return r;
        }
        match req.url.as_str() {
            "/v2/" => Reply::json(200, "{}"),
            "/v2/img/manifests/1" => Reply {
                status: 200,
                headers: vec![(
                    "Content-Type".into(),
                    "application/vnd.docker.distribution.manifest.v2+json".into(),
                )],
                body: manifest_json.as_bytes().to_vec(),
            },
            path if path == blob_path => Reply::json(200, "{}"),
            _ => Reply::json(404, r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#),
        }
    });
    // docker speaks only https to a registry, and asks the helper about `host:port`, which
    // credence reads as `https://host:port/`.
    let tls = credence_tests::TlsFront::start(&registry);
    let host = format!("127.0.0.1:{}", tls.port);
    let home = Home::new();
    home.install_signed(&[("static-token", &[], &[])]);
    home.write_config(&format!(
        "[[provider]]\nname = \"registry\"\ncomponent = \"static-token.wasm\"\nserves = [\"https://{host}/\"]\nsettings = {{ token = \"st-docker-token\", username = \"ci\" }}\n"
    ));
    let bin = home.dir.path().join("bin");
    let docker_config = home.dir.path().join("docker");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&docker_config).unwrap();
    std::os::unix::fs::symlink(credence_exe(), bin.join("docker-credential-credence")).unwrap();
    std::fs::write(docker_config.join("config.json"), r#"{"credsStore":"credence"}"#).unwrap();
    let docker = |args: &[&str]| {
        let mut cmd = home.command_for(Path::new("docker"));
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        cmd.args(args).env("PATH", path).env("DOCKER_CONFIG", &docker_config);
        let (out, _) = credence_tests::run_bounded(cmd, std::time::Duration::from_secs(60));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let image = format!("{host}/img:1");
    let (ok, stdout, stderr) = docker(&["manifest", "inspect", "--insecure", &image]);
    assert!(ok, "first read failed: {stdout}{stderr}");
    assert!(stdout.contains("schemaVersion"), "{stdout}");
    let (ok, stdout, stderr) = docker(&["logout", &host]);
    assert!(ok, "docker logout failed: {stdout}{stderr}");
    // Before: erase marked the token refused, so static-token refused the next request.
    let (ok, stdout, stderr) = docker(&["manifest", "inspect", "--insecure", &image]);
    assert!(ok, "the read after docker logout failed: {stdout}{stderr}");
    assert!(!stderr.contains("refused"), "{stderr}");
    assert!(!stdout.contains("st-docker-token") && !stderr.contains("st-docker-token"));
}

#[test]
fn real_kubectl_accepts_a_provider_expiry_of_u64_max() {
    // The API server accepts the hostile provider's token; kubectl must first parse the
    // `expirationTimestamp` credence wrote for an expiry of u64::MAX.
    let api = TestServer::start(|req| {
        let auth = req
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.as_str());
        if auth != Some("Bearer far-future") {
            return Reply::json(
                401,
                r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":401}"#,
            );
        }
        Reply::json(200, r#"{"major":"1","minor":"32","gitVersion":"v1.32.0"}"#)
    });
    // client-go runs exec plugins only for https servers.
    let tls = credence_tests::TlsFront::start(&api);
    let home = credence_tests::hostile_home(&[], r#"attack = "far-future-expiry""#, "");
    let kubeconfig = home.dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      args: [kubectl, --server, \"https://evil.example/\"]\n      interactiveMode: Never\n",
            tls.port,
            credence_exe().display()
        ),
    )
    .unwrap();
    let mut cmd = home.command_for(Path::new("kubectl"));
    cmd.args(["--kubeconfig", kubeconfig.to_str().unwrap(), "get", "--raw", "/version"]);
    let (out, _) = credence_tests::run_bounded(cmd, std::time::Duration::from_secs(60));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "kubectl failed: {stdout}{stderr}");
    assert!(stdout.contains("v1.32.0"), "{stdout}");
}
