//! The `credence` program: the front end a tool ran, or one of the commands that only ask
//! (`get`, `forget`, `agent status|stop`), answered through the agent. Everything else
//! (`providers`, `install`, `trust`, `sign`, `setup`, `audit`, `--help`), and every request
//! when no agent can answer, is the host's: this process becomes `credence-host` (exec, same
//! pid and stdin). Exit codes: 0 success; 1 no credential for the URL (no provider serves it,
//! or none has one); 2 usage or configuration error; 3 a provider refused or failed, or hit
//! a limit; 4 a credential needs interaction the caller forbade; 5 the agent is busy.

use crate::agent::client::{AgentClient, Unavailable};
use crate::agent::remote_client::RemoteClient;
use crate::front::{Tool, front_end};
use crate::paths::Paths;
use crate::request::{CredentialRequest, Protocol, Refusal, Source, parse_request_url};
use crate::resolver::{Forget, Resolver};
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

/// The commands both programs run; `credence-host` adds the rest to these.
#[derive(Subcommand)]
pub enum ToolCommand {
    /// Get a credential for a URL from the providers that serve it.
    Get {
        url: String,
        /// The operation, as the tool names it (read, download, publish, ...).
        #[arg(long, default_value = "read")]
        operation: String,
        /// The server refused the last credential: skip stored ones and tell the provider.
        #[arg(long)]
        retry: bool,
        /// Never prompt; a provider that needs the user fails with exit code 4.
        #[arg(long)]
        non_interactive: bool,
        /// A user name the tool already knows.
        #[arg(long)]
        username: Option<String>,
        /// Print the whole credential as JSON instead of the secret alone.
        #[arg(long)]
        json: bool,
    },
    /// Remove the stored state and credentials of one provider, or of all.
    #[command(alias = "logout")]
    Forget {
        /// Only this provider (its name in config.toml).
        #[arg(long)]
        provider: Option<String>,
    },
    /// Run the agent in the foreground, or show or stop the one that runs. Tools start it
    /// on first use; CREDENCE_AGENT=0 answers every request in-process instead.
    Agent {
        #[command(subcommand)]
        action: Option<AgentAction>,
        /// Fork into the background (how a client starts it).
        #[arg(long, hide = true)]
        detach: bool,
    },
    /// Inside a remote: carry this remote's requests to your machine over stdin and stdout
    /// (the command `credence remote exec -- ...` runs there).
    Relay {
        /// The socket the remote's tools reach it on (set CREDENCE_AGENT_SOCK to it).
        #[arg(long, value_name = "PATH")]
        listen: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand, Clone, Copy)]
pub enum AgentAction {
    /// pid, uptime, providers loaded, cache entries, requests served.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Stop the agent of this credence home.
    Stop,
}

#[derive(Parser)]
#[command(name = "credence")]
struct ThinCli {
    #[command(subcommand)]
    command: ToolCommand,
}

/// Whether requests go to the agent (`CREDENCE_AGENT=0`: never).
/// With `CREDENCE_LOG` set the request is answered in-process, so its diagnostics reach
/// this stderr (the agent's own go to `agent.log` in the state dir). So is a request from a
/// CI step that carries its job's identity source (`ACTIONS_ID_TOKEN_REQUEST_URL`): a
/// provider exchanging it must get this step's identity, never that of the step or job that
/// happened to start an agent.
pub fn agent_enabled() -> bool {
    std::env::var_os("CREDENCE_AGENT").is_none_or(|v| v != "0")
        && std::env::var_os("CREDENCE_LOG").is_none_or(|v| v.is_empty())
        && std::env::var_os("ACTIONS_ID_TOKEN_REQUEST_URL").is_none()
}

pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    if let Some(remote) = RemoteClient::from_env() {
        return remote_main(&args, remote);
    }
    if args.get(1).and_then(|a| a.to_str()) == Some("relay") {
        return relay_command(&args);
    }
    if !agent_enabled() {
        return crate::exe::exec_host(&args);
    }
    if let Some((front, rest)) = front_end(&args) {
        // Connected before anything is read, so the host can still take over stdin. A
        // one-shot front end reads stdin whole before it asks: its handshake is answered
        // while it reads, and what it read is replayed to the host if the agent then
        // cannot answer. A conversation (cargo, NuGet) hands the host a live stdin.
        let client = if front.is_conversation() {
            agent(true)
        } else {
            crate::exe::enable_replay(&args);
            pipelined_agent()
        };
        let Some(client) = client else {
            return crate::exe::exec_host(&args);
        };
        crate::logging::init();
        let client: Arc<dyn Resolver> = client;
        return front.run(&rest, Tool::process(Arc::new(move || Ok(client.clone()))));
    }
    let word = args.get(1).and_then(|a| a.to_str());
    let ours = matches!(word, Some("get" | "forget" | "logout" | "agent"));
    if !ours {
        return crate::exe::exec_host(&args);
    }
    let cli = match ThinCli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(_) => return crate::exe::exec_host(&args),
    };
    crate::logging::init();
    match cli.command {
        command @ ToolCommand::Get { .. } => {
            crate::exe::enable_replay(&args);
            match pipelined_agent() {
                Some(client) => run(command, &*client),
                None => crate::exe::exec_host(&args),
            }
        }
        // Forgetting needs no agent: without one the host forgets in-process.
        command @ ToolCommand::Forget { .. } => match agent(false) {
            Some(client) => run(command, &*client),
            None => crate::exe::exec_host(&args),
        },
        ToolCommand::Agent {
            action: Some(action), ..
        } => agent_command(action),
        ToolCommand::Agent { action: None, .. } => crate::exe::exec_host(&args),
        ToolCommand::Relay { listen } => crate::relay::main(listen),
    }
}

fn relay_command(args: &[OsString]) -> ExitCode {
    match ThinCli::try_parse_from(args) {
        Ok(ThinCli {
            command: ToolCommand::Relay { listen },
        }) => crate::relay::main(listen),
        Ok(_) => ExitCode::from(2),
        Err(e) => {
            let _ = e.print();
            ExitCode::from(2)
        }
    }
}

/// Inside a remote session (`CREDENCE_AGENT_SOCK` set): every request goes to the user's
/// machine. Nothing is answered here, and nothing falls back to providers of this side.
fn remote_main(args: &[OsString], client: RemoteClient) -> ExitCode {
    let client = Arc::new(client);
    if let Some((front, rest)) = front_end(args) {
        crate::logging::init();
        let resolver: Arc<dyn Resolver> = client;
        return front.run(&rest, Tool::process(Arc::new(move || Ok(resolver.clone()))));
    }
    let word = args.get(1).and_then(|a| a.to_str());
    if !matches!(word, Some("get" | "forget" | "logout" | "agent" | "relay")) {
        return crate::exe::exec_host(args);
    }
    let cli = match ThinCli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    crate::logging::init();
    match cli.command {
        command @ ToolCommand::Get { .. } => run(command, &*client),
        ToolCommand::Forget { .. } => {
            eprintln!(
                "credence: error: this shell's credentials come from your machine (CREDENCE_AGENT_SOCK={}); forget them there with `credence forget`",
                client.socket().display()
            );
            ExitCode::from(2)
        }
        ToolCommand::Agent { .. } => {
            eprintln!(
                "credence: this shell asks your machine's agent through CREDENCE_AGENT_SOCK={}; `credence remote list` there shows this session",
                client.socket().display()
            );
            ExitCode::SUCCESS
        }
        ToolCommand::Relay { listen } => crate::relay::main(listen),
    }
}

/// The agent of this home, or `None` (then the host answers in-process), saying why when
/// it is something the user should fix.
fn agent(start: bool) -> Option<Arc<AgentClient>> {
    let paths = Paths::from_env().ok()?;
    match AgentClient::connect(&paths, start) {
        Ok(c) => Some(Arc::new(c)),
        Err(Unavailable { reason, warn }) => {
            if warn {
                eprintln!("credence: warning: {reason}; answering without the agent");
            }
            None
        }
    }
}

fn pipelined_agent() -> Option<Arc<AgentClient>> {
    let paths = Paths::from_env().ok()?;
    match AgentClient::connect_pipelined(&paths) {
        Ok(c) => Some(Arc::new(c)),
        Err(Unavailable { reason, warn }) => {
            if warn {
                eprintln!("credence: warning: {reason}; answering without the agent");
            }
            None
        }
    }
}

fn agent_command(action: AgentAction) -> ExitCode {
    let paths = match Paths::from_env() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("credence: error: {e}");
            return ExitCode::from(2);
        }
    };
    let client = match AgentClient::connect(&paths, false) {
        Ok(c) => c,
        Err(u) => {
            if matches!(action, AgentAction::Stop) {
                eprintln!("credence: no agent runs for this home");
                return ExitCode::SUCCESS;
            }
            eprintln!(
                "credence: no agent runs for this home ({}); tools start one on first use",
                u.reason
            );
            return ExitCode::from(1);
        }
    };
    match action {
        AgentAction::Status { json } => match client.status() {
            Ok(s) => {
                if json {
                    println!("{}", serde_json::to_string(&s).expect("serialises"));
                } else {
                    println!(
                        "agent pid {}, up {} s, {} provider(s) loaded, {} cache entries, {} requests served\n  socket: {}\n  exits after {} s idle; build: {}",
                        s.pid,
                        s.uptime_secs,
                        s.providers_loaded,
                        s.cache_entries,
                        s.requests_served,
                        s.socket,
                        s.idle_exit_secs,
                        s.build
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("credence: error: {e}");
                ExitCode::from(2)
            }
        },
        AgentAction::Stop => match client.stop() {
            Ok(()) => {
                eprintln!("credence: agent pid {} stopped", client.agent_pid);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("credence: error: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// `get` and `forget` against any resolver (the agent's, or the host's in-process one).
pub fn run(command: ToolCommand, resolver: &dyn Resolver) -> ExitCode {
    match command {
        ToolCommand::Get {
            url,
            operation,
            retry,
            non_interactive,
            username,
            json,
        } => {
            let url = match parse_request_url(&url) {
                Ok(u) => u,
                Err(e) => {
                    eprintln!("credence: error: {e}");
                    return ExitCode::from(2);
                }
            };
            let request = CredentialRequest {
                url,
                protocol: Protocol::Generic,
                operation,
                is_retry: retry,
                interactive: !non_interactive,
                username_hint: username,
                challenge_headers: Vec::new(),
            };
            get(resolver, &request, json)
        }
        ToolCommand::Forget { provider } => match resolver.forget(Forget::Provider(provider)) {
            Ok(f) => {
                eprintln!(
                    "credence: removed stored state and credentials of {} provider(s) (secrets are kept in {})",
                    f.count, f.store
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("credence: error: {e}");
                ExitCode::from(2)
            }
        },
        ToolCommand::Agent { .. } => {
            eprintln!("credence: error: the agent runs in credence-host");
            ExitCode::from(2)
        }
        ToolCommand::Relay { listen } => crate::relay::main(listen),
    }
}

fn get(resolver: &dyn Resolver, request: &CredentialRequest, json: bool) -> ExitCode {
    let prompts = Box::new(crate::terminal::ControllingTerminal);
    match resolver.resolve(request, prompts) {
        Ok(answer) => {
            let c = &answer.credential;
            let out = if json {
                let headers: Vec<_> = c
                    .headers
                    .iter()
                    .map(|(k, v)| serde_json::json!([k, v.expose()]))
                    .collect();
                let value = serde_json::json!({
                    "provider": answer.provider,
                    "source": match answer.source { Source::Stored => "stored", Source::Provider => "provider" },
                    "username": c.username,
                    "secret": c.secret.expose(),
                    "headers": headers,
                    "expires_at": c.expires_at,
                    "cache": c.cache,
                });
                format!("{value}\n")
            } else {
                format!("{}\n", c.secret.expose())
            };
            let mut stdout = std::io::stdout().lock();
            if stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()).is_err() {
                return ExitCode::from(3);
            }
            ExitCode::SUCCESS
        }
        Err(refusal) => {
            eprintln!("credence: {refusal}");
            ExitCode::from(match refusal {
                Refusal::NotServed(_) => {
                    eprintln!("  hint: add a provider that serves this URL to config.toml (`serves = [...]`)");
                    1
                }
                Refusal::NotFound { .. } => 1,
                Refusal::NeedsInteraction { .. } => 4,
                Refusal::Denied { .. } | Refusal::Failed(_) => 3,
                Refusal::Busy(_) => 5,
            })
        }
    }
}
