//! `credence remote ...`: the commands on the user's machine that open a remote session
//! and carry it (ssh socket forwarding, a command's stdio, a socket to bind-mount), and the
//! kill switch (`list`, `revoke`, `deny-all`, `approve`, `deny`). A session lasts while the
//! command that opened it runs; the remote can never open one.

use credence::agent::client::AgentClient;
use credence::agent::wire::{FromAgent, ToAgent, read_frame, write_frame};
use credence::paths::Paths;
use credence::terminal::{ControllingTerminal, Terminal, neutralise};
use std::ffi::OsString;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

#[derive(clap::Subcommand)]
pub enum RemoteCommand {
    /// Run ssh to DEST with a session forwarded to it: the remote's `credence` reaches this
    /// machine through a socket ssh forwards (`-R`), found through CREDENCE_AGENT_SOCK.
    /// Approve its requests here with `credence remote approve LABEL`.
    Ssh {
        /// The session's name in policy (`[remote.label.NAME]`), prompts and the audit trail.
        #[arg(long)]
        label: Option<String>,
        /// Where the socket appears on the remote (default: /tmp/credence-<random>.sock).
        #[arg(long, value_name = "PATH")]
        remote_socket: Option<String>,
        /// Where to connect, as ssh takes it.
        dest: String,
        /// More ssh arguments and the remote command, as ssh takes them after DEST.
        #[arg(last = true)]
        ssh_args: Vec<String>,
    },
    /// Run CMD with a session carried over its stdin and stdout: CMD runs `credence relay`
    /// inside the remote (`docker exec -i C credence relay`, `kubectl exec -i ...`).
    Exec {
        #[arg(long)]
        label: Option<String>,
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Open a session and print its socket, to bind-mount into a container (Linux); the
    /// session lasts until this command is stopped.
    Socket {
        #[arg(long)]
        label: Option<String>,
    },
    /// The open sessions: label, carrier, since when, requests, approvals, what waits.
    List {
        #[arg(long)]
        json: bool,
    },
    /// End the sessions labelled LABEL: their next request is refused, their socket goes.
    Revoke { label: String },
    /// End every session.
    DenyAll,
    /// Approve what the sessions labelled LABEL wait for (only for HOST, with --host; a
    /// host given is approved ahead too).
    Approve {
        label: String,
        #[arg(long)]
        host: Option<String>,
    },
    /// Deny what the sessions labelled LABEL wait for: it gets the answer of a URL nothing
    /// serves.
    Deny {
        label: String,
        #[arg(long)]
        host: Option<String>,
    },
}

pub fn run(command: RemoteCommand) -> Result<ExitCode, String> {
    match command {
        RemoteCommand::Ssh {
            label,
            remote_socket,
            dest,
            ssh_args,
        } => ssh(label, remote_socket, &dest, &ssh_args),
        RemoteCommand::Exec { label, command } => exec(label, &command),
        RemoteCommand::Socket { label } => socket(label),
        RemoteCommand::List { json } => list(json),
        RemoteCommand::Revoke { label } => {
            let n = agent()?.end_sessions(Some(&label))?;
            eprintln!("credence: ended {n} session(s) labelled {label:?}");
            Ok(ExitCode::from(if n == 0 { 1 } else { 0 }))
        }
        RemoteCommand::DenyAll => {
            let n = agent()?.end_sessions(None)?;
            eprintln!("credence: ended {n} remote session(s)");
            Ok(ExitCode::SUCCESS)
        }
        RemoteCommand::Approve { label, host } => decide(&label, host.as_deref(), true),
        RemoteCommand::Deny { label, host } => decide(&label, host.as_deref(), false),
    }
}

fn agent() -> Result<AgentClient, String> {
    let paths = Paths::from_env()?;
    AgentClient::connect(&paths, true).map_err(|u| {
        format!(
            "remote sessions are served by the agent, which cannot run: {}; `credence agent status` says more",
            u.reason
        )
    })
}

fn decide(label: &str, host: Option<&str>, allow: bool) -> Result<ExitCode, String> {
    let n = agent()?.decide(label, host, allow)?;
    eprintln!(
        "credence: {} {n} waiting request(s) of session {label:?}{}",
        if allow { "approved" } else { "denied" },
        match (host, allow) {
            (Some(h), true) => format!("; {h} is approved for the rest of the session"),
            _ => String::new(),
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn list(json: bool) -> Result<ExitCode, String> {
    let sessions = agent()?.sessions()?;
    if json {
        println!("{}", serde_json::to_string(&sessions).map_err(|e| e.to_string())?);
        return Ok(ExitCode::SUCCESS);
    }
    if sessions.is_empty() {
        println!("no remote sessions; `credence remote ssh|exec|socket` opens one");
    }
    for s in sessions {
        let since = jiff::Timestamp::from_second(s.started as i64)
            .map(|t| t.to_string())
            .unwrap_or_default();
        println!(
            "{}\t{}\tsince {since}\t{} request(s)\tapproved: {}\tsocket {}",
            s.label,
            s.carrier,
            s.requests,
            if s.approved.is_empty() {
                "nothing".into()
            } else {
                s.approved.join(", ")
            },
            s.socket
        );
        for w in s.waiting {
            println!("  waiting: {w} (`credence remote approve {}` or `deny`)", s.label);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A label as policy can name it: the given one, checked, or one made from the carrier.
fn label_of(given: Option<String>, fallback: &str) -> Result<String, String> {
    match given {
        Some(l) if super::policy::valid_label(&l) => Ok(l),
        Some(l) => Err(format!(
            "--label {:?} must be 1-64 characters of a-z, A-Z, 0-9, '.', '_' and '-'",
            neutralise(&l)
        )),
        None => {
            let made: String = fallback
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        c
                    } else {
                        '-'
                    }
                })
                .take(64)
                .collect();
            Ok(if made.is_empty() { "remote".into() } else { made })
        }
    }
}

/// A session opened in the agent and the thread that answers its questions on this
/// terminal; it ends when this process exits (its connection closes).
struct Opened {
    label: String,
    socket: PathBuf,
    _control: std::thread::JoinHandle<()>,
}

fn open_session(label: &str, carrier: &str, can_prompt: bool) -> Result<Opened, String> {
    let client = agent()?;
    let (conn, socket, label) = client.open_session(label, carrier, can_prompt)?;
    let label_shown = label.clone();
    let control = std::thread::spawn(move || answer_questions(conn, &label_shown));
    Ok(Opened {
        label,
        socket,
        _control: control,
    })
}

/// The agent's questions for this session (approvals, a provider's sign-in prompts), asked
/// on this machine's terminal.
fn answer_questions(mut conn: BufReader<UnixStream>, label: &str) {
    let mut terminal = ControllingTerminal;
    loop {
        let reply = match read_frame::<FromAgent>(&mut conn) {
            Ok(FromAgent::Ask { line, secret }) => ToAgent::Asked {
                answer: terminal.ask(&line, secret).map_err(|e| e.to_string()),
            },
            Ok(FromAgent::Show { line }) => ToAgent::Shown {
                result: terminal.show(&line).map_err(|e| e.to_string()),
            },
            Ok(_) => continue,
            Err(_) => {
                eprintln!("credence: remote session {label:?} ended (revoked here, or the agent stopped)");
                return;
            }
        };
        if write_frame(conn.get_mut(), &reply).is_err() {
            return;
        }
    }
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness: {e}"))?;
    Ok(hex::encode(b))
}

/// The carrier dies with this launcher: a killed launcher ends its session in the agent,
/// and an ssh left behind would keep forwarding a socket that leads nowhere.
fn ends_with_us(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
}

fn exit_code_of(status: std::process::ExitStatus) -> ExitCode {
    match status.code() {
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::from(1),
    }
}

fn ssh(
    label: Option<String>,
    remote_socket: Option<String>,
    dest: &str,
    ssh_args: &[String],
) -> Result<ExitCode, String> {
    let label = label_of(label, dest.rsplit('@').next().unwrap_or(dest))?;
    let remote = match remote_socket {
        Some(p) => p,
        None => format!("/tmp/credence-{}.sock", random_hex(8)?),
    };
    if remote.is_empty() || remote.contains([':', ' ', '\'', '"', '\n']) || !remote.starts_with('/') {
        return Err(format!(
            "--remote-socket {remote:?} must be an absolute path without ':', quotes or spaces"
        ));
    }
    // ssh holds this terminal for the remote session, so questions are not asked on it:
    // approve from another terminal with `credence remote approve`.
    let opened = open_session(&label, &format!("ssh {dest}"), false)?;
    let (options, command) = split_ssh_args(ssh_args);
    let mut ssh = Command::new(std::env::var_os("CREDENCE_SSH").unwrap_or_else(|| "ssh".into()));
    ssh.arg("-o")
        .arg("ExitOnForwardFailure=yes")
        .arg("-o")
        .arg("StreamLocalBindUnlink=yes")
        .arg("-o")
        .arg(format!("SetEnv=CREDENCE_AGENT_SOCK={remote}"))
        .arg("-R")
        .arg(format!("{remote}:{}", opened.socket.display()))
        .arg(dest)
        .args(options);
    if !command.is_empty() {
        // sshd passes SetEnv only where AcceptEnv allows it; a POSIX shell takes this.
        ssh.arg(format!("export CREDENCE_AGENT_SOCK={remote};")).args(command);
    }
    eprintln!(
        "credence: remote session {:?} over ssh to {dest}; in the remote, credence finds this machine with\n  export CREDENCE_AGENT_SOCK={remote}\n  (ssh config: RemoteForward {remote} {}); approve its requests with `credence remote approve {}`",
        opened.label,
        opened.socket.display(),
        opened.label
    );
    ends_with_us(&mut ssh);
    let status = ssh.status().map_err(|e| format!("cannot run ssh: {e}"))?;
    Ok(exit_code_of(status))
}

/// ssh's own options after DEST, and the remote command after them: the command starts at
/// the first word that is not an option or an option's value (ssh's own rule).
fn split_ssh_args(args: &[String]) -> (&[String], &[String]) {
    const TAKES_VALUE: &str = "BbcDEeFIiJLlmOoPpQRSWw";
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            return (&args[..i], &args[i + 1..]);
        }
        if !a.starts_with('-') || a.len() < 2 {
            break;
        }
        let flags: Vec<char> = a[1..].chars().collect();
        let mut takes_next = false;
        for (j, c) in flags.iter().enumerate() {
            if TAKES_VALUE.contains(*c) {
                takes_next = j + 1 == flags.len();
                break;
            }
        }
        i += if takes_next { 2 } else { 1 };
    }
    let i = i.min(args.len());
    (&args[..i], &args[i..])
}

fn exec(label: Option<String>, command: &[OsString]) -> Result<ExitCode, String> {
    let program = Path::new(&command[0])
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let label = label_of(label, &program)?;
    let shown: Vec<String> = command.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let opened = open_session(
        &label,
        &format!("exec {}", shown.join(" ")),
        ControllingTerminal.can_prompt(),
    )?;
    eprintln!(
        "credence: remote session {:?} over `{}`; approve its requests with `credence remote approve {}`",
        opened.label,
        neutralise(&shown.join(" ")),
        opened.label
    );
    let mut carrier = Command::new(&command[0]);
    ends_with_us(&mut carrier);
    let mut child = carrier
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", command[0].to_string_lossy()))?;
    // What the remote writes reaches this terminal, where the session's questions are
    // asked: line by line, neutralised and marked as the remote's, so it cannot paint a
    // question of its own.
    let remote_stderr = child.stderr.take().expect("piped");
    let prefix = format!("[remote {}] ", opened.label);
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = BufReader::new(remote_stderr);
        let mut line = Vec::new();
        while lines.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line);
            eprintln!(
                "{prefix}{}",
                credence::terminal::neutralise_within(text.trim_end_matches(['\n', '\r']), 1000)
            );
            line.clear();
        }
    });
    let to_remote = child.stdin.take().expect("piped");
    let from_remote = child.stdout.take().expect("piped");
    let session_socket = opened.socket.clone();
    let carried = std::thread::spawn(move || {
        credence::agent::mux::carry(from_remote, to_remote, || UnixStream::connect(&session_socket))
    });
    let status = child.wait().map_err(|e| e.to_string())?;
    if let Ok(Err(e)) = carried.join() {
        eprintln!("credence: {e}");
    }
    Ok(exit_code_of(status))
}

fn socket(label: Option<String>) -> Result<ExitCode, String> {
    let label = label_of(label, "socket")?;
    let opened = open_session(&label, "socket", ControllingTerminal.can_prompt())?;
    println!("{}", opened.socket.display());
    eprintln!(
        "credence: remote session {:?} listens at the socket above until this command stops; mount it into the container and set CREDENCE_AGENT_SOCK to it there",
        opened.label
    );
    opened._control.join().ok();
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(args: &[&str]) -> (Vec<String>, Vec<String>) {
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (o, c) = split_ssh_args(&owned);
        (o.to_vec(), c.to_vec())
    }

    #[test]
    fn ssh_options_end_where_the_remote_command_starts() {
        assert_eq!(
            split(&["-p", "2222", "-i", "key", "-tt", "git", "clone", "x"]),
            (
                vec!["-p".into(), "2222".into(), "-i".into(), "key".into(), "-tt".into()],
                vec!["git".into(), "clone".into(), "x".into()]
            )
        );
        assert_eq!(split(&["-oBatchMode=yes", "ls"]).1, vec!["ls".to_string()]);
        assert_eq!(split(&["-vp", "22", "ls"]).1, vec!["ls".to_string()]);
        assert_eq!(split(&["-p", "22"]).1, Vec::<String>::new());
        assert_eq!(split(&["-p", "22", "--", "-weird"]).1, vec!["-weird".to_string()]);
    }

    #[test]
    fn labels_are_checked_or_made_from_the_carrier() {
        assert_eq!(label_of(None, "dev box").unwrap(), "dev-box");
        assert!(label_of(Some("a\u{1b}[2J".into()), "x").is_err());
        assert_eq!(label_of(Some("acme-dev".into()), "x").unwrap(), "acme-dev");
    }
}
