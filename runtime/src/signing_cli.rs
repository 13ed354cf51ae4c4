//! `credence keygen | sign | countersign | verify | inspect | trust | install`: making,
//! checking and trusting signed provider statements.

use crate::broker::Broker;
use crate::component_info::read_component_info;
use crate::loader::{Trust, TrustMode, statement_path, vet};
use crate::private_dir::write_private_file;
use crate::sandbox::imports::is_allowed_import;
use crate::state_store::now_unix;
use clap::{Args, Subcommand};
use credence_signing::trust::ExpiredPolicy;
use credence_signing::verify::{Input, SignatureCheck, check_signatures};
use credence_signing::{Manifest, PublicKey, Role, SecretKey, Statement, StatementFile, TrustedKey, verify};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum SigningCommand {
    /// Create a signing key: <OUT>.secret (0600, never printed) and <OUT>.pub (one line).
    Keygen {
        /// Path prefix for the two files.
        out: PathBuf,
    },
    /// Sign a component and its manifest as publisher: writes <component>.statement.json.
    Sign(SignArgs),
    /// Add your signature (e.g. as auditor) to an existing statement.
    Countersign {
        statement: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
    /// Check a component against its statement, trust store and policy (exit 0 only if trusted).
    Verify {
        component: PathBuf,
        #[arg(long)]
        statement: Option<PathBuf>,
    },
    /// Show a reviewer everything about a component: identity, signatures, ceiling, imports.
    Inspect {
        component: PathBuf,
        #[arg(long)]
        statement: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Manage trusted keys, revocations and the signature policy.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Verify a signed component, copy it into providers/ and precompile it.
    Install {
        component: PathBuf,
        #[arg(long)]
        statement: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct SignArgs {
    component: PathBuf,
    /// The provider manifest (default: <component>.manifest.toml).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// The publisher's secret key file.
    #[arg(long)]
    key: PathBuf,
    /// Overrides the manifest's `sequence`.
    #[arg(long)]
    sequence: Option<u64>,
    /// The statement stops verifying after this many days.
    #[arg(long)]
    expires_in_days: Option<u64>,
    /// Where to write the statement (default: <component>.statement.json).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum TrustCommand {
    /// Trust a public key (the line from `credence keygen`, or a file holding it).
    Add {
        key: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Provider names this key may sign for: exact names or prefixes ending in '*'.
        #[arg(long, value_delimiter = ',', required = true)]
        providers: Vec<String>,
        /// Unix time after which the key's signatures no longer count.
        #[arg(long)]
        not_after: Option<u64>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop trusting a key (by key id).
    Remove { key_id: String },
    /// Revoke a key id (32 hex) or a statement digest (64 hex).
    Revoke { id: String },
    /// Set which signatures a provider needs, and what expired statements mean.
    Policy {
        #[arg(long, value_delimiter = ',', value_parser = parse_role)]
        require: Option<Vec<Role>>,
        #[arg(long, value_parser = parse_expired)]
        expired: Option<ExpiredPolicy>,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "publisher" => Ok(Role::Publisher),
        "auditor" => Ok(Role::Auditor),
        _ => Err("expected publisher or auditor".into()),
    }
}

fn parse_expired(s: &str) -> Result<ExpiredPolicy, String> {
    match s {
        "refuse" => Ok(ExpiredPolicy::Refuse),
        "warn" => Ok(ExpiredPolicy::Warn),
        _ => Err("expected refuse or warn".into()),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn run(command: SigningCommand, broker: Broker) -> Result<ExitCode, String> {
    match command {
        SigningCommand::Keygen { out } => {
            let key = SecretKey::generate().map_err(|e| e.to_string())?;
            let secret = out.with_extension("secret");
            let public = out.with_extension("pub");
            key.write_new(&secret).map_err(|e| e.to_string())?;
            write(&public, format!("{}\n", key.public()).as_bytes())?;
            println!("{}", key.public());
            eprintln!(
                "credence: key id {}; secret key in {} (keep it private), public key in {}",
                key.public().key_id(),
                secret.display(),
                public.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        SigningCommand::Sign(args) => sign(args),
        SigningCommand::Countersign { statement, key } => {
            let key = SecretKey::read(&key).map_err(|e| e.to_string())?;
            let mut file =
                StatementFile::parse(&read(&statement)?).map_err(|e| format!("{}: {e}", statement.display()))?;
            file.sign(&key);
            write(&statement, file.to_pretty().as_bytes())?;
            eprintln!(
                "credence: countersigned {} with key {}",
                statement.display(),
                key.public().key_id()
            );
            Ok(ExitCode::SUCCESS)
        }
        SigningCommand::Verify { component, statement } => {
            let statement = statement.unwrap_or_else(|| statement_path(&component));
            let trust = broker.trust().map_err(|e| e.to_string())?;
            let bytes = read(&component)?;
            let sbytes = read(&statement)?;
            let name = StatementFile::parse(&sbytes)
                .map(|f| f.statement.provider.name)
                .unwrap_or_default();
            match verify(Input {
                component: &bytes,
                statement: &sbytes,
                trust: &trust.store,
                highest_sequence: trust.sequences.highest(&name),
                now: now_unix(),
            }) {
                Ok(v) => {
                    let signers: Vec<String> = v
                        .signers
                        .iter()
                        .map(|s| format!("{} {} ({})", s.role, s.key_id, s.name))
                        .collect();
                    println!(
                        "verified: {} {} (sequence {}), signed by {}",
                        v.ceiling.name,
                        v.ceiling.version,
                        v.ceiling.sequence,
                        signers.join(", ")
                    );
                    if let Some(w) = v.expired_warning {
                        println!("warning: {w}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(refusal) => {
                    println!("refused: {refusal}");
                    if let Some(h) = refusal.hint() {
                        println!("  hint: {h}");
                    }
                    Ok(ExitCode::from(1))
                }
            }
        }
        SigningCommand::Inspect {
            component,
            statement,
            json,
        } => inspect(&broker, &component, statement, json),
        SigningCommand::Trust(t) => trust_command(&broker, t),
        SigningCommand::Install { component, statement } => install(&broker, &component, statement),
    }
}

fn sign(args: SignArgs) -> Result<ExitCode, String> {
    let key = SecretKey::read(&args.key).map_err(|e| e.to_string())?;
    let bytes = read(&args.component)?;
    read_component_info(&bytes)?;
    let mpath = args
        .manifest
        .unwrap_or_else(|| crate::loader::manifest_path(&args.component));
    let text = String::from_utf8(read(&mpath)?).map_err(|_| format!("{} is not UTF-8", mpath.display()))?;
    let mut manifest = Manifest::from_toml(&text).map_err(|e| format!("{}: {e}", mpath.display()))?;
    if let Some(seq) = args.sequence {
        manifest.sequence = seq;
    }
    let now = now_unix();
    let expires_at = args.expires_in_days.map(|d| now + d * 86_400);
    let mut file = StatementFile {
        statement: Statement::new(&bytes, &manifest, &key.public().key_id(), now, expires_at),
        signatures: Vec::new(),
    };
    file.sign(&key);
    let out = args.out.unwrap_or_else(|| statement_path(&args.component));
    write(&out, file.to_pretty().as_bytes())?;
    println!("{}", hex::encode(file.statement.digest()));
    eprintln!(
        "credence: signed {} {} (sequence {}) as {}; statement {}",
        manifest.name,
        manifest.version,
        manifest.sequence,
        key.public().key_id(),
        out.display()
    );
    if !manifest.wildcard_origins.is_empty() {
        eprintln!(
            "credence: WARNING: the statement allows wildcard origins: {}",
            manifest
                .wildcard_origins
                .iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(broker: &Broker, component: &Path, statement: Option<PathBuf>, json: bool) -> Result<ExitCode, String> {
    let spath = statement.unwrap_or_else(|| statement_path(component));
    let bytes = read(component)?;
    let sbytes = read(&spath)?;
    let trust = broker.trust().map_err(|e| e.to_string())?;
    let info = read_component_info(&bytes)?;
    let file = StatementFile::parse(&sbytes).map_err(|e| format!("{}: {e}", spath.display()))?;
    let st = &file.statement;
    let checks = check_signatures(&file, &trust.store, now_unix());
    let verdict = verify(Input {
        component: &bytes,
        statement: &sbytes,
        trust: &trust.store,
        highest_sequence: trust.sequences.highest(&st.provider.name),
        now: now_unix(),
    });
    let actual = hex::encode(sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(
        &bytes,
    )));
    let sigs: Vec<serde_json::Value> = file
        .signatures
        .iter()
        .zip(&checks)
        .map(|(s, c)| {
            let (trusted, role, name) = match c {
                SignatureCheck::Trusted(signer) => (true, Some(signer.role.to_string()), Some(signer.name.clone())),
                _ => (false, None, None),
            };
            serde_json::json!({ "key_id": s.key_id, "trusted": trusted, "role": role, "name": name, "check": c.to_string() })
        })
        .collect();
    let forbidden: Vec<&String> = info.imports.iter().filter(|i| !is_allowed_import(i)).collect();
    let value = serde_json::json!({
        "component": component.display().to_string(),
        "size": bytes.len(),
        "sha256": actual,
        "statement": spath.display().to_string(),
        "statement_digest": hex::encode(st.digest()),
        "provider": st.provider.name,
        "version": st.provider.version,
        "sequence": st.provider.sequence,
        "issued_at": st.issued_at,
        "expires_at": st.expires_at,
        "publisher_key_id": st.key_id,
        "signatures": sigs,
        "capabilities": st.capabilities,
        "imports": info.imports,
        "forbidden_imports": forbidden,
        "exports": info.exports,
        "verdict": match &verdict { Ok(_) => "trusted".to_owned(), Err(r) => format!("refused: {r}") },
    });
    if json {
        println!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    let c = &st.capabilities;
    let none = |v: &[String]| if v.is_empty() { "none".to_owned() } else { v.join(", ") };
    let limit = |v: Option<u64>, unit: &str| v.map_or("host default".to_owned(), |n| format!("{n} {unit}"));
    let mut out = String::new();
    out.push_str(&format!(
        "provider   {} {} (sequence {})\n",
        st.provider.name, st.provider.version, st.provider.sequence
    ));
    out.push_str(&format!(
        "component  {} ({} bytes)\n  sha256   {actual}\n",
        component.display(),
        bytes.len()
    ));
    if actual != st.component.sha256 {
        out.push_str(&format!(
            "  MISMATCH the statement is for sha256 {} ({} bytes)\n",
            st.component.sha256, st.component.size
        ));
    }
    out.push_str(&format!(
        "statement  {} (digest {})\n",
        spath.display(),
        hex::encode(st.digest())
    ));
    out.push_str(&format!(
        "  issued   {} (Unix time), expires {}\n",
        st.issued_at,
        st.expires_at.map_or("never".into(), |t| t.to_string())
    ));
    out.push_str("signatures\n");
    for (s, check) in file.signatures.iter().zip(&checks) {
        out.push_str(&format!("  {}  {}\n", s.key_id, check));
    }
    out.push_str("capability ceiling (signed)\n");
    out.push_str(&format!("  origins  {}\n", none(&c.origins)));
    if !c.wildcard_origins.is_empty() {
        out.push_str(&format!(
            "  WILDCARD ORIGINS (any matching host or port!): {}\n",
            c.wildcard_origins.join(", ")
        ));
    }
    out.push_str(&format!("  prompts  {}\n", none(&c.prompts)));
    out.push_str(&format!(
        "  limits   memory {}, CPU {}, wall {}\n",
        limit(c.limits.memory_mib.map(u64::from), "MiB"),
        limit(c.limits.cpu_ms, "ms"),
        limit(c.limits.wall_ms, "ms")
    ));
    out.push_str(&format!("  world    {}\n", c.world));
    out.push_str("imports (read from the component)\n");
    for i in &info.imports {
        out.push_str(&format!(
            "  {i}{}\n",
            if is_allowed_import(i) {
                ""
            } else {
                "   <- FORBIDDEN: refused at load"
            }
        ));
    }
    out.push_str("exports\n");
    for e in &info.exports {
        out.push_str(&format!("  {e}\n"));
    }
    out.push_str(&format!("verdict    {}\n", value["verdict"].as_str().unwrap_or("")));
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn save_trust(broker: &Broker, trust: &Trust) -> Result<(), String> {
    let path = broker.paths().trust_file();
    write_private_file(&broker.paths().home, "trust.toml", trust.store.to_toml().as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn trust_command(broker: &Broker, command: TrustCommand) -> Result<ExitCode, String> {
    let mut trust = broker.trust().map_err(|e| e.to_string())?.clone();
    match command {
        TrustCommand::Add {
            key,
            name,
            role,
            providers,
            not_after,
        } => {
            let line = if Path::new(&key).is_file() {
                String::from_utf8(read(Path::new(&key))?).map_err(|_| "not UTF-8".to_owned())?
            } else {
                key
            };
            let public = PublicKey::parse(&line).map_err(|e| e.to_string())?;
            let id = public.key_id();
            if trust.store.find(&id).is_some() {
                return Err(format!(
                    "key {id} is already trusted; `credence trust remove {id}` first to change it"
                ));
            }
            trust.store.key.push(TrustedKey {
                name,
                role,
                public_key: public.to_string(),
                providers,
                not_after,
            });
            save_trust(broker, &trust)?;
            eprintln!("credence: trusted key {id} as {role}");
        }
        TrustCommand::List { json } => {
            let rows: Vec<serde_json::Value> = trust
                .store
                .key
                .iter()
                .map(|k| {
                    let id = k.key().map(|p| p.key_id().0).unwrap_or_default();
                    serde_json::json!({ "key_id": id, "name": k.name, "role": k.role, "providers": k.providers, "not_after": k.not_after,
                        "revoked": trust.store.revoked.keys.contains(&id) })
                })
                .collect();
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "keys": rows, "revoked": trust.store.revoked, "policy": trust.store.policy })
                );
            } else {
                for r in &rows {
                    println!(
                        "{}  {}  {:?}  providers: {}{}",
                        r["key_id"].as_str().unwrap_or(""),
                        r["role"].as_str().unwrap_or(""),
                        r["name"].as_str().unwrap_or(""),
                        r["providers"]
                            .as_array()
                            .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(","))
                            .unwrap_or_default(),
                        if r["revoked"] == true { "  REVOKED" } else { "" }
                    );
                }
                let req: Vec<String> = trust.store.policy.require.iter().map(|r| r.to_string()).collect();
                println!(
                    "policy: require {}; expired statements: {:?}",
                    req.join(" + "),
                    trust.store.policy.expired
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        TrustCommand::Remove { key_id } => {
            let before = trust.store.key.len();
            trust
                .store
                .key
                .retain(|k| k.key().map(|p| p.key_id().0 != key_id).unwrap_or(true));
            if trust.store.key.len() == before {
                return Err(format!("no trusted key {key_id}; `credence trust list` shows them"));
            }
            save_trust(broker, &trust)?;
        }
        TrustCommand::Revoke { id } => {
            let hexy = id.bytes().all(|b| b.is_ascii_hexdigit());
            match (id.len(), hexy) {
                (32, true) => trust.store.revoked.keys.push(id.to_ascii_lowercase()),
                (64, true) => trust.store.revoked.statements.push(id.to_ascii_lowercase()),
                _ => return Err("give a key id (32 hex digits) or a statement digest (64 hex digits)".into()),
            }
            save_trust(broker, &trust)?;
        }
        TrustCommand::Policy { require, expired } => {
            if let Some(r) = require {
                if !r.contains(&Role::Publisher) {
                    return Err("the policy must require a publisher signature".into());
                }
                trust.store.policy.require = r;
            }
            if let Some(e) = expired {
                trust.store.policy.expired = e;
            }
            save_trust(broker, &trust)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn install(broker: &Broker, component: &Path, statement: Option<PathBuf>) -> Result<ExitCode, String> {
    let spath = statement.unwrap_or_else(|| statement_path(component));
    let t = broker.trust().map_err(|e| e.to_string())?;
    let strict = Trust {
        mode: TrustMode::RequireSigned,
        ..t.clone()
    };
    // Vet from a staging copy that has the statement beside it, exactly as it will be loaded.
    let staging = tempfile::tempdir().map_err(|e| e.to_string())?;
    let staged = staging.path().join("candidate.wasm");
    std::fs::copy(component, &staged).map_err(|e| format!("cannot read {}: {e}", component.display()))?;
    std::fs::copy(&spath, statement_path(&staged)).map_err(|e| format!("cannot read {}: {e}", spath.display()))?;
    let vetted = vet("candidate", &staged, &strict).map_err(|e| e.to_string())?;
    let name = &vetted.ceiling.name;
    let providers = broker.paths().providers_dir();
    std::fs::create_dir_all(&providers).map_err(|e| e.to_string())?;
    let target = providers.join(format!("{name}.wasm"));
    std::fs::copy(&staged, &target).map_err(|e| e.to_string())?;
    std::fs::copy(statement_path(&staged), statement_path(&target)).map_err(|e| e.to_string())?;
    let engine = broker.engine().map_err(|e| e.to_string())?;
    broker
        .compile_cache()
        .load_or_compile(engine, &vetted.digest, &vetted.bytes)
        .map_err(|e| format!("cannot precompile: {e}"))?;
    eprintln!(
        "credence: installed {name} {} as {}\n  next: add it to config.toml:\n    [[provider]]\n    name = \"{name}\"\n    component = \"{name}.wasm\"\n    serves = [\"https://...\"]",
        vetted.ceiling.version,
        target.display()
    );
    Ok(ExitCode::SUCCESS)
}
