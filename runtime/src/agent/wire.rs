//! The frames between a client and the agent: a 4-byte big-endian length, then one JSON
//! message, at most [`MAX_FRAME`] bytes. One request at a time per connection; the agent
//! may interleave `ask`/`show` frames (a provider's prompts, rendered by the client on its
//! terminal) before the answer.

use crate::request::{Answer, CredentialRequest, Refusal};
use crate::resolver::{Forget, Forgotten, Verdict};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::io::{Read, Write};

/// Bumped whenever a message changes shape. Messages are externally tagged
/// (`{"resolve":{...}}`): serde reads those in one pass, where an internally tagged enum
/// is buffered and read twice.
pub const PROTOCOL: u32 = 3;
pub const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToAgent {
    /// `takeover`: the client will start an agent of its own build if this one is another
    /// (a status query or a stop never replaces an agent).
    Hello {
        protocol: u32,
        build: String,
        home: String,
        takeover: bool,
    },
    Resolve {
        request: CredentialRequest,
        can_prompt: bool,
    },
    Verdict {
        request: CredentialRequest,
        verdict: Verdict,
    },
    Forget {
        what: Forget,
    },
    Status,
    Stop,
    /// The user's answer to an `ask`: `None` at end of input, `Err` when no terminal opened.
    Asked {
        answer: Result<Option<String>, String>,
    },
    Shown {
        result: Result<(), String>,
    },
    /// `credence remote ...` on the user's machine opens a session: the agent makes it a
    /// socket of its own, and the session lasts while this connection stays open. Questions
    /// about the session's requests come back on it (`ask`/`show`) when `can_prompt`.
    OpenSession {
        label: String,
        carrier: String,
        can_prompt: bool,
    },
    /// `credence remote list`.
    Sessions,
    /// `credence remote revoke LABEL` (`label`), or `deny-all` (`None`).
    EndSessions {
        label: Option<String>,
    },
    /// `credence remote approve|deny LABEL [--host HOST]`: decides what the session waits
    /// for (and, with a host, approves it ahead).
    Decide {
        label: String,
        host: Option<String>,
        allow: bool,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FromAgent {
    Welcome {
        build: String,
        pid: u32,
    },
    /// The handshake failed. `restart`: the agent is another build and is on its way out.
    Refused {
        message: String,
        restart: bool,
    },
    Ask {
        line: String,
        secret: bool,
    },
    Show {
        line: String,
    },
    /// The answer, and the warnings logged while it was made (printed by the client).
    Answer {
        result: Result<Answer, Refusal>,
        warnings: Vec<String>,
    },
    Done {
        warnings: Vec<String>,
    },
    Forgot {
        result: Result<Forgotten, Refusal>,
        warnings: Vec<String>,
    },
    Status {
        status: AgentStatus,
    },
    Stopping,
    /// The session's socket and its label (made unique among open sessions).
    SessionOpened {
        socket: String,
        label: String,
    },
    Sessions {
        sessions: Vec<SessionInfo>,
    },
    Ended {
        count: usize,
    },
    Decided {
        count: usize,
    },
}

/// A remote session as `credence remote list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionInfo {
    pub label: String,
    pub carrier: String,
    /// Unix seconds.
    pub started: u64,
    pub requests: u64,
    /// Hosts approved (or `*` for the whole session).
    pub approved: Vec<String>,
    /// Requests waiting for the user's yes.
    pub waiting: Vec<String>,
    pub socket: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentStatus {
    pub pid: u32,
    pub build: String,
    pub uptime_secs: u64,
    pub providers_loaded: usize,
    pub cache_entries: usize,
    pub requests_served: u64,
    pub socket: String,
    pub idle_exit_secs: u64,
}

pub fn write_frame(w: &mut impl Write, message: &impl Serialize) -> std::io::Result<()> {
    let body = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "a frame of {} bytes is over the limit",
            body.len()
        )));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)?;
    w.flush()
}

pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> std::io::Result<T> {
    read_frame_within(r, MAX_FRAME)
}

/// [`read_frame`] with a lower bound of the caller's (a remote session's requests).
pub fn read_frame_within<T: DeserializeOwned>(r: &mut impl Read, max: usize) -> std::io::Result<T> {
    let max = max.min(MAX_FRAME);
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is over the {max}-byte limit"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let parsed = serde_json::from_slice(&body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e));
    zeroize::Zeroize::zeroize(&mut body);
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_or_truncated_ones_are_errors_not_panics() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &ToAgent::Status).unwrap();
        let back: ToAgent = read_frame(&mut std::io::Cursor::new(&buf)).unwrap();
        assert!(matches!(back, ToAgent::Status));
        let mut huge = (u32::MAX).to_be_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert!(read_frame::<ToAgent>(&mut std::io::Cursor::new(huge)).is_err());
        assert!(read_frame::<ToAgent>(&mut std::io::Cursor::new(&buf[..buf.len() - 1])).is_err());
        let mut junk = 3u32.to_be_bytes().to_vec();
        junk.extend_from_slice(b"{x}");
        assert!(read_frame::<ToAgent>(&mut std::io::Cursor::new(junk)).is_err());
    }
}
