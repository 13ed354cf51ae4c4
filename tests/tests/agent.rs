//! The agent, attacked through the real binaries: a thousand requests from fifty clients
//! mixing hostile and good providers, clients racing to start it, a stale socket, a loose
//! socket directory, a connection from another uid, `kill -9` in the middle of a request,
//! concurrent misses and a rotating refresh token, a provider that keeps a `static`, a
//! revocation while it runs, trace logging, two homes on one machine, a request without a
//! terminal, the agent's exits; and, marked as defects until fixed, one slow instance
//! taking every run slot and two agents for one home.
//!
//! Each test's home gets an `XDG_RUNTIME_DIR` of its own (inside its temporary
//! directory), so the agent directory it chmods or counts sockets in is nobody else's, and
//! the agent exits when the test's directory goes.

use credence_tests::{
    Home, Reply, Run, TestServer, credence_exe, manifest, open_files, run_bounded, run_bounded_with_input, status_of,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

// ---- the harness of this file ----------------------------------------------------------

/// This build's `credence` and `credence-host`, hard-linked (or copied) once per test run
/// beside the originals: an agent's build identity is its `credence-host` file, so a
/// rebuild while these tests run would otherwise make every client see "another build",
/// restart the agent and answer some requests in-process.
fn pinned_exe() -> PathBuf {
    static PINNED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PINNED
        .get_or_init(|| {
            let real = credence_exe();
            let target = real.parent().unwrap();
            // Pins of earlier runs whose process is gone.
            for entry in std::fs::read_dir(target).unwrap().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("agent-test-bin-").and_then(|p| p.parse().ok())
                    && !alive(pid)
                {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
            let dir = target.join(format!("agent-test-bin-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for name in ["credence", "credence-host"] {
                let (from, to) = (real.with_file_name(name), dir.join(name));
                if std::fs::hard_link(&from, &to).is_err() {
                    std::fs::copy(&from, &to).unwrap();
                }
            }
            dir.join("credence")
        })
        .clone()
}

fn new_home() -> Home {
    Home::with_exe(pinned_exe())
}

/// A home and the runtime directory its clients (and so its agent) use.
struct World {
    home: Home,
    run_dir: PathBuf,
}

fn private_dir(path: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(path).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl World {
    fn new(home: Home) -> World {
        let run_dir = home.dir.path().join("run");
        private_dir(&run_dir);
        World { home, run_dir }
    }

    /// A home whose clients share `run_dir` with other homes (one user, several homes).
    fn sharing(home: Home, run_dir: &Path) -> World {
        World {
            home,
            run_dir: run_dir.to_owned(),
        }
    }

    fn run_dir(&self) -> &str {
        self.run_dir.to_str().unwrap()
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// `credence <args>` with this world's runtime dir, then `env` (which may override it).
    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut all = vec![("XDG_RUNTIME_DIR", self.run_dir())];
        all.extend_from_slice(env);
        self.home.run_with(args, &all)
    }

    fn run_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        self.home.run_stdin(args, stdin, &[("XDG_RUNTIME_DIR", self.run_dir())])
    }

    fn command(&self) -> Command {
        let mut cmd = self.home.command();
        cmd.env("XDG_RUNTIME_DIR", &self.run_dir);
        cmd
    }

    fn agent_dir(&self) -> PathBuf {
        self.run_dir.join("credence")
    }

    /// The files in the agent directory whose names end with `suffix` (`.sock`, `.lock`).
    fn agent_files(&self, suffix: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.agent_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().ends_with(suffix))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// `credence agent status --json`, or `None` when no agent runs.
    fn status(&self) -> Option<Value> {
        let run = self.run(&["agent", "status", "--json"]);
        match run.code {
            Some(0) => Some(run.json()),
            Some(1) => None,
            _ => panic!("agent status: {run:#?}"),
        }
    }

    fn expect_status(&self) -> Value {
        let run = self.run(&["agent", "status", "--json"]);
        if run.code == Some(0) {
            return run.json();
        }
        let log = std::fs::read_to_string(self.home.state().join("credence/agent.log")).unwrap_or_default();
        panic!(
            "no agent answers for this home: {run:#?}\nagents now: {:?}\nagent.log:\n{log}",
            self.agents()
        );
    }

    fn agent_pid(&self) -> u32 {
        self.expect_status()["pid"].as_u64().unwrap() as u32
    }

    fn served(&self) -> u64 {
        self.expect_status()["requests_served"].as_u64().unwrap()
    }

    fn stop_agent(&self) {
        let run = self.run(&["agent", "stop"]);
        assert_eq!(run.code, Some(0), "{run:#?}");
    }

    fn get(&self, url: &str) -> Run {
        self.run(&["get", url])
    }

    fn assert_answers(&self, url: &str, secret: &str) -> Run {
        let run = self.get(url);
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (Some(0), format!("{secret}\n").as_str()),
            "{url}: {run:#?}"
        );
        run
    }

    /// Every line of `audit.jsonl`, each of which must be one JSON object.
    fn audit(&self) -> Vec<Value> {
        audit_of(&self.home)
    }

    fn agents(&self) -> Vec<u32> {
        agents_of(&self.home)
    }
}

fn audit_of(home: &Home) -> Vec<Value> {
    let text = std::fs::read_to_string(home.state().join("credence/audit.jsonl")).unwrap_or_default();
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("audit.jsonl line {} is not JSON ({e}): {line:?}", i + 1));
            assert!(v.is_object(), "audit line {} is not an object: {line}", i + 1);
            v
        })
        .collect()
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// A process that still runs: it exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_dead(pid: u32, within: Duration) {
    let deadline = Instant::now() + within;
    while alive(pid) {
        assert!(Instant::now() < deadline, "pid {pid} still runs after {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The running `credence-host agent ...` processes whose environment names `home`.
fn agents_of(home: &Home) -> Vec<u32> {
    let marker = format!("CREDENCE_HOME={}", home.home().display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let args = cmdline(pid);
        let is_agent =
            args.first().is_some_and(|a| a.ends_with("credence-host")) && args.get(1).is_some_and(|a| a == "agent");
        if !is_agent || !alive(pid) {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|var| var == marker.as_bytes()) {
            pids.push(pid);
        }
    }
    pids.sort();
    pids
}
fn kill_9(pid: u32) {
    // SAFETY: kill with a pid and a signal number.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0, "kill -9 {pid}");
}

/// The host program beside `credence`.
fn host_exe() -> PathBuf {
    pinned_exe().with_file_name("credence-host")
}

/// `application/x-www-form-urlencoded` fields (the test tokens need no decoding).
fn form(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A `[[provider]]` table.
fn instance(name: &str, component: &str, serves: &str, settings: &str, limits: &str) -> String {
    format!(
        "[[provider]]\nname = {name:?}\ncomponent = {component:?}\nserves = [{serves:?}]\nsettings = {{ {settings} }}\nlimits = {{ {limits} }}\n"
    )
}

/// Runs `f(i)` for i in 0..n on n threads released at once; the results in order.
fn at_once<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, f) = (&barrier, &f);
                s.spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// `Home::signed_static_token` on the pinned binaries: static-token as instance
/// `registry` (https://registry.example/, token `signed-token`), signed by a trusted key.
fn signed_static_token() -> (World, credence_tests::Key) {
    let home = new_home();
    home.install("static-token", "static-token", &manifest("static-token", &[], &[]));
    home.write_config(&instance(
        "registry",
        "static-token.wasm",
        "https://registry.example/",
        r#"token = "signed-token""#,
        "",
    ));
    let key = home.keygen("publisher");
    home.trust(&key, "Sample publisher", "publisher", "static-token");
    home.sign("static-token", &key, &[]);
    (World::new(home), key)
}

// ---- 1. a thousand requests, hostile and good, from fifty clients -----------------------

/// What one instance answers: a token, or a failure naming that instance's own limit.
#[derive(Clone, Copy)]
enum Expect {
    Token(&'static str),
    Error(&'static str),
}

/// (instance, URL it serves, what every request for it must get)
const MIX: &[(&str, &str, Expect)] = &[
    ("good-a", "https://a.example/", Expect::Token("tok-a")),
    // A fresh path per request: a provider run every time, not a cached answer.
    ("good-b", "https://b.example/", Expect::Token("tok-b")),
    ("good-c", "https://c.example/", Expect::Token("Bearer tok-c")),
    (
        "loop",
        "https://loop.example/",
        Expect::Error("provider loop exceeded its CPU time limit of 50 ms"),
    ),
    (
        "bomb",
        "https://bomb.example/",
        Expect::Error("provider bomb exceeded its memory limit of 16 MiB"),
    ),
    (
        "crash",
        "https://crash.example/",
        Expect::Error("provider crash crashed: wasm trap"),
    ),
    (
        "sleepy",
        "https://sleepy.example/",
        Expect::Error("provider sleepy exceeded its wall-clock limit of 200 ms"),
    ),
    (
        "hoard",
        "https://hoard.example/",
        Expect::Error("provider hoard exceeded its limit of 256 open handles"),
    ),
];

fn mixed_world() -> World {
    let home = new_home();
    home.install_signed(&[("static-token", &[], &[]), ("hostile", &[], &[])]);
    let mut config = String::new();
    config += &instance(
        "good-a",
        "static-token.wasm",
        "https://a.example/",
        r#"token = "tok-a""#,
        "",
    );
    config += &instance(
        "good-b",
        "static-token.wasm",
        "https://b.example/",
        r#"token = "tok-b""#,
        "",
    );
    config += &instance(
        "good-c",
        "static-token.wasm",
        "https://c.example/",
        r#"token = "tok-c", header = "bearer""#,
        "",
    );
    config += &instance(
        "loop",
        "hostile.wasm",
        "https://loop.example/",
        r#"attack = "infinite-loop""#,
        "cpu-ms = 50",
    );
    config += &instance(
        "bomb",
        "hostile.wasm",
        "https://bomb.example/",
        r#"attack = "memory-bomb""#,
        "memory-mib = 16",
    );
    config += &instance(
        "crash",
        "hostile.wasm",
        "https://crash.example/",
        r#"attack = "panic""#,
        "",
    );
    config += &instance(
        "sleepy",
        "hostile.wasm",
        "https://sleepy.example/",
        r#"attack = "sleep", ms = "3600000""#,
        "wall-ms = 200",
    );
    config += &instance(
        "hoard",
        "hostile.wasm",
        "https://hoard.example/",
        r#"attack = "hoard-handles""#,
        "",
    );
    home.write_config(&config);
    World::new(home)
}

/// One `credence --cargo-plugin` session of `requests` requests, instance `(client + j) % 8`
/// for the j-th; checks each answer and returns how many there were.
fn cargo_session(world: &World, round: &str, client: usize, requests: usize) -> usize {
    let mut input = String::new();
    let mut expected = Vec::new();
    for j in 0..requests {
        let (name, url, expect) = MIX[(client + j) % MIX.len()];
        let index = if name == "good-b" {
            format!("{url}{round}/c{client}/r{j}/")
        } else {
            url.to_owned()
        };
        let line =
            json!({"v": 1, "registry": {"index-url": format!("sparse+{index}")}, "kind": "get", "operation": "read"});
        input += &format!("{line}\n");
        expected.push((name, expect));
    }
    let mut cmd = world.command();
    cmd.arg("--cargo-plugin").stdin(Stdio::piped());
    let (out, _) = run_bounded_with_input(cmd, input.into_bytes(), Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(r#"{"v":[1]}"#),
        "client {client}: {stdout}\n{stderr}"
    );
    let answers: Vec<Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), requests, "client {client}: {stdout}\n{stderr}");
    for (j, (answer, (name, expect))) in answers.iter().zip(&expected).enumerate() {
        match expect {
            Expect::Token(token) => assert_eq!(
                answer["Ok"]["token"].as_str(),
                Some(*token),
                "client {client} request {j} ({name}): {answer}"
            ),
            Expect::Error(message) => {
                let got = answer["Err"]["message"].as_str().unwrap_or_default();
                assert!(
                    got.contains(message),
                    "client {client} request {j} ({name}): expected {message:?}, got {answer}"
                );
                // Its own error, not another instance's.
                for (other, _, _) in MIX.iter().filter(|(other, _, _)| other != name) {
                    assert!(
                        !got.contains(&format!("provider {other} ")),
                        "client {client} request {j} ({name}) got {other}'s error: {answer}"
                    );
                }
            }
        }
    }
    assert!(out.status.success(), "client {client}: {stderr}");
    answers.len()
}

/// (open files, threads, resident KiB) of the agent once its connections have closed.
/// With `at_most`, waits (up to 5 s) for fds and threads to come down to it; without, for
/// them to stop changing.
fn settled_sample(pid: u32, at_most: Option<(usize, u64)>) -> (usize, u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut previous = None;
    loop {
        let sample = (open_files(pid), status_of(pid, "Threads"), status_of(pid, "VmRSS"));
        let settled = match at_most {
            Some((files, threads)) => sample.0 <= files && sample.1 <= threads,
            None => previous == Some((sample.0, sample.1)),
        };
        if settled || Instant::now() >= deadline {
            return sample;
        }
        previous = Some((sample.0, sample.1));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_thousand_requests_from_fifty_clients_mixing_hostile_and_good_providers_are_each_answered_and_leak_nothing() {
    const CLIENTS: usize = 50;
    const PER_CLIENT: usize = 20;
    let world = mixed_world();
    let started = Instant::now();
    // Warm-up at the same concurrency: every instance loaded, every code path taken, every
    // allocator arena and thread the agent will use touched.
    let warm: usize = at_once(CLIENTS, |c| cargo_session(&world, "warm", c, MIX.len()))
        .into_iter()
        .sum();
    let pid = world.agent_pid();
    std::thread::sleep(Duration::from_millis(300));
    let (files_warm, threads_warm, rss_warm) = settled_sample(pid, None);
    let served_warm = world.served();
    let audit_warm = world.audit().len();
    let warmed = started.elapsed();

    let started = Instant::now();
    let answered: usize = at_once(CLIENTS, |c| cargo_session(&world, "main", c, PER_CLIENT))
        .into_iter()
        .sum();
    let run_time = started.elapsed();
    assert_eq!(answered, CLIENTS * PER_CLIENT);

    let status = world.expect_status();
    assert_eq!(
        status["pid"].as_u64(),
        Some(pid as u64),
        "the same agent, alive: {status}"
    );
    assert_eq!(
        status["requests_served"].as_u64().unwrap() - served_warm,
        (CLIENTS * PER_CLIENT) as u64,
        "every request went through the agent, none was answered in-process: {status}"
    );
    assert_eq!(
        world.audit().len() - audit_warm,
        CLIENTS * PER_CLIENT,
        "one audit line per request"
    );
    let (files_end, threads_end, rss_end) = settled_sample(pid, Some((files_warm, threads_warm)));
    println!(
        "agent {pid}: warm-up of {warm} requests in {warmed:?}, then {answered} in {run_time:?}; \
         after warm-up {files_warm} fds, {threads_warm} threads, {rss_warm} KiB; \
         after the run {files_end} fds, {threads_end} threads, {rss_end} KiB"
    );
    assert!(files_end <= files_warm, "open files: {files_warm} -> {files_end}");
    assert!(threads_end <= threads_warm, "threads: {threads_warm} -> {threads_end}");
    assert!(
        rss_end < rss_warm + 4 * 1024,
        "resident memory grew from {rss_warm} KiB to {rss_end} KiB over {answered} requests"
    );
    assert_eq!(world.agents(), vec![pid], "one agent, never restarted");
}

// ---- 2. starting the agent: a race, a stale socket, a loose directory --------------------

#[test]
fn twenty_clients_racing_with_no_agent_running_start_exactly_one() {
    let (world, _) = signed_static_token();
    assert!(world.status().is_none(), "no agent before the race");
    assert!(world.agents().is_empty());
    let runs = at_once(20, |_| world.get("https://registry.example/"));
    for run in &runs {
        assert_eq!((run.code, run.stdout.as_str()), (Some(0), "signed-token\n"), "{run:#?}");
    }
    let agents = world.agents();
    assert_eq!(agents.len(), 1, "exactly one agent for the home: {agents:?}");
    assert_eq!(world.agent_pid(), agents[0]);
    assert_eq!(world.agent_files(".sock").len(), 1);
    let via_agent = world.audit().iter().filter(|r| r["client"].is_object()).count();
    println!("{via_agent} of 20 racing requests were answered by the agent, the rest in-process");
    assert!(via_agent >= 1, "the agent that was started answered");
    // Settled: the next requests all go to that one agent.
    let _ = at_once(20, |_| {
        world.assert_answers("https://registry.example/", "signed-token")
    });
    assert_eq!(world.agents(), agents);
}

#[test]
fn a_stale_socket_left_by_an_agent_killed_with_sigkill_is_recovered_by_the_next_client() {
    let (world, _) = signed_static_token();
    world.assert_answers("https://registry.example/", "signed-token");
    let old = world.agent_pid();
    let socket = world.agent_files(".sock");
    // The lock lives in the home's state dir, which every client of the home shares.
    let lock = vec![world.home.state().join("credence/agent.lock")];
    assert_eq!((socket.len(), lock.len()), (1, 1), "{socket:?} {lock:?}");
    kill_9(old);
    wait_dead(old, Duration::from_secs(5));
    assert!(
        socket[0].exists() && lock[0].exists(),
        "kill -9 left the socket and the lock behind"
    );
    assert!(world.status().is_none(), "nobody answers on the stale socket");

    let run = world.assert_answers("https://registry.example/", "signed-token");
    assert!(run.elapsed < Duration::from_secs(5), "{run:#?}");
    assert!(!run.stderr.contains("warning"), "{run:#?}");
    let new = world.agent_pid();
    assert_ne!(new, old);
    assert_eq!(world.agents(), vec![new]);
    assert_eq!(world.agent_files(".sock"), socket, "the same socket path, bound again");
    let last = world.audit().pop().unwrap();
    assert!(last["client"].is_object(), "answered by the new agent: {last}");
}

#[test]
fn a_loose_agent_directory_is_refused_with_a_warning_naming_it_and_the_request_answered_in_process() {
    let (world, _) = signed_static_token();
    world.assert_answers("https://registry.example/", "signed-token");
    let agent = world.agent_pid();
    let served = world.served();
    let dir = world.agent_dir();
    chmod(&dir, 0o755);

    let run = world.assert_answers("https://registry.example/", "signed-token");
    let warning = format!(
        "credence: warning: the permissions on the agent directory {} are too loose (755)",
        dir.display()
    );
    assert!(
        run.stderr.contains(&warning),
        "expected {warning:?} in:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("answering without the agent"), "{}", run.stderr);
    let last = world.audit().pop().unwrap();
    assert!(
        last["client"].is_null(),
        "answered in-process, not by the agent: {last}"
    );
    assert_eq!(last["outcome"], "credential");
    // Nothing was started beside it and the directory was not "fixed" behind the user's back.
    assert_eq!(world.agents(), vec![agent]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o755);
    chmod(&dir, 0o700);
    assert_eq!(world.served(), served, "the agent never saw that request");
}

#[test]
fn the_agent_exits_after_its_idle_time_when_its_socket_is_removed_and_when_its_home_goes() {
    let (world, _) = signed_static_token();
    let config = std::fs::read_to_string(world.home.home().join("config.toml")).unwrap();
    world.home.write_config(&format!("{config}\n[agent]\nidle = \"2s\"\n"));
    world.assert_answers("https://registry.example/", "signed-token");
    let status = world.expect_status();
    assert_eq!(status["idle_exit_secs"], 2, "{status}");
    let pid = status["pid"].as_u64().unwrap() as u32;
    let quiet = Instant::now();
    wait_dead(pid, Duration::from_secs(6));
    assert!(
        quiet.elapsed() >= Duration::from_millis(1500),
        "it left before its idle time: {:?}",
        quiet.elapsed()
    );
    assert!(world.agent_files(".sock").is_empty(), "it took its socket with it");

    // Its socket removed: it exits, and the next client starts another.
    world.assert_answers("https://registry.example/", "signed-token");
    let pid = world.agent_pid();
    std::fs::remove_file(world.agent_files(".sock").pop().unwrap()).unwrap();
    wait_dead(pid, Duration::from_secs(3));
    world.assert_answers("https://registry.example/", "signed-token");

    // Its home removed: it exits.
    let pid = world.agent_pid();
    std::fs::remove_dir_all(world.home.home()).unwrap();
    wait_dead(pid, Duration::from_secs(3));
}

// ---- 3. another uid ----------------------------------------------------------------------

/// Set by the test below for the copy of this test binary it runs as another user.
const PEER_SOCKET_VAR: &str = "CREDENCE_TEST_PEER_SOCKET";

/// Not a test on its own: with [`PEER_SOCKET_VAR`] set it connects to that socket as
/// whoever runs it, says hello and asks for the status as a client would, and prints what
/// came back.
#[test]
fn peer_helper_connects_to_an_agent_socket_as_whoever_runs_it() {
    let Some(socket) = std::env::var_os(PEER_SOCKET_VAR) else {
        return;
    };
    // SAFETY: no preconditions.
    let uid = unsafe { libc::geteuid() };
    let pid = std::process::id();
    let mut stream = match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(s) => s,
        Err(e) => {
            println!("peer-helper: uid={uid} pid={pid} cannot-connect {e}");
            return;
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let frame = |v: Value| {
        let body = v.to_string().into_bytes();
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&body);
        f
    };
    let _ = stream.write_all(&frame(
        json!({"hello": {"protocol": 2, "build": "peer", "home": "peer", "takeover": false}}),
    ));
    let _ = stream.write_all(&frame(json!("status")));
    let mut got = Vec::new();
    let outcome = match stream.read_to_end(&mut got) {
        Ok(_) if got.is_empty() => "closed".to_owned(),
        Ok(_) => format!("answered {:?}", String::from_utf8_lossy(&got)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
            format!("left-open {:?}", String::from_utf8_lossy(&got))
        }
        Err(e) if got.is_empty() => format!("closed ({e})"),
        Err(e) => format!("answered {:?} then {e}", String::from_utf8_lossy(&got)),
    };
    println!("peer-helper: uid={uid} pid={pid} connected {outcome}");
}

#[test]
fn a_connection_from_another_uid_is_refused_unanswered_and_audited_as_refused_peer() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: becoming another user needs root (CI runs as root)");
        return;
    }
    let (world, _) = signed_static_token();
    world.assert_answers("https://registry.example/", "signed-token");
    let agent = world.agent_pid();
    let served = world.served();
    let socket = world.agent_files(".sock").pop().unwrap();
    let before = world.audit().len();

    // nobody, with CAP_DAC_OVERRIDE so that it can enter the 0700 directory and open the
    // socket: the agent's own peer check is what is attacked, not the directory's mode.
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--inh-caps=+dac_override",
        "--ambient-caps=+dac_override",
    ])
    .arg(std::env::current_exe().unwrap())
    .args([
        "--exact",
        "peer_helper_connects_to_an_agent_socket_as_whoever_runs_it",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(PEER_SOCKET_VAR, &socket)
    .stdin(Stdio::null());
    let (out, _) = run_bounded(cmd, Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("peer-helper:").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("the helper ran: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(line.contains("uid=65534 "), "the helper ran as nobody: {line}");
    assert!(
        line.contains(" connected closed"),
        "connected, then closed without a word: {line}"
    );
    let helper_pid: i64 = line
        .split(" pid=")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();

    let records = world.audit();
    let new: Vec<&Value> = records[before..].iter().collect();
    assert_eq!(new.len(), 1, "one record for the refused connection: {new:?}");
    let r = new[0];
    assert_eq!(r["outcome"], "refused-peer", "{r}");
    assert_eq!(r["client"]["uid"], 65534, "{r}");
    assert_eq!(r["client"]["pid"], helper_pid, "{r}");
    assert!(r["credential_fingerprint"].is_null(), "{r}");
    // The agent served nothing to it, and still serves its own user.
    assert_eq!(world.served(), served);
    world.assert_answers("https://registry.example/", "signed-token");
    assert_eq!(world.agent_pid(), agent);
}

// ---- 4. kill -9 during a request ---------------------------------------------------------

/// A token endpoint that issues `at-N` (an hour) and `rt-N`, and counts what it was sent.
fn token_server(delay: Duration) -> TestServer {
    let issued = Arc::new(Mutex::new(0u32));
    TestServer::start(move |_| {
        std::thread::sleep(delay);
        let mut n = issued.lock().unwrap();
        *n += 1;
        Reply::json(
            200,
            &format!(r#"{{"access_token":"at-{n}","expires_in":3600,"refresh_token":"rt-{n}"}}"#),
        )
    })
}

fn files_with_contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_with_contents(&path));
        } else {
            out.insert(path.display().to_string(), std::fs::read(&path).unwrap_or_default());
        }
    }
    out
}

#[test]
fn kill_9_of_the_agent_during_a_request_neither_hangs_the_client_nor_damages_stored_credentials_state_or_audit() {
    let tokens = token_server(Duration::ZERO);
    let home = new_home();
    home.install_signed(&[("token-exchange", &[tokens.origin()], &[]), ("hostile", &[], &[])]);
    let mut config = instance(
        "feed",
        "token-exchange.wasm",
        "https://feed.example/",
        &format!(
            r#"token-url = "{}/token", client-id = "c", client-secret = "s""#,
            tokens.origin()
        ),
        "",
    );
    config += &format!("grant-origins = [{:?}]\n", tokens.origin());
    config += &instance(
        "slow",
        "hostile.wasm",
        "https://slow.example/",
        r#"attack = "sleep", ms = "1500""#,
        "wall-ms = 10000",
    );
    home.write_config(&config);
    let world = World::new(home);
    world.assert_answers("https://feed.example/", "at-1");
    assert_eq!(tokens.hits(), 1);
    let state_dir = world.home.state().join("credence/state");
    let stored_before = files_with_contents(&state_dir);
    assert!(
        !stored_before.is_empty(),
        "the credential and the refresh token are stored"
    );
    let agent = world.agent_pid();
    let served = world.served();

    std::thread::scope(|s| {
        let slow = s.spawn(|| {
            let mut cmd = world.command();
            cmd.args(["get", "https://slow.example/"]);
            run_bounded(cmd, Duration::from_secs(60))
        });
        // In flight once the agent has counted it; then the provider is asleep in it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while world.served() == served {
            assert!(Instant::now() < deadline, "the request never reached the agent");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        kill_9(agent);
        let (out, elapsed) = slow.join().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!(
            "after kill -9: exit {:?} in {elapsed:?}: {stdout:?} {stderr:?}",
            out.status.code()
        );
        // Asked again through a fresh agent (or in-process), or a clean failure: never a hang.
        assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
        match out.status.code() {
            Some(0) => assert_eq!(stdout, "slept 1500 ms\n"),
            Some(3) => assert!(stdout.is_empty() && stderr.contains("agent"), "{stdout:?} {stderr:?}"),
            other => panic!("exit {other:?}: {stdout:?} {stderr:?}"),
        }
    });
    wait_dead(agent, Duration::from_secs(5));

    // What was stored before is intact, byte for byte, and served as it was.
    let stored_after = files_with_contents(&state_dir);
    for (path, bytes) in &stored_before {
        assert_eq!(stored_after.get(path), Some(bytes), "{path} changed or went");
    }
    let json = world.run(&["get", "https://feed.example/", "--json"]);
    assert_eq!(json.code, Some(0), "{json:#?}");
    assert_eq!(
        (json.json()["secret"].as_str(), json.json()["source"].as_str()),
        (Some("at-1"), Some("stored"))
    );
    let in_process = world.run_env(&["get", "https://feed.example/", "--json"], &[("CREDENCE_AGENT", "0")]);
    assert_eq!(in_process.json()["secret"], "at-1", "{in_process:#?}");
    assert_eq!(tokens.hits(), 1, "nothing had to be fetched again");
    // Every line of the audit trail is whole.
    let audit = world.audit();
    assert!(audit.iter().all(|r| r["outcome"].is_string()), "{audit:?}");
    assert!(
        audit
            .iter()
            .any(|r| r["url"] == "https://feed.example/" && r["outcome"] == "credential")
    );
}

// ---- 5 and 6. one provider run for concurrent misses; a rotating refresh token -----------

fn feed_world(tokens: &TestServer) -> World {
    let home = new_home();
    home.install_signed(&[("token-exchange", &[tokens.origin()], &[]), ("static-token", &[], &[])]);
    let mut config = instance(
        "feed",
        "token-exchange.wasm",
        "https://feed.example/",
        &format!(
            r#"token-url = "{}/token", client-id = "c", client-secret = "s""#,
            tokens.origin()
        ),
        "",
    );
    config += &format!("grant-origins = [{:?}]\n", tokens.origin());
    config += &instance(
        "good",
        "static-token.wasm",
        "https://good.example/",
        r#"token = "tok-good""#,
        "",
    );
    home.write_config(&config);
    World::new(home)
}

#[test]
fn fifty_simultaneous_misses_for_one_key_cause_exactly_one_provider_run() {
    let tokens = TestServer::start(|_| {
        // Slow enough that all fifty are waiting while the one run is in flight.
        std::thread::sleep(Duration::from_millis(500));
        Reply::json(200, r#"{"access_token":"at-once","expires_in":3600}"#)
    });
    let world = feed_world(&tokens);
    world.assert_answers("https://good.example/", "tok-good");
    let agent = world.agent_pid();
    let before = world.audit().len();

    let runs = at_once(50, |_| world.get("https://feed.example/"));
    for run in &runs {
        assert_eq!((run.code, run.stdout.as_str()), (Some(0), "at-once\n"), "{run:#?}");
    }
    assert_eq!(tokens.hits(), 1, "one provider run for fifty identical misses");
    let records = world.audit();
    let records = &records[before..];
    assert_eq!(records.len(), 50);
    let caches: Vec<&str> = records.iter().map(|r| r["cache"].as_str().unwrap_or("none")).collect();
    assert_eq!(caches.iter().filter(|c| **c == "miss").count(), 1, "{caches:?}");
    assert_eq!(caches.iter().filter(|c| **c == "hit").count(), 49, "{caches:?}");
    assert!(records.iter().all(|r| r["client"].is_object()), "all through the agent");
    assert_eq!(world.agent_pid(), agent);
}

/// The agent skips looking for recorded rejections while the watched directories of them
/// are unchanged: a rejection recorded by a credence running without the agent must still
/// make the agent's next answer a retry, and one recorded through the agent too.
#[test]
fn a_rejection_recorded_without_the_agent_makes_the_agents_next_answer_a_fresh_run() {
    let tokens = token_server(Duration::ZERO);
    let world = feed_world(&tokens);
    let git = |action: &str, input: &str, env: &[(&str, &str)]| {
        let mut cmd = world.command();
        cmd.envs(env.iter().copied())
            .args(["git", action])
            .stdin(Stdio::piped());
        let out = run_bounded_with_input(cmd, input.as_bytes().to_vec(), Duration::from_secs(30)).0;
        assert!(out.status.success(), "git {action}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let get = || git("get", "protocol=https\nhost=feed.example\n\n", &[]);
    let erase = |env: &[(&str, &str)]| {
        git(
            "erase",
            "protocol=https\nhost=feed.example\nusername=x\npassword=ignored\n\n",
            env,
        )
    };
    assert!(get().contains("password=at-1\n"));
    assert!(get().contains("password=at-1\n"));
    assert_eq!(tokens.hits(), 1, "the second answer is the agent's kept credential");
    let agent = world.agent_pid();

    erase(&[("CREDENCE_AGENT", "0")]);
    assert!(
        get().contains("password=at-2\n"),
        "the rejection recorded without the agent made it run the provider"
    );
    assert!(get().contains("password=at-2\n"), "and only once");
    assert_eq!(tokens.hits(), 2);

    erase(&[]);
    assert!(get().contains("password=at-3\n"), "a rejection through the agent");
    assert_eq!(tokens.hits(), 3);
    assert_eq!(world.agent_pid(), agent);
    let retries: Vec<bool> = world
        .audit()
        .iter()
        .filter(|r| r["outcome"] == "credential")
        .map(|r| r["is_retry"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(retries, [false, false, true, false, true], "{retries:?}");
}

/// A token server that rotates refresh tokens and refuses a reused one (and, as real ones
/// do, then revokes the whole family). The client-credentials grant's access token expires
/// within the cache margin, so the next requests must refresh; refreshed ones last an hour.
#[derive(Default)]
struct Rotation {
    current: Option<String>,
    issued: u32,
    client_grants: u32,
    refreshes: u32,
    reuses: Vec<String>,
}

fn rotating_server() -> (TestServer, Arc<Mutex<Rotation>>) {
    let rotation = Arc::new(Mutex::new(Rotation::default()));
    let server = {
        let rotation = rotation.clone();
        TestServer::start(move |seen| {
            // Long enough for every concurrent request to be waiting meanwhile.
            std::thread::sleep(Duration::from_millis(100));
            let fields = form(&seen.body);
            let mut r = rotation.lock().unwrap();
            r.issued += 1;
            let n = r.issued;
            match fields.get("grant_type").map(String::as_str) {
                Some("client_credentials") => {
                    r.client_grants += 1;
                    r.current = Some(format!("rt-{n}"));
                    Reply::json(
                        200,
                        &format!(r#"{{"access_token":"at-cc-{n}","expires_in":30,"refresh_token":"rt-{n}"}}"#),
                    )
                }
                Some("refresh_token") => {
                    let sent = fields.get("refresh_token").cloned().unwrap_or_default();
                    if r.current.as_deref() == Some(sent.as_str()) {
                        r.refreshes += 1;
                        r.current = Some(format!("rt-{n}"));
                        Reply::json(
                            200,
                            &format!(r#"{{"access_token":"at-rf-{n}","expires_in":3600,"refresh_token":"rt-{n}"}}"#),
                        )
                    } else {
                        r.reuses.push(sent);
                        r.current = None;
                        Reply::json(400, r#"{"error":"invalid_grant"}"#)
                    }
                }
                _ => Reply::json(400, r#"{"error":"unsupported_grant_type"}"#),
            }
        })
    };
    (server, rotation)
}

#[test]
fn twenty_concurrent_requests_with_a_rotating_refresh_token_cause_one_refresh_and_twenty_successes() {
    let (tokens, rotation) = rotating_server();
    let world = feed_world(&tokens);
    world.assert_answers("https://feed.example/", "at-cc-1");
    assert_eq!(rotation.lock().unwrap().current.as_deref(), Some("rt-1"));

    let runs = at_once(20, |_| world.get("https://feed.example/"));
    let answers: BTreeSet<&str> = runs.iter().map(|r| r.stdout.as_str()).collect();
    for run in &runs {
        assert_eq!(run.code, Some(0), "{run:#?}");
    }
    let r = rotation.lock().unwrap();
    assert_eq!(r.reuses, Vec::<String>::new(), "no refresh token was sent twice");
    assert_eq!(r.refreshes, 1, "one refresh for twenty requests");
    assert_eq!(r.client_grants, 1, "no fall-back to the client credentials");
    assert_eq!(
        answers,
        BTreeSet::from(["at-rf-2\n"]),
        "all twenty got the refreshed token"
    );
}

#[test]
fn concurrent_requests_for_different_urls_of_one_stateful_instance_never_send_a_refresh_token_twice() {
    let (tokens, rotation) = rotating_server();
    let world = feed_world(&tokens);
    world.assert_answers("https://feed.example/", "at-cc-1");

    // Twenty keys, so nothing is coalesced: twenty runs, each must read the state the one
    // before it wrote.
    let runs = at_once(20, |i| world.get(&format!("https://feed.example/repo-{i}/")));
    let mut answers = BTreeSet::new();
    for run in &runs {
        assert_eq!(run.code, Some(0), "{run:#?}");
        assert!(run.stdout.starts_with("at-rf-"), "{run:#?}");
        answers.insert(run.stdout.clone());
    }
    let r = rotation.lock().unwrap();
    assert_eq!(r.reuses, Vec::<String>::new(), "no refresh token was sent twice");
    assert_eq!((r.refreshes, r.client_grants), (20, 1));
    assert_eq!(answers.len(), 20, "twenty distinct access tokens");
}

// ---- 7. a fresh instance per request ----------------------------------------------------

#[test]
fn a_provider_keeping_the_last_url_in_a_static_never_sees_another_requests_url() {
    let home = new_home();
    home.install_signed(&[("hostile", &[], &[])]);
    home.write_config(&instance(
        "leaky",
        "hostile.wasm",
        "https://evil.example/",
        r#"attack = "leak-static""#,
        "",
    ));
    let world = World::new(home);
    world.assert_answers(
        "https://evil.example/first-secret-path",
        "fresh https://evil.example/first-secret-path",
    );
    let agent = world.agent_pid();
    let second = world.get("https://evil.example/second");
    assert!(
        !second.stdout.contains("first-secret-path"),
        "the first request's URL reached the second's answer: {second:#?}"
    );
    assert_eq!(second.stdout, "fresh https://evil.example/second\n", "{second:#?}");
    // And concurrently, through one warm provider.
    let runs = at_once(10, |i| world.get(&format!("https://evil.example/c{i}")));
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run.stdout, format!("fresh https://evil.example/c{i}\n"), "{run:#?}");
    }
    let status = world.expect_status();
    assert_eq!(status["pid"].as_u64(), Some(agent as u64));
    assert_eq!(
        status["providers_loaded"], 1,
        "one warm provider answered them all: {status}"
    );
    assert_eq!(status["requests_served"], 12, "{status}");
}

// ---- 8. a revocation while the agent runs ------------------------------------------------

#[test]
fn trust_revoke_while_the_agent_runs_refuses_the_next_request_and_drops_the_cached_credential() {
    let (world, key) = signed_static_token();
    world.assert_answers("https://registry.example/", "signed-token");
    world.assert_answers("https://registry.example/", "signed-token");
    let agent = world.agent_pid();
    assert_eq!(world.expect_status()["cache_entries"], 1);
    assert_eq!(world.audit().last().unwrap()["cache"], "hit");

    let revoke = world.run(&["trust", "revoke", &key.id]);
    assert_eq!(revoke.code, Some(0), "{revoke:#?}");
    let revoked_at = Instant::now();
    let run = world.get("https://registry.example/");
    let took = revoked_at.elapsed();
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stdout.is_empty(),
        "the revoked release's credential was served: {run:#?}"
    );
    assert!(
        run.stderr
            .contains(&format!("key {} (Sample publisher) is revoked", key.id)),
        "{run:#?}"
    );
    assert!(
        took < Duration::from_secs(1),
        "refused within a second of the revocation: {took:?}"
    );
    let status = world.expect_status();
    assert_eq!(
        status["pid"].as_u64(),
        Some(agent as u64),
        "the running agent applied it: {status}"
    );
    assert_eq!(
        status["cache_entries"], 0,
        "the revoked credential is gone from memory: {status}"
    );
    let last = world.audit().pop().unwrap();
    assert_eq!(last["outcome"], "failed", "{last}");
    assert!(last["client"].is_object(), "{last}");
}

#[test]
fn trust_revoke_drops_the_agents_cached_credential_before_any_request_for_it() {
    let (world, key) = signed_static_token();
    world.assert_answers("https://registry.example/", "signed-token");
    assert_eq!(world.expect_status()["cache_entries"], 1);
    let revoke = world.run(&["trust", "revoke", &key.id]);
    assert_eq!(revoke.code, Some(0), "{revoke:#?}");
    assert_eq!(
        world.expect_status()["cache_entries"],
        0,
        "the revoked release's answer is not kept"
    );
}

// ---- 9. an agent logging at trace level -------------------------------------------------

const CLIENT_SECRET: &str = "cs-5ecret-Ag3nt";
const ACCESS_TOKEN: &str = "at-T0ken-Ag3nt";
const REFRESH_TOKEN: &str = "rt-Refr3sh-Ag3nt";
const STATIC_TOKEN: &str = "st-Stat1c-Ag3nt";

#[test]
fn an_agent_logging_at_trace_level_writes_no_secret_to_its_log_or_the_audit_trail() {
    let tokens = TestServer::start(|seen| {
        if seen.body.contains(CLIENT_SECRET) || seen.body.contains(REFRESH_TOKEN) {
            Reply::json(
                200,
                &format!(r#"{{"access_token":"{ACCESS_TOKEN}","expires_in":3600,"refresh_token":"{REFRESH_TOKEN}"}}"#),
            )
        } else {
            Reply::json(401, "{}")
        }
    });
    let home = new_home();
    home.install_signed(&[("token-exchange", &[tokens.origin()], &[]), ("static-token", &[], &[])]);
    let mut config = instance(
        "feed",
        "token-exchange.wasm",
        "https://feed.example/",
        &format!(
            r#"token-url = "{}/token", client-id = "ci", client-secret = "{CLIENT_SECRET}""#,
            tokens.origin()
        ),
        "",
    );
    config += &format!("grant-origins = [{:?}]\n", tokens.origin());
    config += &instance(
        "registry",
        "static-token.wasm",
        "https://registry.example/",
        &format!(r#"token = "{STATIC_TOKEN}", header = "bearer""#),
        "",
    );
    home.write_config(&config);
    let world = World::new(home);

    // The agent in the foreground, as `credence agent` runs it, with the most verbose log.
    let log_path = world.home.dir.path().join("agent-stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut agent_cmd = world.home.command_for(&host_exe());
    agent_cmd
        .arg("agent")
        .env("XDG_RUNTIME_DIR", &world.run_dir)
        .env("CREDENCE_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    let mut agent = agent_cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while world.status().is_none() {
        assert!(Instant::now() < deadline, "the agent did not come up");
        assert!(
            agent.try_wait().unwrap().is_none(),
            "the agent exited: {}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(world.agent_pid(), agent.id());

    // Through the thin client, without CREDENCE_LOG: successes, a refresh through state, a
    // retry, failures, several protocols.
    let mut client_stderr = String::new();
    let mut run = |args: &[&str], stdin: &str| {
        let r = world.run_stdin(args, stdin.as_bytes());
        client_stderr.push_str(&r.stderr);
        r
    };
    assert_eq!(
        run(&["get", "https://feed.example/"], "").stdout,
        format!("{ACCESS_TOKEN}\n")
    );
    run(&["get", "https://feed.example/", "--retry"], "");
    run(&["get", "https://feed.example/other/"], "");
    assert_eq!(
        run(&["get", "https://registry.example/"], "").stdout,
        format!("{STATIC_TOKEN}\n")
    );
    run(&["get", "https://registry.example/", "--json"], "");
    run(&["get", "https://nobody.example/"], "");
    run(&["git", "get"], "protocol=https\nhost=feed.example\n");
    run(
        &["git", "erase"],
        &format!("protocol=https\nhost=feed.example\nusername=credence\npassword={ACCESS_TOKEN}\n"),
    );
    run(&["git", "get"], "protocol=https\nhost=feed.example\n");
    run(
        &["--cargo-plugin"],
        "{\"v\":1,\"registry\":{\"index-url\":\"sparse+https://registry.example/\"},\"kind\":\"get\",\"operation\":\"read\"}\n",
    );
    run(&["docker", "get"], "registry.example");
    run(&["bazel", "get"], r#"{"uri":"https://registry.example/x"}"#);
    run(&["keyring", "get", "registry.example", "u"], "");
    run(&["nuget-v1", "-uri", "https://feed.example/v3/index.json"], "");
    run(&["forget", "--provider", "feed"], "");
    run(&["get", "https://feed.example/"], "");
    let served = world.served();
    world.stop_agent();
    let (status, _) = wait_with_timeout(&mut agent, Duration::from_secs(15));
    assert!(status.success(), "the agent exited cleanly");

    let mut agent_log = std::fs::read_to_string(&log_path).unwrap();
    if let Ok(file) = std::fs::read_to_string(world.home.state().join("credence/agent.log")) {
        agent_log += &file;
    }
    assert!(served >= 14, "the requests went to the agent: {served}");
    assert!(
        agent_log.contains("TRACE") || agent_log.contains("DEBUG"),
        "verbose logging was on:\n{agent_log}"
    );
    let audit = std::fs::read_to_string(world.home.state().join("credence/audit.jsonl")).unwrap();
    assert!(audit.lines().count() >= 14);
    use base64::Engine;
    let mut secrets: Vec<String> = [CLIENT_SECRET, ACCESS_TOKEN, REFRESH_TOKEN, STATIC_TOKEN]
        .iter()
        .map(|s| s.to_string())
        .collect();
    secrets.push(base64::engine::general_purpose::STANDARD.encode(format!("credence:{STATIC_TOKEN}")));
    secrets.push(base64::engine::general_purpose::STANDARD.encode(format!("credence:{ACCESS_TOKEN}")));
    for secret in &secrets {
        assert!(
            !agent_log.contains(secret),
            "secret {secret:?} in the agent's log:\n{agent_log}"
        );
        assert!(
            !client_stderr.contains(secret),
            "secret {secret:?} on a client's stderr:\n{client_stderr}"
        );
        assert!(!audit.contains(secret), "secret {secret:?} in the audit trail");
    }
}

fn wait_with_timeout(child: &mut std::process::Child, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("pid {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- 10. two homes on one machine -------------------------------------------------------

fn static_token_home(token: &str) -> Home {
    let home = new_home();
    home.install_signed(&[("static-token", &[], &[])]);
    home.write_config(&instance(
        "registry",
        "static-token.wasm",
        "https://registry.example/",
        &format!("token = {token:?}"),
        "",
    ));
    home
}

#[test]
fn two_homes_on_one_machine_get_two_agents_and_a_client_of_one_never_reaches_the_other() {
    let shared = tempfile::tempdir().unwrap();
    let a = World::sharing(static_token_home("token-of-home-a"), shared.path());
    let b = World::sharing(static_token_home("token-of-home-b"), shared.path());
    for _ in 0..3 {
        a.assert_answers("https://registry.example/", "token-of-home-a");
        b.assert_answers("https://registry.example/", "token-of-home-b");
    }
    let _ = at_once(10, |i| {
        let (w, token) = if i % 2 == 0 {
            (&a, "token-of-home-a")
        } else {
            (&b, "token-of-home-b")
        };
        w.assert_answers("https://registry.example/", token)
    });
    let (sa, sb) = (a.expect_status(), b.expect_status());
    assert_ne!(sa["pid"], sb["pid"], "two agents");
    assert_ne!(sa["socket"], sb["socket"], "two sockets in the one directory");
    assert_eq!(
        (sa["requests_served"].as_u64(), sb["requests_served"].as_u64()),
        (Some(8), Some(8)),
        "each served only its own home"
    );
    assert_eq!(a.agents(), vec![sa["pid"].as_u64().unwrap() as u32]);
    assert_eq!(b.agents(), vec![sb["pid"].as_u64().unwrap() as u32]);
    // With A's agent gone, B's client still gets B's agent and B's token, and A's starts anew.
    let old_a = sa["pid"].as_u64().unwrap() as u32;
    a.stop_agent();
    wait_dead(old_a, Duration::from_secs(15));
    b.assert_answers("https://registry.example/", "token-of-home-b");
    assert_eq!(b.expect_status()["pid"], sb["pid"]);
    a.assert_answers("https://registry.example/", "token-of-home-a");
    let new_a = a.expect_status();
    assert_ne!(
        new_a["pid"],
        sa["pid"],
        "A's stopped agent still answers: {new_a} (agents {:?})",
        a.agents()
    );
    assert_ne!(new_a["pid"], sb["pid"]);
}

// ---- 11. no terminal ---------------------------------------------------------------------

#[test]
fn a_prompting_provider_asked_through_the_agent_without_a_terminal_needs_interaction_exit_4() {
    let home = new_home();
    home.install_signed(&[("basic-prompt", &[], &["ask"]), ("static-token", &[], &[])]);
    home.write_config(
        &(instance("basic-prompt", "basic-prompt.wasm", "https://git.example/", "", "")
            + &instance(
                "good",
                "static-token.wasm",
                "https://good.example/",
                r#"token = "tok-good""#,
                "",
            )),
    );
    let world = World::new(home);
    world.assert_answers("https://good.example/", "tok-good");
    let agent = world.agent_pid();
    let served = world.served();

    let without_a_terminal = || {
        let mut cmd = world.command();
        cmd.args(["get", "https://git.example/"]);
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe; a new session has no controlling terminal.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let (out, _) = run_bounded(cmd, Duration::from_secs(60));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for round in ["miss", "negative"] {
        let (code, stdout, stderr) = without_a_terminal();
        assert_eq!(code, Some(4), "{round}: {stderr}");
        assert!(stdout.is_empty(), "{round}: {stdout:?}");
        assert!(
            stderr.contains("provider basic-prompt needs interaction"),
            "{round}: {stderr}"
        );
        let last = world.audit().pop().unwrap();
        assert_eq!(last["outcome"], "needs-interaction", "{last}");
        assert_eq!(last["interactive"], false, "{last}");
        assert_eq!(last["cache"], round, "{last}");
        assert!(last["client"].is_object(), "through the agent: {last}");
    }
    assert_eq!(world.served(), served + 2);
    assert_eq!(world.agent_pid(), agent);
}

// ---- beyond the list: slots and the one-agent-per-home rule ------------------------------

/// What `RunSlots::for_this_machine` gives the agent.
fn agent_run_slots() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cores).max(4)
}

#[test]
fn one_slow_instance_cannot_take_every_run_slot_from_the_other_providers() {
    let slots = agent_run_slots();
    let home = new_home();
    home.install_signed(&[("hostile", &[], &[]), ("static-token", &[], &[])]);
    home.write_config(
        &(instance(
            "slow",
            "hostile.wasm",
            "https://slow.example/",
            r#"attack = "sleep", ms = "2500""#,
            "wall-ms = 10000",
        ) + &instance(
            "good",
            "static-token.wasm",
            "https://good.example/",
            r#"token = "tok-good""#,
            "",
        )),
    );
    let world = World::new(home);
    // Both providers warm (linked), so the slow runs take their slots at once and a new key
    // for the good one costs one instantiation and no compile.
    world.assert_answers("https://good.example/warm", "tok-good");
    world.assert_answers("https://slow.example/warm", "slept 2500 ms");
    let served = world.served();
    std::thread::scope(|s| {
        let slow: Vec<_> = (0..slots + 2)
            .map(|i| {
                let world = &world;
                s.spawn(move || world.get(&format!("https://slow.example/{i}")))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while world.served() < served + slots as u64 + 2 {
            assert!(Instant::now() < deadline, "the slow requests never reached the agent");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        let probe = world.assert_answers("https://good.example/probe", "tok-good");
        for h in slow {
            let run = h.join().unwrap();
            assert_eq!(run.stdout, "slept 2500 ms\n", "{run:#?}");
            println!("slow request answered in {:?}", run.elapsed);
        }
        println!("probe answered in {:?} with {slots} run slots", probe.elapsed);
        assert!(
            probe.elapsed < Duration::from_secs(1),
            "a request for another provider waited {:?} behind one slow instance ({slots} run slots)",
            probe.elapsed
        );
    });
}

#[test]
fn one_home_gets_one_agent_even_when_its_clients_see_different_xdg_runtime_dirs() {
    let (world, _) = signed_static_token();
    world.assert_answers("https://registry.example/", "signed-token");
    // The same user and home from another session (ssh, cron, a systemd unit): another
    // XDG_RUNTIME_DIR, or none at all.
    let other = world.home.dir.path().join("other-run");
    private_dir(&other);
    let run = world.run_env(
        &["get", "https://registry.example/"],
        &[("XDG_RUNTIME_DIR", other.to_str().unwrap())],
    );
    assert_eq!(run.stdout, "signed-token\n", "{run:#?}");
    let agents = world.agents();
    assert_eq!(
        agents.len(),
        1,
        "two agents serve one home (each with its own memory cache and its own per-instance serialisation over the one state dir): {agents:?}"
    );
}

#[test]
fn a_rotating_refresh_token_is_never_sent_twice_by_clients_of_one_home_with_different_xdg_runtime_dirs() {
    let (tokens, rotation) = rotating_server();
    let world = feed_world(&tokens);
    let other = world.home.dir.path().join("other-run");
    private_dir(&other);
    let other_env = [("XDG_RUNTIME_DIR", other.to_str().unwrap())];
    let from = |i: usize, url: &str| match i % 2 {
        0 => world.get(url),
        _ => world.run_env(&["get", url], &other_env),
    };
    // Each session's client, one after the other: every refresh sees the one before it.
    world.assert_answers("https://feed.example/", "at-cc-1");
    for (i, url) in ["https://feed.example/w1/", "https://feed.example/w2/"]
        .iter()
        .enumerate()
    {
        let run = from(i + 1, url);
        assert!(run.stdout.starts_with("at-rf-"), "{run:#?}");
    }
    assert_eq!(rotation.lock().unwrap().reuses, Vec::<String>::new());
    // Then both at once.
    let runs = at_once(2, |i| from(i, &format!("https://feed.example/both-{i}/")));
    for run in &runs {
        assert_eq!(run.code, Some(0), "{run:#?}");
    }
    let r = rotation.lock().unwrap();
    assert_eq!(
        r.reuses,
        Vec::<String>::new(),
        "a refresh token was sent twice (the server then revokes the family); agents: {:?}",
        world.agents()
    );
}
