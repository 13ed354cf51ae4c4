//! Remote sessions through the real binaries: a remote (a relay over a command's stdio,
//! ssh socket forwarding to a real sshd on 127.0.0.1, a private mount namespace) asks this
//! machine's agent; policy, approvals, the session binding, the kill switch, concurrency,
//! injection, and what crosses the carrier are attacked from the remote's side.
//!
//! Each test's home has an `XDG_RUNTIME_DIR` of its own, so its agent and its sessions'
//! sockets are nobody else's.

use credence_tests::{Home, Killed, NuGet, Reply, Run, Sshd, TestServer, credence_exe, run_bounded};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---- the harness of this file ----------------------------------------------------------

/// The user's machine: a home, its runtime dir, and its agent (started by the first use).
struct Local {
    home: Home,
    run_dir: PathBuf,
}

impl Local {
    fn new(components: &[(&str, &[String], &[&str])], config: &str) -> Local {
        let home = Home::new();
        home.install_signed(components);
        home.write_config(config);
        let run_dir = home.dir.path().join("run");
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o700).create(&run_dir).unwrap();
        }
        Local { home, run_dir }
    }

    fn command(&self) -> Command {
        let mut cmd = self.home.command();
        cmd.env("XDG_RUNTIME_DIR", &self.run_dir);
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut cmd = self.command();
        cmd.args(args);
        Run::from(run_bounded(cmd, Duration::from_secs(60)))
    }

    fn audit(&self) -> Vec<Value> {
        let run = self.run(&["audit", "--json"]);
        assert_eq!(run.code, Some(0), "{run:#?}");
        run.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn remote_records(&self) -> Vec<Value> {
        self.audit().into_iter().filter(|r| r.get("remote").is_some()).collect()
    }

    fn sessions(&self) -> Vec<Value> {
        let run = self.run(&["remote", "list", "--json"]);
        assert_eq!(run.code, Some(0), "{run:#?}");
        serde_json::from_str::<Value>(&run.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits until the session labelled `label` has a request waiting for approval.
    fn wait_for_waiting(&self, label: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let waiting = self
                .sessions()
                .iter()
                .any(|s| s["label"] == label && !s["waiting"].as_array().unwrap().is_empty());
            if waiting {
                return;
            }
            assert!(Instant::now() < deadline, "no request of {label} waited for approval");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `credence remote exec --label L -- credence relay --listen SOCK`: a stdio carrier whose
/// remote end is a relay on this machine.
struct Carrier {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Carrier {
    fn relay(local: &Local, label: &str) -> Carrier {
        Carrier::wrapped(local, label, &[])
    }

    /// The relay started through `wrap` (words before `credence relay ...`, run by `sh -c`
    /// with the relay's command line appended as "$@").
    fn wrapped(local: &Local, label: &str, wrap: &[&str]) -> Carrier {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/relay.sock");
        let mut cmd = local.command();
        cmd.args(["remote", "exec", "--label", label, "--"]);
        cmd.args(wrap);
        cmd.arg(credence_exe()).arg("relay").arg("--listen").arg(&socket);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let child = cmd.spawn().unwrap();
        let carrier = Carrier {
            child,
            socket,
            _dir: dir,
        };
        carrier.wait_for_socket();
        carrier
    }

    fn wait_for_socket(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "the relay did not listen at {}",
                self.socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The remote's `credence`: nothing of this machine's home, only the session socket.
    fn remote(&self) -> Command {
        remote_command(&self.socket, self._dir.path())
    }

    /// `credence get URL` in the remote on a thread: for a request that waits for approval.
    fn get_in_background(&self, url: &str) -> std::thread::JoinHandle<Run> {
        in_background(self.remote(), url)
    }

    fn get(&self, url: &str) -> Run {
        let mut cmd = self.remote();
        cmd.args(["get", url]);
        Run::from(run_bounded(cmd, Duration::from_secs(60)))
    }
}

impl Carrier {
    /// Stops the launcher and returns what it wrote on its stderr (this machine's terminal).
    fn stop_and_read_stderr(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut text = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Carrier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn in_background(mut cmd: Command, url: &str) -> std::thread::JoinHandle<Run> {
    cmd.args(["get", url]);
    std::thread::spawn(move || Run::from(run_bounded(cmd, Duration::from_secs(60))))
}

/// `credence` as a remote runs it: an empty home of its own and `CREDENCE_AGENT_SOCK`.
fn remote_command(socket: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(credence_exe());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("CREDENCE_HOME", dir.join("empty-home"))
        .env("XDG_STATE_HOME", dir.join("empty-state"))
        .env("XDG_CACHE_HOME", dir.join("empty-cache"))
        .env("CREDENCE_AGENT_SOCK", socket)
        .stdin(Stdio::null());
    cmd
}

/// What `credence get URL` answers where nothing serves URL: a home with no providers.
fn unserved_answer(url: &str) -> Run {
    let nothing = Home::new();
    nothing.run_with(&["get", url], &[("CREDENCE_AGENT", "0")])
}

fn same_answer(a: &Run, b: &Run) {
    assert_eq!(
        (a.code, a.stdout.as_str(), a.stderr.as_str()),
        (b.code, b.stdout.as_str(), b.stderr.as_str()),
        "{a:#?}\n{b:#?}"
    );
}

fn static_token(name: &str, serves: &str, token: &str) -> String {
    format!(
        "[[provider]]\nname = {name:?}\ncomponent = \"static-token.wasm\"\nserves = [{serves:?}]\nsettings = {{ token = {token:?} }}\n"
    )
}

// ---- approval ------------------------------------------------------------------------------

#[test]
fn a_per_host_session_waits_for_approval_here_then_succeeds_and_a_new_session_asks_again() {
    let config = static_token("git", "https://git.example/", "tok-git")
        + &static_token("outside", "https://outside.example/", "tok-outside")
        + "[remote]\nallow = [\"https://git.example/acme/\"]\napprove = \"per-host\"\n";
    let local = Local::new(&[("static-token", &[], &[])], &config);
    let one = Carrier::relay(&local, "box-one");

    // Blocks until approved here.
    let waiting = one.get_in_background("https://git.example/acme/app.git");
    local.wait_for_waiting("box-one");
    let listed = local.sessions();
    assert_eq!(
        listed[0]["waiting"][0], "https://git.example/acme/app.git",
        "{listed:#?}"
    );
    let approve = local.run(&["remote", "approve", "box-one"]);
    assert_eq!(approve.code, Some(0), "{approve:#?}");
    let run = waiting.join().unwrap();
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "tok-git\n"), "{run:#?}");
    // The host stays approved for this session: no question the second time.
    let again = one.get("https://git.example/acme/other.git");
    assert_eq!(
        (again.code, again.stdout.as_str()),
        (Some(0), "tok-git\n"),
        "{again:#?}"
    );

    // Outside the allow list: exactly what a URL nothing serves gets, though a provider
    // here serves it, and it never ran or asked.
    let outside = one.get("https://outside.example/x");
    same_answer(&outside, &unserved_answer("https://outside.example/x"));
    let not_in_prefix = one.get("https://git.example/acmex/");
    same_answer(&not_in_prefix, &unserved_answer("https://git.example/acmex/"));

    // A new session is asked again; denied, it gets the unserved answer.
    let two = Carrier::relay(&local, "box-two");
    let denied = two.get_in_background("https://git.example/acme/app.git");
    local.wait_for_waiting("box-two");
    assert_eq!(local.run(&["remote", "deny", "box-two"]).code, Some(0));
    same_answer(
        &denied.join().unwrap(),
        &unserved_answer("https://git.example/acme/app.git"),
    );

    // Every remote request is in the audit trail with its session and decisions.
    let records = local.remote_records();
    let of = |label: &str, decision: &str, approval: Option<&str>| {
        records.iter().any(|r| {
            r["remote"]["label"] == label
                && r["remote"]["decision"] == decision
                && r["remote"]["approval"].as_str() == approval
                && r["remote"]["carrier"].as_str().unwrap().starts_with("exec ")
        })
    };
    assert!(of("box-one", "allowed", Some("host")), "{records:#?}");
    assert!(of("box-one", "not-allowed", None), "{records:#?}");
    assert!(of("box-two", "allowed", Some("denied")), "{records:#?}");
    let outside_ran = records
        .iter()
        .any(|r| r["url"] == "https://outside.example/x" && !r["providers"].as_array().unwrap().is_empty());
    assert!(
        !outside_ran,
        "no provider was asked for a URL outside the allow list: {records:#?}"
    );
}

/// The launcher's own terminal answers the question: `credence remote exec` on a pty
/// (script(1)), the user types `y`.
#[test]
fn the_question_is_asked_on_the_launchers_terminal_with_the_label_carrier_and_url_and_a_yes_there_approves() {
    let config = static_token("git", "https://git.example/", "tok-git")
        + "[remote]\nallow = [\"https://git.example/\"]\napprove = \"per-host\"\n";
    let local = Local::new(&[("static-token", &[], &[])], &config);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/relay.sock");
    let launcher = format!(
        "{} remote exec --label tty-box -- {} relay --listen {}",
        credence_tests::sh_quote(&credence_exe().display().to_string()),
        credence_tests::sh_quote(&credence_exe().display().to_string()),
        credence_tests::sh_quote(&socket.display().to_string())
    );
    let mut script = local.home.command_for(Path::new("script"));
    script
        .args(["--quiet", "--command", &launcher, "/dev/null"])
        .env("XDG_RUNTIME_DIR", &local.run_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = Killed(script.spawn().expect("script(1) from util-linux"));
    let mut keyboard = child.0.stdin.take().unwrap();
    let screen_text = Arc::new(Mutex::new(String::new()));
    {
        let (mut out, text) = (child.0.stdout.take().unwrap(), screen_text.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                text.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the relay did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let asked = in_background(remote_command(&socket, dir.path()), "https://git.example/acme/app.git");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !screen_text.lock().unwrap().contains("[y/N]") {
        assert!(
            Instant::now() < deadline,
            "no question: {}",
            screen_text.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let question = screen_text.lock().unwrap().clone();
    assert!(
        question.contains("remote session \"tty-box\"")
            && question.contains("exec ")
            && question.contains("https://git.example/acme/app.git")
            && question.contains("git.example for the rest of this session"),
        "{question}"
    );
    keyboard.write_all(b"y\n").unwrap();
    let run = asked.join().unwrap();
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "tok-git\n"), "{run:#?}");
}

#[test]
fn a_session_that_asks_past_its_prompt_budget_is_told_to_ask_here_without_a_question() {
    let config = static_token("git", "https://git.example/", "tok-git")
        + "[remote]\nallow = [\"https://git.example/\"]\napprove = \"every-request\"\nmax-prompts = 1\n";
    let local = Local::new(&[("static-token", &[], &[])], &config);
    let carrier = Carrier::relay(&local, "chatty");
    let first = carrier.get_in_background("https://git.example/one");
    local.wait_for_waiting("chatty");
    assert_eq!(local.run(&["remote", "deny", "chatty"]).code, Some(0));
    assert_eq!(first.join().unwrap().code, Some(1));
    let started = Instant::now();
    let second = carrier.get("https://git.example/two");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it did not wait for a question"
    );
    assert_eq!(second.code, Some(4), "{second:#?}");
    assert!(
        second.stderr.contains("too often") && second.stderr.contains("credence remote approve chatty"),
        "{second:#?}"
    );
    assert!(local.sessions()[0]["waiting"].as_array().unwrap().is_empty());
}

// ---- binding, kill switch, concurrency -----------------------------------------------------

#[test]
fn sessions_are_bound_to_their_socket_and_revoke_stops_the_next_request_within_a_second() {
    let config = static_token("git", "https://git.example/", "tok-git")
        + "[remote]\nallow = [\"https://git.example/\"]\napprove = \"per-host\"\n";
    let local = Local::new(&[("static-token", &[], &[])], &config);
    let a = Carrier::relay(&local, "a");
    let b = Carrier::relay(&local, "b");

    // Approving a's host ahead does not approve it for b.
    assert_eq!(
        local.run(&["remote", "approve", "a", "--host", "git.example"]).code,
        Some(0)
    );
    let from_a = a.get("https://git.example/r");
    assert_eq!(
        (from_a.code, from_a.stdout.as_str()),
        (Some(0), "tok-git\n"),
        "{from_a:#?}"
    );
    let from_b = b.get_in_background("https://git.example/r");
    local.wait_for_waiting("b");
    assert_eq!(local.run(&["remote", "deny", "b"]).code, Some(0));
    assert_eq!(from_b.join().unwrap().code, Some(1));

    // A frame on b's socket that claims to be session a, or to carry a's approval, is b's.
    let claimed = raw_request(
        &b.socket,
        r#"{"resolve":{"request":{"url":"https://git.example/claimed","protocol":"generic","operation":"read","is_retry":false,"interactive":false,"username_hint":null,"challenge_headers":[],"label":"a","session":"a"},"can_prompt":true,"label":"a"}}"#,
        Duration::from_millis(1500),
    );
    assert!(claimed.is_none(), "b's request waited for b's approval: {claimed:?}");
    local.wait_for_waiting("b");
    assert_eq!(local.run(&["remote", "deny", "b"]).code, Some(0));
    let records = local.remote_records();
    let claimed: Vec<&Value> = records
        .iter()
        .filter(|r| r["url"] == "https://git.example/claimed")
        .collect();
    assert!(
        !claimed.is_empty() && claimed.iter().all(|r| r["remote"]["label"] == "b"),
        "{records:#?}"
    );

    // Revoked: the next request through a is refused within a second, and its socket goes.
    let revoked_at = Instant::now();
    assert_eq!(local.run(&["remote", "revoke", "a"]).code, Some(0));
    let after = a.get("https://git.example/r");
    assert!(
        revoked_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        revoked_at.elapsed()
    );
    assert_ne!(after.code, Some(0), "{after:#?}");
    assert!(!after.stdout.contains("tok-git"), "{after:#?}");
    let labels: Vec<Value> = local.sessions().iter().map(|s| s["label"].clone()).collect();
    assert_eq!(labels, ["b"], "revoked sessions are not listed");
}

/// Sends one hello and one raw request frame on a session socket; the answer, or `None` if
/// none came within `wait`.
fn raw_request(socket: &Path, request_json: &str, wait: Duration) -> Option<Value> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let frame = |body: &str| {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body.as_bytes());
        f
    };
    let hello = format!(
        r#"{{"hello":{{"protocol":{},"build":"x","home":"h","takeover":false}}}}"#,
        credence::agent::wire::PROTOCOL
    );
    s.write_all(&frame(&hello)).unwrap();
    s.write_all(&frame(request_json)).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let mut read_one = || -> Option<Value> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).ok()?;
        serde_json::from_slice(&body).ok()
    };
    let welcome = read_one()?;
    assert!(welcome.get("welcome").is_some(), "{welcome}");
    read_one()
}

#[test]
fn a_session_runs_at_most_its_concurrency_of_requests_at_once() {
    // The provider fetches this server, which counts how many requests it holds at once.
    // A thread per connection, so the server itself never serialises the requests.
    let held = Arc::new(Mutex::new((0usize, 0usize)));
    let server = {
        let held = held.clone();
        credence_tests::RawServer::start(move |mut stream, _| {
            credence_tests::read_request_head(&mut stream);
            {
                let mut h = held.lock().unwrap();
                h.0 += 1;
                h.1 = h.1.max(h.0);
            }
            std::thread::sleep(Duration::from_millis(40));
            held.lock().unwrap().0 -= 1;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
        })
    };
    let config = format!(
        "[[provider]]\nname = \"slow\"\ncomponent = \"hostile.wasm\"\nserves = [\"https://slow.example/\"]\nsettings = {{ attack = \"fetch\", target = \"{}/t\" }}\ngrant-origins = [{:?}]\n[remote]\nallow = [\"https://slow.example/\"]\napprove = \"never\"\nconcurrency = 2\n",
        server.origin(),
        server.origin()
    );
    let local = Local::new(&[("hostile", &[server.origin()], &[])], &config);
    let carrier = Carrier::relay(&local, "busy");
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..100)
            .map(|i| {
                let carrier = &carrier;
                scope.spawn(move || carrier.get(&format!("https://slow.example/r{i}")))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for run in &runs {
        assert_eq!(run.code, Some(0), "{run:#?}");
    }
    let (now, most) = *held.lock().unwrap();
    assert_eq!(now, 0);
    assert_eq!(server.hits(), 100);
    assert!(most <= 2, "{most} requests of one session ran at once; its bound is 2");
    assert_eq!(most, 2, "the bound is reached, not undershot");
}

#[test]
fn the_remotes_stderr_reaches_this_terminal_neutralised_and_a_second_session_gets_its_own_label() {
    let config = static_token("git", "https://git.example/", "tok-git")
        + "[remote]\nallow = [\"https://git.example/\"]\napprove = \"never\"\n";
    let local = Local::new(&[("static-token", &[], &[])], &config);
    // The remote paints: a screen clear, a right-to-left override, a fake question.
    let mut painted = Carrier::wrapped(
        &local,
        "dup",
        &[
            "sh",
            "-c",
            "printf 'evil\\033[2J\\342\\200\\256 Allow? [y/N]\\n' >&2; exec \"$@\"",
            "sh",
        ],
    );
    let second = Carrier::relay(&local, "dup");
    let mut labels: Vec<String> = local
        .sessions()
        .iter()
        .map(|s| s["label"].as_str().unwrap().to_owned())
        .collect();
    labels.sort();
    assert_eq!(labels, ["dup", "dup-2"], "approve and revoke name one session");
    assert_eq!(second.get("https://git.example/x").stdout, "tok-git\n");
    assert_eq!(local.run(&["remote", "revoke", "dup-2"]).code, Some(0));
    assert_eq!(
        painted.get("https://git.example/x").stdout,
        "tok-git\n",
        "dup itself is untouched"
    );

    let terminal = painted.stop_and_read_stderr();
    // The remote's line, not the launcher's own banner (which names the command).
    let line = terminal
        .lines()
        .find(|l| l.contains("evil") && !l.starts_with("credence:"))
        .unwrap_or_else(|| panic!("{terminal}"));
    assert!(line.starts_with("[remote dup] evil"), "{line:?}");
    assert!(
        !terminal.contains('\u{1b}') && !terminal.contains('\u{202e}'),
        "{terminal:?}"
    );
}

#[test]
fn frames_a_remote_writes_itself_are_bounded_and_its_verdicts_count_only_inside_the_allow_list() {
    let config = static_token("git", "https://git.example/", "tok-git")
        + "[remote]\nallow = [\"https://git.example/acme/\"]\napprove = \"never\"\n";
    let local = Local::new(&[("static-token", &[], &[])], &config);
    let carrier = Carrier::relay(&local, "frames");

    // A frame announcing 1 MiB: the connection is closed, nothing is held for it.
    let mut s = std::os::unix::net::UnixStream::connect(&carrier.socket).unwrap();
    let hello = format!(
        r#"{{"hello":{{"protocol":{},"build":"x","home":"h","takeover":false}}}}"#,
        credence::agent::wire::PROTOCOL
    );
    let mut bytes = (hello.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(hello.as_bytes());
    bytes.extend_from_slice(&(1u32 << 20).to_be_bytes());
    bytes.extend_from_slice(b"{\"resolve\":");
    s.write_all(&bytes).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no answer to an oversized frame: {rest:?}");
    assert_eq!(
        carrier.get("https://git.example/acme/x").stdout,
        "tok-git\n",
        "the session still works"
    );

    // "This credential was refused" counts for an allowed URL and is dropped outside.
    let verdict = |url: &str| {
        format!(
            r#"{{"verdict":{{"request":{{"url":"{url}","protocol":"git","operation":"read","is_retry":false,"interactive":false,"username_hint":null,"challenge_headers":[]}},"verdict":"rejected"}}}}"#
        )
    };
    for url in ["https://git.example/acme/x", "https://git.example/other/y"] {
        let done = raw_request(&carrier.socket, &verdict(url), Duration::from_secs(10)).expect("an answer");
        assert!(done.get("done").is_some(), "{done}");
    }
    let rejected: Vec<String> = local
        .remote_records()
        .iter()
        .filter(|r| r["outcome"] == "rejected")
        .map(|r| r["url"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rejected, ["https://git.example/acme/x"]);
}

// ---- injection -----------------------------------------------------------------------------

#[test]
fn urls_with_line_breaks_escapes_or_bidi_overrides_from_the_remote_are_refused_before_any_policy() {
    let config = static_token("git", "https://git.example/", "tok-git")
        + "[remote]\nallow = [\"https://git.example/\"]\napprove = \"every-request\"\n";
    let local = Local::new(&[("static-token", &[], &[])], &config);
    let carrier = Carrier::relay(&local, "inject");
    for url in [
        "https://git.example/a%0apassword=x",
        "https://git.example/a%0d%0aHost:%20evil.example",
        "https://git.example/%1b[2J%1b[Hok",
        "https://git.example/%E2%80%AEmoc.elgoog",
        "https://git.example/a\u{202e}b",
    ] {
        let run = carrier.get(url);
        assert_eq!(run.code, Some(2), "{url}: {run:#?}");
        assert!(run.stderr.contains("character"), "{url}: {run:#?}");
        assert!(
            !run.stderr.contains('\u{1b}') && !run.stderr.contains('\u{202e}'),
            "{run:#?}"
        );
    }
    // A remote that writes its own frames gets the same refusal from this machine.
    let answer = raw_request(
        &carrier.socket,
        r#"{"resolve":{"request":{"url":"https://git.example/a%0apassword=x","protocol":"git","operation":"read","is_retry":false,"interactive":false,"username_hint":null,"challenge_headers":[["Set-Cookie","x"]]},"can_prompt":false}}"#,
        Duration::from_secs(10),
    )
    .expect("an answer");
    let failed = answer["answer"]["result"]["Err"]["failed"].as_str().unwrap_or_default();
    assert!(failed.contains("character"), "{answer}");
    // Nothing waited for approval, and no provider ran.
    assert!(local.sessions()[0]["waiting"].as_array().unwrap().is_empty());
    let records = local.remote_records();
    assert!(
        records.iter().all(|r| r["providers"].as_array().unwrap().is_empty()),
        "{records:#?}"
    );
    assert!(
        records.iter().any(|r| r["remote"]["decision"] == "malformed"),
        "{records:#?}"
    );
}

// ---- a container: its own mount namespace, real cargo and the NuGet plugin ----------------

/// A token server that mints `at-N` with a refresh token `rt-secret-N` lasting an hour.
fn token_server() -> (TestServer, Arc<Mutex<u32>>) {
    let issued = Arc::new(Mutex::new(0u32));
    let server = {
        let issued = issued.clone();
        TestServer::start(move |_| {
            let mut n = issued.lock().unwrap();
            *n += 1;
            Reply::json(
                200,
                &format!(r#"{{"access_token":"at-{n}","expires_in":3600,"refresh_token":"rt-secret-{n}"}}"#),
            )
        })
    };
    (server, issued)
}

#[test]
fn a_container_gets_cargo_credentials_existing_and_nuget_credentials_fresh_and_the_carrier_carries_no_secret() {
    if !namespaces_work() {
        return;
    }
    let (tokens, issued) = token_server();
    let latest: Arc<Mutex<Option<String>>> = Arc::default();
    let (registry, _seen) = {
        let latest = latest.clone();
        credence_tests::auth_required_registry(move || latest.lock().unwrap().clone())
    };
    let origin = registry.origin();
    let config = format!(
        "[[provider]]\nname = \"corp-feed-instance\"\ncomponent = \"token-exchange.wasm\"\nserves = [\"{origin}/\"]\nsettings = {{ token-url = \"{t}/token\", client-id = \"cid\", client-secret = \"client-secret-never-crosses\" }}\ngrant-origins = [\"{t}\"]\n{}[remote]\nallow = [\"{origin}/\"]\napprove = \"never\"\nmax-lifetime = \"10m\"\n",
        static_token("other-instance-xyz", "https://other.example/", "tok-other"),
        t = tokens.origin()
    );
    let local = Local::new(
        &[("token-exchange", &[tokens.origin()], &[]), ("static-token", &[], &[])],
        &config,
    );

    // "existing": the user fetched with cargo here first; the provider ran once.
    let (work, cargo_home) = credence_tests::cargo_project(&local.home, &format!("{origin}/index/"));
    *latest.lock().unwrap() = Some("Bearer at-1".into());
    let here = cargo(&work, &cargo_home, |c| {
        c.env("XDG_RUNTIME_DIR", &local.run_dir)
            .env("CREDENCE_HOME", local.home.home())
            .env("XDG_STATE_HOME", local.home.state())
            .env("XDG_CACHE_HOME", local.home.cache());
    });
    assert!(here.status.success(), "{here:?}");
    assert_eq!(*issued.lock().unwrap(), 1);

    // The container: its own mount namespace in which this machine's credence home is an
    // empty tmpfs, a relay as its stdio, and the carrier's bytes recorded both ways.
    let remote_dir = tempfile::tempdir().unwrap();
    let r = remote_dir.path();
    let (to_remote, from_remote, pid_file) = (r.join("to-remote.bin"), r.join("from-remote.bin"), r.join("pid"));
    let socket = r.join("run/relay.sock");
    // The remote has the tool-facing `credence` alone: no credence-host beside it.
    let thin = r.join("bin/credence");
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::copy(credence_exe(), &thin).unwrap();
    let script = r#"tee "$1" | unshare -Urm sh -c 'mount -t tmpfs tmpfs "$1" && echo $$ > "$2" && exec "$3" relay --listen "$4"' sh "$3" "$4" "$5" "$6" | tee "$2""#;
    let mut launcher = local.command();
    launcher
        .args(["remote", "exec", "--label", "container", "--", "sh", "-c", script, "sh"])
        .arg(&to_remote)
        .arg(&from_remote)
        .arg(local.home.dir.path())
        .arg(&pid_file)
        .arg(&thin)
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let launcher = Killed(launcher.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(socket.exists() && pid_file.exists()) {
        assert!(Instant::now() < deadline, "the relay did not start in its namespace");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
    let inside = |program: &Path| {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &pid, "-U", "-m", "--preserve-credentials"])
            .arg(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", r)
            .env("CREDENCE_HOME", r.join("empty-home"))
            .env("CREDENCE_AGENT_SOCK", &socket);
        cmd
    };
    // This machine's home is not there for the remote.
    let ls = inside(Path::new("ls")).arg(local.home.home()).output().unwrap();
    assert!(!ls.status.success(), "the home is hidden inside: {ls:?}");

    // "existing": cargo in the container gets the credential the user already has; the
    // provider does not run again.
    let (rwork, rcargo_home) = (r.join("work"), r.join("cargo-home"));
    // The project and cargo's config, not cargo's caches: the index is fetched again, so
    // cargo must ask for the credential.
    copy_dir(&work, &rwork);
    let _ = std::fs::remove_dir_all(rwork.join("target"));
    let _ = std::fs::remove_file(rwork.join("Cargo.lock"));
    std::fs::create_dir_all(&rcargo_home).unwrap();
    let cargo_config = std::fs::read_to_string(cargo_home.join("config.toml")).unwrap();
    let cargo_config = cargo_config.replace(&credence_exe().display().to_string(), &thin.display().to_string());
    assert!(cargo_config.contains(&thin.display().to_string()));
    std::fs::write(rcargo_home.join("config.toml"), cargo_config).unwrap();
    let cargo_bin = PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let mut fetch = inside(&cargo_bin);
    // nsenter starts the command in / of the namespace: the project is named.
    fetch
        .arg("generate-lockfile")
        .arg("--manifest-path")
        .arg(rwork.join("Cargo.toml"))
        .env("CARGO_HOME", &rcargo_home)
        .env(
            "RUSTUP_HOME",
            std::env::var_os("RUSTUP_HOME").unwrap_or_else(|| home_dir().join(".rustup").into()),
        )
        .env("CARGO_HTTP_MULTIPLEXING", "false")
        .env("CARGO_NET_RETRY", "0");
    let fetched = run_bounded(fetch, Duration::from_secs(120)).0;
    assert!(fetched.status.success(), "cargo in the container: {fetched:?}");
    assert!(
        std::fs::read_to_string(rwork.join("Cargo.lock"))
            .unwrap()
            .contains("credence-demo-dep")
    );
    assert_eq!(
        *issued.lock().unwrap(),
        1,
        "the stored credential answered; no provider run"
    );

    // "fresh": the NuGet plugin in the container asks for a feed never used here.
    let mut plugin = inside(&thin);
    plugin.args(["nuget", "-Plugin"]);
    let mut nuget = NuGet::open(NuGet::spawn(plugin));
    let answer = nuget.request(
        "c1",
        "GetAuthenticationCredentials",
        serde_json::json!({"Uri": format!("{origin}/nuget/v3/index.json"), "IsRetry": false, "IsNonInteractive": true, "CanShowDialog": false}),
    );
    assert_eq!(answer["Payload"]["ResponseCode"], "Success", "{answer}");
    assert_eq!(answer["Payload"]["Password"], "at-2", "{answer}");
    assert_eq!(*issued.lock().unwrap(), 2, "the provider ran on this machine");
    drop(nuget);

    // Closing the carrier ends the session and drops what was minted for it; the user's
    // own stored credential stays.
    let entries = || local.run(&["agent", "status", "--json"]).stdout;
    let before: Value = serde_json::from_str(&entries()).unwrap();
    drop(launcher);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now: Value = serde_json::from_str(&entries()).unwrap();
        if now["cache_entries"].as_u64() < before["cache_entries"].as_u64() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the session's entries stayed: {before} then {now}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(local.sessions().is_empty());

    // What crossed: no refresh token, no client secret, no instance name, no expiry past
    // the session's ten minutes.
    let bytes = [std::fs::read(&to_remote).unwrap(), std::fs::read(&from_remote).unwrap()].concat();
    let text = String::from_utf8_lossy(&bytes);
    for secret in [
        "rt-secret",
        "client-secret-never-crosses",
        "corp-feed-instance",
        "other-instance-xyz",
        "tok-other",
    ] {
        assert!(!text.contains(secret), "{secret:?} crossed the carrier");
    }
    assert!(text.contains("at-1") && text.contains("at-2"), "the answers did cross");
    let latest_allowed = now() + 600 + 5;
    let expiries = expiries_in(&std::fs::read(&to_remote).unwrap());
    assert!(!expiries.is_empty());
    assert!(
        expiries.iter().all(|&e| e <= latest_allowed),
        "{expiries:?} past {latest_allowed}"
    );
    let records = local.remote_records();
    assert!(
        records.iter().any(|r| r["source"] == "stored" || r["cache"] == "hit"),
        "{records:#?}"
    );
    assert!(records.iter().any(|r| r["source"] == "provider"), "{records:#?}");
}

/// Whether this machine lets the tests make a user and mount namespace (`unshare -Urm`).
fn namespaces_work() -> bool {
    let ok = Command::new("unshare")
        .args(["-Urm", "sh", "-c", "command -v nsenter >/dev/null"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CREDENCE_REQUIRE_NAMESPACES").is_none(),
            "CREDENCE_REQUIRE_NAMESPACES is set but `unshare -Urm` or nsenter does not work here"
        );
        eprintln!("skipped: this machine cannot make user and mount namespaces (unshare -Urm)");
    }
    ok
}

fn home_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn cargo(work: &Path, cargo_home: &Path, env: impl FnOnce(&mut Command)) -> std::process::Output {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_") || k == "RUSTFLAGS" {
            cmd.env_remove(k);
        }
    }
    cmd.arg("generate-lockfile")
        .current_dir(work)
        .env("CARGO_HOME", cargo_home)
        // The test server speaks HTTP/1.1 only; with multiplexing cargo waits for HTTP/2.
        .env("CARGO_HTTP_MULTIPLEXING", "false")
        .env("CARGO_NET_RETRY", "0");
    env(&mut cmd);
    run_bounded(cmd, Duration::from_secs(120)).0
}

/// Every `expires_at` in the agent's answers inside a recorded carrier stream (agent to
/// remote): the relay's greeting does not go this way; mux frames hold the wire frames.
fn expiries_in(bytes: &[u8]) -> Vec<u64> {
    use std::collections::HashMap;
    let mut streams: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut r = std::io::Cursor::new(bytes);
    while let Ok(Some(frame)) = credence::agent::mux::read_frame(&mut r) {
        if let credence::agent::mux::Frame::Data(id, data) = frame {
            streams.entry(id).or_default().extend_from_slice(&data);
        }
    }
    let mut out = Vec::new();
    for data in streams.values() {
        let mut c = std::io::Cursor::new(data.as_slice());
        while let Ok(v) = credence::agent::wire::read_frame::<Value>(&mut c) {
            if let Some(e) = v["answer"]["result"]["Ok"]["credential"]["expires_at"].as_u64() {
                out.push(e);
            }
        }
    }
    out
}

// ---- ssh: a real sshd on 127.0.0.1 and real git ---------------------------------------------

#[test]
fn real_git_clone_over_ssh_forwarding_gets_its_token_from_this_machine_and_an_outside_url_looks_unserved() {
    let Some(sshd) = Sshd::start() else { return };
    let root = tempfile::tempdir().unwrap();
    credence_tests::seeded_bare_repo(root.path());
    let git_server = credence_tests::GitServer::start(root.path().to_owned(), |user, password| {
        user == "ci" && password == "tok-git-over-ssh"
    });
    let origin = format!("http://127.0.0.1:{}", git_server.port);
    let config = format!(
        "[[provider]]\nname = \"git\"\ncomponent = \"static-token.wasm\"\nserves = [\"{origin}/\"]\nsettings = {{ token = \"tok-git-over-ssh\", username = \"ci\" }}\n[remote]\nallow = [\"{origin}/repo.git\"]\napprove = \"never\"\n"
    );
    let local = Local::new(&[("static-token", &[], &[])], &config);
    let remote_dir = tempfile::tempdir().unwrap();
    let r = remote_dir.path();
    let cred = credence_exe().display().to_string();
    let remote_env = format!(
        "env -i PATH=\"$PATH\" HOME={r} GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0 CREDENCE_HOME={r}/empty CREDENCE_AGENT_SOCK=\"$CREDENCE_AGENT_SOCK\"",
        r = r.display()
    );
    let script = format!(
        "{remote_env} git -c credential.helper= -c 'credential.helper={cred} git' -c credential.useHttpPath=true clone -q {origin}/repo.git {r}/clone && cat {r}/clone/README && {remote_env} {cred} get {origin}/elsewhere/ > {r}/out.txt 2> {r}/err.txt; echo $? > {r}/code.txt",
        r = r.display()
    );
    let mut ssh = local.command();
    ssh.args(["remote", "ssh", "--label", "devbox"])
        .arg(sshd.destination())
        .arg("--")
        .args(sshd.ssh_args())
        .arg(script);
    let run = Run::from(run_bounded(ssh, Duration::from_secs(120)));
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("hello from the test server"), "{run:#?}");
    assert!(run.stderr.contains("CREDENCE_AGENT_SOCK="), "{run:#?}");

    // Outside the allow list, though this machine's provider serves the whole origin.
    let outside = Run {
        code: std::fs::read_to_string(r.join("code.txt")).unwrap().trim().parse().ok(),
        stdout: std::fs::read_to_string(r.join("out.txt")).unwrap(),
        stderr: std::fs::read_to_string(r.join("err.txt")).unwrap(),
        elapsed: Duration::ZERO,
    };
    same_answer(&outside, &unserved_answer(&format!("{origin}/elsewhere/")));

    let records = local.remote_records();
    assert!(
        records.iter().any(|r| r["remote"]["label"] == "devbox"
            && r["remote"]["carrier"].as_str().unwrap().starts_with("ssh ")
            && r["outcome"] == "credential"),
        "{records:#?}"
    );
    assert!(
        records.iter().any(|r| r["remote"]["decision"] == "not-allowed"),
        "{records:#?}"
    );
    assert!(local.sessions().is_empty(), "the session ended with ssh");
}
