//! The agent: `credence-host agent`, one per user and credence home, serving the
//! [`Resolver`] seam on a Unix socket to every tool's `credence`. It keeps what a one-shot
//! run rebuilds each time: the engine, each provider as it passed the gate (linked once, a
//! fresh instance per request), answered credentials (`session` ones included), and the
//! trust store, re-read when its file changes. Config and trust changes apply to the next
//! request; a revoked key or statement stops new runs at once and what it produced is no
//! longer served (each answer's producer is judged again before it is handed out).
//!
//! Where it listens and who may connect: see `credence::agent::endpoint`. Each connection
//! gets a thread; provider runs are bounded ([`MAX_RUNS`] at once, [`MAX_QUEUED`] waiting,
//! then `busy`). It exits after `[agent] idle` without a request, on `credence agent stop`,
//! or when its socket or its home is gone.
//!
//! [`Resolver`]: credence::resolver::Resolver

use crate::audit;
use crate::broker::Broker;
use crate::config::Config;
use crate::loader::TrustMode;
use crate::paths::Paths;
use crate::producer::FileStamp;
use crate::run_slots::RunSlots;
use credence::agent::endpoint::{Endpoint, Peer, build_id, peer};
use credence::agent::wire::{AgentStatus, FromAgent, PROTOCOL, ToAgent, read_frame, write_frame};
use credence::request::Refusal;
use credence::resolver::Resolver;
use credence::terminal::Terminal;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Connections served at once; one more is told so and closed.
pub const MAX_CONNECTIONS: usize = 512;

/// Connection threads: each blocks in `accept` on the shared listening socket (the kernel
/// wakes one), serves that connection, and accepts again, so a connection reaches its
/// thread with no hand-off (a thread start, then a hand-off, were most of a cached answer's
/// time). A thread that accepts while no other waits starts one more first; one that has
/// waited a minute exits while more than a few are alive.
struct Workers {
    waiting: AtomicUsize,
    alive: AtomicUsize,
}

const WORKERS_KEPT: usize = 4;

struct Agent {
    paths: Paths,
    endpoint: Endpoint,
    build: String,
    started: Instant,
    /// The broker for the config as last read (or why it did not load), and that file's
    /// identity then.
    broker: RwLock<(Option<FileStamp>, Result<Arc<Broker>, String>)>,
    engine: wasmtime::Engine,
    runs: Arc<RunSlots>,
    served: AtomicU64,
    connections: AtomicUsize,
    /// Requests being answered now (a stop waits for them).
    in_flight: AtomicUsize,
    last_request: Mutex<Instant>,
    stopping: AtomicBool,
    idle: Duration,
    /// `trust.toml` and the organisation's policy files as last seen: a change sweeps what
    /// they no longer admit.
    trust_stamp: Mutex<(Option<FileStamp>, crate::producer::PolicyStamp)>,
    /// Where the organisation's policy is, as this agent's brokers read it (from the
    /// environment it started in).
    policy_dir: crate::org_policy::PolicyDir,
    workers: Workers,
    /// The broker's watch generation at which `broker()`'s checks last passed.
    checked: AtomicU64,
    /// Wakes the main loop (a stop).
    wake: (Mutex<()>, std::sync::Condvar),
    /// The socket this agent bound (device, inode): only that file is ever removed.
    socket_id: Option<(u64, u64)>,
    /// Remote sessions opened by `credence remote ...` (each with a socket of its own).
    sessions: Arc<crate::remote::serve::Sessions>,
}

impl crate::remote::serve::SessionHost for Agent {
    fn broker(&self) -> Result<Arc<Broker>, String> {
        Agent::broker(self)
    }
    fn touch(&self) {
        *self.last_request.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
}

pub fn serve(detach: bool) -> Result<ExitCode, String> {
    let paths = Paths::from_env()?;
    let endpoint = Endpoint::of(&paths)?;
    endpoint.prepare_dir()?;
    let lock = take_lock(&endpoint)?;
    let Some(lock) = lock else {
        eprintln!("credence: an agent already runs for this home; see `credence agent status`");
        return Ok(ExitCode::SUCCESS);
    };
    if detach {
        detach_from_the_client(&paths)?;
    }
    not_dumpable();

    let runs = Arc::new(RunSlots::for_this_machine(crate::broker::RUNS_PER_INSTANCE));
    let engine = crate::sandbox::new_pooled_engine(runs.max_running())
        .map_err(|e| format!("cannot start the WebAssembly engine: {e}"))?;
    let config_file = paths.config_file();
    let stamp = FileStamp::of(&config_file);
    let config = Config::load(&config_file).map_err(|e| e.to_string());
    let idle = config
        .as_ref()
        .map_or(crate::config::DEFAULT_AGENT_IDLE, |c| c.agent_idle);
    let broker = config.map(|c| {
        Arc::new(
            Broker::new(paths.clone(), c, TrustMode::RequireSigned)
                .with_engine(engine.clone())
                .with_run_slots(runs.clone())
                .with_watch(),
        )
    });

    // Only the lock holder removes a socket: one left by a killed agent, never a live one.
    match std::fs::remove_file(&endpoint.socket) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot remove the old socket {}: {e}",
                endpoint.socket.display()
            ));
        }
    }
    endpoint.prepare_dir()?;
    let listener = UnixListener::bind(&endpoint.socket)
        .map_err(|e| format!("cannot listen on {}: {e}", endpoint.socket.display()))?;
    let socket_id = std::fs::symlink_metadata(&endpoint.socket).ok().map(|m| ino(&m));
    // Clients of this home that compute another socket path find this one from here.
    let announced = endpoint.socket.as_os_str().as_encoded_bytes().to_vec();
    if let Err(e) = crate::private_dir::write_private_file(&endpoint.state, "agent.socket", &announced) {
        tracing::warn!("cannot record where the agent listens: {e}");
    }

    let host = std::env::current_exe().map_err(|e| e.to_string())?;
    let paths_trust = paths.trust_file();
    let policy_dir = crate::org_policy::PolicyDir::from_env();
    let agent = Arc::new(Agent {
        build: build_id(&host),
        paths,
        endpoint,
        started: Instant::now(),
        broker: RwLock::new((stamp, broker)),
        engine,
        runs,
        served: AtomicU64::new(0),
        connections: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        last_request: Mutex::new(Instant::now()),
        stopping: AtomicBool::new(false),
        idle,
        trust_stamp: Mutex::new((
            FileStamp::of(&paths_trust),
            crate::producer::PolicyStamp::of(&policy_dir),
        )),
        policy_dir,
        socket_id,
        wake: (Mutex::new(()), std::sync::Condvar::new()),
        checked: AtomicU64::new(u64::MAX),
        sessions: Arc::default(),
        workers: Workers {
            waiting: AtomicUsize::new(0),
            alive: AtomicUsize::new(0),
        },
    });
    tracing::info!(socket = %agent.endpoint.socket.display(), "agent listening");
    let code = agent.accept_loop(&listener, socket_id);
    // Sessions end with the agent: their sockets go, their launchers see it.
    agent.sessions.end(None);
    // The socket goes before the lock: a client that then takes the lock finds no socket
    // to mistake for a live agent. Requests in hand are finished (for up to 10 s).
    if std::fs::symlink_metadata(&agent.endpoint.socket).ok().map(|m| ino(&m)) == socket_id {
        let _ = std::fs::remove_file(&agent.endpoint.socket);
    }
    if crate::private_dir::read_private_file(&agent.endpoint.whereabouts, 4096)
        .ok()
        .flatten()
        .is_some_and(|b| b == announced)
    {
        let _ = std::fs::remove_file(&agent.endpoint.whereabouts);
    }
    drop(listener);
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(lock);
    Ok(code)
}

fn ino(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

/// The lock a running agent holds: inherited from the client that started this agent
/// (`CREDENCE_AGENT_LOCK_FD`, already locked), or taken here. `None`: another agent has it.
fn take_lock(endpoint: &Endpoint) -> Result<Option<std::fs::File>, String> {
    use std::os::unix::fs::MetadataExt;
    if let Some(fd) = std::env::var("CREDENCE_AGENT_LOCK_FD")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        // SAFETY: the descriptor was left open for this process by the client that started
        // it, which passed its number; it is checked below to be the lock file.
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        // SAFETY: unsetenv before any thread exists.
        unsafe { std::env::remove_var("CREDENCE_AGENT_LOCK_FD") };
        let (Ok(held), Ok(named)) = (file.metadata(), std::fs::symlink_metadata(&endpoint.lock)) else {
            return Err("the agent lock handed over is not the lock file".into());
        };
        if (held.dev(), held.ino()) != (named.dev(), named.ino()) {
            return Err("the agent lock handed over is not the lock file".into());
        }
        set_cloexec(&file);
        return Ok(Some(file));
    }
    let (file, held) = endpoint.try_lock()?;
    Ok(held.then_some(file))
}

fn set_cloexec(file: &std::fs::File) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(file.as_raw_fd(), libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

/// Forks once so the client that started this agent can reap it at once, starts a new
/// session (no controlling terminal: a terminal closing does not end the agent), and sends
/// diagnostics to `agent.log` in the state dir (0600) instead of the client's stderr.
fn detach_from_the_client(paths: &Paths) -> Result<(), String> {
    // SAFETY: called before this process starts any thread, so the child is a full copy.
    match unsafe { libc::fork() } {
        -1 => return Err(format!("cannot fork: {}", io::Error::last_os_error())),
        0 => {}
        // SAFETY: the parent leaves without running destructors the child also owns.
        _ => unsafe { libc::_exit(0) },
    }
    // SAFETY: no preconditions; the child is not a process group leader.
    unsafe { libc::setsid() };
    crate::private_dir::ensure_private_dir(&paths.trust_state)
        .map_err(|e| format!("cannot create {}: {e}", paths.trust_state.display()))?;
    use std::os::unix::fs::OpenOptionsExt;
    // The previous agent's log is kept once (a crash is read after the fact).
    let log_path = paths.trust_state.join("agent.log");
    let _ = std::fs::rename(&log_path, paths.trust_state.join("agent.log.1"));
    let log = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&log_path)
        .map_err(|e| format!("cannot open agent.log: {e}"))?;
    // SAFETY: dup2 onto stderr of this single-threaded process.
    unsafe { libc::dup2(log.as_raw_fd(), 2) };
    Ok(())
}

/// No ptrace, no core dumps, no /proc/<pid>/mem for other processes of the user (as
/// ssh-agent does): the agent's memory holds every answered secret.
fn not_dumpable() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

impl Agent {
    /// Accepts on a thread of its own, blocking (no polling delay on the hot path), while
    /// this thread checks every 250 ms whether the agent should exit; then it shuts the
    /// listening socket down, which ends the blocking accept.
    /// Starts the connection threads, then checks every 250 ms whether the agent should
    /// exit; then it shuts the listening socket down, which ends every blocking accept.
    fn accept_loop(self: &Arc<Self>, listener: &UnixListener, socket_id: Option<(u64, u64)>) -> ExitCode {
        let shared = match listener.try_clone() {
            Ok(l) => Arc::new(l),
            Err(e) => {
                tracing::warn!("cannot share the listening socket: {e}");
                return ExitCode::from(2);
            }
        };
        // A blocking accept that returns after a minute without a connection, so idle
        // threads can leave.
        let timeout = libc::timeval { tv_sec: 60, tv_usec: 0 };
        // SAFETY: setsockopt with a valid timeval on a socket we own.
        unsafe {
            libc::setsockopt(
                shared.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        for _ in 0..2 {
            self.start_worker(&shared);
        }
        loop {
            {
                // Woken at once by a stop, so the replacing agent need not wait for a tick.
                let woken = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
                if !self.stopping.load(Ordering::SeqCst) {
                    let _ = self.wake.1.wait_timeout(woken, Duration::from_millis(250));
                }
            }
            let why = if self.stopping.load(Ordering::SeqCst) {
                Some("asked to stop".to_owned())
            } else {
                self.reason_to_exit(socket_id)
            };
            if let Some(why) = why {
                tracing::info!("agent exits: {why}");
                self.stopping.store(true, Ordering::SeqCst);
                // SAFETY: shutdown of the listening socket we own: the blocking accept returns.
                unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
                return ExitCode::SUCCESS;
            }
        }
    }

    fn start_worker(self: &Arc<Self>, listener: &Arc<UnixListener>) {
        self.workers.alive.fetch_add(1, Ordering::SeqCst);
        let (agent, listener) = (self.clone(), listener.clone());
        let spawned = std::thread::Builder::new()
            .name("credence-conn".into())
            // Providers run on this thread: wasmtime needs the wasm stack limit (512 KiB) and
            // the host's own frames below it; untouched stack costs no memory.
            .stack_size(4 << 20)
            .spawn(move || agent.work(&listener));
        if let Err(e) = spawned {
            self.workers.alive.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("cannot start a thread for connections: {e}");
        }
    }

    /// A connection thread: accepts, serves, accepts again.
    fn work(self: &Arc<Self>, listener: &Arc<UnixListener>) {
        loop {
            self.workers.waiting.fetch_add(1, Ordering::SeqCst);
            let accepted = listener.accept();
            let others_waiting = self.workers.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
            match accepted {
                Ok((stream, _)) => {
                    if others_waiting == 0 && !self.stopping.load(Ordering::SeqCst) {
                        // Someone must be accepting while this thread serves.
                        self.start_worker(listener);
                    }
                    self.admit(stream);
                }
                Err(_) if self.stopping.load(Ordering::SeqCst) => break,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if self.workers.alive.load(Ordering::SeqCst) > WORKERS_KEPT {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        self.workers.alive.fetch_sub(1, Ordering::SeqCst);
    }

    /// Stops taking connections at once (the socket goes now, so the replacing client
    /// finds none and starts its own agent as soon as this one lets go of the lock), then
    /// exits once what it has in hand is answered.
    fn step_down(&self) {
        if !self.stopping.swap(true, Ordering::SeqCst) {
            if std::fs::symlink_metadata(&self.endpoint.socket).ok().map(|m| ino(&m)) == self.socket_id {
                let _ = std::fs::remove_file(&self.endpoint.socket);
            }
        }
        let _held = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.1.notify_all();
    }

    fn reason_to_exit(&self, socket_id: Option<(u64, u64)>) -> Option<String> {
        let now_id = std::fs::symlink_metadata(&self.endpoint.socket).ok().map(|m| ino(&m));
        if now_id != socket_id {
            return Some("its socket was removed or replaced".into());
        }
        if !self.paths.home.exists() {
            return Some(format!("its home {} is gone", self.paths.home.display()));
        }
        let quiet = self.last_request.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
        if quiet >= self.idle && self.connections.load(Ordering::SeqCst) == 0 && !self.sessions.any_open() {
            return Some(format!("idle for {} s", quiet.as_secs()));
        }
        None
    }

    fn admit(self: &Arc<Self>, stream: UnixStream) {
        let who = match peer(&stream) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("cannot tell who connected: {e}");
                return;
            }
        };
        if who.uid != credence::private_dir::current_uid() {
            // The directory should have kept them out; say that someone got this far.
            tracing::warn!(uid = who.uid, pid = who.pid, "refused a connection from another user");
            crate::audit::AuditLog::new(self.paths.trust_state.clone()).append(&audit::Record {
                time: crate::state_store::now_unix(),
                outcome: "refused-peer".into(),
                error: Some(format!("refused peer uid {}", who.uid)),
                client: Some(client_of(who)),
                ..Default::default()
            });
            return;
        }
        if self.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            self.connections.fetch_sub(1, Ordering::SeqCst);
            let mut stream = stream;
            let _ = write_frame(
                &mut stream,
                &FromAgent::Refused {
                    message: format!("the agent serves {MAX_CONNECTIONS} connections already"),
                    restart: false,
                },
            );
            return;
        }
        self.converse(stream, who);
        self.connections.fetch_sub(1, Ordering::SeqCst);
    }

    /// The broker for the config in force: read again when `config.toml` changed. A config
    /// that does not load is no config to answer under: the reason is returned instead.
    fn broker(&self) -> Result<Arc<Broker>, String> {
        // Nothing the checks below read has changed since they last passed: the same broker.
        {
            let current = self.broker.read().unwrap_or_else(|e| e.into_inner());
            if let Ok(b) = &current.1 {
                if b.watch_generation()
                    .is_some_and(|g| g == self.checked.load(Ordering::SeqCst))
                {
                    return Ok(b.clone());
                }
            }
        }
        // Read before the checks: a change while they run makes the next request check again.
        let generation = self
            .broker
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .as_ref()
            .ok()
            .and_then(|b| b.watch_generation());
        let checked = self.check_and_load();
        let same_broker = match (&checked, &self.broker.read().unwrap_or_else(|e| e.into_inner()).1) {
            (Ok(a), Ok(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        // A broker built just now has a watch armed after its config was read: its first
        // request checks again, so nothing between the two is missed.
        self.checked.store(
            generation
                .filter(|_| same_broker && checked.is_ok())
                .unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
        checked
    }

    fn check_and_load(&self) -> Result<Arc<Broker>, String> {
        let trust = (
            FileStamp::of(&self.paths.trust_file()),
            crate::producer::PolicyStamp::of(&self.policy_dir),
        );
        let trust_changed = {
            let mut seen = self.trust_stamp.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *seen, trust) != trust
        };
        if trust_changed {
            if let Ok(broker) = &self.broker.read().unwrap_or_else(|e| e.into_inner()).1 {
                let dropped = broker.drop_what_is_no_longer_admitted();
                tracing::info!(dropped, "trust.toml or the policy bundle changed");
            }
        }
        let stamp = FileStamp::of(&self.paths.config_file());
        // The file's identity says it is unchanged; who could write it is a property of
        // the directories above it, which a chmod changes without touching the file.
        let chain_ok = crate::trusted_file::check_dir_chain(&self.paths.home).is_ok();
        {
            let current = self.broker.read().unwrap_or_else(|e| e.into_inner());
            if current.0 == stamp && chain_ok && current.1.is_ok() {
                return current.1.clone();
            }
        }
        let mut current = self.broker.write().unwrap_or_else(|e| e.into_inner());
        if current.0 == stamp && chain_ok && current.1.is_ok() {
            return current.1.clone();
        }
        tracing::info!("config.toml changed; the answers and providers kept so far are dropped");
        let next = Config::load(&self.paths.config_file())
            .map_err(|e| e.to_string())
            .map(|config| {
                Arc::new(
                    Broker::new(self.paths.clone(), config, TrustMode::RequireSigned)
                        .with_engine(self.engine.clone())
                        .with_run_slots(self.runs.clone())
                        .with_watch(),
                )
            });
        *current = (stamp, next.clone());
        next
    }

    fn converse(self: &Arc<Self>, mut stream: UnixStream, who: Peer) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        // Frames are read through a buffer: one receive per request (a client writes each
        // frame whole; a pipelined hello and request arrive together), not two.
        let Ok(reading) = stream.try_clone() else { return };
        let mut reader = std::io::BufReader::with_capacity(16 << 10, reading);
        let hello: ToAgent = match read_frame(&mut reader) {
            Ok(m) => m,
            Err(_) => return,
        };
        let ToAgent::Hello {
            protocol,
            build,
            home,
            takeover,
        } = hello
        else {
            return;
        };
        if let Err(why) = self.broker() {
            // The client answers in-process, where the config error reaches the tool in its
            // own protocol's error form.
            let _ = write_frame(
                &mut stream,
                &FromAgent::Refused {
                    message: why,
                    restart: false,
                },
            );
            return;
        }
        if home != self.endpoint.home {
            let _ = write_frame(
                &mut stream,
                &FromAgent::Refused {
                    message: "this agent serves another credence home".into(),
                    restart: false,
                },
            );
            return;
        }
        if protocol != PROTOCOL || build != self.build {
            // Another build asks: it starts its own agent once this one is gone, so this one
            // finishes what it has in hand and exits.
            let _ = write_frame(
                &mut stream,
                &FromAgent::Refused {
                    message: format!("this agent is {}", self.build),
                    restart: true,
                },
            );
            if takeover {
                self.step_down();
            }
            return;
        }
        let welcome = FromAgent::Welcome {
            build: self.build.clone(),
            pid: std::process::id(),
        };
        if write_frame(&mut stream, &welcome).is_err() {
            return;
        }
        let client = client_of(who);
        // Between requests a client may sit idle as long as it likes (cargo's conversation).
        let _ = stream.set_read_timeout(None);
        loop {
            let message: ToAgent = match read_frame(&mut reader) {
                Ok(m) => m,
                Err(_) => return,
            };
            *self.last_request.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            if let ToAgent::OpenSession {
                label,
                carrier,
                can_prompt,
            } = message
            {
                // The connection becomes the session's: it lives as long as this stays open.
                self.open_session(stream, &label, &carrier, can_prompt);
                return;
            }
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let reply = crate::fs_watch::one_view(|| self.answer(message, &mut stream, &client));
            // In flight until the answer is sent: a stop waits for it.
            let sent = reply
                .as_ref()
                .map(|r| (write_frame(&mut stream, r).is_ok(), matches!(r, FromAgent::Stopping)));
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            match sent {
                Some((true, false)) => {}
                _ => return,
            }
        }
    }

    fn answer(&self, message: ToAgent, stream: &mut UnixStream, client: &audit::Client) -> Option<FromAgent> {
        let failed = |e: String| Refusal::Failed(e);
        Some(match message {
            ToAgent::Resolve { request, can_prompt } => {
                self.served.fetch_add(1, Ordering::Relaxed);
                // The connection is shared with the prompt renderer only when a prompt can be shown.
                let prompts = Box::new(ClientTerminal {
                    stream: if can_prompt { stream.try_clone().ok() } else { None },
                    can_prompt,
                });
                let (result, warnings) = credence::logging::capture_warnings(|| {
                    self.broker()
                        .map_err(failed)
                        .and_then(|b| b.get_for(&request, prompts, Some(client.clone())))
                });
                FromAgent::Answer { result, warnings }
            }
            ToAgent::Verdict { request, verdict } => {
                let ((), warnings) = credence::logging::capture_warnings(|| {
                    if let Ok(b) = self.broker() {
                        b.verdict(&request, verdict);
                    }
                });
                FromAgent::Done { warnings }
            }
            ToAgent::Forget { what } => {
                let (result, warnings) =
                    credence::logging::capture_warnings(|| self.broker().map_err(failed).and_then(|b| b.forget(what)));
                FromAgent::Forgot { result, warnings }
            }
            ToAgent::Status => {
                let broker = self.broker().ok();
                FromAgent::Status {
                    status: AgentStatus {
                        pid: std::process::id(),
                        build: self.build.clone(),
                        uptime_secs: self.started.elapsed().as_secs(),
                        providers_loaded: broker.as_ref().map_or(0, |b| b.providers_loaded()),
                        cache_entries: broker.as_ref().map_or(0, |b| b.cache_entries()),
                        requests_served: self.served.load(Ordering::Relaxed),
                        socket: self.endpoint.socket.display().to_string(),
                        idle_exit_secs: self.idle.as_secs(),
                    },
                }
            }
            ToAgent::Stop => {
                self.step_down();
                FromAgent::Stopping
            }
            ToAgent::Sessions => FromAgent::Sessions {
                sessions: self.sessions.list(),
            },
            ToAgent::EndSessions { label } => FromAgent::Ended {
                count: self.sessions.end(label.as_deref()),
            },
            ToAgent::Decide { label, host, allow } => match self.sessions.decide(&label, host.as_deref(), allow) {
                Ok(count) => FromAgent::Decided { count },
                Err(message) => FromAgent::Refused {
                    message,
                    restart: false,
                },
            },
            ToAgent::Hello { .. } | ToAgent::Asked { .. } | ToAgent::Shown { .. } | ToAgent::OpenSession { .. } => {
                return None;
            }
        })
    }
}

impl Agent {
    fn open_session(self: &Arc<Self>, mut stream: UnixStream, label: &str, carrier: &str, can_prompt: bool) {
        let dir = crate::remote::serve::sessions_dir(&self.endpoint.dir);
        let control = match stream.try_clone() {
            Ok(c) => c,
            Err(_) => return,
        };
        let host: Arc<dyn crate::remote::serve::SessionHost> = self.clone();
        let reply = match self.sessions.open(host, &dir, label, carrier, can_prompt, control) {
            Ok(session) => FromAgent::SessionOpened {
                socket: session.socket.display().to_string(),
                label: session.label.clone(),
            },
            Err(message) => FromAgent::Refused {
                message,
                restart: false,
            },
        };
        let _ = write_frame(&mut stream, &reply);
    }
}

fn client_of(who: Peer) -> audit::Client {
    audit::Client {
        pid: who.pid,
        uid: who.uid,
        exe: std::fs::read_link(format!("/proc/{}/exe", who.pid))
            .ok()
            .map(|p| p.display().to_string()),
    }
}

/// A provider's prompts for one request, sent to the client that asked, which shows them
/// on its own terminal and sends the answer back.
struct ClientTerminal {
    stream: Option<UnixStream>,
    can_prompt: bool,
}

impl ClientTerminal {
    fn exchange(&mut self, message: &FromAgent) -> io::Result<ToAgent> {
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::other("no connection to the client"))?;
        write_frame(stream, message)?;
        read_frame(stream)
    }
}

impl Terminal for ClientTerminal {
    fn ask(&mut self, line: &str, secret: bool) -> io::Result<Option<String>> {
        let reply = self.exchange(&FromAgent::Ask {
            line: line.to_owned(),
            secret,
        })?;
        match reply {
            ToAgent::Asked { answer } => answer.map_err(io::Error::other),
            _ => Err(io::Error::other("the client answered a prompt with something else")),
        }
    }

    fn show(&mut self, line: &str) -> io::Result<()> {
        match self.exchange(&FromAgent::Show { line: line.to_owned() })? {
            ToAgent::Shown { result } => result.map_err(io::Error::other),
            _ => Err(io::Error::other("the client answered a message with something else")),
        }
    }

    fn can_prompt(&self) -> bool {
        self.can_prompt
    }

    /// The client hung up (its tool was interrupted): nobody is there to sign in.
    fn gone(&self) -> bool {
        use std::os::fd::AsRawFd;
        self.stream
            .as_ref()
            .is_none_or(|s| credence::terminal::peer_closed(s.as_raw_fd()))
    }
}
