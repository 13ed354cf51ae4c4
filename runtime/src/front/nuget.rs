//! NuGet's credential plugins.
//!
//! **v2** (`nuget-plugin-credence -Plugin`, NuGet 6.13+ finds `nuget-plugin-*` on `PATH`):
//! JSON messages, one per line, both directions. credence sends its own handshake and
//! answers NuGet's, then `MonitorNuGetProcessExit`, `Initialize`, `GetOperationClaims`
//! (`Authentication` for the source-agnostic query), `SetLogLevel`, `SetCredentials`,
//! `GetAuthenticationCredentials`, `Cancel` and `Close`. While a credential is being fetched
//! (a device-code login can take minutes) it sends `Progress` so NuGet's 30 s request timer
//! restarts, and provider messages (`prompt.show`) reach the user as `Log` requests, which
//! NuGet prints even where a build tool hides the plugin's stderr. Exits on `Close`, when
//! NuGet's process exits, or after an idle period.
//!
//! **v1** (`CredentialProviderCredence.exe -uri … [-isRetry] [-nonInteractive]`, nuget.exe):
//! one JSON object on stdout, exit 0 (credential), 1 (not applicable), 2 (failure).

use super::{MAX_INPUT, Tool, read_line_bounded, request};
use crate::request::{CredentialRequest, Protocol, Refusal};
use crate::resolver::Resolver;
use crate::terminal::Terminal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Deserialize, Serialize, Debug, Clone)]
#[serde(rename_all = "PascalCase")]
pub struct Message {
    pub request_id: String,
    #[serde(rename = "Type")]
    pub kind: String,
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

const METHODS: &[&str] = &[
    "None",
    "Close",
    "CopyFilesInPackage",
    "CopyNupkgFile",
    "GetCredentials",
    "GetFilesInPackage",
    "GetOperationClaims",
    "GetPackageHash",
    "GetPackageVersions",
    "GetServiceIndex",
    "Handshake",
    "Initialize",
    "Log",
    "MonitorNuGetProcessExit",
    "PrefetchPackage",
    "SetCredentials",
    "SetLogLevel",
    "GetAuthenticationCredentials",
];

const OUR_VERSION: (u64, u64, u64) = (2, 0, 0);
const OUR_MINIMUM: (u64, u64, u64) = (2, 0, 0);

fn version(v: Option<&Value>) -> Option<(u64, u64, u64)> {
    let mut parts = v?.as_str()?.split('.').map(|p| p.parse::<u64>().ok());
    Some((
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
        parts.next().flatten().unwrap_or(0),
    ))
}

fn show((a, b, c): (u64, u64, u64)) -> String {
    format!("{a}.{b}.{c}")
}

/// The responder's side of NuGet's symmetric handshake.
pub fn negotiate(payload: Option<&Value>) -> Value {
    let peer = payload.and_then(|p| version(p.get("ProtocolVersion")));
    let peer_min = payload.and_then(|p| version(p.get("MinimumProtocolVersion")));
    match (peer, peer_min) {
        (Some(v), Some(min)) if min <= v && v >= OUR_MINIMUM && min <= OUR_VERSION => {
            json!({ "ResponseCode": "Success", "ProtocolVersion": show(v.min(OUR_VERSION)) })
        }
        // On failure the version is omitted: NuGet rejects a response that carries one.
        _ => json!({ "ResponseCode": "Error" }),
    }
}

/// Writes whole messages, one per line, from any thread.
#[derive(Clone)]
struct Outbox(Arc<Mutex<Box<dyn Write + Send>>>);

impl Outbox {
    fn send(&self, m: &Message) {
        let line = serde_json::to_string(m).expect("messages serialise");
        let mut out = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            // NuGet went away.
            std::process::exit(0);
        }
    }
    fn reply(&self, to: &Message, kind: &str, payload: Option<Value>) {
        self.send(&Message {
            request_id: to.request_id.clone(),
            kind: kind.into(),
            method: to.method.clone(),
            payload,
        });
    }
}

/// Provider messages (a device code) go to NuGet as `Log` requests; questions still go to
/// the terminal, as NuGet's stdin is the protocol.
struct NugetTerminal {
    outbox: Outbox,
    logging: Arc<AtomicBool>,
    /// The plugin process's own terminal.
    terminal: Box<dyn Terminal>,
}

impl Terminal for NugetTerminal {
    fn ask(&mut self, line: &str, secret: bool) -> std::io::Result<Option<String>> {
        self.terminal.ask(line, secret)
    }
    fn show(&mut self, line: &str) -> std::io::Result<()> {
        if self.logging.load(Ordering::SeqCst) {
            self.outbox.send(&Message {
                request_id: format!("credence-log-{}", std::process::id()),
                kind: "Request".into(),
                method: "Log".into(),
                payload: Some(json!({ "LogLevel": "Minimal", "Message": line })),
            });
            Ok(())
        } else {
            self.terminal.show(line)
        }
    }
    /// Messages reach the user through NuGet once it has set a log level, terminal or not.
    fn can_prompt(&self) -> bool {
        self.logging.load(Ordering::SeqCst) || self.terminal.can_prompt()
    }
}

fn env_duration(tool: &Tool, var: &str, default: Duration, unit_ms: bool) -> Duration {
    tool.var(var)
        .and_then(|v| v.parse::<u64>().ok())
        .map(|n| {
            if unit_ms {
                Duration::from_millis(n)
            } else {
                Duration::from_secs(n)
            }
        })
        .unwrap_or(default)
}

pub fn run_plugin(args: &[String], tool: Tool) -> ExitCode {
    if !args.iter().any(|a| a.eq_ignore_ascii_case("-plugin")) {
        eprintln!(
            "nuget-plugin-credence is a NuGet credential plugin: NuGet starts it with -Plugin.\n  see `credence setup nuget`"
        );
        return ExitCode::from(2);
    }
    let logging = Arc::new(AtomicBool::new(false));
    let progress_every = env_duration(&tool, "CREDENCE_NUGET_PROGRESS_MS", Duration::from_secs(2), true);
    let idle = env_duration(
        &tool,
        "NUGET_PLUGIN_IDLE_TIMEOUT_IN_SECONDS",
        Duration::from_secs(120),
        false,
    );
    let resolver = tool.resolver();
    let Tool {
        stdin,
        stdout,
        terminal,
        ..
    } = tool;
    let outbox = Outbox(Arc::new(Mutex::new(stdout)));
    let broker = Arc::new(Session {
        resolver,
        outbox: outbox.clone(),
        logging: logging.clone(),
        terminal,
    });

    // Our half of the symmetric handshake goes out at once.
    outbox.send(&Message {
        request_id: format!("credence-handshake-{}", std::process::id()),
        kind: "Request".into(),
        method: "Handshake".into(),
        payload: Some(json!({ "ProtocolVersion": show(OUR_VERSION), "MinimumProtocolVersion": show(OUR_MINIMUM) })),
    });

    let (tx, rx) = mpsc::channel::<Result<Option<Vec<u8>>, String>>();
    std::thread::spawn(move || {
        let mut stdin = stdin;
        loop {
            let line = read_line_bounded(&mut stdin, MAX_INPUT);
            let end = !matches!(line, Ok(Some(_)));
            if tx.send(line).is_err() || end {
                return;
            }
        }
    });

    let pending = Arc::new(Mutex::new(std::collections::HashSet::<String>::new()));
    loop {
        let line = match rx.recv_timeout(idle) {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => return ExitCode::SUCCESS,
            Ok(Err(e)) => {
                eprintln!("credence: {e}");
                return ExitCode::from(1);
            }
            Err(RecvTimeoutError::Timeout) if pending.lock().unwrap().is_empty() => return ExitCode::SUCCESS,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return ExitCode::SUCCESS,
        };
        let msg = match parse_message(&line) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("credence: ignoring a line from NuGet that is not a plugin message: {e}");
                continue;
            }
        };
        if msg.kind == "Response" || msg.kind == "Progress" {
            continue;
        }
        if msg.kind == "Cancel" {
            if pending.lock().unwrap().remove(&msg.request_id) {
                outbox.reply(&msg, "Cancel", None);
            }
            continue;
        }
        if msg.kind != "Request" {
            outbox.reply(
                &msg,
                "Fault",
                Some(json!({ "Message": format!("unexpected message type {:?}", msg.kind) })),
            );
            continue;
        }
        let payload = msg.payload.as_ref();
        match msg.method.as_str() {
            "Handshake" => outbox.reply(&msg, "Response", Some(negotiate(payload))),
            "Close" => return ExitCode::SUCCESS,
            "Initialize" | "SetCredentials" => {
                outbox.reply(&msg, "Response", Some(json!({ "ResponseCode": "Success" })))
            }
            "SetLogLevel" => {
                logging.store(true, Ordering::SeqCst);
                outbox.reply(&msg, "Response", Some(json!({ "ResponseCode": "Success" })));
            }
            "MonitorNuGetProcessExit" => {
                let pid = payload.and_then(|p| p.get("ProcessId")).and_then(Value::as_i64);
                let code = match pid {
                    Some(pid) if process_alive(pid) => {
                        std::thread::spawn(move || {
                            while process_alive(pid) {
                                std::thread::sleep(Duration::from_secs(1));
                            }
                            std::process::exit(0);
                        });
                        "Success"
                    }
                    _ => "NotFound",
                };
                outbox.reply(&msg, "Response", Some(json!({ "ResponseCode": code })));
            }
            "GetOperationClaims" => {
                let source_agnostic = payload.is_none_or(|p| {
                    p.get("PackageSourceRepository").is_none_or(Value::is_null)
                        && p.get("ServiceIndex").is_none_or(Value::is_null)
                });
                let claims: Vec<&str> = if source_agnostic {
                    vec!["Authentication"]
                } else {
                    vec![]
                };
                outbox.reply(&msg, "Response", Some(json!({ "Claims": claims })));
            }
            "GetAuthenticationCredentials" => {
                pending.lock().unwrap().insert(msg.request_id.clone());
                let (outbox, broker, pending) = (outbox.clone(), broker.clone(), pending.clone());
                std::thread::spawn(move || authenticate(msg, outbox, broker, pending, progress_every));
            }
            m if METHODS.contains(&m) => outbox.reply(
                &msg,
                "Fault",
                Some(json!({ "Message": format!("credence does not implement {m}") })),
            ),
            m => outbox.reply(
                &msg,
                "Fault",
                Some(json!({ "Message": format!("unknown method {m:?}") })),
            ),
        }
    }
}

/// What every request of one plugin conversation shares: the resolver (or why it did not
/// open), and where prompts go.
struct Session {
    resolver: Result<std::sync::Arc<dyn Resolver>, String>,
    outbox: Outbox,
    logging: Arc<AtomicBool>,
    terminal: Arc<dyn Fn() -> Box<dyn Terminal> + Send + Sync>,
}

impl Session {
    fn prompts(&self) -> Box<dyn Terminal> {
        Box::new(NugetTerminal {
            outbox: self.outbox.clone(),
            logging: self.logging.clone(),
            terminal: (self.terminal)(),
        })
    }
}

/// One line from NuGet as a plugin message; `Ok(None)` for a blank line.
pub fn parse_message(line: &[u8]) -> Result<Option<Message>, String> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text).map(Some).map_err(|e| e.to_string())
}

#[cfg(unix)]
fn process_alive(pid: i64) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

#[cfg(not(unix))]
fn process_alive(_pid: i64) -> bool {
    true
}

/// The payload of `GetAuthenticationCredentials`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AuthRequest {
    uri: String,
    is_retry: bool,
    is_non_interactive: bool,
    #[allow(dead_code)]
    can_show_dialog: bool,
}

impl AuthRequest {
    pub fn from_message(msg: &Message) -> Result<AuthRequest, String> {
        let parsed: Result<Option<AuthRequest>, _> = msg.payload.clone().map(serde_json::from_value).transpose();
        match parsed {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err("GetAuthenticationCredentials needs a payload".into()),
            Err(e) => Err(format!("malformed GetAuthenticationCredentials: {e}")),
        }
    }

    /// Separate from `from_message` because a broker that failed to open is reported
    /// before a bad URI.
    pub fn credential_request(&self) -> Result<CredentialRequest, String> {
        let mut request = request(&self.uri, Protocol::Nuget, "download")?;
        request.is_retry = self.is_retry;
        request.interactive = !self.is_non_interactive;
        Ok(request)
    }
}

fn authenticate(
    msg: Message,
    outbox: Outbox,
    broker: Arc<Session>,
    pending: Arc<Mutex<std::collections::HashSet<String>>>,
    every: Duration,
) {
    // Dropping `done` wakes the progress thread at once: a thread left sleeping out its
    // interval after every answer would pile up by the hundred in a busy session.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    {
        let (outbox, msg, pending) = (outbox.clone(), msg.clone(), pending.clone());
        std::thread::spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(every) {
                if !pending.lock().unwrap().contains(&msg.request_id) {
                    return;
                }
                outbox.reply(&msg, "Progress", Some(json!({})));
            }
        });
    }
    let payload = get_credentials(&msg, &broker);
    drop(done);
    // A cancelled request gets no answer.
    if pending.lock().unwrap().remove(&msg.request_id) {
        outbox.reply(&msg, "Response", Some(payload));
    }
}

fn get_credentials(msg: &Message, session: &Session) -> Value {
    let error = |m: String| json!({ "ResponseCode": "Error", "Message": m });
    let req = match AuthRequest::from_message(msg) {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    let resolver = match &session.resolver {
        Ok(r) => r,
        Err(e) => return error(e.clone()),
    };
    let request = match req.credential_request() {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    match resolver.resolve(&request, session.prompts()) {
        Ok(answer) => {
            let c = answer.credential;
            json!({
                "Username": c.username.clone().unwrap_or_else(|| "credence".into()),
                "Password": c.secret.expose(),
                "AuthenticationTypes": ["Basic"],
                "ResponseCode": "Success",
            })
        }
        // NotFound is NuGet's "cancelled"; when non-interactive it tells the user to retry
        // with --interactive, which is right for a provider that needs the user.
        Err(Refusal::NeedsInteraction { message, .. }) => json!({ "ResponseCode": "NotFound", "Message": message }),
        Err(Refusal::NotFound { .. }) => json!({ "ResponseCode": "NotFound" }),
        Err(e) => error(e.to_string()),
    }
}

/// nuget.exe's v1 arguments; flag names are case-insensitive.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct V1Args {
    pub uri: Option<String>,
    pub is_retry: bool,
    pub non_interactive: bool,
}

pub fn parse_v1_args(args: &[String]) -> V1Args {
    let mut parsed = V1Args::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_ascii_lowercase().as_str() {
            "-uri" => parsed.uri = it.next().cloned(),
            "-isretry" => parsed.is_retry = true,
            "-noninteractive" => parsed.non_interactive = true,
            "-verbosity" => {
                it.next();
            }
            _ => {}
        }
    }
    parsed
}

/// nuget.exe's v1 credential provider.
pub fn run_v1(args: &[String], mut tool: Tool) -> ExitCode {
    let V1Args {
        uri,
        is_retry: retry,
        non_interactive,
    } = parse_v1_args(args);
    let prompts = tool.prompts();
    let resolver = tool.resolver();
    let mut answer = |code: u8, v: Value| {
        tool.answer(format!("{v}\n").as_bytes());
        ExitCode::from(code)
    };
    let Some(uri) = uri else {
        return answer(
            2,
            json!({ "Username": null, "Password": null, "Message": "-uri is required" }),
        );
    };
    let mut req = match request(&uri, Protocol::Nuget, "download") {
        Ok(r) => r,
        Err(e) => return answer(2, json!({ "Message": e })),
    };
    req.is_retry = retry;
    req.interactive = !non_interactive;
    match resolver.map_err(Refusal::Failed).and_then(|r| r.resolve(&req, prompts)) {
        Ok(a) => answer(
            0,
            json!({
                "Username": a.credential.username.clone().unwrap_or_else(|| "credence".into()),
                "Password": a.credential.secret.expose(),
                "Message": "",
            }),
        ),
        Err(e @ (Refusal::NotServed(_) | Refusal::NotFound { .. })) => answer(1, json!({ "Message": e.to_string() })),
        Err(e) => answer(2, json!({ "Message": e.to_string() })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_negotiates_the_lower_version_and_refuses_incompatible_peers() {
        let ok = negotiate(Some(
            &json!({"ProtocolVersion":"2.0.0","MinimumProtocolVersion":"1.0.0"}),
        ));
        assert_eq!(ok, json!({"ResponseCode":"Success","ProtocolVersion":"2.0.0"}));
        let old = negotiate(Some(
            &json!({"ProtocolVersion":"1.0.0","MinimumProtocolVersion":"1.0.0"}),
        ));
        assert_eq!(old, json!({"ResponseCode":"Error"}));
        let newer = negotiate(Some(
            &json!({"ProtocolVersion":"3.0.0","MinimumProtocolVersion":"2.0.0"}),
        ));
        assert_eq!(newer, json!({"ResponseCode":"Success","ProtocolVersion":"2.0.0"}));
        assert_eq!(negotiate(None), json!({"ResponseCode":"Error"}));
    }
}
