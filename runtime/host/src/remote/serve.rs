//! The agent's side of remote sessions: the table of open sessions, each session's socket,
//! and a remote request from arrival to answer: checked again as a front end checks it,
//! the session's policy (allow list, operations), its concurrency, the user's approval,
//! the broker (answering from the user's stored credentials, or running the provider for
//! the session), and what may cross back.

use super::policy::Decision;
use super::session::{Session, checked_request, ended, for_the_remote};
use crate::audit;
use crate::broker::{Broker, RemoteScope};
use credence::agent::endpoint::{Peer, bind_private, peer, socket_dir};
use credence::agent::wire::{FromAgent, PROTOCOL, SessionInfo, ToAgent, read_frame_within, write_frame};
use credence::request::{CredentialRequest, Refusal, shown_url};
use credence::resolver::Verdict;
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections one session may hold open at once; more wait to be accepted.
const MAX_SESSION_CONNECTIONS: usize = 128;

/// What a session needs of the agent that serves it.
pub trait SessionHost: Send + Sync + 'static {
    /// The broker for the config in force now (the policy is read from it).
    fn broker(&self) -> Result<Arc<Broker>, String>;
    /// A request arrived: the agent is not idle.
    fn touch(&self);
}

#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    /// Opens a session labelled `label`, reached at a new socket in `dir`, that lasts while
    /// `control` (the launcher's connection) stays open.
    pub fn open(
        self: &Arc<Self>,
        host: Arc<dyn SessionHost>,
        dir: &Path,
        label: &str,
        carrier: &str,
        can_prompt: bool,
        control: UnixStream,
    ) -> Result<Arc<Session>, String> {
        if !super::policy::valid_label(label) {
            return Err(format!(
                "the label {:?} is not 1-64 characters of a-z, A-Z, 0-9, '.', '_' and '-'",
                credence::terminal::neutralise(label)
            ));
        }
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| format!("no randomness for a session id: {e}"))?;
        let id = hex::encode(id);
        socket_dir(dir, "the sessions' directory")?;
        // A label names one open session: `approve` and `revoke` must not reach another.
        let label = {
            let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let taken = |l: &str| open.values().any(|s| !s.is_ended() && s.label == l);
            let mut candidate = label.to_owned();
            let mut n = 2;
            while taken(&candidate) {
                candidate = format!("{}-{n}", &label[..label.len().min(60)]);
                n += 1;
            }
            candidate
        };
        let label = label.as_str();
        let socket = dir.join(format!("{}.sock", &id[..16]));
        let listener = bind_private(&socket)?;
        let watch = control.try_clone().map_err(|e| e.to_string())?;
        let carrier: String = credence::terminal::neutralise_within(carrier, 200);
        let session = Arc::new(Session::new(
            id.clone(),
            label.to_owned(),
            carrier,
            socket,
            can_prompt.then_some(control),
        ));
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), session.clone());
        tracing::info!(label, session = %id, "remote session opened");
        let (sessions, s) = (self.clone(), session.clone());
        std::thread::Builder::new()
            .name("credence-session".into())
            .spawn(move || {
                serve(&host, &s, &listener, &watch);
                s.end();
                sessions.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&s.id);
                if let Ok(b) = host.broker() {
                    let dropped = b.end_session(&s.id);
                    tracing::info!(label = %s.label, session = %s.id, dropped, "remote session ended");
                }
            })
            .map_err(|e| format!("cannot start the session's thread: {e}"))?;
        Ok(session)
    }

    /// Whether any session is open (the agent does not exit idle while one is).
    pub fn any_open(&self) -> bool {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|s| !s.is_ended())
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let mut all: Vec<SessionInfo> = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|s| !s.is_ended())
            .map(|s| s.info())
            .collect();
        all.sort_by(|a, b| (a.started, &a.label).cmp(&(b.started, &b.label)));
        all
    }

    fn labelled(&self, label: Option<&str>) -> Vec<Arc<Session>> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|s| label.is_none_or(|l| s.label == l) && !s.is_ended())
            .cloned()
            .collect()
    }

    /// `credence remote revoke LABEL` / `deny-all`: the next request of each gets the
    /// session's end, and its socket is gone at once.
    pub fn end(&self, label: Option<&str>) -> usize {
        let ending = self.labelled(label);
        for s in &ending {
            s.end();
        }
        ending.len()
    }

    pub fn decide(&self, label: &str, host: Option<&str>, allow: bool) -> Result<usize, String> {
        let sessions = self.labelled(Some(label));
        if sessions.is_empty() {
            return Err(format!(
                "no open remote session is labelled {:?}; `credence remote list` shows them",
                credence::terminal::neutralise(label)
            ));
        }
        Ok(sessions.iter().map(|s| s.decide(host, allow)).sum())
    }
}

/// Accepts the session's connections until the launcher's connection closes or the session
/// is ended. Waits in `poll` on both, so an end is seen within its tick.
fn serve(host: &Arc<dyn SessionHost>, session: &Arc<Session>, listener: &UnixListener, control: &UnixStream) {
    let live = Arc::new(AtomicUsize::new(0));
    let me = credence::private_dir::current_uid();
    loop {
        if session.is_ended() {
            return;
        }
        // At the bound, connections wait in the listen queue until one closes.
        let full = live.load(Ordering::SeqCst) >= MAX_SESSION_CONNECTIONS;
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: if full { 0 } else { libc::POLLIN },
                revents: 0,
            },
            libc::pollfd {
                fd: control.as_raw_fd(),
                events: libc::POLLRDHUP,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfd entries.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, if full { 5 } else { 250 }) };
        if n < 0 {
            continue;
        }
        if fds[1].revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return;
        }
        if fds[0].revents & libc::POLLIN == 0 {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else { continue };
        let who = match peer(&stream) {
            Ok(p) => p,
            Err(_) => continue,
        };
        // The user's own processes (the launcher, ssh, a bind mount's container run as the
        // user) or root, who can read this agent's memory anyway; a session gives no more
        // than the user's own rights.
        if who.uid != me && who.uid != 0 {
            tracing::warn!(uid = who.uid, label = %session.label, "refused a connection to a session socket from another user");
            continue;
        }
        let counted = Live::count(&live);
        let (host, session) = (host.clone(), session.clone());
        let spawned = std::thread::Builder::new()
            .name("credence-remote".into())
            .stack_size(4 << 20)
            .spawn(move || {
                let _counted = counted;
                converse(&*host, &session, stream, who);
            });
        if spawned.is_err() {
            tracing::warn!("cannot start a thread for a session connection");
        }
    }
}

/// One counted connection, given back when its thread ends however it ends (or when the
/// thread could not start).
struct Live(Arc<AtomicUsize>);

impl Live {
    fn count(live: &Arc<AtomicUsize>) -> Live {
        live.fetch_add(1, Ordering::SeqCst);
        Live(live.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A remote's frames are requests: this is plenty, and bounds what a connection that sends
/// only a length can make this machine hold.
const MAX_SESSION_FRAME: usize = 64 << 10;

/// One connection of a session: a hello (any build of credence speaking this protocol)
/// and one request, answered with the welcome in one write. Only requests, verdicts and
/// forgets are taken.
fn converse(host: &dyn SessionHost, session: &Arc<Session>, mut stream: UnixStream, who: Peer) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(reading) = stream.try_clone() else { return };
    let mut reader = std::io::BufReader::with_capacity(16 << 10, reading);
    match read_frame_within::<ToAgent>(&mut reader, MAX_SESSION_FRAME) {
        Ok(ToAgent::Hello { protocol, .. }) if protocol == PROTOCOL => {}
        Ok(ToAgent::Hello { protocol, .. }) => {
            let _ = write_frame(
                &mut stream,
                &FromAgent::Refused {
                    message: format!(
                        "the user's machine speaks credence protocol {PROTOCOL}, this credence {protocol}; use the same credence version on both sides"
                    ),
                    restart: false,
                },
            );
            return;
        }
        _ => return,
    }
    // Neither the agent's build nor its pid is the remote's business.
    let mut welcome = Vec::new();
    let made = write_frame(
        &mut welcome,
        &FromAgent::Welcome {
            build: String::new(),
            pid: 0,
        },
    );
    if made.is_err() {
        return;
    }
    // The welcome goes with the first answer, in one write: the remote client sends its
    // first request with the hello, and over ssh forwarding a second small write waits for
    // the first's delayed acknowledgement (~40 ms).
    let _ = stream.set_read_timeout(None);
    let client = audit::Client {
        pid: who.pid,
        uid: who.uid,
        exe: None,
    };
    // One request per connection, and this side hangs up first: over OpenSSH's socket
    // forwarding, a connection the client closes leaves the channel's teardown and the next
    // channel's opening queued behind a delayed acknowledgement (measured: +41.9 ms per
    // request on loopback), while one this side closes right after its answer costs 0.7 ms.
    {
        let message: ToAgent = match read_frame_within(&mut reader, MAX_SESSION_FRAME) {
            Ok(m) => m,
            Err(_) => return,
        };
        host.touch();
        let reply = match message {
            ToAgent::Resolve { request, .. } => FromAgent::Answer {
                result: resolve(host, session, request, &client),
                warnings: Vec::new(),
            },
            ToAgent::Verdict { request, verdict } => {
                // Only for what the session may ask: a verdict for anything else is dropped.
                if verdict == Verdict::Rejected && !session.is_ended() {
                    if let (Ok(request), Ok(b)) = (checked_request(request), host.broker()) {
                        let rules = b.config().remote.for_label(&session.label);
                        if matches!(rules.decide(&request.url, &request.operation), Decision::Allowed { .. }) {
                            b.remote_rejected(&request, &scope(session, "allowed", None));
                        }
                    }
                }
                FromAgent::Done { warnings: Vec::new() }
            }
            ToAgent::Forget { .. } => FromAgent::Forgot {
                result: Err(Refusal::Denied {
                    provider: "remote".into(),
                    message: "a remote session cannot make the user's machine forget credentials; run `credence forget` there".into(),
                }),
                warnings: Vec::new(),
            },
            _ => return,
        };
        let mut out = std::mem::take(&mut welcome);
        if write_frame(&mut out, &reply).is_ok() && stream.write_all(&out).is_ok() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn scope(session: &Session, decision: &str, approval: Option<&str>) -> RemoteScope {
    RemoteScope {
        session: session.id.clone(),
        label: session.label.clone(),
        audit: audit::Remote {
            label: session.label.clone(),
            carrier: session.carrier.clone(),
            session: session.id.clone(),
            decision: decision.into(),
            approval: approval.map(str::to_owned),
        },
    }
}

fn resolve(
    host: &dyn SessionHost,
    session: &Arc<Session>,
    request: CredentialRequest,
    client: &audit::Client,
) -> Result<credence::request::Answer, Refusal> {
    let started = Instant::now();
    session.counted();
    let broker = host.broker().map_err(|_| {
        Refusal::Failed(
            "the user's machine cannot read its credence config; `credence providers` there says why".into(),
        )
    })?;
    let refuse = |request: &CredentialRequest, decision: &str, approval: Option<&str>, refusal: Refusal| {
        broker.audit_remote_refusal(
            request,
            scope(session, decision, approval).audit,
            &refusal,
            started.elapsed(),
        );
        Err(refusal)
    };
    let request = match checked_request(request.clone()) {
        Ok(r) => r,
        Err(e) => return refuse(&request, "malformed", None, Refusal::Failed(format!("refused: {e}"))),
    };
    if session.is_ended() {
        return refuse(&request, "ended", None, ended());
    }
    let rules = broker.config().remote.for_label(&session.label);
    let prefix = match rules.decide(&request.url, &request.operation) {
        Decision::Allowed { prefix } => prefix,
        // Exactly what a URL nothing serves gets: no prompt, no provider, nothing to tell
        // an allowed host from one that is not.
        Decision::NotAllowed => {
            return refuse(
                &request,
                "not-allowed",
                None,
                Refusal::NotServed(shown_url(&request.url)),
            );
        }
        Decision::NotReadOnly => {
            let refusal = Refusal::Denied {
                provider: "remote".into(),
                message: format!(
                    "remote session {} may only fetch; `{}` needs operations = \"any\" under [remote.label.{}] in config.toml on the user's machine",
                    session.label,
                    credence::terminal::neutralise(&request.operation),
                    session.label
                ),
            };
            return refuse(&request, "operation-refused", None, refusal);
        }
    };
    let _turn = session.turn(rules.concurrency)?;
    let approval = match session.approve(&rules, &request) {
        Ok(a) => a,
        Err((refusal, why)) => return refuse(&request, "allowed", Some(why), refusal),
    };
    if session.is_ended() {
        return refuse(&request, "ended", Some(approval), ended());
    }
    let scope = scope(session, "allowed", Some(approval));
    let answer = broker.get_remote(&request, session.terminal(&rules), Some(client.clone()), &scope);
    if session.is_ended() {
        // Ended while the provider ran: what it minted goes too, and nothing crosses.
        broker.end_session(&session.id);
        return Err(ended());
    }
    for_the_remote(answer, &rules, &prefix, &request.url)
}

/// Where sessions' sockets live: beside the agent's, in a 0700 directory of their own.
pub fn sessions_dir(agent_dir: &Path) -> PathBuf {
    agent_dir.join("s")
}
