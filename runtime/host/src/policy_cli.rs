//! `credence policy show | verify | install | sign` (the organisation's policy bundle) and
//! `credence approve` (the upgrade guard's second half).

use crate::broker::Broker;
use crate::loader::{FloorWrite, Loader, statement_path, vet};
use crate::org_policy::{self, PolicyDir};
use crate::state_store::now_unix;
use crate::trusted_file::{Writers, read_file};
use clap::Subcommand;
use credence_signing::bundle::{Bundle, BundleFile, MAX_BUNDLE_BYTES, Upgrades};
use credence_signing::upgrade::{Widening, widenings};
use credence_signing::{Manifest, StatementFile, VerifiedBundle, verify_bundle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Show the organisation's policy bundle in force here, or why none is.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Check a bundle against the pinned root key and the newest sequence seen (exit 0
    /// only if it would be accepted).
    Verify { file: PathBuf },
    /// Verify a bundle and make it the policy in force (the policy directory is root's:
    /// run it with sudo).
    Install { file: PathBuf },
    /// Sign a policy source (TOML) with the organisation's root key: writes the bundle.
    Sign {
        source: PathBuf,
        /// The root's secret key file.
        #[arg(long)]
        key: PathBuf,
        /// The bundle expires this many days from now (instead of the source's `expires-at`).
        #[arg(long)]
        expires_in_days: Option<u64>,
        /// Overrides the source's `sequence`.
        #[arg(long)]
        sequence: Option<u64>,
        /// Where to write the bundle (default: SOURCE with the extension .json).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

use crate::state_store::shown_time as time;

fn read_bundle(file: &Path) -> Result<Vec<u8>, String> {
    read_file(file, MAX_BUNDLE_BYTES as u64, Writers::Anyone).map_err(|e| e.to_string())
}

/// A bundle checked as `install` would take it: against the pinned roots, the sequence this
/// user has seen, and the bundle installed now.
fn check(broker: &Broker, dir: &PolicyDir, bytes: &[u8]) -> Result<VerifiedBundle, String> {
    let roots = org_policy::pinned_roots(dir)?.ok_or_else(|| {
        format!(
            "no root key is pinned in {}, so no bundle can be verified here\n  hint: pin the organisation's root public key as {} (root's, mode 0644)",
            dir.dir.display(),
            dir.root_file().display()
        )
    })?;
    let installed = read_file(&dir.bundle_file(), MAX_BUNDLE_BYTES as u64, dir.writers)
        .ok()
        .and_then(|b| BundleFile::parse(&b).ok())
        .map(|f| credence_signing::bundle::Seen {
            sequence: f.bundle.sequence,
            digest: Some(hex::encode(f.bundle.digest())),
        });
    let seen = org_policy::seen(broker.paths());
    // Whichever is newer: this user's record, or the bundle in place for every user.
    let newest = match (seen, installed) {
        (Some(a), Some(b)) => Some(if b.sequence > a.sequence { b } else { a }),
        (a, b) => a.or(b),
    };
    verify_bundle(bytes, &roots, newest.as_ref(), now_unix()).map_err(|r| r.to_string())
}

pub fn run(command: PolicyCommand, broker: &Broker) -> Result<ExitCode, String> {
    let dir = broker.policy_dir().clone();
    match command {
        PolicyCommand::Show { json } => show(broker, &dir, json),
        PolicyCommand::Verify { file } => match check(broker, &dir, &read_bundle(&file)?) {
            Ok(v) => {
                println!(
                    "verified: policy bundle of {} sequence {} (digest {}), signed by root key {}, expires {}",
                    v.bundle.organisation,
                    v.bundle.sequence,
                    hex::encode(v.digest),
                    v.root_key_id,
                    time(v.bundle.expires_at)
                );
                if let Some(w) = &v.expired_warning {
                    eprintln!("credence: warning: {w}");
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("refused: {e}");
                Ok(ExitCode::from(1))
            }
        },
        PolicyCommand::Install { file } => {
            let bytes = read_bundle(&file)?;
            let v = check(broker, &dir, &bytes).map_err(|e| format!("not installed: {e}"))?;
            org_policy::install(&dir, &bytes)?;
            org_policy::record_seen(broker.paths(), &v);
            let dropped = broker.drop_invalidated_credentials();
            eprintln!(
                "credence: installed the policy bundle of {} sequence {} as {}{}",
                v.bundle.organisation,
                v.bundle.sequence,
                dir.bundle_file().display(),
                if dropped > 0 {
                    format!("; deleted {dropped} stored credential(s) it no longer admits")
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Sign {
            source,
            key,
            expires_in_days,
            sequence,
            out,
        } => {
            let key = crate::signing_cli::read_secret_key(&key)?;
            let text = String::from_utf8(
                read_file(&source, MAX_BUNDLE_BYTES as u64, Writers::Anyone).map_err(|e| e.to_string())?,
            )
            .map_err(|_| format!("{} is not UTF-8", source.display()))?;
            let now = now_unix();
            let expires_at = expires_in_days.map(|days| now.saturating_add(days.saturating_mul(86_400)));
            let bundle = Bundle::from_source(&text, now, expires_at, sequence)
                .map_err(|e| format!("{}: {e}", source.display()))?;
            let mut file = BundleFile {
                bundle,
                signatures: Vec::new(),
            };
            file.sign(&key);
            let text = file.to_pretty();
            // Checked as a host will read it: a bundle that would fail closed is not written.
            BundleFile::parse(text.as_bytes()).map_err(|e| format!("{}: {e}", source.display()))?;
            let out = out.unwrap_or_else(|| source.with_extension("json"));
            std::fs::write(&out, &text).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            println!("{}", hex::encode(file.bundle.digest()));
            eprintln!(
                "credence: signed the policy bundle of {} sequence {} with root key {}, expires {}; wrote {}",
                file.bundle.organisation,
                file.bundle.sequence,
                key.public().key_id(),
                time(file.bundle.expires_at),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn show(broker: &Broker, dir: &PolicyDir, json: bool) -> Result<ExitCode, String> {
    let v = match org_policy::load(broker.paths(), dir) {
        Ok(Some(v)) => v,
        Ok(None) => {
            if json {
                println!("{}", serde_json::json!({ "dir": dir.dir, "policy": null }));
            } else {
                println!(
                    "no organisation policy: {} pins no root key, so trust.toml alone decides what runs",
                    dir.dir.display()
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "dir": dir.dir, "error": e }));
            } else {
                println!("refused: {e}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let b = &v.bundle;
    if json {
        println!(
            "{}",
            serde_json::json!({ "dir": dir.dir, "digest": hex::encode(v.digest), "root_key_id": v.root_key_id.0,
                "expired_warning": v.expired_warning, "policy": b })
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = format!(
        "policy bundle of {} sequence {} ({})\n  digest   {}\n  signed   by root key {}\n  issued   {}\n  expires  {}{}\n",
        b.organisation,
        b.sequence,
        dir.bundle_file().display(),
        hex::encode(v.digest),
        v.root_key_id,
        time(b.issued_at),
        time(b.expires_at),
        v.expired_warning
            .as_ref()
            .map(|w| format!("  ({w})"))
            .unwrap_or_default()
    );
    out.push_str(&format!(
        "require    {}\ntrust.toml keys {}\nunsigned providers {}\nupgrades that widen a ceiling {}\n",
        b.policy.require,
        if b.local_keys { "count" } else { "do not count" },
        if b.allow_unsigned {
            "may run with --allow-unsigned"
        } else {
            "never run"
        },
        match b.upgrades {
            Upgrades::Ask => "wait for `credence approve NAME`",
            Upgrades::Bundle => "install at once when this bundle allows the release",
        }
    ));
    if let Some(days) = b.max_statement_age_days {
        out.push_str(&format!("statements at most {days} days old\n"));
    }
    out.push_str("keys\n");
    for k in &b.keys {
        out.push_str(&format!(
            "  {}  {}  {:?}  providers: {}\n",
            k.key_id().map(|i| i.0).unwrap_or_default(),
            k.role,
            k.name,
            credence::terminal::neutralise(&k.providers.join(","))
        ));
    }
    out.push_str("providers allowed\n");
    for p in &b.providers {
        out.push_str(&format!(
            "  {}  versions {}{}\n",
            p.name,
            p.versions,
            p.sha256.as_ref().map(|d| format!("  sha256 {d}")).unwrap_or_default()
        ));
    }
    out.push_str(&format!(
        "revoked    {} key(s), {} statement(s)\n",
        b.revoked.keys.len(),
        b.revoked.statements.len()
    ));
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// Where a release that waits for approval is kept.
pub fn pending_dir(broker: &Broker) -> PathBuf {
    broker.paths().providers_dir().join("pending")
}

/// The signed ceiling of the release installed as `name` now (the approved one), read from
/// its statement: what a new release is compared with.
pub fn approved_ceiling(broker: &Broker, name: &str) -> Option<Manifest> {
    let path = broker.paths().providers_dir().join(format!("{name}.statement.json"));
    let bytes = read_file(
        &path,
        credence_signing::statement::MAX_STATEMENT_BYTES as u64,
        Writers::UserOnly,
    )
    .ok()?;
    StatementFile::parse(&bytes).ok()?.statement.ceiling().ok()
}

/// The release of `name` waiting for approval, if any: its version and sequence.
pub fn pending(broker: &Broker, name: &str) -> Option<(String, u64)> {
    let path = pending_dir(broker).join(format!("{name}.statement.json"));
    let bytes = read_file(
        &path,
        credence_signing::statement::MAX_STATEMENT_BYTES as u64,
        Writers::UserOnly,
    )
    .ok()?;
    let provider = StatementFile::parse(&bytes).ok()?.statement.provider;
    Some((provider.version, provider.sequence))
}

/// The upgrade guard's question: what the release may newly do, if it needs approval.
pub fn needs_approval(broker: &Broker, new: &Manifest, upgrades: Option<Upgrades>) -> Option<Vec<Widening>> {
    let approved = approved_ceiling(broker, &new.name)?;
    let wider = widenings(&approved, new);
    (!wider.is_empty() && upgrades != Some(Upgrades::Bundle)).then_some(wider)
}

pub fn describe(wider: &[Widening]) -> String {
    wider.iter().map(|w| format!("\n  {w}")).collect()
}

/// `credence approve NAME`: the pending release through the whole gate again, its
/// widenings shown, the user's yes, then installed in place of the approved one.
pub fn approve(broker: &Broker, name: &str, yes: bool) -> Result<ExitCode, String> {
    let pending = pending_dir(broker);
    let component = pending.join(format!("{name}.wasm"));
    let spath = statement_path(&component);
    if !component.exists() {
        return Err(format!(
            "no release of {name} is waiting for approval (none in {})\n  hint: `credence install <component>` puts a release whose ceiling is wider there",
            pending.display()
        ));
    }
    let trust = crate::signing_cli::strict(broker)?;
    let vetted = vet(name, &component, &spath, &trust, Writers::UserOnly).map_err(|e| e.to_string())?;
    if vetted.ceiling.name != name {
        return Err(format!(
            "{} is provider {:?}, not {name}",
            component.display(),
            vetted.ceiling.name
        ));
    }
    let old = approved_ceiling(broker, name);
    let wider = old.as_ref().map(|o| widenings(o, &vetted.ceiling)).unwrap_or_default();
    println!(
        "{name} {} (sequence {}) would replace {}; it may newly do:{}",
        vetted.ceiling.version,
        vetted.ceiling.sequence,
        old.as_ref()
            .map(|o| format!("{} (sequence {})", o.version, o.sequence))
            .unwrap_or_else(|| "no approved release".into()),
        if wider.is_empty() {
            "\n  nothing more".to_owned()
        } else {
            describe(&wider)
        }
    );
    if !yes {
        use std::io::{BufRead, IsTerminal, Write};
        if !std::io::stdin().is_terminal() {
            return Err(format!(
                "approving needs your answer on a terminal: run `credence approve {name}` there, or `credence approve {name} --yes` once you have read the above"
            ));
        }
        print!("approve it? [y/N] ");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            println!("not approved; {name} {} stays pending", vetted.ceiling.version);
            return Ok(ExitCode::from(1));
        }
    }
    let loader = Loader {
        providers_dir: &broker.paths().providers_dir(),
        engine: broker.engine().map_err(|e| e.to_string())?,
        cache: broker.compile_cache(),
        trust: &trust,
    };
    loader
        .admit_with(name, &vetted, FloorWrite::Required)
        .map_err(|e| e.to_string())?;
    let providers = broker.paths().providers_dir();
    let statement = vetted.statement_bytes.as_deref().expect("signed");
    crate::signing_cli::write_file_atomically(&providers, &format!("{name}.statement.json"), statement, 0o644)?;
    crate::signing_cli::write_file_atomically(&providers, &format!("{name}.wasm"), &vetted.bytes, 0o644)?;
    let _ = std::fs::remove_file(&component);
    let _ = std::fs::remove_file(&spath);
    eprintln!(
        "credence: approved {name} {}; it answers from now on",
        vetted.ceiling.version
    );
    Ok(ExitCode::SUCCESS)
}
