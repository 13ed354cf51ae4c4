//! The [`Resolver`] of a `credence` inside a remote (a container, a codespace, an SSH host):
//! with `CREDENCE_AGENT_SOCK` set, every request goes to the user's own machine through the
//! session socket that `credence remote ...` opened there, and nothing is answered here.
//! Providers, their state and every prompt stay on the user's machine, so this side never
//! renders a prompt, never starts an agent and never falls back to running providers.
//!
//! The socket is checked before every connect: a socket (not a symlink), owned by this
//! user, with no group or world bits (sshd makes a forwarded socket 0600; the relay's lives
//! in a 0700 directory), and served by a process of this user.

use super::endpoint::peer;
use super::wire::{FromAgent, PROTOCOL, ToAgent, read_frame, write_frame};
use crate::request::{Answer, CredentialRequest, Refusal};
use crate::resolver::{Forget, Forgotten, Resolver, Verdict};
use crate::terminal::Terminal;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

type Conn = io::BufReader<UnixStream>;

/// How long a request may wait for the user's machine: the user may have to approve it
/// there, or sign in through a browser.
const REQUEST_DEADLINE: Duration = Duration::from_secs(35 * 60);
const CONNECT_WAIT: Duration = Duration::from_secs(5);

pub struct RemoteClient {
    socket: PathBuf,
}

impl RemoteClient {
    /// The client `CREDENCE_AGENT_SOCK` names, if it is set.
    pub fn from_env() -> Option<RemoteClient> {
        let socket = PathBuf::from(std::env::var_os("CREDENCE_AGENT_SOCK").filter(|v| !v.is_empty())?);
        Some(RemoteClient { socket })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> String {
        format!(
            "cannot reach your machine through CREDENCE_AGENT_SOCK={} ({e}); is the `credence remote ...` that opened this session still running there?",
            self.socket.display()
        )
    }

    /// A new connection with `message` sent on it: the hello and the message leave in one
    /// write, and the agent answers the welcome and the first answer in one too. Over ssh
    /// forwarding (TCP without `TCP_NODELAY`) a second small write waits for the first's
    /// delayed acknowledgement, about 40 ms; one write each way never does.
    fn open_with(&self, message: &ToAgent) -> Result<Conn, String> {
        check_socket(&self.socket).map_err(|e| self.unreachable(e))?;
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| self.unreachable(e))?;
        let who = peer(&stream).map_err(|e| self.unreachable(e))?;
        let me = crate::private_dir::current_uid();
        if who.uid != me {
            return Err(self.unreachable(format!(
                "the socket is served by uid {}, not by you (uid {me})",
                who.uid
            )));
        }
        stream
            .set_read_timeout(Some(CONNECT_WAIT))
            .map_err(|e| self.unreachable(e))?;
        let mut both = Vec::new();
        write_frame(
            &mut both,
            &ToAgent::Hello {
                protocol: PROTOCOL,
                build: String::new(),
                home: String::new(),
                takeover: false,
            },
        )
        .and_then(|()| write_frame(&mut both, message))
        .map_err(|e| self.unreachable(e))?;
        std::io::Write::write_all(&mut stream, &both).map_err(|e| self.unreachable(e))?;
        let mut conn = Conn::new(stream);
        match read_frame(&mut conn).map_err(|e| self.unreachable(e))? {
            FromAgent::Welcome { .. } => {}
            FromAgent::Refused { message, .. } => return Err(self.unreachable(message)),
            other => return Err(self.unreachable(format!("unexpected first frame {other:?}"))),
        }
        conn.get_ref()
            .set_read_timeout(Some(REQUEST_DEADLINE))
            .map_err(|e| self.unreachable(e))?;
        Ok(conn)
    }

    /// One request on a connection of its own: the user's machine answers and hangs up (over
    /// ssh forwarding a kept connection costs ~40 ms per request; see the agent's side).
    fn call(&self, message: &ToAgent) -> Result<FromAgent, String> {
        let mut conn = self.open_with(message)?;
        loop {
            match read_frame(&mut conn).map_err(|e| self.unreachable(e))? {
                // Prompts are the user's machine's business; a session never sends them here.
                FromAgent::Ask { .. } => write_frame(
                    conn.get_mut(),
                    &ToAgent::Asked {
                        answer: Err("a remote does not prompt".into()),
                    },
                )
                .map_err(|e| self.unreachable(e))?,
                FromAgent::Show { .. } => write_frame(
                    conn.get_mut(),
                    &ToAgent::Shown {
                        result: Err("a remote does not prompt".into()),
                    },
                )
                .map_err(|e| self.unreachable(e))?,
                reply => return Ok(reply),
            }
        }
    }
}

/// The session socket is this user's and nobody else's.
fn check_socket(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !meta.file_type().is_socket() {
        return Err("it is not a socket (a symlink?)".into());
    }
    let me = crate::private_dir::current_uid();
    if meta.uid() != me {
        return Err(format!(
            "the socket belongs to uid {}, not to you (uid {me})",
            meta.uid()
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "others may connect to the socket (mode {:o}); it must be 0600",
            meta.permissions().mode() & 0o777
        ));
    }
    Ok(())
}

impl Resolver for RemoteClient {
    fn resolve(&self, request: &CredentialRequest, _prompts: Box<dyn Terminal>) -> Result<Answer, Refusal> {
        let message = ToAgent::Resolve {
            request: request.clone(),
            can_prompt: false,
        };
        match self.call(&message).map_err(Refusal::Failed)? {
            FromAgent::Answer { result, .. } => result,
            other => Err(Refusal::Failed(format!("your machine answered {other:?} to a request"))),
        }
    }

    fn verdict(&self, request: &CredentialRequest, verdict: Verdict) {
        let message = ToAgent::Verdict {
            request: request.clone(),
            verdict,
        };
        if let Err(e) = self.call(&message) {
            tracing::warn!("your machine did not take the tool's verdict: {e}");
        }
    }

    fn forget(&self, what: Forget) -> Result<Forgotten, Refusal> {
        match self.call(&ToAgent::Forget { what }).map_err(Refusal::Failed)? {
            FromAgent::Forgot { result, .. } => result,
            other => Err(Refusal::Failed(format!("your machine answered {other:?} to a forget"))),
        }
    }
}
