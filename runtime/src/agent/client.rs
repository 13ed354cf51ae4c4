//! The agent's client: the [`Resolver`] every tool's `credence` asks through when an agent
//! runs, and the start of one when none does. Nothing here links wasmtime.
//!
//! Starting: the running agent holds `flock` on the endpoint's lock file for its whole life.
//! A client that finds no agent takes that lock without blocking; if it gets it, no agent
//! is alive, and it starts `credence-host agent --detach` with the locked descriptor
//! inherited, so the lock passes to the new agent with no gap in which a second client
//! could start another. Clients that do not get the lock wait for the socket. Either way
//! a client waits at most [`START_WAIT`]; after that it answers in-process.

use super::endpoint::{Endpoint, build_id, peer};
use super::wire::{AgentStatus, FromAgent, PROTOCOL, ToAgent, read_frame, write_frame};
use crate::paths::Paths;
use crate::request::{Answer, CredentialRequest, Refusal};
use crate::resolver::{Forget, Forgotten, Resolver, Verdict};
use crate::terminal::Terminal;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a client waits for an agent to start, and for any agent's first frame.
pub const START_WAIT: Duration = Duration::from_secs(2);
/// A request's own deadline: longer than any provider may run (its wall-clock limit, prompts
/// included), so only an agent that stopped answering reaches it.
const REQUEST_DEADLINE: Duration = Duration::from_secs(35 * 60);

pub struct AgentClient {
    endpoint: Endpoint,
    host: PathBuf,
    build: String,
    /// Connections that finished their last request, for the next one (cargo's and NuGet's
    /// conversations ask many times; NuGet from several threads at once).
    idle: Mutex<Vec<Conn>>,
    /// A connection whose hello is sent and whose welcome is not read yet.
    pending: Mutex<Option<Conn>>,
    pub agent_pid: u32,
    /// Whether this client replaces an agent of another build (it may start one).
    takeover: bool,
}

/// Why the agent cannot answer; the caller answers in-process.
#[derive(Debug)]
pub struct Unavailable {
    pub reason: String,
    /// A problem the user should fix (a loose socket directory), not just "no agent".
    pub warn: bool,
}

impl Unavailable {
    fn quiet(reason: impl Into<String>) -> Self {
        Unavailable {
            reason: reason.into(),
            warn: false,
        }
    }
    fn loud(reason: impl Into<String>) -> Self {
        Unavailable {
            reason: reason.into(),
            warn: true,
        }
    }
}

/// A connection to the agent, read through a buffer: one receive per frame, not two.
type Conn = std::io::BufReader<UnixStream>;

enum Prompt {
    Ask(String, bool),
    Show(String),
}

enum Handshake {
    Welcome(u32),
    OtherBuild,
    /// `true`: something the user should fix (a socket served by another uid); `false`:
    /// the agent cannot answer now (its config does not load, it is full), and the host
    /// will say what is wrong in the tool's own terms.
    Refused(String, bool),
}

impl AgentClient {
    /// The agent of this home, started if none runs and `start` is set.
    pub fn connect(paths: &Paths, start: bool) -> Result<AgentClient, Unavailable> {
        let endpoint = Endpoint::of(paths).map_err(Unavailable::loud)?;
        endpoint.prepare_dir().map_err(Unavailable::loud)?;
        let host = crate::exe::host().map_err(Unavailable::loud)?;
        let build = build_id(&host);
        let mut client = AgentClient {
            endpoint,
            host,
            build,
            idle: Mutex::new(Vec::new()),
            pending: Mutex::new(None),
            agent_pid: 0,
            takeover: start,
        };
        let mut restarted = false;
        let deadline = Instant::now() + START_WAIT;
        let mut started = false;
        loop {
            match client.open() {
                Ok((stream, Handshake::Welcome(pid))) => {
                    client.agent_pid = pid;
                    client.idle.lock().unwrap().push(stream);
                    return Ok(client);
                }
                Ok((_, Handshake::Refused(why, true))) => return Err(Unavailable::loud(why)),
                Ok((_, Handshake::Refused(why, false))) => return Err(Unavailable::quiet(why)),
                Ok((_, Handshake::OtherBuild)) if !restarted && start => {
                    // It finishes what it has in hand and exits; this build's agent replaces it.
                    restarted = true;
                    started = false;
                }
                Ok((_, Handshake::OtherBuild)) => {
                    return Err(Unavailable::quiet("the running agent is another build of credence"));
                }
                Err(e) if !start => return Err(Unavailable::quiet(format!("no agent answers: {e}"))),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                return Err(Unavailable::quiet("the agent did not start within 2 s"));
            }
            if !started {
                started = client.start().map_err(Unavailable::loud)?;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Starts an agent unless one holds the lock. Returns whether this client started it.
    fn start(&self) -> Result<bool, String> {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let (lock, held) = self.endpoint.try_lock()?;
        if !held {
            // An agent holds it: running, starting, or finishing before it exits.
            return Ok(false);
        }
        let fd = lock.as_raw_fd();
        let mut command = std::process::Command::new(&self.host);
        command
            .args(["agent", "--detach"])
            .env("CREDENCE_AGENT_LOCK_FD", fd.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // The lock passes to the agent: keep this one descriptor open across exec.
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::umask(0o077);
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start the agent ({}): {e}", self.host.display()))?;
        // `--detach` forks and its first process exits at once: reap it, leave no zombie.
        let _ = child.wait();
        Ok(true)
    }

    fn open(&self) -> io::Result<(Conn, Handshake)> {
        let mut stream = self.connect_socket()?;
        let who = peer(&stream)?;
        if who.uid != crate::private_dir::current_uid() {
            return Ok((
                Conn::new(stream),
                Handshake::Refused(
                    format!(
                        "the agent socket {} is served by uid {}, not by you; remove it",
                        self.endpoint.socket.display(),
                        who.uid
                    ),
                    true,
                ),
            ));
        }
        self.hello(&mut stream)?;
        let mut conn = Conn::new(stream);
        let reply = Self::welcome(&mut conn)?;
        Ok((conn, reply))
    }

    /// Our socket, or else the one the running agent of this home announced (a client that
    /// sees another `XDG_RUNTIME_DIR` than the agent did).
    fn connect_socket(&self) -> io::Result<UnixStream> {
        super::endpoint::check_dir(&self.endpoint.dir).map_err(io::Error::other)?;
        match UnixStream::connect(&self.endpoint.socket) {
            Ok(s) => Ok(s),
            Err(e) => match self.endpoint.announced_socket() {
                Some(other) => UnixStream::connect(other),
                None => Err(e),
            },
        }
    }

    fn hello(&self, stream: &mut UnixStream) -> io::Result<()> {
        stream.set_read_timeout(Some(START_WAIT))?;
        stream.set_write_timeout(Some(START_WAIT))?;
        write_frame(
            stream,
            &ToAgent::Hello {
                protocol: PROTOCOL,
                build: self.build.clone(),
                home: self.endpoint.home.clone(),
                takeover: self.takeover,
            },
        )
    }

    fn welcome(conn: &mut Conn) -> io::Result<Handshake> {
        let reply = match read_frame(conn)? {
            FromAgent::Welcome { pid, .. } => Handshake::Welcome(pid),
            FromAgent::Refused { restart: true, .. } => Handshake::OtherBuild,
            FromAgent::Refused { message, .. } => Handshake::Refused(message, false),
            other => return Err(io::Error::other(format!("unexpected first frame {other:?}"))),
        };
        conn.get_ref().set_read_timeout(Some(REQUEST_DEADLINE))?;
        Ok(reply)
    }

    /// The agent of this home for a one-shot request, with the handshake's answer read only
    /// when the first request goes out: the round trip overlaps the front end's own work.
    /// If the agent then turns out unable to answer (another build, a config that does not
    /// load), this process becomes the host with the same stdin, replayed
    /// (`exe::replay_in_host`). With no agent listening at all, as [`connect`](Self::connect).
    pub fn connect_pipelined(paths: &Paths) -> Result<AgentClient, Unavailable> {
        let endpoint = Endpoint::of(paths).map_err(Unavailable::loud)?;
        endpoint.prepare_dir().map_err(Unavailable::loud)?;
        let host = crate::exe::host().map_err(Unavailable::loud)?;
        let client = AgentClient {
            build: build_id(&host),
            endpoint,
            host,
            idle: Mutex::new(Vec::new()),
            pending: Mutex::new(None),
            agent_pid: 0,
            takeover: true,
        };
        let opened = client.connect_socket().and_then(|mut stream| {
            let who = peer(&stream)?;
            if who.uid != crate::private_dir::current_uid() {
                return Err(io::Error::other("served by another uid"));
            }
            client.hello(&mut stream)?;
            Ok(stream)
        });
        match opened {
            Ok(stream) => {
                *client.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(Conn::new(stream));
                Ok(client)
            }
            // Nobody listens (or someone else does): start one, or say why not, as usual.
            Err(_) => AgentClient::connect(paths, true),
        }
    }

    /// A connection with `message` sent on it. On the one-shot client's pending connection
    /// the message goes out before the welcome is read, so hello, request, welcome and
    /// answer cost one round trip, not two; an agent that refuses the hello never reads it.
    fn send(&self, message: &ToAgent) -> io::Result<Conn> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut s) = pending {
            // An agent that refuses the hello closes without reading on, so this write may
            // fail; its refusal is still waiting to be read, and decides what happens.
            let sent = write_frame(s.get_mut(), message);
            return match Self::welcome(&mut s) {
                Ok(Handshake::Welcome(_)) => sent.map(|()| s),
                // Another build: it steps down, and this build's agent answers.
                Ok(Handshake::OtherBuild) => {
                    let ours = Paths::from_env()
                        .map_err(io::Error::other)
                        .and_then(|paths| AgentClient::connect(&paths, true).map_err(|u| io::Error::other(u.reason)));
                    match ours.map(|c| c.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()) {
                        Ok(Some(mut stream)) => write_frame(stream.get_mut(), message).map(|()| stream),
                        _ => crate::exe::replay_in_host(),
                    }
                }
                // Nothing has been answered yet: the host answers in this process.
                _ => crate::exe::replay_in_host(),
            };
        }
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut stream = match idle {
            Some(s) => s,
            None => match self.open()? {
                (s, Handshake::Welcome(_)) => s,
                (_, Handshake::OtherBuild) => return Err(io::Error::other("the agent was replaced by another build")),
                (_, Handshake::Refused(why, _)) => return Err(io::Error::other(why)),
            },
        };
        write_frame(stream.get_mut(), message)?;
        Ok(stream)
    }

    /// One request and its answer, rendering the agent's prompts on `prompts` meanwhile.
    /// A prompt is shown on a thread of its own while this one keeps reading: when the
    /// provider's wall clock ends the request, its answer arrives while the user has still
    /// not answered, and the tool gets it instead of waiting on the terminal for ever.
    fn call(&self, message: &ToAgent, prompts: &mut Option<Box<dyn Terminal>>) -> io::Result<FromAgent> {
        let mut stream = self.send(message)?;
        let terminal = std::sync::Arc::new(Mutex::new(prompts.take()));
        let outstanding = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        loop {
            let frame = read_frame(&mut stream)?;
            let prompt = match frame {
                FromAgent::Ask { line, secret } => Prompt::Ask(line, secret),
                FromAgent::Show { line } => Prompt::Show(line),
                reply => {
                    if outstanding.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(stream);
                        if let Ok(mut t) = terminal.try_lock() {
                            *prompts = t.take();
                        }
                    }
                    // Otherwise the connection goes with the unanswered prompt.
                    return Ok(reply);
                }
            };
            let mut writer = stream.get_ref().try_clone()?;
            let (terminal, outstanding) = (terminal.clone(), outstanding.clone());
            outstanding.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut t = terminal.lock().unwrap_or_else(|e| e.into_inner());
                let reply = match (prompt, t.as_mut()) {
                    (Prompt::Ask(line, secret), Some(t)) => ToAgent::Asked {
                        answer: t.ask(&line, secret).map_err(|e| e.to_string()),
                    },
                    (Prompt::Show(line), Some(t)) => ToAgent::Shown {
                        result: t.show(&line).map_err(|e| e.to_string()),
                    },
                    (Prompt::Ask(..), None) => ToAgent::Asked {
                        answer: Err("this request cannot prompt".into()),
                    },
                    (Prompt::Show(_), None) => ToAgent::Shown {
                        result: Err("this request cannot prompt".into()),
                    },
                };
                // Counted down first: the agent answers the request only after it has read this.
                outstanding.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                let _ = write_frame(&mut writer, &reply);
            });
        }
    }

    /// A call that survives the agent going away once (killed, or idle exit in between):
    /// it is asked again through a fresh agent.
    fn call_again_once(&self, message: &ToAgent, prompts: &mut Option<Box<dyn Terminal>>) -> Result<FromAgent, String> {
        match self.call(message, prompts) {
            Ok(reply) => Ok(reply),
            Err(first) => {
                self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
                let paths = Paths::from_env()?;
                let again = AgentClient::connect(&paths, true).map_err(|u| u.reason)?;
                again.call(message, prompts).map_err(|e| {
                    format!(
                        "the credence agent stopped answering ({first}; then {e}); run the command again, or with CREDENCE_AGENT=0 to answer without the agent"
                    )
                })
            }
        }
    }

    pub fn status(&self) -> Result<AgentStatus, String> {
        match self.call(&ToAgent::Status, &mut None).map_err(|e| e.to_string())? {
            FromAgent::Status { status } => Ok(status),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Opens a remote session: the connection the session lives on (it ends when that
    /// closes; the agent sends the session's questions on it), its socket, and its label
    /// as the agent made it unique.
    pub fn open_session(
        &self,
        label: &str,
        carrier: &str,
        can_prompt: bool,
    ) -> Result<(std::io::BufReader<UnixStream>, PathBuf, String), String> {
        let message = ToAgent::OpenSession {
            label: label.to_owned(),
            carrier: carrier.to_owned(),
            can_prompt,
        };
        let mut conn = self.send(&message).map_err(|e| e.to_string())?;
        match read_frame(&mut conn).map_err(|e| e.to_string())? {
            FromAgent::SessionOpened { socket, label } => {
                conn.get_ref().set_read_timeout(None).map_err(|e| e.to_string())?;
                Ok((conn, PathBuf::from(socket), label))
            }
            FromAgent::Refused { message, .. } => Err(message),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    pub fn sessions(&self) -> Result<Vec<super::wire::SessionInfo>, String> {
        match self.call(&ToAgent::Sessions, &mut None).map_err(|e| e.to_string())? {
            FromAgent::Sessions { sessions } => Ok(sessions),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Ends the sessions labelled `label`, or every session; how many ended.
    pub fn end_sessions(&self, label: Option<&str>) -> Result<usize, String> {
        let message = ToAgent::EndSessions {
            label: label.map(str::to_owned),
        };
        match self.call(&message, &mut None).map_err(|e| e.to_string())? {
            FromAgent::Ended { count } => Ok(count),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Approves or denies what the sessions labelled `label` wait for; how many decided.
    pub fn decide(&self, label: &str, host: Option<&str>, allow: bool) -> Result<usize, String> {
        let message = ToAgent::Decide {
            label: label.to_owned(),
            host: host.map(str::to_owned),
            allow,
        };
        match self.call(&message, &mut None).map_err(|e| e.to_string())? {
            FromAgent::Decided { count } => Ok(count),
            FromAgent::Refused { message, .. } => Err(message),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    pub fn stop(&self) -> Result<(), String> {
        match self.call(&ToAgent::Stop, &mut None).map_err(|e| e.to_string())? {
            FromAgent::Stopping => Ok(()),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
}

impl Resolver for AgentClient {
    fn resolve(&self, request: &CredentialRequest, prompts: Box<dyn Terminal>) -> Result<Answer, Refusal> {
        let message = ToAgent::Resolve {
            request: request.clone(),
            can_prompt: request.interactive && prompts.can_prompt(),
        };
        match self
            .call_again_once(&message, &mut Some(prompts))
            .map_err(Refusal::Failed)?
        {
            FromAgent::Answer { result, warnings } => {
                crate::logging::print_warnings(&warnings);
                result
            }
            other => Err(Refusal::Failed(format!("the agent answered {other:?} to a request"))),
        }
    }

    fn verdict(&self, request: &CredentialRequest, verdict: Verdict) {
        let message = ToAgent::Verdict {
            request: request.clone(),
            verdict,
        };
        match self.call_again_once(&message, &mut None) {
            Ok(FromAgent::Done { warnings }) => crate::logging::print_warnings(&warnings),
            Ok(other) => tracing::warn!("the agent answered {other:?} to the tool's verdict"),
            Err(e) => tracing::warn!("the agent did not take the tool's verdict: {e}"),
        }
    }

    fn forget(&self, what: Forget) -> Result<Forgotten, Refusal> {
        match self
            .call_again_once(&ToAgent::Forget { what }, &mut None)
            .map_err(Refusal::Failed)?
        {
            FromAgent::Forgot { result, warnings } => {
                crate::logging::print_warnings(&warnings);
                result
            }
            other => Err(Refusal::Failed(format!("the agent answered {other:?} to a forget"))),
        }
    }
}
