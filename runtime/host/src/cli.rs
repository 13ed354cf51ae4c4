//! The `credence-host` command line: everything `credence` does, plus what needs the
//! providers' host (`providers`, `install`, `verify`, `inspect`, `trust`, `sign`, `setup`,
//! `audit`, `agent`, `new`, `dev`). `credence` execs it for those, and for every request when no agent
//! answers. Exit codes: 0 success; 1 no credential for the URL (no provider serves it, or
//! none has one), and for `verify` and `inspect` a component the gate refuses; 2 usage or
//! configuration error; 3 a provider refused or failed, or hit a limit, and for `providers`
//! one or more configured providers refused at load; 4 a credential needs interaction the
//! caller forbade; 5 the agent is busy.

use crate::broker::Broker;
use crate::config::Config;
use crate::loader::TrustMode;
use crate::paths::Paths;
use crate::sandbox::imports::describe;
use clap::{Parser, Subcommand};
use credence::cli::ToolCommand;
use credence::front::{Tool, front_end};
use credence::resolver::Resolver;
use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "credence",
    version,
    about = "One credential helper for every build tool, running sandboxed, signed providers"
)]
struct Cli {
    /// Run providers that are not signed. For developing providers only: anyone who can
    /// write to the providers directory then decides what runs.
    #[arg(long, global = true)]
    allow_unsigned: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Tool(ToolCommand),
    /// List the configured providers and whether each one loads.
    Providers {
        #[arg(long)]
        json: bool,
    },
    #[command(flatten)]
    Signing(crate::signing_cli::SigningCommand),
    /// Show the audit trail: one line per decision, newest last.
    Audit {
        #[arg(long)]
        json: bool,
        /// Only records since this time: Unix seconds, an RFC 3339 time, or an age such as 30m, 12h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// Only records that involve this provider (instance or signed name).
        #[arg(long)]
        provider: Option<String>,
    },
    /// Print (or with --write, apply) the configuration that makes a tool use credence.
    Setup {
        #[arg(value_parser = ["cargo", "git", "docker", "nuget", "bazel", "goauth", "keyring", "kubectl"])]
        tool: String,
        #[arg(long)]
        write: bool,
    },
    /// Scaffold a provider crate on the SDK: manifest, a native test against the mock host,
    /// the release profile.
    New {
        name: String,
        /// The directory to create (default: NAME).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// The provider-sdk folder (default: the one this credence was built with).
        #[arg(long)]
        sdk: Option<std::path::PathBuf>,
    },
    /// Build a provider crate for wasm32-wasip2 and run it once, unsigned, for URL in a
    /// throwaway home, with the host's log shown live.
    Dev {
        url: String,
        /// The provider crate (default: the current directory).
        #[arg(long, default_value = ".")]
        path: std::path::PathBuf,
        /// A setting for this run, KEY=VALUE (test values: they are on the command line).
        #[arg(long = "setting")]
        settings: Vec<String>,
        /// An origin to grant beyond the manifest's own.
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// Never prompt (a provider that needs the user then exits 4).
        #[arg(long)]
        non_interactive: bool,
    },
    /// The organisation's policy bundle: which keys, audits and providers every machine
    /// it manages trusts (`show`, `verify`, `install`, `sign`).
    Policy {
        #[command(subcommand)]
        action: crate::policy_cli::PolicyCommand,
    },
    /// Approve a pending release whose signed ceiling is wider than the approved one: shows
    /// what it may newly do, field by field, then installs it.
    Approve {
        name: String,
        /// Approve without asking (after reading what it shows).
        #[arg(long)]
        yes: bool,
    },
    /// Let a dev container, codespace, WSL or SSH host ask this machine for credentials:
    /// open, list and end remote sessions (policy: `[remote]` in config.toml).
    Remote {
        #[command(subcommand)]
        action: crate::remote::launcher::RemoteCommand,
    },
    /// Print a completion script for your shell, e.g.
    /// `credence completions bash > ~/.local/share/bash-completion/completions/credence`.
    Completions { shell: clap_complete::Shell },
}

pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    // Tools run credence under their own program names or with a protocol word first.
    if let Some((front, rest)) = front_end(&args) {
        let open: credence::front::OpenResolver = Arc::new(|| {
            crate::log_init::init();
            open(TrustMode::RequireSigned).map(|b| Arc::new(b) as Arc<dyn Resolver>)
        });
        return front.run(&rest, Tool::process(open));
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    crate::log_init::init();
    // A request says so through the broker (and from the agent); every other command here.
    if !matches!(cli.command, Command::Tool(_))
        && let Some(w) = crate::org_policy::PolicyDir::from_env().override_warning()
    {
        eprintln!("credence: warning: {w}");
    }
    let trust = if cli.allow_unsigned {
        eprintln!(
            "credence: warning: --allow-unsigned runs providers nobody signed; use it only while developing a provider"
        );
        TrustMode::DangerousAllowUnsigned
    } else {
        TrustMode::RequireSigned
    };
    match run(cli.command, trust) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("credence: error: {message}");
            ExitCode::from(2)
        }
    }
}

pub(crate) fn open(trust: TrustMode) -> Result<Broker, String> {
    let paths = Paths::from_env()?;
    let config = Config::load(&paths.config_file()).map_err(|e| e.to_string())?;
    Ok(Broker::new(paths, config, trust))
}

fn run(command: Command, trust: TrustMode) -> Result<ExitCode, String> {
    match command {
        Command::Tool(ToolCommand::Agent { action: None, detach }) => crate::agent::serve(detach),
        Command::Tool(ToolCommand::Agent { .. }) => {
            // `status` and `stop` talk to the agent: the tool-facing program does that.
            Err("run `credence agent status` or `credence agent stop`".into())
        }
        Command::Tool(ToolCommand::Relay { listen }) => Ok(credence::relay::main(listen)),
        Command::Tool(command) => Ok(credence::cli::run(command, &open(trust)?)),
        Command::Remote { action } => crate::remote::launcher::run(action),
        Command::New { name, dir, sdk } => crate::authoring::new_provider(&name, dir.as_deref(), sdk.as_deref()),
        Command::Dev {
            url,
            path,
            settings,
            grants,
            non_interactive,
        } => crate::authoring::dev(crate::authoring::DevRun {
            dir: &path,
            url: &url,
            settings: &settings,
            grants: &grants,
            interactive: !non_interactive,
        }),
        Command::Providers { json } => providers(&open(trust)?, json),
        Command::Audit { json, since, provider } => audit(&open(trust)?, json, since.as_deref(), provider.as_deref()),
        Command::Setup { tool, write } => crate::setup::run(&tool, write),
        Command::Completions { shell } => {
            let mut cli = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cli, "credence", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Signing(command) => crate::signing_cli::run(command, open(trust)?),
        Command::Policy { action } => crate::policy_cli::run(action, &open(trust)?),
        Command::Approve { name, yes } => crate::policy_cli::approve(&open(trust)?, &name, yes),
    }
}

fn providers(broker: &Broker, json: bool) -> Result<ExitCode, String> {
    let mut rows = Vec::new();
    for p in &broker.config().providers {
        let status = broker.load(p).map(|loaded| {
            let (imports, exports) = describe(broker.engine().expect("loaded with it"), &loaded.component);
            serde_json::json!({
                "status": "ok",
                "provider": loaded.ceiling.name,
                "version": loaded.ceiling.version,
                "signed_by": loaded.signers.iter().map(|s| format!("{} {} ({})", s.role, s.key_id, s.name)).collect::<Vec<_>>(),
                "sha256": hex::encode(loaded.digest),
                "size": loaded.size,
                "declared_origins": loaded.ceiling.origins.iter().map(|o| o.to_string())
                    .chain(loaded.ceiling.wildcard_origins.iter().map(|o| format!("{o} (WILDCARD)"))).collect::<Vec<_>>(),
                "effective_origins": loaded.origins.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
                "prompts": loaded.prompts.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                "memory_mib": loaded.limits.memory_bytes >> 20,
                "cpu_ms": loaded.limits.cpu.as_millis() as u64,
                "wall_ms": loaded.limits.wall.as_millis() as u64,
                "imports": imports,
                "exports": exports,
            })
        });
        let pending = crate::policy_cli::pending(broker, &p.provider)
            .map(|(version, sequence)| serde_json::json!({ "version": version, "sequence": sequence }));
        let mut row = serde_json::json!({
            "name": p.name,
            "pending": pending,
            "component": p.component,
            "serves": p.serves.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "granted_origins": p.granted_origins.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
        });
        match status {
            Ok(details) => row
                .as_object_mut()
                .unwrap()
                .extend(details.as_object().unwrap().clone()),
            Err(e) => {
                row["status"] = "refused".into();
                row["error"] = e.to_string().into();
            }
        }
        rows.push(row);
    }
    let refused = rows.iter().any(|r| r["status"] == "refused");
    let mut out = String::new();
    if json {
        out = format!("{}\n", serde_json::Value::Array(rows));
    } else if rows.is_empty() {
        out.push_str("no providers configured\n");
    } else {
        for r in &rows {
            let list = |k: &str| {
                r[k].as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            };
            out.push_str(&format!(
                "{} ({})\n",
                r["name"].as_str().unwrap_or(""),
                r["component"].as_str().unwrap_or("")
            ));
            out.push_str(&format!("  serves:  {}\n", list("serves")));
            if r["status"] == "ok" {
                out.push_str(&format!(
                    "  status:  ok: {} {}, sha256 {}\n  signed:  {}\n  origins: {}\n  prompts: {}\n  limits:  {} MiB, {} ms CPU, {} ms wall\n",
                    r["provider"].as_str().unwrap_or(""),
                    r["version"].as_str().unwrap_or(""),
                    r["sha256"].as_str().unwrap_or(""),
                    if list("signed_by").is_empty() { "UNSIGNED (--allow-unsigned)".into() } else { list("signed_by") },
                    if list("effective_origins").is_empty() { "none".into() } else { list("effective_origins") },
                    if list("prompts").is_empty() { "none".into() } else { list("prompts") },
                    r["memory_mib"], r["cpu_ms"], r["wall_ms"],
                ));
            } else {
                out.push_str(&format!("  status:  refused: {}\n", r["error"].as_str().unwrap_or("")));
            }
            if let Some(pending) = r["pending"].as_object() {
                out.push_str(&format!(
                    "  pending: {} (sequence {}) may do more, and waits: `credence approve {}`\n",
                    pending["version"].as_str().unwrap_or(""),
                    pending["sequence"],
                    broker
                        .config()
                        .providers
                        .iter()
                        .find(|c| c.name == r["name"])
                        .map_or("", |c| c.provider.as_str())
                ));
            }
        }
        out.push_str(&format!(
            "stored credentials and state: {}\n",
            broker.state().describe()
        ));
    }
    print!("{out}");
    Ok(ExitCode::from(if refused { 3 } else { 0 }))
}

/// `--since`: Unix seconds, an RFC 3339 time (`2026-11-23T10:00:00Z`), or an age before
/// `now` in jiff's friendly duration format (`30m`, `12h`, `7d`, `1h30m`, `2 days`), where a
/// day is 24 hours.
fn parse_since(text: &str, now: u64) -> Result<u64, String> {
    if let Ok(t) = text.parse::<u64>() {
        return Ok(t);
    }
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(u64::try_from(t.as_second()).unwrap_or(0));
    }
    let age = text
        .parse::<jiff::Span>()
        .map_err(|e| e.to_string())
        .and_then(|span| {
            span.to_duration(jiff::SpanRelativeTo::days_are_24_hours())
                .map_err(|e| e.to_string())
        })
        .and_then(|age| u64::try_from(age.as_secs()).map_err(|_| "an age cannot be negative".to_owned()));
    match age {
        Ok(secs) => Ok(now.saturating_sub(secs)),
        Err(why) => Err(format!(
            "--since {text:?} is not Unix seconds, an RFC 3339 time such as 2026-11-23T10:00:00Z, or an age such as 30m, 12h or 7d ({why})"
        )),
    }
}

fn audit(broker: &Broker, json: bool, since: Option<&str>, provider: Option<&str>) -> Result<ExitCode, String> {
    let now = crate::state_store::now_unix();
    let since = since.map(|s| parse_since(s, now)).transpose()?;
    let records = broker
        .audit()
        .read()
        .map_err(|e| format!("cannot read {}: {e}", broker.audit().path().display()))?;
    let mut out = String::new();
    for r in records {
        if since.is_some_and(|s| r.time < s) {
            continue;
        }
        if let Some(p) = provider {
            if !r
                .providers
                .iter()
                .any(|a| a.instance == p || a.provider.as_deref() == Some(p))
            {
                continue;
            }
        }
        if json {
            out.push_str(&serde_json::to_string(&r).map_err(|e| e.to_string())?);
            out.push('\n');
            continue;
        }
        let attempts: Vec<String> = r
            .providers
            .iter()
            .map(|a| {
                let mut s = a.instance.clone();
                if let (Some(p), Some(v)) = (&a.provider, &a.version) {
                    s.push_str(&format!(" ({p} {v})"));
                }
                s.push_str(&format!(" {}", a.verdict));
                if let Some(ans) = &a.answer {
                    s.push_str(&format!(" -> {ans}"));
                }
                if let Some(l) = &a.limit {
                    s.push_str(&format!(" [{l}]"));
                }
                for u in &a.uses {
                    s.push_str(&format!("; {u}"));
                }
                s
            })
            .collect();
        out.push_str(&format!(
            "{} {} {} {} -> {}{} [{}] {:.1} ms\n",
            crate::front::rfc3339(r.time),
            r.protocol,
            r.operation,
            r.url,
            r.outcome,
            r.credential_fingerprint
                .as_deref()
                .map(|f| format!(" (fp {f})"))
                .unwrap_or_default(),
            attempts.join(" | "),
            r.duration_ms
        ));
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_unix_seconds_rfc3339_and_ages_and_refuses_the_rest_without_panicking() {
        let now = 1_767_225_600; // 2026-01-01T00:00:00Z
        assert_eq!(parse_since("1700000000", now), Ok(1_700_000_000));
        assert_eq!(parse_since("2025-12-31T23:00:00Z", now), Ok(now - 3600));
        assert_eq!(parse_since("2025-12-31T23:00:00+01:00", now), Ok(now - 7200));
        assert_eq!(parse_since("30m", now), Ok(now - 1800));
        assert_eq!(parse_since("12h", now), Ok(now - 43_200));
        assert_eq!(parse_since("7d", now), Ok(now - 7 * 86_400));
        assert_eq!(parse_since("1h30m", now), Ok(now - 5400));
        // An age reaching before 1970 is everything.
        assert_eq!(parse_since("7000000d", now), Ok(0));
        for bad in [
            "5é",
            "999999999999999999d",
            "",
            "d",
            "-5d",
            "5x",
            "1y",
            "é",
            "99999999999999999999999",
        ] {
            let err = parse_since(bad, now).unwrap_err();
            assert!(err.starts_with("--since "), "{bad:?}: {err}");
        }
    }
}
