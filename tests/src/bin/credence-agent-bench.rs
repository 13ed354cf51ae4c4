//! The agent's costs, in one run: what a tool pays through the thin `credence` with a warm
//! agent, what the agent pays per request over its socket, how much it serves at once, how
//! fast it starts and how much memory it keeps. Peers measured in the same run: git's
//! `credential-store` (a plaintext file) and `credential-cache` (its daemon), and the
//! native floor (`credence-floor`, a process that prints a fixed credential).
//!
//! Method (as `credence-bench`): every phase interleaves its cases round by round in a new
//! random order, so machine noise hits them alike; medians with p10/p90 (latencies also
//! p99), each against the floor or the git peer of the same run.
//!
//! 1. Spawns (one process per sample, spawn to exit, stdout piped): the floor; git's
//!    `credential-store get` and `credential-cache get`; `credence git get` and
//!    `credence get` answered from the agent's memory; a provider run through the agent
//!    (static-token, a URL never asked before, so nothing is cached); the same in-process
//!    (`CREDENCE_AGENT=0`); the cached answer and the provider run in a home whose trust
//!    store holds 1,000 keys, and for a 2 MB component.
//! 2. The socket, no process spawned (one client, `AgentClient` as the thin client uses
//!    it, one request at a time): cached answers in the three homes, a cached answer on a
//!    new connection per request (hello and request written back to back, as the thin
//!    client sends them; git's daemon too takes a connection per request), git's
//!    `credential-cache--daemon` asked the same way, and provider runs (fresh URL; and a
//!    `cache = never` provider, the hostile test component's `sleep 0`), every
//!    `CREDENCE_BENCH_RUN_EVERY`th round; and the socket's floor: a native process (this
//!    program, `--echo-server`) answering frames of the same sizes at once.
//! 3. Throughput: 1, 8 and 32 concurrent clients (a thread and a connection each) for a
//!    window each, cases shuffled per round: cached answers (kept connection; and a new
//!    connection per request) against git's daemon and the socket floor, and provider
//!    runs per second.
//!    Before each fresh-URL window the instance's cached answers are forgotten, so the
//!    in-memory cache stays far below its 10,000-entry bound; one more case measures
//!    provider runs with the cache at that bound.
//! 4. Memory: an agent with 10 distinct providers loaded (VmRSS from /proc), then its
//!    growth over `CREDENCE_BENCH_RSS_REQUESTS` cached answers, over
//!    `CREDENCE_BENCH_RSS_RUNS` provider runs, and under 32 clients at once.
//! 5. Start: the agent is stopped (over its socket; the time until its process is gone is
//!    shown too), then `credence get` is timed from spawn to exit: it starts the agent,
//!    which loads the precompiled provider and runs it. Homes with 1 and 1,000 trusted
//!    keys, interleaved; and a `credence get` sent as soon as a stop was answered.
//!
//! Usage: `credence-agent-bench [SPAWN_ROUNDS]` (default 1000). Environment, all optional:
//! `CREDENCE_BENCH_SOCKET_ROUNDS` (30000), `CREDENCE_BENCH_RUN_EVERY` (5),
//! `CREDENCE_BENCH_WINDOWS` (5 rounds of throughput windows), `CREDENCE_BENCH_WINDOW_MS`
//! (400), `CREDENCE_BENCH_RSS_REQUESTS` (100000), `CREDENCE_BENCH_RSS_RUNS` (10000),
//! `CREDENCE_BENCH_STARTS` (15); `CREDENCE_BENCH_PROFILE_SECS=N` only sends cached requests
//! on one connection for N seconds after the setup, for a profiler attached to the agent
//! whose pid it prints. `CREDENCE_BENCH_BASELINE=<another credence>` (its credence-host
//! beside it) adds that build's cached answer and provider run (spawned) and its cached
//! answer on a kept connection (raw frames) to the same rounds, in a home of its own. Build: `cargo build --release -p credence -p
//! credence-host -p credence-tests`, then `target/release/credence-agent-bench`.

use credence::agent::client::AgentClient;
use credence::agent::endpoint::{Endpoint, build_id};
use credence::agent::wire::{FromAgent, PROTOCOL, ToAgent, read_frame, write_frame};
use credence::paths::Paths;
use credence::request::{CredentialRequest, Protocol, parse_request_url};
use credence::resolver::{Forget, Resolver};
use credence::terminal::Terminal;
use credence_tests::{Home, component, credence_exe, manifest, time_spawn, world_of};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A new URL path every call: its answer was never cached.
static FRESH: AtomicU64 = AtomicU64::new(0);
fn fresh(base: &str) -> String {
    format!("{base}r/{}", FRESH.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------------------------------
// Statistics and tables

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(samples: &[Duration]) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    pct(&s, 0.5)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e6;
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1e3)
    } else {
        format!("{v:.0} µs")
    }
}

fn median_f(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.is_empty() { 0.0 } else { s[(s.len() - 1) / 2] }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// The agent from the outside: /proc, and clients that need no process

fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => true,
        Ok(s) => s.lines().any(|l| l.starts_with("State:") && l.contains('Z')),
    }
}

/// The directories a home's `credence` derives from its environment (`Home::command`).
fn paths_of(home: &Home) -> Paths {
    Paths {
        home: home.home(),
        cache: home.cache().join("credence"),
        state: home.state().join("credence").join("state"),
        trust_state: home.state().join("credence"),
    }
}

struct NoPrompts;
impl Terminal for NoPrompts {
    fn ask(&mut self, _: &str, _: bool) -> std::io::Result<Option<String>> {
        Err(std::io::Error::other("the benchmark does not prompt"))
    }
    fn show(&mut self, _: &str) -> std::io::Result<()> {
        Ok(())
    }
    fn can_prompt(&self) -> bool {
        false
    }
}

fn request(url: &str) -> CredentialRequest {
    CredentialRequest {
        url: parse_request_url(url).expect("a URL"),
        protocol: Protocol::Generic,
        operation: "read".into(),
        is_retry: false,
        interactive: false,
        username_hint: None,
        challenge_headers: Vec::new(),
    }
}

/// A home whose agent the benchmark talks to without spawning anything.
struct Site {
    home: Home,
    paths: Paths,
    socket: PathBuf,
    build: String,
    digest: String,
}

impl Site {
    /// `home` runs `exe` (this build's credence, or a baseline's), whose agent is the
    /// `credence-host` beside it.
    fn new(home: Home, exe: &Path) -> Site {
        let paths = paths_of(&home);
        let endpoint = Endpoint::of(&paths).expect("an agent endpoint");
        let host = exe.with_file_name(format!("credence-host{}", std::env::consts::EXE_SUFFIX));
        Site {
            build: build_id(&host),
            socket: endpoint.socket,
            digest: endpoint.home,
            paths,
            home,
        }
    }

    /// The running agent's client (never starts one: an agent started from this process
    /// would serve this process's environment, not the home's).
    fn client(&self) -> AgentClient {
        AgentClient::connect(&self.paths, false).unwrap_or_else(|u| panic!("no agent answers: {}", u.reason))
    }

    fn pid(&self) -> u32 {
        self.client().agent_pid
    }

    /// One request on a connection of its own, as the thin client sends it: connect, the
    /// hello and the request written back to back (the welcome is read before the answer),
    /// close.
    fn one_shot(&self, url: &str) {
        let mut s = UnixStream::connect(&self.socket).expect("connect");
        let hello = ToAgent::Hello {
            protocol: PROTOCOL,
            build: self.build.clone(),
            home: self.digest.clone(),
            takeover: true,
        };
        let resolve = ToAgent::Resolve {
            request: request(url),
            can_prompt: false,
        };
        let mut frames = Vec::new();
        write_frame(&mut frames, &hello).expect("hello");
        write_frame(&mut frames, &resolve).expect("resolve");
        s.write_all(&frames).expect("write");
        match read_frame::<FromAgent>(&mut s).expect("welcome") {
            FromAgent::Welcome { .. } => {}
            other => panic!("handshake: {other:?}"),
        }
        match read_frame::<FromAgent>(&mut s).expect("answer") {
            FromAgent::Answer { result: Ok(_), .. } => {}
            other => panic!("answer: {other:?}"),
        }
    }

    /// A connection of its own, handshake done, for requests one after another (raw
    /// frames: works with an agent of another build too).
    fn kept(&self) -> Kept {
        let mut s = UnixStream::connect(&self.socket).expect("connect");
        write_frame(
            &mut s,
            &ToAgent::Hello {
                protocol: PROTOCOL,
                build: self.build.clone(),
                home: self.digest.clone(),
                takeover: false,
            },
        )
        .expect("hello");
        match read_frame::<FromAgent>(&mut s).expect("welcome") {
            FromAgent::Welcome { .. } => Kept(s),
            other => panic!("handshake: {other:?}"),
        }
    }

    /// Drops the in-memory answers of `instance` (and its stored state).
    fn forget(&self, instance: &str) {
        self.client()
            .forget(Forget::Provider(Some(instance.into())))
            .unwrap_or_else(|e| panic!("forget {instance}: {e}"));
    }

    fn cache_entries(&self) -> usize {
        self.client().status().expect("status").cache_entries
    }

    /// Spawns `credence get <url>` in this home (the thin client; it starts an agent).
    fn get(&self, url: &str) -> Command {
        let mut c = self.home.command();
        c.args(["get", url]);
        c
    }
}

/// The time the agent's broker spent on each request whose audit record `keep` accepts
/// (`duration_ms`: from taking the request to its answer, before the audit line is
/// written; the socket, the frames and the config check are outside it).
fn broker_times(site: &Site, keep: &dyn Fn(&serde_json::Value) -> bool) -> Vec<Duration> {
    let dir = &site.paths.trust_state;
    let mut out = Vec::new();
    for file in ["audit.jsonl.1", "audit.jsonl"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let (true, Some(ms)) = (keep(&v), v["duration_ms"].as_f64()) {
                out.push(Duration::from_secs_f64(ms / 1e3));
            }
        }
    }
    out.sort();
    out
}

struct Kept(UnixStream);

impl Kept {
    fn ask(&mut self, url: &str) {
        write_frame(
            &mut self.0,
            &ToAgent::Resolve {
                request: request(url),
                can_prompt: false,
            },
        )
        .expect("resolve");
        match read_frame::<FromAgent>(&mut self.0).expect("answer") {
            FromAgent::Answer { result: Ok(_), .. } => {}
            other => panic!("answer: {other:?}"),
        }
    }
}

fn ask(client: &AgentClient, url: &str) {
    if let Err(e) = client.resolve(&request(url), Box::new(NoPrompts)) {
        panic!("{url}: {e}");
    }
}

/// git's own cache daemon on a socket of its own, holding one credential.
struct GitCache {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl GitCache {
    fn start(env_home: &Home) -> GitCache {
        let dir = tempfile::tempdir().expect("temp dir");
        // git refuses a socket directory others may enter.
        let private = dir.path().join("git");
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&private)
            .expect("socket dir");
        let socket = private.join("cache.sock");
        let mut child = env_home
            .command_for(Path::new("git"))
            .arg("credential-cache--daemon")
            .arg(&socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("git credential-cache--daemon (is git installed?)");
        let mut ok = [0u8; 3];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut ok)
            .expect("the daemon's ok");
        assert_eq!(&ok, b"ok\n");
        let mut store = env_home.command_for(Path::new("git"));
        store
            .arg("credential-cache")
            .arg("--socket")
            .arg(&socket)
            .args(["--timeout", "86400", "store"]);
        let out = feed(
            &mut store,
            b"protocol=https\nhost=example.com\nusername=u\npassword=p\n\n",
        );
        assert!(out.status.success(), "git credential-cache store: {out:?}");
        let cache = GitCache {
            child,
            socket,
            _dir: dir,
        };
        cache.get();
        cache
    }

    /// One `get`, as `git credential-cache get` sends it: a connection per request.
    fn get(&self) {
        let mut s = UnixStream::connect(&self.socket).expect("connect to git's daemon");
        s.write_all(b"action=get\ntimeout=0\nprotocol=https\nhost=example.com\n\n")
            .expect("write");
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).expect("read");
        assert!(
            answer.windows(11).any(|w| w == b"password=p\n"),
            "git's daemon answered {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
}

impl Drop for GitCache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The socket's floor: a native process that answers each frame with a frame of an
/// answer's size at once (a thread per connection, as the agent), so the latency and
/// throughput of the same framing over a Unix socket without any of the agent's work show.
fn echo_server(socket: &Path) -> ! {
    let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind the echo socket");
    println!("ok");
    let _ = std::io::stdout().flush();
    let answer = {
        let body = vec![b'x'; 230];
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&body);
        f
    };
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let answer = answer.clone();
        std::thread::spawn(move || {
            let mut len = [0u8; 4];
            let mut body = Vec::new();
            while stream.read_exact(&mut len).is_ok() {
                body.resize(u32::from_be_bytes(len) as usize, 0);
                if stream.read_exact(&mut body).is_err() || stream.write_all(&answer).is_err() {
                    break;
                }
            }
        });
    }
    std::process::exit(0)
}

struct Echo {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Echo {
    fn start() -> Echo {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("echo.sock");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--echo-server")
            .arg(&socket)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the echo server");
        let mut ok = [0u8; 3];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut ok)
            .expect("the echo server's ok");
        Echo {
            child,
            socket,
            _dir: dir,
        }
    }

    /// A kept connection: `ask` sends a request-sized frame and reads the answer.
    fn connect(&self) -> EchoClient {
        EchoClient(UnixStream::connect(&self.socket).expect("connect to the echo server"))
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct EchoClient(UnixStream);

impl EchoClient {
    fn ask(&mut self) {
        let mut frame = 200u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[b'y'; 200]);
        self.0.write_all(&frame).expect("echo write");
        let mut len = [0u8; 4];
        self.0.read_exact(&mut len).expect("echo read");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut body).expect("echo read");
    }
}

// ---------------------------------------------------------------------------------------
// Spawning

/// Spawn to exit, stdin fed, stdout and stderr piped; the run must succeed.
fn feed(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).expect("stdin");
    drop(stdin);
    child.wait_with_output().expect("wait")
}

fn time_fed(cmd: &mut Command, input: &[u8], expect: &str) -> Duration {
    let started = Instant::now();
    let out = feed(cmd, input);
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(expect),
        "{cmd:?}: {out:?} (expected {expect:?} on stdout)"
    );
    elapsed
}

// ---------------------------------------------------------------------------------------
// Homes

/// static-token with a custom section appended: another component (another digest, its
/// own compiled entry), `pad` bytes larger.
fn static_token_variant(tag: &str, pad: usize) -> Vec<u8> {
    let mut bytes = std::fs::read(component("static-token")).expect("static-token.wasm");
    let name = format!("credence-bench-{tag}");
    let mut payload = Vec::with_capacity(pad + name.len() + 5);
    leb(&mut payload, name.len() as u64);
    payload.extend_from_slice(name.as_bytes());
    let mut rng = fastrand::Rng::with_seed(7);
    payload.extend((0..pad).map(|_| rng.u8(..)));
    bytes.push(0); // custom section
    leb(&mut bytes, payload.len() as u64);
    bytes.extend_from_slice(&payload);
    bytes
}

fn leb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Installs `components` (file stem = signed provider name, bytes) and signs them with one
/// key trusted for every provider; `filler_keys` more trusted keys go into trust.toml.
fn signed_home(exe: &Path, components: &[(&str, Vec<u8>)], filler_keys: usize, config: &str) -> Home {
    let home = Home::with_exe(exe.to_owned());
    let key = home.keygen("bench-publisher");
    home.trust(&key, "Bench publisher", "publisher", "*");
    for (stem, bytes) in components {
        std::fs::write(home.provider_file(&format!("{stem}.wasm")), bytes).unwrap();
        std::fs::write(
            home.provider_file(&format!("{stem}.manifest.toml")),
            // The variants (padded, renamed) are static-token's component: its world.
            manifest(stem, &[], &[]).replace(
                world_of(stem),
                world_of(if stem.starts_with("static-token") {
                    "static-token"
                } else {
                    stem
                }),
            ),
        )
        .unwrap();
        home.sign(stem, &key, &[]);
    }
    if filler_keys > 0 {
        let path = home.home().join("trust.toml");
        let mut store: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        let keys = store.get_mut("key").and_then(|k| k.as_array_mut()).expect("[[key]]");
        for i in 0..filler_keys {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            let public = credence_signing::keys::SecretKey::from_seed(seed).public();
            let mut t = toml::Table::new();
            t.insert("name".into(), format!("Filler {i}").into());
            t.insert("role".into(), "publisher".into());
            t.insert("public-key".into(), public.to_string().into());
            t.insert(
                "providers".into(),
                toml::Value::Array(vec![format!("filler-{i}").into()]),
            );
            keys.push(t.into());
        }
        // Rewritten in place: the file keeps its owner and mode.
        std::fs::write(&path, toml::to_string(&store).unwrap()).unwrap();
        let run = home.run(&["trust", "list"]);
        assert_eq!(run.code, Some(0), "{run:#?}");
    }
    home.write_config(config);
    home
}

const MAIN_CONFIG: &str = r#"
[[provider]]
name = "static"
component = "static-token.wasm"
serves = ["https://registry.example/"]
settings = { token = "tok-static-123" }
[[provider]]
name = "fresh"
component = "static-token.wasm"
serves = ["https://fresh.example/"]
settings = { token = "tok-fresh" }
[[provider]]
name = "padded"
component = "static-token-padded.wasm"
serves = ["https://padded.example/"]
settings = { token = "tok-padded" }
[[provider]]
name = "never"
component = "hostile.wasm"
serves = ["https://never.example/"]
settings = { attack = "sleep", ms = "0" }
"#;

// ---------------------------------------------------------------------------------------
// Throughput

/// `clients` threads, each with its own client made by `make`, for `window`; the rate of
/// completed operations.
type Op<'a> = Box<dyn FnMut() + Send + 'a>;

fn throughput<'a>(clients: usize, window: Duration, make: &(dyn Fn() -> Op<'a> + Sync)) -> f64 {
    let barrier = Barrier::new(clients + 1);
    let done = AtomicU64::new(0);
    let mut started = Instant::now();
    let mut last_end = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let (barrier, done) = (&barrier, &done);
                scope.spawn(move || {
                    let mut op = make();
                    barrier.wait();
                    let deadline = Instant::now() + window;
                    let mut n = 0;
                    while Instant::now() < deadline {
                        op();
                        n += 1;
                    }
                    done.fetch_add(n, Ordering::Relaxed);
                    Instant::now()
                })
            })
            .collect();
        barrier.wait();
        started = Instant::now();
        last_end = handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .max()
            .unwrap_or(started);
    });
    done.load(Ordering::Relaxed) as f64 / (last_end - started).as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--echo-server") {
        echo_server(Path::new(&args[2]));
    }
    // The thin clients this spawns run with a cleared environment (`Home::command`): no
    // XDG_RUNTIME_DIR, no TMPDIR. This process must find the same agent sockets.
    // SAFETY: no other thread exists yet.
    unsafe {
        std::env::remove_var("XDG_RUNTIME_DIR");
        std::env::remove_var("TMPDIR");
    }
    let spawn_rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let socket_rounds = env_num("CREDENCE_BENCH_SOCKET_ROUNDS", 30_000);
    let run_every = env_num("CREDENCE_BENCH_RUN_EVERY", 5).max(1);
    let windows = env_num("CREDENCE_BENCH_WINDOWS", 5);
    let window = Duration::from_millis(env_num("CREDENCE_BENCH_WINDOW_MS", 400) as u64);
    let rss_requests = env_num("CREDENCE_BENCH_RSS_REQUESTS", 100_000);
    let rss_runs = env_num("CREDENCE_BENCH_RSS_RUNS", 10_000);
    let starts = env_num("CREDENCE_BENCH_STARTS", 15);
    let floor_exe = credence_exe().with_file_name(format!("credence-floor{}", std::env::consts::EXE_SUFFIX));
    assert!(
        floor_exe.is_file(),
        "build the floor: cargo build --release -p credence-tests"
    );
    let load_before = loadavg();
    let bench_started = Instant::now();

    // -- Homes ---------------------------------------------------------------------------
    eprintln!("setting up homes (keys, signatures, first compiles)...");
    let static_token = std::fs::read(component("static-token")).unwrap();
    let padded = static_token_variant("padding", 2 * 1024 * 1024);
    let hostile = std::fs::read(component("hostile")).unwrap();
    let main_components = [
        ("static-token", static_token.clone()),
        ("static-token-padded", padded.clone()),
        ("hostile", hostile.clone()),
    ];
    let exe = credence_exe();
    let main = Site::new(signed_home(&exe, &main_components, 0, MAIN_CONFIG), &exe);
    let keys = Site::new(signed_home(&exe, &main_components, 999, MAIN_CONFIG), &exe);
    let baseline = std::env::var_os("CREDENCE_BENCH_BASELINE").map(|b| {
        let b = PathBuf::from(b);
        assert!(
            b.with_file_name("credence-host").is_file(),
            "no credence-host beside {}",
            b.display()
        );
        Site::new(signed_home(&b, &main_components, 0, MAIN_CONFIG), &b)
    });
    let mut rss_components: Vec<(String, Vec<u8>)> = (0..9)
        .map(|i| (format!("static-token-v{i}"), static_token_variant(&format!("v{i}"), 64)))
        .collect();
    rss_components.push(("hostile".into(), hostile));
    let mut rss_config = String::new();
    for i in 0..9 {
        rss_config.push_str(&format!(
            "[[provider]]\nname = \"p{i}\"\ncomponent = \"static-token-v{i}.wasm\"\nserves = [\"https://p{i}.example/\"]\nsettings = {{ token = \"tok-{i}\" }}\n"
        ));
    }
    rss_config.push_str(
        "[[provider]]\nname = \"never\"\ncomponent = \"hostile.wasm\"\nserves = [\"https://never.example/\"]\nsettings = { attack = \"sleep\", ms = \"0\" }\n",
    );
    let rss_refs: Vec<(&str, Vec<u8>)> = rss_components.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let rss = Site::new(signed_home(&exe, &rss_refs, 0, &rss_config), &exe);
    let git_store_file = main.home.dir.path().join("git-credentials");
    std::fs::write(&git_store_file, "https://u:p@example.com\n").unwrap();
    let git_cache = GitCache::start(&main.home);
    let echo = Echo::start();

    // Prime: start each agent (from a spawned thin client, so it serves the home's
    // environment), compile each component once, cache the answers the cached cases ask.
    for site in [&main, &keys] {
        for url in [
            "https://registry.example/",
            "https://padded.example/",
            "https://never.example/",
        ] {
            time_spawn(&mut site.get(url), "");
        }
        time_fed(
            site.home.command().args(["git", "get"]),
            b"protocol=https\nhost=registry.example\n\n",
            "password=tok-static-123",
        );
    }
    let main_pid_start = main.pid();
    if let Some(secs) = std::env::var("CREDENCE_BENCH_PROFILE_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        // For a profiler attached to the agent (`perf record -p PID`, `strace -c -p PID`):
        // cached answers from CREDENCE_BENCH_PROFILE_CLIENTS clients (default 1) at once, or
        // provider runs (fresh URLs) with CREDENCE_BENCH_PROFILE_RUNS=1.
        let clients = env_num("CREDENCE_BENCH_PROFILE_CLIENTS", 1).max(1);
        let runs = env_num("CREDENCE_BENCH_PROFILE_RUNS", 0) == 1;
        eprintln!(
            "profiling: agent pid {}: {} on {clients} kept connection(s) for {secs} s",
            main.pid(),
            if runs { "provider runs" } else { "cached answers" }
        );
        std::thread::sleep(Duration::from_secs(1));
        let until = Instant::now() + Duration::from_secs(secs);
        let n: u64 = std::thread::scope(|s| {
            let each: Vec<_> = (0..clients)
                .map(|_| {
                    let c = main.client();
                    s.spawn(move || {
                        let mut n = 0u64;
                        while Instant::now() < until {
                            if runs {
                                ask(&c, &fresh("https://fresh.example/"));
                            } else {
                                ask(&c, "https://registry.example/");
                            }
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            each.into_iter().map(|h| h.join().unwrap()).sum()
        });
        eprintln!("{n} requests, {:.0}/s", n as f64 / secs as f64);
        return;
    }

    // -- 1. Spawns -------------------------------------------------------------------------
    eprintln!("1/5 spawns: {spawn_rounds} rounds...");
    let git_in = b"protocol=https\nhost=registry.example\n\n".as_slice();
    let store_in = b"protocol=https\nhost=example.com\n\n".as_slice();
    let mut spawn_names = vec![
        "floor (native process printing a credential)",
        "git credential-store get (plaintext file)",
        "git credential-cache get (git's daemon)",
        "credence git get, cached in the agent",
        "credence get, cached in the agent",
        "credence get, provider run in the agent (fresh URL)",
        "credence get, provider run in-process (CREDENCE_AGENT=0)",
        "credence get, cached, trust store of 1,000 keys",
        "credence get, provider run, trust store of 1,000 keys",
        "credence get, cached, 2 MB component",
        "credence get, provider run, 2 MB component",
        "credence get, provider run in-process, trust store of 1,000 keys",
    ];
    if baseline.is_some() {
        spawn_names.extend([
            "baseline: credence get, cached in the agent",
            "baseline: credence get, provider run in the agent (fresh URL)",
        ]);
    }
    let mut spawns: Vec<Vec<Duration>> = vec![Vec::new(); spawn_names.len()];
    let mut rng = fastrand::Rng::new();
    for _ in 0..spawn_rounds {
        let mut order: Vec<usize> = (0..spawn_names.len()).collect();
        rng.shuffle(&mut order);
        for case in order {
            let git = || main.home.command_for(Path::new("git"));
            let d = match case {
                0 => time_spawn(&mut Command::new(&floor_exe), "tok-static-123"),
                1 => time_fed(
                    git()
                        .arg("credential-store")
                        .arg("--file")
                        .arg(&git_store_file)
                        .arg("get"),
                    store_in,
                    "password=p",
                ),
                2 => time_fed(
                    git()
                        .arg("credential-cache")
                        .arg("--socket")
                        .arg(&git_cache.socket)
                        .arg("get"),
                    store_in,
                    "password=p",
                ),
                3 => time_fed(
                    main.home.command().args(["git", "get"]),
                    git_in,
                    "password=tok-static-123",
                ),
                4 => time_spawn(&mut main.get("https://registry.example/"), "tok-static-123"),
                5 => time_spawn(&mut main.get(&fresh("https://fresh.example/")), "tok-fresh"),
                6 => time_spawn(
                    main.get("https://fresh.example/in-process").env("CREDENCE_AGENT", "0"),
                    "tok-fresh",
                ),
                7 => time_spawn(&mut keys.get("https://registry.example/"), "tok-static-123"),
                8 => time_spawn(&mut keys.get(&fresh("https://fresh.example/")), "tok-fresh"),
                9 => time_spawn(&mut main.get("https://padded.example/"), "tok-padded"),
                10 => time_spawn(&mut main.get(&fresh("https://padded.example/")), "tok-padded"),
                11 => time_spawn(
                    keys.get("https://fresh.example/in-process").env("CREDENCE_AGENT", "0"),
                    "tok-fresh",
                ),
                12 => time_spawn(
                    &mut baseline.as_ref().unwrap().get("https://registry.example/"),
                    "tok-static-123",
                ),
                _ => time_spawn(
                    &mut baseline.as_ref().unwrap().get(&fresh("https://fresh.example/")),
                    "tok-fresh",
                ),
            };
            spawns[case].push(d);
        }
    }
    let spawn_load = loadavg();

    // -- 2. The socket, one client -----------------------------------------------------------
    eprintln!(
        "2/5 socket latency: {socket_rounds} rounds (agents: pid {} with 1 key, pid {} with 1,000)...",
        main.pid(),
        keys.pid()
    );
    for site in [&main, &keys] {
        site.forget("fresh");
        site.forget("padded");
    }
    let main_client = main.client();
    let keys_client = keys.client();
    let mut echo_client = echo.connect();
    let mut main_kept = main.kept();
    let mut baseline_kept = baseline.as_ref().map(Site::kept);
    let mut socket_names = vec![
        "cached answer (kept connection, as the thin client)",
        "cached answer, trust store of 1,000 keys",
        "cached answer, 2 MB component",
        "cached answer, new connection per request (hello and request pipelined)",
        "git credential-cache--daemon get (connection per request)",
        "provider run (static-token, fresh URL)",
        "provider run, trust store of 1,000 keys",
        "provider run, 2 MB component",
        "provider run, cache = never provider (hostile sleep 0)",
        "socket floor: a native process answering the same frames (kept connection)",
        "cached answer, raw frames on a kept connection",
    ];
    if baseline.is_some() {
        socket_names.push("baseline: cached answer, raw frames on a kept connection");
    }
    let mut socket: Vec<Vec<Duration>> = vec![Vec::new(); socket_names.len()];
    let mut since_forget = 0;
    for round in 0..socket_rounds {
        let mut order: Vec<usize> = (0..socket_names.len())
            .filter(|&c| !(5..=8).contains(&c) || round % run_every == 0)
            .collect();
        rng.shuffle(&mut order);
        for case in order {
            let started = Instant::now();
            match case {
                0 => ask(&main_client, "https://registry.example/"),
                1 => ask(&keys_client, "https://registry.example/"),
                2 => ask(&main_client, "https://padded.example/"),
                3 => main.one_shot("https://registry.example/"),
                4 => git_cache.get(),
                5 => ask(&main_client, &fresh("https://fresh.example/")),
                6 => ask(&keys_client, &fresh("https://fresh.example/")),
                7 => ask(&main_client, &fresh("https://padded.example/")),
                8 => ask(&main_client, "https://never.example/"),
                9 => echo_client.ask(),
                10 => main_kept.ask("https://registry.example/"),
                _ => baseline_kept.as_mut().unwrap().ask("https://registry.example/"),
            }
            socket[case].push(started.elapsed());
        }
        if round % run_every == 0 {
            since_forget += 1;
            if since_forget >= 3000 {
                // Far below the cache's 10,000-entry bound, where eviction starts to scan.
                for site in [&main, &keys] {
                    site.forget("fresh");
                    site.forget("padded");
                }
                since_forget = 0;
            }
        }
    }
    drop((main_client, keys_client, echo_client, main_kept, baseline_kept));
    let socket_load = loadavg();
    let broker_hit = broker_times(&main, &|v| {
        v["url"] == "https://registry.example/" && v["cache"] == "hit" && v["protocol"] == "generic"
    });
    let broker_run = broker_times(&main, &|v| {
        v["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://fresh.example/r/"))
            && v["cache"] == "miss"
    });
    let main_rss_before_load = proc_kib(main.pid(), "VmRSS:");

    // -- 3. Throughput -----------------------------------------------------------------------
    eprintln!(
        "3/5 throughput: {windows} rounds of {} ms windows...",
        window.as_millis()
    );
    main.forget("fresh");
    let cached_kept = || -> Op {
        let c = main.client();
        Box::new(move || ask(&c, "https://registry.example/"))
    };
    let cached_new = || -> Op {
        let site = &main;
        Box::new(move || site.one_shot("https://registry.example/"))
    };
    let git_daemon = || -> Op {
        let g = &git_cache;
        Box::new(move || g.get())
    };
    let echo_kept = || -> Op {
        let mut c = echo.connect();
        Box::new(move || c.ask())
    };
    let runs_fresh = || -> Op {
        let c = main.client();
        Box::new(move || ask(&c, &fresh("https://fresh.example/")))
    };
    let runs_never = || -> Op {
        let c = main.client();
        Box::new(move || ask(&c, "https://never.example/"))
    };
    type Maker<'a, 'b> = &'a (dyn Fn() -> Op<'b> + Sync);
    let load_cases: Vec<(&str, usize, Maker)> = vec![
        ("cached answers, kept connections", 1, &cached_kept),
        ("cached answers, kept connections", 8, &cached_kept),
        ("cached answers, kept connections", 32, &cached_kept),
        ("cached answers, connection per request", 1, &cached_new),
        ("cached answers, connection per request", 8, &cached_new),
        ("cached answers, connection per request", 32, &cached_new),
        ("git credential-cache--daemon get", 1, &git_daemon),
        ("git credential-cache--daemon get", 8, &git_daemon),
        ("git credential-cache--daemon get", 32, &git_daemon),
        ("socket floor: native frame echo, kept connections", 1, &echo_kept),
        ("socket floor: native frame echo, kept connections", 8, &echo_kept),
        ("socket floor: native frame echo, kept connections", 32, &echo_kept),
        ("provider runs, static-token (fresh URLs)", 1, &runs_fresh),
        ("provider runs, static-token (fresh URLs)", 8, &runs_fresh),
        ("provider runs, static-token (fresh URLs)", 32, &runs_fresh),
        ("provider runs, cache = never provider", 8, &runs_never),
        ("provider runs, cache = never provider", 32, &runs_never),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); load_cases.len()];
    for _ in 0..windows {
        let mut order: Vec<usize> = (0..load_cases.len()).collect();
        rng.shuffle(&mut order);
        for case in order {
            let (name, clients, make) = load_cases[case];
            if name.contains("fresh") {
                main.forget("fresh");
            }
            rates[case].push(throughput(clients, window, make));
        }
    }
    // Provider runs with the in-memory cache at its bound (every new answer evicts one).
    eprintln!("   filling the cache to its 10,000-entry bound...");
    let mut full_rates = Vec::new();
    {
        let c = main.client();
        while main.cache_entries() < 10_000 {
            for _ in 0..1000 {
                ask(&c, &fresh("https://fresh.example/"));
            }
        }
    }
    for _ in 0..windows {
        full_rates.push(throughput(8, window, &runs_fresh));
    }
    let entries_full = main.cache_entries();
    main.forget("fresh");
    let load_load = loadavg();
    let main_rss_after_load = proc_kib(main.pid(), "VmRSS:");

    // -- 4. Memory -------------------------------------------------------------------------
    eprintln!("4/5 memory: {rss_requests} cached answers, {rss_runs} provider runs...");
    time_spawn(&mut rss.get("https://p0.example/"), "tok-0");
    let rss_pid = rss.pid();
    let rss_one = proc_kib(rss_pid, "VmRSS:");
    let rss_client = rss.client();
    for i in 1..9 {
        ask(&rss_client, &format!("https://p{i}.example/"));
    }
    ask(&rss_client, "https://never.example/");
    let status = rss_client.status().expect("status");
    assert_eq!(status.providers_loaded, 10, "{status:?}");
    let rss_ten = proc_kib(rss_pid, "VmRSS:");
    let urls: Vec<String> = (0..9).map(|i| format!("https://p{i}.example/")).collect();
    let mut rss_marks = Vec::new();
    for n in 0..rss_requests {
        ask(&rss_client, &urls[n % urls.len()]);
        if (n + 1) % (rss_requests / 10).max(1) == 0 {
            rss_marks.push((n + 1, proc_kib(rss_pid, "VmRSS:")));
        }
    }
    let rss_after_requests = proc_kib(rss_pid, "VmRSS:");
    for _ in 0..rss_runs {
        ask(&rss_client, "https://never.example/");
    }
    let rss_after_runs = proc_kib(rss_pid, "VmRSS:");
    // The same agent under 32 clients at once: a connection thread each.
    let urls = &urls;
    let rss_cached_32 = || -> Op {
        let c = rss.client();
        let mut i = 0;
        Box::new(move || {
            ask(&c, &urls[i % urls.len()]);
            i += 1;
        })
    };
    let rss_runs_32 = || -> Op {
        let c = rss.client();
        Box::new(move || ask(&c, "https://never.example/"))
    };
    throughput(32, window * 2, &rss_cached_32);
    let rss_after_cached_32 = proc_kib(rss_pid, "VmRSS:");
    throughput(32, window * 2, &rss_runs_32);
    let rss_after_runs_32 = proc_kib(rss_pid, "VmRSS:");
    let rss_hwm = proc_kib(rss_pid, "VmHWM:");
    let rss_status = rss_client.status().expect("status");
    drop(rss_client);
    let main_rss_end = proc_kib(main.pid(), "VmRSS:");
    let main_served = main.client().status().expect("status").requests_served;

    // -- 5. Start --------------------------------------------------------------------------
    eprintln!("5/5 agent starts: {starts} per home...");
    let mut first: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut second: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut stops: Vec<Duration> = Vec::new();
    let mut right_after_stop: Vec<Duration> = Vec::new();
    for _ in 0..starts {
        let mut order = [0usize, 1];
        rng.shuffle(&mut order);
        for which in order {
            let site = if which == 0 { &main } else { &keys };
            let client = site.client();
            let pid = client.agent_pid;
            let asked = Instant::now();
            client.stop().expect("stop");
            while !gone(pid) {
                assert!(asked.elapsed() < Duration::from_secs(15), "agent {pid} did not exit");
                std::thread::sleep(Duration::from_micros(200));
            }
            stops.push(asked.elapsed());
            drop(client);
            first[which].push(time_spawn(&mut site.get("https://registry.example/"), "tok-static-123"));
            second[which].push(time_spawn(&mut site.get("https://registry.example/"), "tok-static-123"));
            if which == 0 {
                // What a tool meets when it asks just after `credence agent stop` returned.
                let client = site.client();
                let pid = client.agent_pid;
                client.stop().expect("stop");
                right_after_stop.push(time_spawn(&mut site.get("https://registry.example/"), "tok-static-123"));
                assert!(
                    gone(pid) || site.pid() != pid,
                    "agent {pid} answered `stopping` to a stop but still serves"
                );
            }
        }
    }
    let start_load = loadavg();

    // -- Report ----------------------------------------------------------------------------
    let floor = median(&spawns[0]);
    let store = median(&spawns[1]);
    println!(
        "## credence-agent-bench\n\nload average (1, 5, 15 min): before {load_before}; after the spawns {spawn_load}; after the socket rounds {socket_load}; after the throughput windows {load_load}; at the end {start_load}. Whole run: {:.0} s.\n",
        bench_started.elapsed().as_secs_f64()
    );
    println!("### Through the thin client (one process per request, spawn to exit)\n");
    println!("| case | runs | median | p10 | p90 | / floor | / credential-store |");
    println!("|---|---|---|---|---|---|---|");
    for (i, name) in spawn_names.iter().enumerate() {
        let mut s = spawns[i].clone();
        s.sort();
        let m = pct(&s, 0.5);
        println!(
            "| {name} | {} | {} | {} | {} | {:.2}× | {:.2}× |",
            s.len(),
            ms(m),
            ms(pct(&s, 0.1)),
            ms(pct(&s, 0.9)),
            m.as_secs_f64() / floor.as_secs_f64(),
            m.as_secs_f64() / store.as_secs_f64()
        );
    }
    let d = |a: &[Duration], b: &[Duration]| (median(a).as_secs_f64() - median(b).as_secs_f64()) * 1e3;
    println!(
        "\n1,000 keys minus 1 key (medians): cached {:+.3} ms, provider run {:+.3} ms (in-process, no agent: {:+.3} ms); 2 MB component minus the small one: cached {:+.3} ms, provider run {:+.3} ms.\n",
        d(&spawns[7], &spawns[4]),
        d(&spawns[8], &spawns[5]),
        d(&spawns[11], &spawns[6]),
        d(&spawns[9], &spawns[4]),
        d(&spawns[10], &spawns[5])
    );

    println!("### In the agent, over its socket (one client, one request at a time)\n");
    println!("| case | requests | p10 | p50 | p90 | p99 | p99.9 |");
    println!("|---|---|---|---|---|---|---|");
    for (i, name) in socket_names.iter().enumerate() {
        let mut s = socket[i].clone();
        s.sort();
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} |",
            s.len(),
            us(pct(&s, 0.1)),
            us(pct(&s, 0.5)),
            us(pct(&s, 0.9)),
            us(pct(&s, 0.99)),
            us(pct(&s, 0.999))
        );
    }
    for (name, s) in [
        (
            "of which in the broker: cached answer (audit `duration_ms`)",
            &broker_hit,
        ),
        (
            "of which in the broker: provider run (audit `duration_ms`)",
            &broker_run,
        ),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} |",
            s.len(),
            us(pct(s, 0.1)),
            us(pct(s, 0.5)),
            us(pct(s, 0.9)),
            us(pct(s, 0.99)),
            us(pct(s, 0.999))
        );
    }
    let du = |a: &[Duration], b: &[Duration]| (median(a).as_secs_f64() - median(b).as_secs_f64()) * 1e6;
    println!(
        "\nCached answer minus the socket floor (medians): {:+.1} µs. 1,000 keys minus 1 key (medians): cached {:+.1} µs, provider run {:+.1} µs; 2 MB component minus the small one: cached {:+.1} µs, provider run {:+.1} µs.\n",
        du(&socket[0], &socket[9]),
        du(&socket[1], &socket[0]),
        du(&socket[6], &socket[5]),
        du(&socket[2], &socket[0]),
        du(&socket[7], &socket[5])
    );

    if let Some(b) = &baseline {
        println!(
            "This build minus the baseline ({}), medians: thin client cached {:+.3} ms, provider run {:+.3} ms; socket, cached on a kept connection {:+.1} µs.\n",
            b.build,
            d(&spawns[4], &spawns[12]),
            d(&spawns[5], &spawns[13]),
            du(&socket[10], &socket[11])
        );
    }
    println!(
        "### Throughput ({windows} windows of {} ms per case, interleaved)\n",
        window.as_millis()
    );
    println!("| case | clients | median /s | min /s | max /s | / git daemon | / socket floor |");
    println!("|---|---|---|---|---|---|---|");
    let git_rate = |clients: usize| {
        load_cases
            .iter()
            .position(|(n, c, _)| n.starts_with("git") && *c == clients)
            .map(|i| median_f(&rates[i]))
    };
    let floor_rate = |clients: usize| {
        load_cases
            .iter()
            .position(|(n, c, _)| n.starts_with("socket floor") && *c == clients)
            .map(|i| median_f(&rates[i]))
    };
    for (i, (name, clients, _)) in load_cases.iter().enumerate() {
        let m = median_f(&rates[i]);
        let min = rates[i].iter().cloned().fold(f64::INFINITY, f64::min);
        let max = rates[i].iter().cloned().fold(0.0, f64::max);
        let ratio = |peer: Option<f64>, applies: bool| match (applies, peer) {
            (true, Some(p)) => format!("{:.2}×", m / p),
            _ => "".into(),
        };
        let cached = name.starts_with("cached");
        println!(
            "| {name} | {clients} | {m:.0} | {min:.0} | {max:.0} | {} | {} |",
            ratio(git_rate(*clients), cached),
            ratio(floor_rate(*clients), cached || name.starts_with("git"))
        );
    }
    let m = median_f(&full_rates);
    println!(
        "| provider runs, static-token, cache at its bound ({entries_full} entries) | 8 | {m:.0} | {:.0} | {:.0} | | |\n",
        full_rates.iter().cloned().fold(f64::INFINITY, f64::min),
        full_rates.iter().cloned().fold(0.0, f64::max)
    );

    println!("### Agent memory (VmRSS of the agent process)\n");
    println!("| state | VmRSS |");
    println!("|---|---|");
    let mib = |k: u64| format!("{:.1} MiB ({:.1} MB)", k as f64 / 1024.0, k as f64 * 1024.0 / 1e6);
    println!("| 1 provider loaded | {} |", mib(rss_one));
    println!("| 10 providers loaded (distinct components) | {} |", mib(rss_ten));
    for (n, k) in &rss_marks {
        println!("| after {n} cached answers | {} |", mib(*k));
    }
    println!(
        "| after {rss_runs} more provider runs (cache = never) | {} |",
        mib(rss_after_runs)
    );
    println!(
        "| then {} ms of cached answers to 32 clients at once | {} |",
        (window * 2).as_millis(),
        mib(rss_after_cached_32)
    );
    println!(
        "| then {} ms of provider runs for 32 clients at once | {} |",
        (window * 2).as_millis(),
        mib(rss_after_runs_32)
    );
    println!("| peak (VmHWM) | {} |", mib(rss_hwm));
    println!(
        "| the agent of the socket and throughput phases (4 providers): before the throughput windows | {} |",
        mib(main_rss_before_load)
    );
    println!(
        "| the same, after them (up to 32 clients at once) | {} |",
        mib(main_rss_after_load)
    );
    println!(
        "| the same, at the end ({main_served} requests served) | {} |",
        mib(main_rss_end)
    );
    let first_mark = rss_marks.first().map_or(rss_ten, |m| m.1);
    println!(
        "\nGrowth over {rss_requests} cached answers: {:+} KiB from 10 providers loaded, {:+} KiB after the first tenth; over {rss_runs} provider runs: {:+} KiB. The agent answered {} requests, {} cache entries.\n",
        rss_after_requests as i64 - rss_ten as i64,
        rss_after_requests as i64 - first_mark as i64,
        rss_after_runs as i64 - rss_after_requests as i64,
        rss_status.requests_served,
        rss_status.cache_entries
    );

    println!("### Agent start (the agent stopped, then `credence get` timed from spawn to exit)\n");
    println!("| case | starts | median | p10 | p90 | max |");
    println!("|---|---|---|---|---|---|");
    let row = |name: &str, s: &[Duration]| {
        let mut s = s.to_vec();
        s.sort();
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            s.len(),
            ms(pct(&s, 0.5)),
            ms(pct(&s, 0.1)),
            ms(pct(&s, 0.9)),
            ms(*s.last().unwrap_or(&Duration::ZERO))
        );
    };
    row(
        "first answer: agent start, precompiled provider loaded and run, 1 key",
        &first[0],
    );
    row("first answer, trust store of 1,000 keys", &first[1]);
    row("the next request (cached), 1 key", &second[0]);
    row("the next request (cached), 1,000 keys", &second[1]);
    row("stop over the socket until the agent's process is gone", &stops);
    row(
        "`credence get` sent right after the stop was answered, 1 key",
        &right_after_stop,
    );

    let socket_sorted = {
        let mut s = socket[0].clone();
        s.sort();
        s
    };
    // The worse of 8 and 32 clients.
    let runs_concurrent = rates
        .iter()
        .zip(&load_cases)
        .filter(|(_, (n, c, _))| n.starts_with("provider runs, static") && *c > 1)
        .map(|(r, _)| median_f(r))
        .fold(f64::INFINITY, f64::min);
    println!("\n### Goals\n");
    println!("| goal | measured | met |");
    println!("|---|---|---|");
    let yes = |b: bool| if b { "yes" } else { "**no**" };
    let git_get = median(&spawns[3]);
    println!(
        "| git get, cached, ≤ credential-store's median | {} against {} | {} |",
        ms(git_get),
        ms(store),
        yes(git_get <= store)
    );
    let run = median(&spawns[5]);
    println!(
        "| provider run through the thin client ≤ 1.3× the floor | {:.2}× ({} against {}) | {} |",
        run.as_secs_f64() / floor.as_secs_f64(),
        ms(run),
        ms(floor),
        yes(run.as_secs_f64() <= 1.3 * floor.as_secs_f64())
    );
    let p50 = pct(&socket_sorted, 0.5);
    let p99 = pct(&socket_sorted, 0.99);
    println!(
        "| cached answer in the agent, p50 ≤ 50 µs | {} | {} |",
        us(p50),
        yes(p50 <= Duration::from_micros(50))
    );
    println!(
        "| cached answer in the agent, p99 ≤ 500 µs | {} | {} |",
        us(p99),
        yes(p99 <= Duration::from_micros(500))
    );
    println!(
        "| provider runs ≥ 2,000/s with concurrent clients | {runs_concurrent:.0}/s (the lower of 8 and 32 clients) | {} |",
        yes(runs_concurrent >= 2000.0)
    );
    let first_med = median(&first[0]);
    println!(
        "| first answer after the agent starts ≤ 150 ms | {} | {} |",
        ms(first_med),
        yes(first_med <= Duration::from_millis(150))
    );
    println!(
        "| agent RSS with 10 providers loaded ≤ 30 MB | {} | {} |",
        mib(rss_ten),
        yes(rss_ten * 1024 <= 30_000_000)
    );
    let growth = rss_after_requests as i64 - rss_ten as i64;
    println!(
        "| RSS growth over {rss_requests} requests ≤ 1 MiB | {growth:+} KiB | {} |",
        yes(growth <= 1024)
    );
    let keys_cost = d(&spawns[7], &spawns[4]).max(du(&socket[1], &socket[0]) / 1e3);
    println!(
        "| 1,000 keys cost ≤ 0.1 ms per request | {:+.3} ms thin client, {:+.1} µs socket (cached) | {} |",
        d(&spawns[7], &spawns[4]),
        du(&socket[1], &socket[0]),
        yes(keys_cost <= 0.1)
    );
    println!(
        "| a 2 MB component is not hashed per request | {:+.1} µs per provider run, {:+.1} µs per cached answer (socket) | {} |",
        du(&socket[7], &socket[5]),
        du(&socket[2], &socket[0]),
        yes(du(&socket[7], &socket[5]) < 250.0 && du(&socket[2], &socket[0]) < 250.0)
    );
    println!(
        "\nagent pid {main_pid_start} at the start; binaries: {} ({} bytes), credence-host ({} bytes)",
        credence_exe().display(),
        std::fs::metadata(credence_exe()).map(|m| m.len()).unwrap_or(0),
        std::fs::metadata(credence_exe().with_file_name("credence-host"))
            .map(|m| m.len())
            .unwrap_or(0)
    );
    for site in [Some(&main), Some(&keys), Some(&rss), baseline.as_ref()]
        .into_iter()
        .flatten()
    {
        if let Ok(c) = AgentClient::connect(&site.paths, false) {
            let _ = c.stop();
        }
    }
}
