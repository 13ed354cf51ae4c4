//! Test harness: the real `credence` binary in a throwaway home, the real provider
//! components built by `build.rs`, and HTTP servers on 127.0.0.1 that count their hits.

use std::io::{BufRead, BufReader, Read, Write as _};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where `build.rs` put the compiled providers.
pub fn components_dir() -> PathBuf {
    PathBuf::from(env!("CREDENCE_TEST_COMPONENTS"))
}

/// A compiled provider by crate name, e.g. `static-token`.
pub fn component(crate_name: &str) -> PathBuf {
    components_dir().join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// The `credence` binary of this build (`cargo test --workspace` builds it).
pub fn credence_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let name = format!("credence{}", std::env::consts::EXE_SUFFIX);
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join(&name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the credence binary is not built next to {}; run `cargo build -p credence` (or `cargo test --workspace`)",
        exe.display()
    );
}

/// A throwaway `$CREDENCE_HOME`, cache and state dir.
pub struct Home {
    pub dir: tempfile::TempDir,
    /// The credence binary this home runs (this build's, or a baseline's in the benchmark).
    exe: PathBuf,
}

impl Default for Home {
    fn default() -> Self {
        Self::new()
    }
}

/// Secrets this home kept in the OS credential store outlive its temporary directory, and
/// on Linux count against the user's small kernel key quota: `credence forget` removes them.
impl Drop for Home {
    fn drop(&mut self) {
        if has_os_store_marker(&self.state()) {
            let _ = self.command().arg("forget").stderr(Stdio::null()).status();
        }
    }
}

fn has_os_store_marker(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).into_iter().flatten().flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            has_os_store_marker(&path)
        } else {
            path.to_string_lossy().ends_with(".in-os-store")
        }
    })
}

impl Home {
    pub fn new() -> Home {
        Home::with_exe(credence_exe())
    }

    /// A home whose every run uses `exe` instead of this build's binary.
    pub fn with_exe(exe: PathBuf) -> Home {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("home/providers")).unwrap();
        Home { dir, exe }
    }
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }
    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Copies a built component into `providers/<file_stem>.wasm` with its manifest.
    pub fn install(&self, crate_name: &str, file_stem: &str, manifest: &str) {
        let providers = self.home().join("providers");
        std::fs::copy(component(crate_name), providers.join(format!("{file_stem}.wasm"))).expect("copy component");
        std::fs::write(providers.join(format!("{file_stem}.manifest.toml")), manifest).unwrap();
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.home().join("config.toml"), text).unwrap();
    }

    pub fn command(&self) -> Command {
        self.command_for(&self.exe)
    }

    /// `program` with this home's environment and nothing else of the test's.
    pub fn command_for(&self, program: &std::path::Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("CREDENCE_HOME", self.home())
            .env("XDG_CACHE_HOME", self.cache())
            .env("XDG_STATE_HOME", self.state())
            .stdin(Stdio::null());
        cmd
    }

    /// Stops this home's agent, so the next request starts one that loads everything from
    /// disk again (what a test that tampers with files on disk attacks).
    pub fn stop_agent(&self) {
        let run = self.run(&["agent", "stop"]);
        assert_eq!(run.code, Some(0), "{run:#?}");
    }

    /// Runs `credence <args>` to completion (killed after a minute, so no test hangs).
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.run_stdin(args, b"", env)
    }

    /// Runs `credence <args>` with `stdin` as its input, as a tool would.
    pub fn run_stdin(&self, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Run {
        self.run_program(&self.exe, args, stdin, env)
    }

    /// Runs `program` (credence, or a symlink to it under a tool's name) in this home.
    pub fn run_program(&self, program: &std::path::Path, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command_for(program);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let input = stdin.to_vec();
        cmd.stdin(Stdio::piped());
        Run::from(run_bounded_with_input(cmd, input, Duration::from_secs(60)))
    }
}

/// A credence run's outcome, with stdout and stderr as text.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn from((output, elapsed): (Output, Duration)) -> Run {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed,
        }
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// What a user at a terminal saw: the exit code and everything written to the terminal.
#[derive(Debug)]
pub struct Screen {
    pub code: Option<i32>,
    pub text: String,
}

/// One shell word, single-quoted.
pub fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

impl Home {
    /// Runs the shell command `command` in this home on a real terminal: script(1) allocates
    /// a pty, so credence (and the tool under test) can prompt on `/dev/tty`. Nobody types;
    /// the keyboard stays open, as a user who reads but does not answer. Killed after `limit`.
    pub fn on_terminal(&self, command: &str, env: &[(&str, &str)], limit: Duration) -> Screen {
        let mut cmd = self.command_for(std::path::Path::new("script"));
        cmd.args(["--quiet", "--return", "--command", command, "/dev/null"])
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("script(1) from util-linux");
        let keyboard = child.stdin.take();
        let mut screen = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = screen.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        });
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(keyboard);
        let text = reader.join().unwrap();
        assert!(
            status.is_some(),
            "still running after {limit:?}; the terminal showed:\n{text}"
        );
        Screen {
            code: status.and_then(|s| s.code()),
            text,
        }
    }
}

pub fn run_bounded(cmd: Command, limit: Duration) -> (Output, Duration) {
    run_bounded_with_input(cmd, Vec::new(), limit)
}

/// Runs `cmd` with `input` on its stdin (when piped), killing it after `limit`.
pub fn run_bounded_with_input(mut cmd: Command, input: Vec<u8>, limit: Duration) -> (Output, Duration) {
    use std::io::Write as _;
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(mut stdin) = child.stdin.take() {
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let (o, e) = (out.join().unwrap(), err.join().unwrap());
            panic!(
                "{cmd:?} did not finish within {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&o),
                String::from_utf8_lossy(&e)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    (
        Output {
            status,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        },
        elapsed,
    )
}

/// A request as a test server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }
    pub fn redirect(location: &str) -> Reply {
        Reply {
            status: 302,
            headers: vec![("Location".into(), location.into())],
            body: Vec::new(),
        }
    }
}

/// An HTTP server on 127.0.0.1 that answers with `handler` and remembers every request.
pub struct TestServer {
    server: Arc<tiny_http::Server>,
    pub port: u16,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start(handler: impl Fn(&Seen) -> Reply + Send + 'static) -> TestServer {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1"));
        let port = server.server_addr().to_ip().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (server, hits, seen) = (server.clone(), hits.clone(), seen.clone());
            std::thread::spawn(move || {
                for mut request in server.incoming_requests() {
                    let mut body = String::new();
                    let _ = request.as_reader().take(1 << 20).read_to_string(&mut body);
                    let s = Seen {
                        method: request.method().to_string(),
                        url: request.url().to_owned(),
                        headers: request
                            .headers()
                            .iter()
                            .map(|h| (h.field.to_string(), h.value.to_string()))
                            .collect(),
                        body,
                    };
                    hits.fetch_add(1, Ordering::SeqCst);
                    let reply = handler(&s);
                    seen.lock().unwrap().push(s);
                    let mut response = tiny_http::Response::from_data(reply.body).with_status_code(reply.status);
                    for (k, v) in reply.headers {
                        response.add_header(tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap());
                    }
                    let _ = request.respond(response);
                }
            })
        };
        TestServer {
            server,
            port,
            hits,
            seen,
            thread: Some(thread),
        }
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// `https://127.0.0.1:PORT` in front of a [`TestServer`], for clients that speak only
/// https to a registry (docker): each request head (GET or HEAD, no body) read over TLS is
/// passed to the plain server on a connection of its own, and its whole answer sent back.
/// The certificate is self-signed for 127.0.0.1, generated when the front starts.
pub struct TlsFront {
    pub port: u16,
}

impl TlsFront {
    pub fn start(backend: &TestServer) -> TlsFront {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        // Made afresh for each front, so no private key is ever committed.
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("a test certificate");
        let certs = vec![CertificateDer::from(made.cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("certificate and key match"),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let backend = backend.port;
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let config = config.clone();
                std::thread::spawn(move || {
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
                    loop {
                        let mut head = Vec::new();
                        while !head.ends_with(b"\r\n\r\n") {
                            let mut line = Vec::new();
                            match tls.read_until(b'\n', &mut line) {
                                Ok(0) | Err(_) => return,
                                Ok(_) => head.extend_from_slice(&line),
                            }
                        }
                        // One request per backend connection: its answer ends at EOF.
                        let text = String::from_utf8_lossy(&head);
                        let head: String = text
                            .split("\r\n")
                            .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                            .collect::<Vec<_>>()
                            .join("\r\n");
                        let head = head.trim_end().to_owned() + "\r\nConnection: close\r\n\r\n";
                        let Ok(mut plain) = std::net::TcpStream::connect(("127.0.0.1", backend)) else {
                            return;
                        };
                        let mut answer = Vec::new();
                        if plain.write_all(head.as_bytes()).is_err() || plain.read_to_end(&mut answer).is_err() {
                            return;
                        }
                        let out = tls.get_mut();
                        if out.write_all(&answer).and_then(|()| out.flush()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        TlsFront { port }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A provider manifest for tests and the demo.
pub fn manifest(name: &str, origins: &[String], prompts: &[&str]) -> String {
    let quote = |v: &[String]| v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let prompts: Vec<String> = prompts.iter().map(|s| s.to_string()).collect();
    format!(
        "name = {name:?}\nversion = \"0.1.0\"\nworld = {:?}\norigins = [{}]\nprompts = [{}]\n",
        world_of(name),
        quote(origins),
        quote(&prompts)
    )
}

/// The world a test provider is built for: the samples on the SDK are 0.2.0; the others
/// (the hostile ones among them) are 0.1.0, which the host keeps running.
pub fn world_of(name: &str) -> &'static str {
    match name {
        "static-token" | "oauth-device" | "oauth-pkce" | "ci-exchange" => "credence:provider/provider@0.2.0",
        _ => "credence:provider/provider@0.1.0",
    }
}

/// A key made by `credence keygen` in a test home.
pub struct Key {
    pub secret: PathBuf,
    pub public: String,
    pub id: String,
}

impl Home {
    pub fn keygen(&self, name: &str) -> Key {
        let dir = self.dir.path().join("keys");
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = dir.join(name);
        let run = self.run(&["keygen", prefix.to_str().unwrap()]);
        assert_eq!(run.code, Some(0), "{run:#?}");
        let id = run
            .stderr
            .split("key id ")
            .nth(1)
            .and_then(|s| s.split(';').next())
            .expect("key id on stderr")
            .to_owned();
        Key {
            secret: prefix.with_extension("secret"),
            public: run.stdout.trim().to_owned(),
            id,
        }
    }

    /// `credence trust add` for `key` with `role`, allowed to sign for `providers`.
    pub fn trust(&self, key: &Key, name: &str, role: &str, providers: &str) {
        let run = self.run(&[
            "trust",
            "add",
            &key.public,
            "--name",
            name,
            "--role",
            role,
            "--providers",
            providers,
        ]);
        assert_eq!(run.code, Some(0), "{run:#?}");
    }

    pub fn provider_file(&self, file: &str) -> PathBuf {
        self.home().join("providers").join(file)
    }

    /// `credence sign` of `providers/<stem>.wasm` with its manifest; returns the statement digest.
    pub fn sign(&self, stem: &str, key: &Key, extra: &[&str]) -> String {
        let component = self.provider_file(&format!("{stem}.wasm"));
        let mut args = vec![
            "sign",
            component.to_str().unwrap(),
            "--key",
            key.secret.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let run = self.run(&args);
        assert_eq!(run.code, Some(0), "{run:#?}");
        run.stdout.trim().to_owned()
    }

    /// static-token as instance `registry` (serving https://registry.example/ with the
    /// token `signed-token`), signed by a publisher key trusted for it alone.
    pub fn signed_static_token() -> (Home, Key) {
        let home = Home::new();
        home.install("static-token", "static-token", &manifest("static-token", &[], &[]));
        home.write_config(
            "[[provider]]\nname = \"registry\"\ncomponent = \"static-token.wasm\"\nserves = [\"https://registry.example/\"]\nsettings = { token = \"signed-token\" }\n",
        );
        let key = home.keygen("publisher");
        home.trust(&key, "Sample publisher", "publisher", "static-token");
        home.sign("static-token", &key, &[]);
        (home, key)
    }

    /// Installs each (crate, declared origins, prompt kinds) as `<crate>.wasm` and signs it
    /// with one test key that the trust store accepts for every provider name.
    pub fn install_signed(&self, components: &[(&str, &[String], &[&str])]) {
        let key = self.keygen("test-publisher");
        self.trust(&key, "Test publisher", "publisher", "*");
        for (name, origins, prompts) in components {
            self.install(name, name, &manifest(name, origins, prompts));
            self.sign(name, &key, &[]);
        }
    }

    /// `credence policy sign SOURCE --key ROOT --expires-in-days DAYS --out OUT` with `env`
    /// (where the policy directory is): the organisation's bundle from its TOML source.
    pub fn sign_policy(
        &self,
        source: &std::path::Path,
        root: &Key,
        days: u32,
        out: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Run {
        let (source, key, out, days) = (
            source.to_str().unwrap(),
            root.secret.to_str().unwrap(),
            out.to_str().unwrap(),
            days.to_string(),
        );
        self.run_with(
            &[
                "policy",
                "sign",
                source,
                "--key",
                key,
                "--expires-in-days",
                &days,
                "--out",
                out,
            ],
            env,
        )
    }

    /// The precompiled-cache entries: none means nothing was ever compiled.
    pub fn compiled_entries(&self) -> usize {
        std::fs::read_dir(self.cache().join("credence/cwasm"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// A git smart-HTTP server: `git http-backend` (CGI) behind Basic auth that `check`
/// decides, serving the repositories under `root`.
pub struct GitServer {
    server: Arc<tiny_http::Server>,
    pub port: u16,
    pub refused: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GitServer {
    pub fn start(root: PathBuf, check: impl Fn(&str, &str) -> bool + Send + Sync + 'static) -> GitServer {
        use std::io::Write as _;
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1"));
        let port = server.server_addr().to_ip().unwrap().port();
        let refused = Arc::new(AtomicUsize::new(0));
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git --exec-path")
            .stdout;
        let backend = PathBuf::from(String::from_utf8_lossy(&exec_path).trim()).join("git-http-backend");
        let thread = {
            let (server, refused) = (server.clone(), refused.clone());
            std::thread::spawn(move || {
                for mut request in server.incoming_requests() {
                    let headers: Vec<(String, String)> = request
                        .headers()
                        .iter()
                        .map(|h| (h.field.to_string(), h.value.to_string()))
                        .collect();
                    let header = |name: &str| {
                        headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(name))
                            .map(|(_, v)| v.clone())
                    };
                    let user = header("Authorization")
                        .and_then(|v| v.strip_prefix("Basic ").map(str::to_owned))
                        .and_then(|b| base64_decode(&b))
                        .and_then(|pair| pair.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())));
                    let Some((user, _)) = user.filter(|(u, p)| check(u, p)) else {
                        refused.fetch_add(1, Ordering::SeqCst);
                        let response = tiny_http::Response::from_string("authentication required")
                            .with_status_code(401)
                            .with_header(
                                tiny_http::Header::from_bytes(
                                    &b"WWW-Authenticate"[..],
                                    &b"Basic realm=\"credence-test\""[..],
                                )
                                .unwrap(),
                            );
                        let _ = request.respond(response);
                        continue;
                    };
                    let (path, query) = match request.url().split_once('?') {
                        Some((p, q)) => (p.to_owned(), q.to_owned()),
                        None => (request.url().to_owned(), String::new()),
                    };
                    let mut body = Vec::new();
                    let _ = request.as_reader().read_to_end(&mut body);
                    let mut cmd = Command::new(&backend);
                    cmd.env_clear()
                        .env("GIT_PROJECT_ROOT", &root)
                        .env("GIT_HTTP_EXPORT_ALL", "1")
                        .env("PATH_INFO", &path)
                        .env("QUERY_STRING", &query)
                        .env("REQUEST_METHOD", request.method().as_str())
                        .env("CONTENT_TYPE", header("Content-Type").unwrap_or_default())
                        .env("CONTENT_LENGTH", body.len().to_string())
                        .env("REMOTE_USER", &user)
                        .env("REMOTE_ADDR", "127.0.0.1")
                        .env("GATEWAY_INTERFACE", "CGI/1.1")
                        .env("SERVER_PROTOCOL", "HTTP/1.1")
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null());
                    if let Some(enc) = header("Content-Encoding") {
                        cmd.env("HTTP_CONTENT_ENCODING", enc);
                    }
                    if let Some(proto) = header("Git-Protocol") {
                        cmd.env("GIT_PROTOCOL", proto);
                    }
                    let mut child = cmd.spawn().expect("git http-backend");
                    let mut stdin = child.stdin.take().unwrap();
                    let writer = std::thread::spawn(move || {
                        let _ = stdin.write_all(&body);
                    });
                    let out = child.wait_with_output().expect("http-backend output");
                    let _ = writer.join();
                    let split = out
                        .stdout
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map(|i| (i, 4))
                        .or_else(|| out.stdout.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
                    let Some((at, sep)) = split else {
                        let _ =
                            request.respond(tiny_http::Response::from_string("bad CGI output").with_status_code(500));
                        continue;
                    };
                    let head = String::from_utf8_lossy(&out.stdout[..at]).into_owned();
                    let mut status = 200;
                    let mut headers = Vec::new();
                    for line in head.lines() {
                        if let Some((k, v)) = line.split_once(':') {
                            if k.eq_ignore_ascii_case("status") {
                                status = v.trim().split(' ').next().and_then(|s| s.parse().ok()).unwrap_or(200);
                            } else {
                                headers.push(
                                    tiny_http::Header::from_bytes(k.trim().as_bytes(), v.trim().as_bytes()).unwrap(),
                                );
                            }
                        }
                    }
                    let mut response =
                        tiny_http::Response::from_data(out.stdout[at + sep..].to_vec()).with_status_code(status);
                    for h in headers {
                        response.add_header(h);
                    }
                    let _ = request.respond(response);
                }
            })
        };
        GitServer {
            server,
            port,
            refused,
            thread: Some(thread),
        }
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn base64_decode(text: &str) -> Option<String> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

/// A TCP server on 127.0.0.1 that misbehaves at the byte level (never answers, trickles,
/// floods): each connection is handed to `behave` with a counter of bytes it got out.
pub struct RawServer {
    pub port: u16,
    hits: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl RawServer {
    pub fn start(behave: impl Fn(std::net::TcpStream, &AtomicUsize) + Send + Sync + 'static) -> RawServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let behave = Arc::new(behave);
        {
            let (hits, sent, stop) = (hits.clone(), sent.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    hits.fetch_add(1, Ordering::SeqCst);
                    let (behave, sent) = (behave.clone(), sent.clone());
                    std::thread::spawn(move || behave(stream, &sent));
                }
            });
        }
        RawServer { port, hits, sent, stop }
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    /// Connections accepted.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    /// Bytes the behaviour managed to write before the client went away.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads one request head (up to 64 KiB), so the client is waiting for the answer; returns it.
pub fn read_request_head(stream: &mut std::net::TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 1 << 16 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    head
}

/// Writes `bytes`, counting them, until the client hangs up; false once it has.
pub fn write_counted(stream: &mut std::net::TcpStream, bytes: &[u8], sent: &AtomicUsize) -> bool {
    use std::io::Write;
    match stream.write_all(bytes) {
        Ok(()) => {
            sent.fetch_add(bytes.len(), Ordering::SeqCst);
            true
        }
        Err(_) => false,
    }
}

/// A home with the hostile provider (as instance `hostile`, serving
/// `https://evil.example/`, with `settings` and `limits` as TOML inline-table bodies) and
/// a well-behaved static-token provider serving `https://good.example/`, both signed by a
/// trusted test key, so hostile runs take the same path as any real provider.
pub fn hostile_home(origins: &[String], settings: &str, limits: &str) -> Home {
    let home = Home::new();
    home.install_signed(&[("hostile", origins, &["ask", "show"]), ("static-token", &[], &[])]);
    let grants = origins.iter().map(|o| format!("{o:?}")).collect::<Vec<_>>().join(", ");
    home.write_config(&format!(
        r#"
[[provider]]
name = "hostile"
serves = ["https://evil.example/"]
grant-origins = [{grants}]
settings = {{ {settings} }}
limits = {{ {limits} }}
[[provider]]
name = "good"
component = "static-token.wasm"
serves = ["https://good.example/"]
settings = {{ token = "still-works" }}
"#
    ));
    home
}

/// Asks for the hostile provider's URL and expects it stopped with `expected` on stderr
/// and exit `code`, nothing on stdout, no host panic; then the good provider in the same
/// home still answers.
pub fn assert_refused_then_healthy(home: &Home, expected: &str, code: i32) -> Run {
    let run = home.run(&["get", "https://evil.example/"]);
    assert_eq!(run.code, Some(code), "{run:#?}");
    assert!(
        run.stderr.contains(expected),
        "expected {expected:?} in:\n{}",
        run.stderr
    );
    assert!(
        run.stdout.is_empty(),
        "nothing but protocol bytes on stdout: {:?}",
        run.stdout
    );
    assert!(
        !run.stderr.contains("panicked"),
        "the host must not panic: {}",
        run.stderr
    );
    let next = home.run(&["get", "https://good.example/"]);
    assert_eq!(
        (next.code, next.stdout.as_str()),
        (Some(0), "still-works\n"),
        "{next:#?}"
    );
    run
}

/// NuGet's side of a v2 plugin session.
pub struct NuGet {
    pub child: std::process::Child,
    pub stdin: std::process::ChildStdin,
    pub lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl NuGet {
    pub fn start(home: &Home, env: &[(&str, &str)]) -> NuGet {
        let mut cmd = home.command();
        cmd.args(["nuget", "-Plugin"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        NuGet::spawn(cmd)
    }

    /// The plugin as `cmd` starts it (`credence nuget -Plugin`, perhaps inside another
    /// namespace).
    pub fn spawn(mut cmd: Command) -> NuGet {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("plugin wrote a non-message line {line:?}: {e}"));
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        NuGet { child, stdin, lines }
    }
    pub fn send(&mut self, v: serde_json::Value) {
        writeln!(self.stdin, "{v}").unwrap();
    }
    pub fn next(&self, within: Duration) -> serde_json::Value {
        self.lines.recv_timeout(within).expect("the plugin answered in time")
    }
    pub fn request(&mut self, id: &str, method: &str, payload: serde_json::Value) -> serde_json::Value {
        self.send(serde_json::json!({"RequestId": id, "Type": "Request", "Method": method, "Payload": payload}));
        let r = self.next(Duration::from_secs(10));
        assert_eq!(
            (r["RequestId"].as_str(), r["Type"].as_str()),
            (Some(id), Some("Response")),
            "{r}"
        );
        r
    }
}

impl NuGet {
    /// A plugin session through both handshakes, Initialize and the claims, as NuGet opens it.
    pub fn session(home: &Home, env: &[(&str, &str)]) -> NuGet {
        NuGet::open(NuGet::start(home, env))
    }

    /// Both handshakes, Initialize and the claims on a started plugin.
    pub fn open(mut n: NuGet) -> NuGet {
        // Both sides initiate the handshake.
        let theirs = n.next(Duration::from_secs(10));
        assert_eq!(
            (theirs["Type"].as_str(), theirs["Method"].as_str()),
            (Some("Request"), Some("Handshake")),
            "{theirs}"
        );
        assert_eq!(theirs["Payload"]["ProtocolVersion"], "2.0.0");
        n.send(serde_json::json!({"RequestId": theirs["RequestId"], "Type": "Response", "Method": "Handshake", "Payload": {"ResponseCode": "Success", "ProtocolVersion": "2.0.0"}}));
        let hs = n.request(
            "a1",
            "Handshake",
            serde_json::json!({"ProtocolVersion": "2.0.0", "MinimumProtocolVersion": "1.0.0"}),
        );
        assert_eq!(
            hs["Payload"],
            serde_json::json!({"ResponseCode": "Success", "ProtocolVersion": "2.0.0"})
        );
        let pid = std::process::id();
        assert_eq!(
            n.request("a2", "MonitorNuGetProcessExit", serde_json::json!({"ProcessId": pid}))["Payload"]["ResponseCode"],
            "Success"
        );
        assert_eq!(
            n.request(
                "a3",
                "Initialize",
                serde_json::json!({"ClientVersion": "6.14.0", "Culture": "en-US", "RequestTimeout": "00:00:30"})
            )["Payload"]["ResponseCode"],
            "Success"
        );
        assert_eq!(
            n.request("a4", "GetOperationClaims", serde_json::json!({}))["Payload"]["Claims"],
            serde_json::json!(["Authentication"])
        );
        assert_eq!(
            n.request(
                "a4b",
                "GetOperationClaims",
                serde_json::json!({"PackageSourceRepository": "https://feed.example/v3/index.json"})
            )["Payload"]["Claims"],
            serde_json::json!([])
        );
        assert_eq!(
            n.request("a5", "SetLogLevel", serde_json::json!({"LogLevel": "Minimal"}))["Payload"]["ResponseCode"],
            "Success"
        );
        n
    }
}

/// How many descriptors `pid` has open.
pub fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// A number from /proc/<pid>/status, such as `VmRSS` (KiB) or `Threads`.
pub fn status_of(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// One benchmark sample: `cmd` spawned with stdout piped, from spawn to exit; it must
/// succeed and print `expect` (the benchmarks' one way to time a process).
pub fn time_spawn(cmd: &mut Command, expect: &str) -> Duration {
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("spawn");
    let elapsed = started.elapsed();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains(expect),
        "{cmd:?}: {out:?} (expected {expect:?} on stdout)"
    );
    elapsed
}

/// An `auth-required` sparse registry on 127.0.0.1 that accepts exactly the
/// `Authorization` value `accepts()` returns (none while it is `None`), and records every
/// `Authorization` it was sent.
pub fn auth_required_registry(
    accepts: impl Fn() -> Option<String> + Send + 'static,
) -> (TestServer, Arc<Mutex<Vec<Option<String>>>>) {
    let seen_auth: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let seen = seen_auth.clone();
    let registry = TestServer::start(move |req| {
        let auth = req
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.clone());
        seen.lock().unwrap().push(auth.clone());
        if accepts().is_none() || auth != accepts() {
            let mut r = Reply::json(401, r#"{"errors":[{"detail":"token required"}]}"#);
            r.headers.push((
                "WWW-Authenticate".into(),
                "Cargo login_url=\"https://registry.example/me\"".into(),
            ));
            return r;
        }
        match req.url.as_str() {
            "/index/config.json" => Reply::json(
                200,
                r#"{"dl":"http://127.0.0.1:1/dl","api":"http://127.0.0.1:1","auth-required":true}"#,
            ),
            "/index/cr/ed/credence-demo-dep" => Reply::json(
                200,
                r#"{"name":"credence-demo-dep","vers":"1.0.0","deps":[],"cksum":"0000000000000000000000000000000000000000000000000000000000000000","features":{},"yanked":false}"#,
            ),
            _ => Reply::json(404, "{}"),
        }
    });
    (registry, seen_auth)
}

/// A project depending on a crate of the registry `private` at `index`, whose credential
/// provider is credence; returns (project dir, CARGO_HOME).
pub fn cargo_project(home: &Home, index: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let work = home.dir.path().join("work");
    let cargo_home = home.dir.path().join("cargo-home");
    std::fs::create_dir_all(work.join("src")).unwrap();
    std::fs::create_dir_all(&cargo_home).unwrap();
    std::fs::write(
        work.join("Cargo.toml"),
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\ncredence-demo-dep = { version = \"1\", registry = \"private\" }\n",
    )
    .unwrap();
    std::fs::write(work.join("src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(
        cargo_home.join("config.toml"),
        format!(
            "[registries.private]\nindex = \"sparse+{index}\"\ncredential-provider = [{:?}]\n",
            credence_exe().display().to_string()
        ),
    )
    .unwrap();
    (work, cargo_home)
}

/// `root/repo.git`: a bare repository with one commit on `main` (a README), for a
/// `GitServer` on `root` to serve.
pub fn seeded_bare_repo(root: &std::path::Path) -> PathBuf {
    let bare = root.join("repo.git");
    plain_git(root, &["init", "-q", "--bare", bare.to_str().unwrap()]);
    let seed = root.join("seed");
    plain_git(root, &["init", "-q", seed.to_str().unwrap()]);
    std::fs::write(seed.join("README"), "hello from the test server\n").unwrap();
    plain_git(&seed, &["add", "README"]);
    plain_git(
        &seed,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example",
            "commit",
            "-q",
            "-m",
            "first",
        ],
    );
    plain_git(&seed, &["push", "-q", bare.to_str().unwrap(), "HEAD:refs/heads/main"]);
    plain_git(&bare, &["symbolic-ref", "HEAD", "refs/heads/main"]);
    bare
}

pub fn plain_git(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child killed (and reaped) when it goes out of scope: a test's carrier or server that
/// must not outlive it, passed or not.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An OpenSSH server on 127.0.0.1 of the test's own: its host key, one client key in its
/// `authorized_keys`, no PAM. `None` when this machine has no sshd (then the test says it
/// is skipped), unless `CREDENCE_REQUIRE_SSHD=1` (CI, which installs openssh-server).
pub struct Sshd {
    pub child: std::process::Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Sshd {
    pub fn start() -> Option<Sshd> {
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd"]
            .into_iter()
            .map(std::path::Path::new)
            .find(|p| p.is_file());
        let Some(sshd) = sshd else {
            assert!(
                std::env::var_os("CREDENCE_REQUIRE_SSHD").is_none(),
                "CREDENCE_REQUIRE_SSHD is set but no sshd is installed (apt-get install openssh-server)"
            );
            eprintln!("skipped: no sshd on this machine (apt-get install openssh-server)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (key, comment) in [("host_key", "host"), ("client_key", "client")] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(d.join(key))
                .output()
                .unwrap();
            assert!(out.status.success(), "ssh-keygen: {out:?}");
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        // sshd's privilege separation wants this directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nAllowStreamLocalForwarding yes\nStreamLocalBindUnlink yes\nAllowUsers {user}\nLogLevel ERROR\n",
                d.join("host_key").display(),
                d.join("authorized_keys").display(),
                d.join("sshd.pid").display(),
            ),
        )
        .unwrap();
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // Listening: its banner read and an identification sent back, so the probe's
        // hang-up is not an error sshd prints.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut probe) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let mut banner = [0u8; 4];
                if probe.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                    let _ = probe.write_all(b"SSH-2.0-credence-test-probe\r\n");
                    break;
                }
            }
            assert!(Instant::now() < deadline, "sshd did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Sshd { child, port, dir })
    }

    /// The ssh arguments (after the destination) that reach this server non-interactively.
    pub fn ssh_args(&self) -> Vec<String> {
        vec![
            "-p".into(),
            self.port.to_string(),
            "-i".into(),
            self.dir.path().join("client_key").display().to_string(),
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ]
    }

    pub fn destination(&self) -> String {
        format!("{}@127.0.0.1", std::env::var("USER").unwrap_or_else(|_| "root".into()))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
