//! A remote session in the agent: opened by `credence remote ...` on the user's machine,
//! reached through a socket of its own, and ended when the launcher's connection closes or
//! the user revokes it. Its identity is that socket: a connection that arrives on it is the
//! session, whatever its frames say, so a remote can neither name another session nor widen
//! its own. This module keeps what a session decides: approvals, the prompt budget, its
//! concurrency, and what crosses back to the remote.

use super::policy::{Approval, PROMPT_WINDOW, RemoteRules};
use credence::agent::wire::{FromAgent, SessionInfo, ToAgent, read_frame, write_frame};
use credence::request::{Answer, CredentialRequest, Refusal, shown_url};
use credence::terminal::{Terminal, neutralise};
use std::collections::{BTreeSet, VecDeque};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a request waits for the user's yes before it is told to ask again.
pub const APPROVAL_WAIT: Duration = Duration::from_secs(120);
/// Requests of one session waiting for a turn; more are answered `busy`.
const MAX_WAITING: usize = 256;

pub struct Session {
    pub id: String,
    pub label: String,
    pub carrier: String,
    /// Unix seconds.
    pub started: u64,
    pub socket: PathBuf,
    ended: AtomicBool,
    requests: AtomicU64,
    approvals: Mutex<Approvals>,
    changed: Condvar,
    prompts: Mutex<VecDeque<Instant>>,
    /// (running, waiting)
    turns: Mutex<(usize, usize)>,
    freed: Condvar,
    /// The launcher's connection, on which the session's questions are asked (when the
    /// launcher has a terminal); one question at a time.
    control: Mutex<Option<UnixStream>>,
    /// The same connection, outside the lock: `end` shuts it down while a question waits.
    /// `None` when the launcher has no terminal to ask on.
    control_handle: Option<UnixStream>,
}

#[derive(Default)]
struct Approvals {
    whole: bool,
    hosts: BTreeSet<String>,
    waiting: Vec<Waiting>,
    next: u64,
}

struct Waiting {
    n: u64,
    host: String,
    url: String,
    decision: Option<bool>,
}

/// A turn of the session's concurrency, given back on drop.
pub struct Turn<'a>(&'a Session);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.turns.lock().unwrap_or_else(|e| e.into_inner()).0 -= 1;
        self.0.freed.notify_one();
    }
}

impl Session {
    pub fn new(id: String, label: String, carrier: String, socket: PathBuf, control: Option<UnixStream>) -> Session {
        Session {
            id,
            label,
            carrier,
            started: crate::state_store::now_unix(),
            socket,
            ended: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            approvals: Mutex::default(),
            changed: Condvar::new(),
            prompts: Mutex::default(),
            turns: Mutex::new((0, 0)),
            freed: Condvar::new(),
            control_handle: control.as_ref().and_then(|c| c.try_clone().ok()),
            control: Mutex::new(control),
        }
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Ends the session: every waiting request is woken to its refusal, the socket goes.
    pub fn end(&self) {
        if self.ended.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = std::fs::remove_file(&self.socket);
        if let Some(c) = &self.control_handle {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        let _held = self.approvals.lock().unwrap_or_else(|e| e.into_inner());
        self.changed.notify_all();
        let _held = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        self.freed.notify_all();
    }

    pub fn counted(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A turn within the session's concurrency: at most `limit` of its requests are answered
    /// at once, however many connections it opens.
    pub fn turn(&self, limit: usize) -> Result<Turn<'_>, Refusal> {
        let mut t = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        if t.0 >= limit {
            if t.1 >= MAX_WAITING {
                return Err(Refusal::Busy(t.1));
            }
            t.1 += 1;
            while t.0 >= limit && !self.is_ended() {
                t = self.freed.wait(t).unwrap_or_else(|e| e.into_inner());
            }
            t.1 -= 1;
        }
        t.0 += 1;
        Ok(Turn(self))
    }

    /// Whether the prompt budget allows one more question now; counts it if so.
    fn may_ask(&self, rules: &RemoteRules) -> bool {
        let mut asked = self.prompts.lock().unwrap_or_else(|e| e.into_inner());
        while asked.front().is_some_and(|t| t.elapsed() >= PROMPT_WINDOW) {
            asked.pop_front();
        }
        if asked.len() >= rules.max_prompts as usize {
            return false;
        }
        asked.push_back(Instant::now());
        true
    }

    /// The user's yes for `request`, as the session's policy asks for it: already given,
    /// asked now on the launcher's terminal, or given with `credence remote approve` while
    /// the request waits. What the approval was (`not-needed`, `session`, `host`,
    /// `request`), or the refusal: a no is answered as a URL nothing serves.
    pub fn approve(
        self: &Arc<Self>,
        rules: &RemoteRules,
        request: &CredentialRequest,
    ) -> Result<&'static str, (Refusal, &'static str)> {
        let host = host_of(request);
        let granted = |a: &Approvals| match rules.approve {
            Approval::Never => Some("not-needed"),
            Approval::Once if a.whole => Some("session"),
            Approval::PerHost if a.whole => Some("session"),
            Approval::PerHost if a.hosts.contains(&host) => Some("host"),
            _ => None,
        };
        let n = {
            let mut a = self.approvals.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(kind) = granted(&a) {
                return Ok(kind);
            }
            if !self.may_ask(rules) {
                return Err((
                    Refusal::NeedsInteraction {
                        provider: "remote".into(),
                        message: format!(
                            "session {} asked the user's machine too often (at most {} questions in {} minutes); approve its host ahead there with `credence remote approve {} --host {}`, or wait",
                            self.label,
                            rules.max_prompts,
                            PROMPT_WINDOW.as_secs() / 60,
                            self.label,
                            neutralise(&host)
                        ),
                    },
                    "too-many",
                ));
            }
            a.next += 1;
            let n = a.next;
            a.waiting.push(Waiting {
                n,
                host: host.clone(),
                url: shown_url(&request.url),
                decision: None,
            });
            n
        };
        let scope = match rules.approve {
            Approval::Once => " for the rest of this session".to_owned(),
            Approval::PerHost => format!(" {} for the rest of this session", neutralise(&host)),
            _ => " this request".to_owned(),
        };
        let question = format!(
            "credence: remote session \"{}\" ({}) asks for a credential for {} ({} {}).\n  Allow{scope}? [y/N] ",
            self.label,
            neutralise(&self.carrier),
            credence::terminal::neutralise_within(&shown_url(&request.url), 300),
            request.protocol.name(),
            neutralise(&request.operation),
        );
        self.ask_launcher(n, question);
        let deadline = Instant::now() + APPROVAL_WAIT;
        let mut a = self.approvals.lock().unwrap_or_else(|e| e.into_inner());
        let decision = loop {
            let decided = a.waiting.iter().find(|w| w.n == n).and_then(|w| w.decision);
            if decided.is_some() || self.is_ended() || Instant::now() >= deadline {
                break decided;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            a = self.changed.wait_timeout(a, left).unwrap_or_else(|e| e.into_inner()).0;
        };
        a.waiting.retain(|w| w.n != n);
        match decision {
            Some(true) => Ok(match rules.approve {
                Approval::Once => {
                    a.whole = true;
                    "session"
                }
                Approval::PerHost => {
                    a.hosts.insert(host);
                    "host"
                }
                _ => "request",
            }),
            Some(false) => Err((Refusal::NotServed(shown_url(&request.url)), "denied")),
            None if self.is_ended() => Err((ended(), "ended")),
            None => Err((
                Refusal::NeedsInteraction {
                    provider: "remote".into(),
                    message: format!(
                        "nobody approved this request on the user's machine within {} s; approve it there with `credence remote approve {}`, then try again",
                        APPROVAL_WAIT.as_secs(),
                        self.label
                    ),
                },
                "timed-out",
            )),
        }
    }

    /// Asks the launcher's terminal on a thread of its own (so `credence remote approve`
    /// can answer meanwhile), or tells it how to approve when it has no terminal.
    fn ask_launcher(self: &Arc<Self>, n: u64, question: String) {
        let Some(control) = self
            .control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|c| c.try_clone().ok())
        else {
            return;
        };
        let me = self.clone();
        std::thread::spawn(move || {
            // One question at a time on the launcher's terminal; one decided meanwhile (by
            // `credence remote approve`, or its wait ran out) is not asked any more.
            let _turn = me.control.lock().unwrap_or_else(|e| e.into_inner());
            let still_waiting = me
                .approvals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .waiting
                .iter()
                .any(|w| w.n == n && w.decision.is_none());
            if !still_waiting || me.is_ended() {
                return;
            }
            let mut control = control;
            let _ = control.set_read_timeout(Some(APPROVAL_WAIT));
            let answer = exchange(
                &mut control,
                &FromAgent::Ask {
                    line: question,
                    secret: false,
                },
            );
            let _ = control.set_read_timeout(None);
            let yes =
                matches!(&answer, Ok(ToAgent::Asked { answer: Ok(Some(a)) }) if matches!(a.trim(), "y" | "Y" | "yes"));
            let mut a = me.approvals.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(w) = a.waiting.iter_mut().find(|w| w.n == n) {
                if w.decision.is_none() && answer.is_ok() {
                    w.decision = Some(yes);
                }
            }
            me.changed.notify_all();
        });
    }

    /// `credence remote approve|deny LABEL [--host HOST]`: decides what waits (for `host`
    /// only, if given); approving a host also approves it ahead. How many were decided.
    pub fn decide(&self, host: Option<&str>, allow: bool) -> usize {
        let mut a = self.approvals.lock().unwrap_or_else(|e| e.into_inner());
        let mut count = 0;
        for w in a.waiting.iter_mut() {
            if w.decision.is_none() && host.is_none_or(|h| h == w.host) {
                w.decision = Some(allow);
                count += 1;
            }
        }
        if let (Some(h), true) = (host, allow) {
            a.hosts.insert(h.to_owned());
        }
        self.changed.notify_all();
        count
    }

    pub fn info(&self) -> SessionInfo {
        let a = self.approvals.lock().unwrap_or_else(|e| e.into_inner());
        let mut approved: Vec<String> = a.hosts.iter().cloned().collect();
        if a.whole {
            approved.insert(0, "*".into());
        }
        SessionInfo {
            label: self.label.clone(),
            carrier: self.carrier.clone(),
            started: self.started,
            requests: self.requests.load(Ordering::Relaxed),
            approved,
            waiting: a
                .waiting
                .iter()
                .filter(|w| w.decision.is_none())
                .map(|w| w.url.clone())
                .collect(),
            socket: self.socket.display().to_string(),
        }
    }

    /// Where a provider's prompts for this session's requests go: the launcher's terminal,
    /// within the session's prompt budget, or nowhere (the provider gets needs-interaction).
    pub fn terminal(self: &Arc<Self>, rules: &RemoteRules) -> Box<dyn Terminal> {
        Box::new(LauncherTerminal {
            session: self.clone(),
            rules: rules.clone(),
            counted: false,
        })
    }
}

fn exchange(control: &mut UnixStream, message: &FromAgent) -> std::io::Result<ToAgent> {
    write_frame(control, message)?;
    read_frame(control)
}

fn host_of(request: &CredentialRequest) -> String {
    let url = &request.url;
    match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    }
}

pub fn ended() -> Refusal {
    Refusal::Denied {
        provider: "remote".into(),
        message: "this remote session was ended on the user's machine (`credence remote revoke`, or its `credence remote` command exited)".into(),
    }
}

struct LauncherTerminal {
    session: Arc<Session>,
    rules: RemoteRules,
    /// Whether this request's prompts were counted against the budget (once per request:
    /// a sign-in shows several lines).
    counted: bool,
}

impl LauncherTerminal {
    fn within_budget(&mut self) -> std::io::Result<()> {
        if !self.counted {
            if !self.session.may_ask(&self.rules) {
                return Err(std::io::Error::other("the session's prompt budget is spent"));
            }
            self.counted = true;
        }
        Ok(())
    }
}

impl Terminal for LauncherTerminal {
    fn ask(&mut self, line: &str, secret: bool) -> std::io::Result<Option<String>> {
        self.within_budget()?;
        let mut control = self.session.control.lock().unwrap_or_else(|e| e.into_inner());
        let c = control
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the launcher has no terminal"))?;
        match exchange(
            c,
            &FromAgent::Ask {
                line: line.to_owned(),
                secret,
            },
        )? {
            ToAgent::Asked { answer } => answer.map_err(std::io::Error::other),
            _ => Err(std::io::Error::other(
                "the launcher answered a prompt with something else",
            )),
        }
    }

    fn show(&mut self, line: &str) -> std::io::Result<()> {
        self.within_budget()?;
        let mut control = self.session.control.lock().unwrap_or_else(|e| e.into_inner());
        let c = control
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the launcher has no terminal"))?;
        match exchange(c, &FromAgent::Show { line: line.to_owned() })? {
            ToAgent::Shown { result } => result.map_err(std::io::Error::other),
            _ => Err(std::io::Error::other(
                "the launcher answered a message with something else",
            )),
        }
    }

    fn can_prompt(&self) -> bool {
        self.session.control_handle.is_some() && !self.session.is_ended()
    }

    fn gone(&self) -> bool {
        self.session.is_ended()
    }
}

/// What crosses back to the remote: the credential with its expiry clipped to the session's
/// maximum lifetime, and no instance name, provider message detail, path or setting of this
/// machine. `prefix` is the allow rule that matched: Go's GOAUTH answer names the prefix a
/// credential covers, and a session's never reaches past its rule.
pub fn for_the_remote(
    result: Result<Answer, Refusal>,
    rules: &RemoteRules,
    prefix: &str,
    url: &url::Url,
) -> Result<Answer, Refusal> {
    match result {
        Ok(mut answer) => {
            let latest = crate::state_store::now_unix().saturating_add(rules.max_lifetime.as_secs());
            let c = &mut answer.credential;
            c.expires_at = Some(c.expires_at.map_or(latest, |t| t.min(latest)));
            c.refresh_at = c.refresh_at.map(|t| t.min(latest));
            answer.provider = "remote".into();
            answer.serves = Some(match answer.serves {
                Some(s) if s.len() > prefix.len() => s,
                _ => prefix.to_owned(),
            });
            Ok(answer)
        }
        Err(Refusal::NotServed(u)) => Err(Refusal::NotServed(u)),
        Err(Refusal::NotFound { url, .. }) => Err(Refusal::NotFound {
            url,
            detail: String::new(),
        }),
        Err(Refusal::NeedsInteraction { message, .. }) => Err(Refusal::NeedsInteraction {
            provider: "remote".into(),
            message: format!(
                "{message} (sign in on the user's machine: `credence get {}` there)",
                shown_url(url)
            ),
        }),
        Err(Refusal::Denied { message, .. }) => Err(Refusal::Denied {
            provider: "remote".into(),
            message,
        }),
        Err(Refusal::Failed(_)) => Err(Refusal::Failed(
            "the credential provider on the user's machine failed; `credence audit` there says why".into(),
        )),
        Err(Refusal::Busy(n)) => Err(Refusal::Busy(n)),
    }
}

/// A request as the session may ask it: the URL checked again as the front end checks it
/// (a remote need not run our front end), only `WWW-Authenticate` of the server's
/// challenge, and nothing in the other fields that a terminal or a protocol would read as
/// a second line or an escape.
pub fn checked_request(mut request: CredentialRequest) -> Result<CredentialRequest, String> {
    request.url = credence::request::parse_request_url(request.url.as_str())?;
    // A retry skips every kept credential and runs the provider: for a session, only its
    // own tool's verdict (`remote_rejected`) makes one, never a flag the remote sets.
    request.is_retry = false;
    request
        .challenge_headers
        .retain(|(k, _)| k.eq_ignore_ascii_case("www-authenticate"));
    let clean = |what: &str, v: &str, max: usize| {
        if v.len() > max
            || v.chars()
                .any(|c| c.is_control() || credence::terminal::is_invisible_or_bidi(c))
        {
            Err(format!("the request's {what} is too long or holds control characters"))
        } else {
            Ok(())
        }
    };
    clean("operation", &request.operation, 64)?;
    if let Some(u) = &request.username_hint {
        clean("user name", u, 256)?;
    }
    for (_, v) in &request.challenge_headers {
        clean("challenge", v, 8 << 10)?;
    }
    Ok(request)
}
