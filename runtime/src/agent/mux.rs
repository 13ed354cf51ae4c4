//! Many socket connections over one byte stream: how `credence remote exec` reaches a
//! remote through a command's stdin and stdout (`docker exec -i`, `kubectl exec -i`,
//! `gh codespace ssh`, `wsl.exe`), with no port, bind mount or sshd forwarding.
//!
//! Inside the remote, `credence relay` accepts the remote's `credence` clients on a private
//! socket and announces each as a stream; on the user's machine the launcher connects each
//! stream to the session's socket in the agent. Both ends are byte pipes: the agent's own
//! frames run inside, and the agent knows the session by the socket the bytes arrive on,
//! so nothing in a stream can name or widen a session.
//!
//! On the carrier, after the relay's greeting line [`GREETING`], frames are: stream id
//! (u32, big-endian), kind (u8: 0 open, 1 data, 2 close), length (u32), bytes (data only,
//! at most [`MAX_CHUNK`]).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};

/// What the relay writes first, so the launcher knows the command started a relay (and
/// not a shell's banner, or an old relay).
pub const GREETING: &[u8] = b"credence-relay 1\n";
pub const MAX_CHUNK: usize = 64 << 10;
/// Streams open at once; more connections wait to be accepted.
pub const MAX_STREAMS: usize = 64;

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Open(u32),
    Data(u32, Vec<u8>),
    Close(u32),
}

pub fn write_frame(w: &mut impl Write, frame: &Frame) -> io::Result<()> {
    let (id, kind, body): (u32, u8, &[u8]) = match frame {
        Frame::Open(id) => (*id, 0, &[]),
        Frame::Data(id, bytes) => (*id, 1, bytes),
        Frame::Close(id) => (*id, 2, &[]),
    };
    let mut out = Vec::with_capacity(9 + body.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    w.write_all(&out)?;
    w.flush()
}

/// The next frame, or `None` when the carrier closed between frames.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 9];
    match r.read_exact(&mut head[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..])?;
    let id = u32::from_be_bytes(head[..4].try_into().expect("4 bytes"));
    let len = u32::from_be_bytes(head[5..].try_into().expect("4 bytes")) as usize;
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    match head[4] {
        0 | 2 if len != 0 => Err(bad(format!("an open or close frame with {len} bytes"))),
        0 => Ok(Some(Frame::Open(id))),
        2 => Ok(Some(Frame::Close(id))),
        1 if len > MAX_CHUNK => Err(bad(format!(
            "a chunk of {len} bytes is over the {MAX_CHUNK}-byte limit"
        ))),
        1 => {
            let mut body = vec![0u8; len];
            r.read_exact(&mut body)?;
            Ok(Some(Frame::Data(id, body)))
        }
        k => Err(bad(format!("unknown frame kind {k}"))),
    }
}

type Output = Arc<Mutex<Box<dyn Write + Send>>>;
type Streams = Arc<Mutex<HashMap<u32, UnixStream>>>;

/// Copies what `stream` sends into data frames for `id` until it closes, then says so.
fn pump(id: u32, mut stream: UnixStream, out: Output, streams: Streams) {
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let sent = write_frame(
            &mut *out.lock().unwrap_or_else(|e| e.into_inner()),
            &Frame::Data(id, buf[..n].to_vec()),
        );
        if sent.is_err() {
            break;
        }
    }
    if streams.lock().unwrap_or_else(|e| e.into_inner()).remove(&id).is_some() {
        let _ = write_frame(&mut *out.lock().unwrap_or_else(|e| e.into_inner()), &Frame::Close(id));
    }
}

/// Delivers what the carrier sends to the streams it names, until the carrier closes;
/// `on_open` makes the local end of a stream the other side opened (the launcher's side).
fn deliver(
    input: &mut impl Read,
    out: &Output,
    streams: &Streams,
    mut on_open: impl FnMut(u32) -> Option<UnixStream>,
) -> io::Result<()> {
    while let Some(frame) = read_frame(input)? {
        match frame {
            Frame::Open(id) => {
                // The other side may be hostile: a stream id in use, or more streams than
                // the bound, is closed at once.
                let refused = {
                    let open = streams.lock().unwrap_or_else(|e| e.into_inner());
                    open.contains_key(&id) || open.len() >= MAX_STREAMS
                };
                let stream = if refused { None } else { on_open(id) };
                let Some(stream) = stream else {
                    let _ = write_frame(&mut *out.lock().unwrap_or_else(|e| e.into_inner()), &Frame::Close(id));
                    continue;
                };
                let reader = stream.try_clone()?;
                streams.lock().unwrap_or_else(|e| e.into_inner()).insert(id, stream);
                let (out, streams) = (out.clone(), streams.clone());
                std::thread::spawn(move || pump(id, reader, out, streams));
            }
            Frame::Data(id, bytes) => {
                let stream = streams
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&id)
                    .and_then(|s| s.try_clone().ok());
                if let Some(mut s) = stream {
                    if s.write_all(&bytes).is_err() {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                }
            }
            Frame::Close(id) => {
                if let Some(s) = streams.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
            }
        }
    }
    Ok(())
}

/// The launcher's side: reads the relay's greeting from `input`, then connects every stream
/// the relay opens with `connect` (the session's socket) until the carrier closes.
pub fn carry(
    mut input: impl Read,
    output: impl Write + Send + 'static,
    connect: impl Fn() -> io::Result<UnixStream>,
) -> Result<(), String> {
    let mut greeting = vec![0u8; GREETING.len()];
    if let Err(e) = input.read_exact(&mut greeting) {
        return Err(format!("the command ended before `credence relay` greeted ({e})"));
    }
    if greeting != GREETING {
        return Err(format!(
            "the command wrote {:?} instead of `credence relay`'s greeting; run `credence relay` as the command's last word, with nothing else writing to its stdout",
            crate::terminal::neutralise(&String::from_utf8_lossy(&greeting))
        ));
    }
    let out: Output = Arc::new(Mutex::new(Box::new(output)));
    let streams: Streams = Arc::default();
    let result = deliver(&mut input, &out, &streams, |_| connect().ok());
    for (_, s) in streams.lock().unwrap_or_else(|e| e.into_inner()).drain() {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    result.map_err(|e| format!("the carrier broke: {e}"))
}

/// The relay's side: greets on `output`, then offers every connection `listener` accepts
/// (and `admit` lets in) as a stream, until the carrier's `input` closes.
pub fn relay(
    listener: UnixListener,
    mut input: impl Read,
    mut output: impl Write + Send + 'static,
    admit: impl Fn(&UnixStream) -> bool + Send + 'static,
) -> io::Result<()> {
    output.write_all(GREETING)?;
    output.flush()?;
    let out: Output = Arc::new(Mutex::new(Box::new(output)));
    let streams: Streams = Arc::default();
    {
        let (out, streams) = (out.clone(), streams.clone());
        std::thread::spawn(move || {
            let mut next: u32 = 0;
            loop {
                // At the bound, connections wait in the listen queue until a stream closes.
                while streams.lock().unwrap_or_else(|e| e.into_inner()).len() >= MAX_STREAMS {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                let Ok((stream, _)) = listener.accept() else { continue };
                if !admit(&stream) {
                    continue;
                }
                next = next.wrapping_add(1);
                let id = next;
                let Ok(reader) = stream.try_clone() else { continue };
                streams.lock().unwrap_or_else(|e| e.into_inner()).insert(id, stream);
                if write_frame(&mut *out.lock().unwrap_or_else(|e| e.into_inner()), &Frame::Open(id)).is_err() {
                    return;
                }
                let (out, streams) = (out.clone(), streams.clone());
                std::thread::spawn(move || pump(id, reader, out, streams));
            }
        });
    }
    // Only the launcher's side opens streams toward the agent: an open from it is refused.
    deliver(&mut input, &out, &streams, |_| None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_errors() {
        let mut buf = Vec::new();
        for f in [Frame::Open(7), Frame::Data(7, b"hello".to_vec()), Frame::Close(7)] {
            write_frame(&mut buf, &f).unwrap();
        }
        let mut r = io::Cursor::new(buf);
        assert_eq!(read_frame(&mut r).unwrap(), Some(Frame::Open(7)));
        assert_eq!(read_frame(&mut r).unwrap(), Some(Frame::Data(7, b"hello".to_vec())));
        assert_eq!(read_frame(&mut r).unwrap(), Some(Frame::Close(7)));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        let mut huge = vec![0, 0, 0, 1, 1];
        huge.extend_from_slice(&(u32::MAX).to_be_bytes());
        assert!(read_frame(&mut io::Cursor::new(huge)).is_err());
        assert!(read_frame(&mut io::Cursor::new(vec![0, 0, 0, 1, 9, 0, 0, 0, 0])).is_err());
        assert!(read_frame(&mut io::Cursor::new(vec![0, 0, 0, 1, 1, 0, 0, 0, 5, b'x'])).is_err());
    }

    #[test]
    fn the_launcher_refuses_a_command_that_is_not_a_relay() {
        let err = carry(io::Cursor::new(b"Welcome to Ubuntu\n".to_vec()), io::sink(), || {
            Err(io::Error::other("unused"))
        })
        .unwrap_err();
        assert!(err.contains("credence relay"), "{err}");
    }

    /// A client of the relay reaches a socket on the launcher's side, both ways, through
    /// one pair of pipes.
    #[test]
    fn a_connection_to_the_relay_reaches_the_launchers_socket() {
        let dir = tempfile::tempdir().unwrap();
        let relay_sock = dir.path().join("relay.sock");
        let agent_sock = dir.path().join("agent.sock");
        let agent = UnixListener::bind(&agent_sock).unwrap();
        std::thread::spawn(move || {
            for s in agent.incoming() {
                let mut s = s.unwrap();
                let mut b = [0u8; 4];
                s.read_exact(&mut b).unwrap();
                b.reverse();
                s.write_all(&b).unwrap();
            }
        });
        let (to_relay_r, to_relay_w) = std::io::pipe().unwrap();
        let (from_relay_r, from_relay_w) = std::io::pipe().unwrap();
        let listener = UnixListener::bind(&relay_sock).unwrap();
        std::thread::spawn(move || relay(listener, to_relay_r, from_relay_w, |_| true));
        std::thread::spawn(move || carry(from_relay_r, to_relay_w, || UnixStream::connect(&agent_sock)));
        for _ in 0..3 {
            let mut c = UnixStream::connect(&relay_sock).unwrap();
            c.write_all(b"abcd").unwrap();
            let mut back = [0u8; 4];
            c.read_exact(&mut back).unwrap();
            assert_eq!(&back, b"dcba");
        }
    }
}
