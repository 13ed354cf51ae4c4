//! `credence keygen | sign | countersign | verify | inspect | trust | install`: making,
//! checking and trusting signed provider statements.

use crate::broker::Broker;
use crate::component_info::read_component_info;
use crate::loader::{LoadError, MAX_COMPONENT_BYTES};
use crate::loader::{Trust, TrustMode, statement_path, vet};
use crate::sandbox::imports::{EXPORT, is_allowed_import, is_provider_export};
use crate::state_store::now_unix;
use crate::trusted_file::{Writers, read_file};
use clap::{Args, Subcommand};
use credence_signing::trust::{ExpiredPolicy, Required, normalise_hex};
use credence_signing::verify::{SignatureCheck, check_signatures};
use credence_signing::{Manifest, PublicKey, Role, SecretKey, Statement, StatementFile, TrustStore, TrustedKey};
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
        #[command(flatten)]
        instance: InstanceArgs,
    },
}

/// `install ... --serves URL`: the instance to add to config.toml as well.
#[derive(Args)]
pub struct InstanceArgs {
    /// Also add an instance of the provider to config.toml, serving this URL prefix
    /// (repeat for more).
    #[arg(long)]
    serves: Vec<String>,
    /// The instance's name in config.toml (default: the provider's name).
    #[arg(long)]
    name: Option<String>,
    /// A setting, KEY=VALUE (repeat for more). Settings the provider marks secret are not
    /// taken here: they are read from the terminal, or from stdin, one line each.
    #[arg(long = "setting", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// An origin the instance may call, among those the provider declares (repeat).
    #[arg(long = "grant", value_name = "ORIGIN")]
    grants: Vec<String>,
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
    /// Hand a key's trust to a successor. A publisher writes the rotation with
    /// `--from OLD.secret --to NEW.secret --out FILE`; users accept it with `rotate FILE`.
    Rotate {
        /// A rotation file to accept.
        #[arg(conflicts_with_all = ["from", "to"], required_unless_present = "from")]
        file: Option<PathBuf>,
        /// The retiring key's secret key file.
        #[arg(long, requires_all = ["to", "out"])]
        from: Option<PathBuf>,
        /// The successor's secret key file (it signs too, proving it is held).
        #[arg(long)]
        to: Option<PathBuf>,
        /// Days after the rotation during which new statements by the old key still count.
        #[arg(long, default_value_t = 30)]
        grace_days: u64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Set which signatures a provider needs, and what expired statements mean.
    Policy {
        /// Signatures needed: `publisher,auditor` or counts such as `auditor=2` (distinct
        /// trusted keys per role; a publisher is always required).
        #[arg(long, value_parser = parse_require)]
        require: Option<Required>,
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

fn parse_require(s: &str) -> Result<Required, String> {
    let mut r = Required {
        publisher: 1,
        auditor: 0,
    };
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (role, n) = match part.split_once('=') {
            Some((role, n)) => (
                role,
                n.parse::<u32>()
                    .map_err(|_| format!("{part:?}: the count must be a number"))?,
            ),
            None => (part, 1),
        };
        match parse_role(role)? {
            Role::Publisher if n == 1 => {}
            Role::Publisher => return Err("a statement names one publisher: publisher=1".into()),
            Role::Auditor => r.auditor += n,
        }
    }
    if r.auditor > credence_signing::trust::MAX_REQUIRED {
        return Err(format!("at most {} auditors", credence_signing::trust::MAX_REQUIRED));
    }
    Ok(r)
}

fn parse_expired(s: &str) -> Result<ExpiredPolicy, String> {
    match s {
        "refuse" => Ok(ExpiredPolicy::Refuse),
        "warn" => Ok(ExpiredPolicy::Warn),
        _ => Err("expected refuse or warn".into()),
    }
}

/// The files these commands are handed (a download to check, a key, a statement) are
/// judged by their content, so anyone may have written them; they are still only read if
/// they are regular files, and with a bound.
fn read(path: &Path) -> Result<Vec<u8>, String> {
    read_file(path, MAX_COMPONENT_BYTES, Writers::Anyone).map_err(|e| e.to_string())
}

/// A secret key file, read like every other file these commands are given (a key file is
/// one short line).
pub(crate) fn read_secret_key(path: &Path) -> Result<SecretKey, String> {
    let bytes = read_file(path, 4096, Writers::Anyone).map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{} is not a credence secret key file", path.display()))?;
    SecretKey::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The trust settings with signatures required, whatever `--allow-unsigned` says: these
/// commands judge signed components.
pub(crate) fn strict(broker: &Broker) -> Result<Trust, String> {
    let t = broker.trust().map_err(|e| e.to_string())?;
    Ok(Trust {
        mode: TrustMode::RequireSigned,
        ..(*t).clone()
    })
}

/// A gate refusal as these commands show it: the placeholder instance name dropped.
fn without_candidate(e: &LoadError) -> String {
    let text = e.to_string();
    text.strip_prefix("provider candidate is refused: ")
        .or_else(|| text.strip_prefix("provider candidate: "))
        .unwrap_or(&text)
        .to_owned()
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
            let key = read_secret_key(&key)?;
            let bytes = read(&statement)?;
            // A key rotation is countersigned the same way as a statement.
            let text = match StatementFile::parse(&bytes) {
                Ok(mut file) => {
                    file.sign(&key);
                    file.to_pretty()
                }
                Err(e) => match credence_signing::Rotation::parse(&bytes) {
                    Ok(mut rotation) => {
                        // Said plainly: countersigning a rotation vouches for a new key.
                        eprintln!(
                            "credence: this is a key rotation: it hands the trust of key {} to {} ({} grace days)",
                            rotation.from,
                            rotation.successor().map(|p| p.key_id().0).unwrap_or_default(),
                            rotation.grace_days
                        );
                        rotation.sign(&key);
                        rotation.to_pretty()
                    }
                    Err(_) => return Err(format!("{}: {e}", statement.display())),
                },
            };
            write(&statement, text.as_bytes())?;
            eprintln!(
                "credence: countersigned {} with key {}",
                statement.display(),
                key.public().key_id()
            );
            Ok(ExitCode::SUCCESS)
        }
        SigningCommand::Verify { component, statement } => {
            let statement = statement.unwrap_or_else(|| statement_path(&component));
            let trust = strict(&broker)?;
            // Exactly the gate's verdict (signatures, policy, floor, imports, export), with
            // the files judged by their content wherever they are.
            match vet("candidate", &component, &statement, &trust, Writers::Anyone) {
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
                    Ok(ExitCode::SUCCESS)
                }
                Err(LoadError::File { source, .. }) => Err(source.to_string()),
                Err(refusal) => {
                    println!("refused: {}", without_candidate(&refusal));
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
        SigningCommand::Install {
            component,
            statement,
            instance,
        } => install(&broker, &component, statement, instance),
    }
}

fn sign(args: SignArgs) -> Result<ExitCode, String> {
    let key = read_secret_key(&args.key)?;
    let bytes = read(&args.component)?;
    let info = read_component_info(&bytes)?;
    if !info.exports.iter().any(|e| is_provider_export(e)) {
        eprintln!(
            "credence: WARNING: {} exports no {}@{}.x (nor @0.1.x), so no credence host will run it (exports: {}); is this the provider you meant to sign?",
            args.component.display(),
            EXPORT.0,
            EXPORT.1,
            if info.exports.is_empty() {
                "none".to_owned()
            } else {
                info.exports.join(", ")
            }
        );
    }
    let mpath = args
        .manifest
        .unwrap_or_else(|| crate::loader::manifest_path(&args.component));
    let text = String::from_utf8(read(&mpath)?).map_err(|_| format!("{} is not UTF-8", mpath.display()))?;
    let mut manifest = Manifest::from_toml(&text).map_err(|e| format!("{}: {e}", mpath.display()))?;
    // A statement no host would load is refused here, where the author can still fix it.
    crate::sandbox::imports::check_world(&manifest.world, info.imports.iter().chain(&info.exports))
        .map_err(|e| format!("{}: {e} (`world` in {})", args.component.display(), mpath.display()))?;
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
    let named = statement.is_some();
    let spath = statement.unwrap_or_else(|| statement_path(component));
    let bytes = read(component)?;
    if !named && !spath.exists() {
        return inspect_unsigned(component, &bytes, &spath, json);
    }
    let sbytes = read(&spath)?;
    let trust = strict(broker)?;
    let file = StatementFile::parse(&sbytes).map_err(|e| format!("{}: {e}", spath.display()))?;
    let st = &file.statement;
    let checks = check_signatures(&file, &trust.store, now_unix());
    // The gate's own verdict: a digest mismatch is reported before anything read from
    // bytes that are not the signed ones, and forbidden imports refuse.
    let verdict = vet("candidate", component, &spath, &trust, Writers::Anyone);
    // Bytes that no longer parse still get their digest shown; their imports cannot be.
    let info = read_component_info(&bytes);
    let actual = sha256_hex(&bytes);
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
    let (imports, exports, parse_error) = match &info {
        Ok(i) => (i.imports.clone(), i.exports.clone(), None),
        Err(e) => (Vec::new(), Vec::new(), Some(e.clone())),
    };
    let forbidden: Vec<&String> = imports.iter().filter(|i| !is_allowed_import(i)).collect();
    // Which signatures satisfied which requirement, counted as the gate counts them.
    let paired: Vec<(&str, SignatureCheck)> = file
        .signatures
        .iter()
        .map(|s| s.key_id.as_str())
        .zip(checks.iter().cloned())
        .collect();
    let requirements = credence_signing::verify::requirements(&paired, &st.key_id, &trust.store.policy);
    let requirement_rows: Vec<serde_json::Value> = requirements
        .iter()
        .map(|r| {
            serde_json::json!({ "role": r.role, "needed": r.needed, "missing": r.missing(),
                "satisfied_by": r.satisfied_by.iter().map(|s| serde_json::json!({ "key_id": s.key_id.0, "name": s.name })).collect::<Vec<_>>() })
        })
        .collect();
    let verdict_text = match &verdict {
        Ok(_) => "trusted".to_owned(),
        Err(e) => format!("refused: {}", without_candidate(e).lines().next().unwrap_or_default()),
    };
    let value = serde_json::json!({
        "component": component.display().to_string(),
        "size": bytes.len(),
        "sha256": actual,
        "digest_matches": actual == st.component.sha256 && bytes.len() as u64 == st.component.size,
        "statement": spath.display().to_string(),
        "statement_digest": hex::encode(st.digest()),
        "provider": st.provider.name,
        "version": st.provider.version,
        "sequence": st.provider.sequence,
        "issued_at": st.issued_at,
        "expires_at": st.expires_at,
        "publisher_key_id": st.key_id,
        "signatures": sigs,
        "requirements": requirement_rows,
        "organisation": trust.store.org.as_ref().map(|o| o.label()),
        "capabilities": st.capabilities,
        "imports": imports,
        "forbidden_imports": forbidden,
        "exports": exports,
        "parse_error": parse_error,
        "verdict": verdict_text,
    });
    let code = ExitCode::from(if verdict.is_ok() { 0 } else { 1 });
    if json {
        println!("{value}");
        return Ok(code);
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
    out.push_str(&format!(
        "policy     {}{}\n",
        trust.store.policy.require,
        trust
            .store
            .org
            .as_ref()
            .map(|o| format!(" (the policy bundle of {})", o.label()))
            .unwrap_or_default()
    ));
    for r in &requirements {
        let by: Vec<String> = r
            .satisfied_by
            .iter()
            .map(|s| format!("{} ({})", s.key_id, s.name))
            .collect();
        out.push_str(&format!(
            "  {:<9} {} of {}: {}{}\n",
            r.role.to_string(),
            r.satisfied_by.len().min(r.needed as usize),
            r.needed,
            if by.is_empty() {
                "none".to_owned()
            } else {
                by.join(", ")
            },
            match r.missing() {
                0 => String::new(),
                n => format!("; MISSING {n} more distinct trusted {}", r.role),
            }
        ));
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
    out.push_str(&imports_and_exports(&imports, &exports, parse_error.as_deref()));
    out.push_str(&format!("verdict    {verdict_text}\n"));
    print!("{out}");
    Ok(code)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
}

/// `inspect`'s imports (forbidden ones flagged) and exports, read from the component.
fn imports_and_exports(imports: &[String], exports: &[String], parse_error: Option<&str>) -> String {
    let mut out = match parse_error {
        Some(e) => format!("imports    unreadable: {e}\n"),
        None => "imports (read from the component)\n".to_owned(),
    };
    for i in imports {
        let flag = if is_allowed_import(i) {
            ""
        } else {
            "   <- FORBIDDEN: refused at load"
        };
        out.push_str(&format!("  {i}{flag}\n"));
    }
    out.push_str("exports\n");
    for e in exports {
        out.push_str(&format!("  {e}\n"));
    }
    out
}

/// `inspect` of a component with no statement beside it (its author's, before `sign`):
/// what can be known without a signature, the ceiling its manifest declares if one is
/// beside it, and the command that signs it. Exit 1: the gate refuses it as it is.
fn inspect_unsigned(component: &Path, bytes: &[u8], spath: &Path, json: bool) -> Result<ExitCode, String> {
    let actual = sha256_hex(bytes);
    let (imports, exports, parse_error) = match read_component_info(bytes) {
        Ok(i) => (i.imports, i.exports, None),
        Err(e) => (Vec::new(), Vec::new(), Some(e)),
    };
    let forbidden: Vec<&String> = imports.iter().filter(|i| !is_allowed_import(i)).collect();
    let mpath = crate::loader::manifest_path(component);
    let manifest = match std::fs::read_to_string(&mpath) {
        Ok(text) => Some(
            credence_signing::manifest::Manifest::from_toml(&text).map_err(|e| format!("{}: {e}", mpath.display())),
        ),
        Err(_) => None,
    };
    let sign = format!(
        "credence sign {} --key <your secret key>",
        crate::setup::sh(&component.display().to_string())
    );
    let verdict = format!(
        "refused: not signed ({} is missing); sign it: `{sign}` (or, while developing it, run it with --allow-unsigned)",
        spath.display()
    );
    if json {
        let declared = match &manifest {
            Some(Ok(m)) => serde_json::json!({
                "name": m.name, "version": m.version, "sequence": m.sequence, "world": m.world,
                "origins": m.origins.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
                "wildcard_origins": m.wildcard_origins.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
                "prompts": m.prompts.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                "limits": { "memory_mib": m.limits.memory_mib, "cpu_ms": m.limits.cpu_ms, "wall_ms": m.limits.wall_ms },
            }),
            Some(Err(e)) => serde_json::json!({ "error": e }),
            None => serde_json::Value::Null,
        };
        println!(
            "{}",
            serde_json::json!({
                "component": component.display().to_string(), "size": bytes.len(), "sha256": actual,
                "signed": false, "statement": spath.display().to_string(), "manifest": mpath.display().to_string(),
                "declared_ceiling": declared, "imports": imports, "forbidden_imports": forbidden,
                "exports": exports, "parse_error": parse_error, "verdict": verdict,
            })
        );
        return Ok(ExitCode::from(1));
    }
    let mut out = format!(
        "component  {} ({} bytes)\n  sha256   {actual}\nstatement  none ({} is missing)\n",
        component.display(),
        bytes.len(),
        spath.display()
    );
    match &manifest {
        Some(Ok(m)) => {
            let list = |v: Vec<String>| if v.is_empty() { "none".to_owned() } else { v.join(", ") };
            out.push_str(&format!(
                "declared ceiling, from {} (nobody signed it yet)\n  provider {} {} (sequence {})\n  origins  {}\n",
                mpath.display(),
                m.name,
                m.version,
                m.sequence,
                list(m.origins.iter().map(|o| o.to_string()).collect())
            ));
            if !m.wildcard_origins.is_empty() {
                out.push_str(&format!(
                    "  WILDCARD ORIGINS (any matching host or port!): {}\n",
                    list(m.wildcard_origins.iter().map(|o| o.to_string()).collect())
                ));
            }
            out.push_str(&format!(
                "  prompts  {}\n  world    {}\n",
                list(m.prompts.iter().map(|p| p.as_str().to_owned()).collect()),
                m.world
            ));
        }
        Some(Err(e)) => out.push_str(&format!("declared ceiling: {e}\n")),
        None => out.push_str(&format!(
            "declared ceiling: none ({} is missing; `credence sign` needs it)\n",
            mpath.display()
        )),
    }
    out.push_str(&imports_and_exports(&imports, &exports, parse_error.as_deref()));
    out.push_str(&format!("verdict    {verdict}\n"));
    print!("{out}");
    Ok(ExitCode::from(1))
}

/// Changes the trust store under its lock (from a fresh read, so a floor recorded
/// meanwhile is kept), then deletes the stored credentials the new store no longer admits.
fn change_trust(broker: &Broker, change: impl FnOnce(&mut TrustStore) -> Result<(), String>) -> Result<(), String> {
    let home = &broker.paths().home;
    crate::trust_file::update(home, |store| {
        change(store)?;
        // Checked as it will be read back: a change never writes a store that fails closed.
        TrustStore::parse(&store.to_toml())
    })?;
    let dropped = broker.drop_invalidated_credentials();
    if dropped > 0 {
        eprintln!(
            "credence: deleted {dropped} stored credential(s) made by providers the trust store no longer admits"
        );
    }
    Ok(())
}

fn trust_command(broker: &Broker, command: TrustCommand) -> Result<ExitCode, String> {
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
            let mut said = format!("credence: trusted key {id} as {role}");
            change_trust(broker, |store| {
                let revoked = store.key_revoked(&id);
                let Some(known) = store.key.iter_mut().find(|k| k.key_id().as_ref() == Some(&id)) else {
                    store.key.push(TrustedKey {
                        name,
                        role,
                        public_key: public.to_string(),
                        providers,
                        not_after,
                        origin: Default::default(),
                        successor_of: None,
                        retired: None,
                    });
                    return Ok(());
                };
                // Adding a key that is trusted already widens its provider scopes in place;
                // anything else about it is changed only by removing and adding it again.
                if known.role != role {
                    return Err(format!(
                        "key {id} ({:?}) is trusted as {} already, and a key has one role: `credence trust remove {id}`, then add it again as {role}",
                        known.name, known.role
                    ));
                }
                if not_after.is_some() && not_after != known.not_after {
                    return Err(format!(
                        "key {id} ({:?}) is trusted already; to change when it stops counting, `credence trust remove {id}` and add it again with --not-after",
                        known.name
                    ));
                }
                let new: Vec<String> = providers.into_iter().filter(|p| !known.providers.contains(p)).collect();
                said = if new.is_empty() {
                    format!(
                        "credence: key {id} ({:?}) is trusted already for {}; nothing changed",
                        known.name,
                        known.providers.join(", ")
                    )
                } else {
                    known.providers.extend(new);
                    format!(
                        "credence: key {id} ({:?}) may now sign for {}",
                        known.name,
                        known.providers.join(", ")
                    )
                };
                if revoked {
                    said.push_str(&format!(
                        "\ncredence: warning: key {id} is revoked in trust.toml, so nothing it signed is admitted whatever its scopes"
                    ));
                }
                Ok(())
            })?;
            eprintln!("{said}");
            // Written, and still not counted: the organisation decides whether it may widen.
            if let Some(org) = broker
                .trust()
                .ok()
                .and_then(|t| t.store.org.clone())
                .filter(|o| !o.local_keys)
            {
                eprintln!(
                    "credence: warning: the policy bundle of {} lets no key from trust.toml count, so this key signs nothing here until the bundle trusts it (`credence policy show` lists its keys)",
                    org.label()
                );
            }
        }
        TrustCommand::List { json } => {
            let trust = broker.trust().map_err(|e| e.to_string())?;
            let now = now_unix();
            let expiring = crate::expiry::expiring(&trust.store, &broker.statement_expiries(), now);
            let store = &trust.store;
            let rows: Vec<serde_json::Value> = store
                .key
                .iter()
                .map(|k| {
                    let id = k.key().map(|p| p.key_id()).unwrap_or(credence_signing::KeyId(String::new()));
                    let source = match k.origin {
                        credence_signing::trust::KeyOrigin::Bundle => "policy bundle",
                        credence_signing::trust::KeyOrigin::Local => "trust.toml",
                    };
                    serde_json::json!({ "key_id": id.0, "name": k.name, "role": k.role, "providers": k.providers, "not_after": k.not_after,
                        "revoked": store.key_revoked(&id), "source": source, "counts": !store.local_key_forbidden(k),
                        "successor_of": k.successor_of.as_ref().map(|s| &s.0),
                        "retired": k.retired.as_ref().map(|r| serde_json::json!({ "successor": r.successor.0, "signs_until": r.signs_until })) })
                })
                .collect();
            // Each rotation kept, and whether it counts (and why not).
            let rotations: Vec<serde_json::Value> = store
                .rotation
                .iter()
                .map(|r| {
                    let to = r.successor().map(|p| p.key_id().0).unwrap_or_default();
                    let applied = store
                        .find(&credence_signing::KeyId(r.from.clone()))
                        .and_then(|k| k.retired.as_ref())
                        .is_some_and(|ret| ret.successor.0 == to);
                    let status = if applied {
                        Ok(())
                    } else {
                        credence_signing::rotation::check_rotation(r, store, now)
                            .and(Err("another rotation of the same key came first".to_owned()))
                    };
                    serde_json::json!({ "from": r.from, "to": to, "grace_days": r.grace_days, "issued_at": r.issued_at,
                        "counts": status.is_ok(), "reason": status.err() })
                })
                .collect();
            if json {
                let soon: Vec<serde_json::Value> = expiring
                    .iter()
                    .map(|e| serde_json::json!({ "what": e.what, "expires_at": e.expires_at, "message": e.message(now) }))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({ "expiring": soon, "keys": rows, "rotations": rotations, "revoked": store.revoked, "policy": store.policy,
                        "floor": store.floor, "organisation": store.org.as_ref().map(|o| o.label()) })
                );
            } else {
                // What needs doing first: whatever stops counting within 14 days.
                if !expiring.is_empty() {
                    println!("EXPIRING SOON");
                    for e in &expiring {
                        println!("  {}", e.message(now));
                    }
                }
                if let Some(org) = &store.org {
                    println!("under the policy bundle of {} (`credence policy show`)", org.label());
                }
                for r in &rows {
                    let mut notes = vec![r["source"].as_str().unwrap_or("").to_owned()];
                    if r["counts"] == false {
                        notes.push("DOES NOT COUNT: the policy bundle lets no trust.toml key count".into());
                    }
                    if let Some(of) = r["successor_of"].as_str() {
                        notes.push(format!("successor of {of}"));
                    }
                    if let Some(retired) = r["retired"].as_object() {
                        notes.push(format!(
                            "rotated to {}, counts on statements issued until {}",
                            retired["successor"].as_str().unwrap_or(""),
                            retired["signs_until"]
                        ));
                    }
                    if r["revoked"] == true {
                        notes.push("REVOKED".into());
                    }
                    println!(
                        "{}  {}  {:?}  providers: {}  ({})",
                        r["key_id"].as_str().unwrap_or(""),
                        r["role"].as_str().unwrap_or(""),
                        r["name"].as_str().unwrap_or(""),
                        r["providers"]
                            .as_array()
                            .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(","))
                            .unwrap_or_default(),
                        notes.join("; ")
                    );
                }
                for r in &rotations {
                    println!(
                        "rotation {} -> {} ({} grace days): {}",
                        r["from"].as_str().unwrap_or(""),
                        r["to"].as_str().unwrap_or(""),
                        r["grace_days"],
                        match r["reason"].as_str() {
                            None => "in force".to_owned(),
                            Some(why) => format!("DOES NOT COUNT: {why}"),
                        }
                    );
                }
                println!(
                    "policy: require {}; expired statements: {:?}",
                    store.policy.require,
                    store.policy.expired()
                );
                if !trust.store.floor.is_empty() {
                    let floors: Vec<String> = trust.store.floor.iter().map(|(n, s)| format!("{n} {s}")).collect();
                    println!("rollback floor (lowest sequence accepted): {}", floors.join(", "));
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        TrustCommand::Remove { key_id } => {
            let key_id = normalise_hex(&key_id, 32).ok_or_else(|| {
                format!("{key_id:?} is not a key id (32 hex digits); `credence trust list` shows them")
            })?;
            change_trust(broker, |store| {
                let before = store.key.len();
                store
                    .key
                    .retain(|k| k.key().map(|p| p.key_id().0 != key_id).unwrap_or(true));
                if store.key.len() == before {
                    return Err(format!("no trusted key {key_id}; `credence trust list` shows them"));
                }
                Ok(())
            })?;
            eprintln!("credence: no longer trusting key {key_id}");
        }
        TrustCommand::Revoke { id } => {
            change_trust(broker, |store| {
                if let Some(key) = normalise_hex(&id, 32) {
                    store.revoked.keys.push(key);
                } else if let Some(digest) = normalise_hex(&id, 64) {
                    store.revoked.statements.push(digest);
                } else {
                    return Err("give a key id (32 hex digits) or a statement digest (64 hex digits)".into());
                }
                Ok(())
            })?;
            eprintln!("credence: revoked {}", id.to_ascii_lowercase());
        }
        TrustCommand::Rotate {
            file,
            from,
            to,
            grace_days,
            out,
        } => return rotate(broker, file, from.zip(to).zip(out), grace_days),
        TrustCommand::Policy { require, expired } => {
            change_trust(broker, |store| {
                if let Some(r) = require {
                    store.policy.require = r;
                }
                if let Some(e) = expired {
                    store.policy.expired = Some(e);
                }
                Ok(())
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rotate(
    broker: &Broker,
    file: Option<PathBuf>,
    make: Option<((PathBuf, PathBuf), PathBuf)>,
    grace_days: u64,
) -> Result<ExitCode, String> {
    use credence_signing::Rotation;
    if let Some(((from, to), out)) = make {
        if grace_days > credence_signing::rotation::MAX_GRACE_DAYS {
            return Err(format!(
                "--grace-days is at most {}",
                credence_signing::rotation::MAX_GRACE_DAYS
            ));
        }
        let (from, to) = (read_secret_key(&from)?, read_secret_key(&to)?);
        let rotation = Rotation::new(&from, &to, grace_days, now_unix());
        rotation.check_fields()?;
        write(&out, rotation.to_pretty().as_bytes())?;
        eprintln!(
            "credence: wrote the rotation of key {} to {} ({} grace days) to {}\n  next: where policies require auditors, they countersign it (`credence countersign --key <auditor key> {}`); then each user runs `credence trust rotate {}`",
            from.public().key_id(),
            to.public().key_id(),
            grace_days,
            out.display(),
            out.display(),
            out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let file = file.expect("clap requires a file or --from");
    let rotation = Rotation::parse(&read(&file)?).map_err(|e| format!("{}: {e}", file.display()))?;
    let trust = broker.trust().map_err(|e| e.to_string())?;
    credence_signing::rotation::check_rotation(&rotation, &trust.store, now_unix())
        .map_err(|e| format!("{}: not accepted: {e}", file.display()))?;
    change_trust(broker, |store| {
        if !store.rotation.contains(&rotation) {
            store.rotation.push(rotation.clone());
        }
        Ok(())
    })?;
    let successor = rotation.successor()?.key_id();
    eprintln!(
        "credence: key {} hands its trust to {successor}; statements it issues after {} no longer count",
        rotation.from,
        crate::state_store::shown_time(rotation.signs_until())
    );
    Ok(ExitCode::SUCCESS)
}

fn install(
    broker: &Broker,
    component: &Path,
    statement: Option<PathBuf>,
    instance: InstanceArgs,
) -> Result<ExitCode, String> {
    let spath = statement.unwrap_or_else(|| statement_path(component));
    let trust = strict(broker)?;
    let vetted = vet("candidate", component, &spath, &trust, Writers::Anyone).map_err(|e| without_candidate(&e))?;
    let name = vetted.ceiling.name.clone();
    // The config entry is checked (and its secrets read) before anything is installed.
    let entry = if instance.serves.is_empty() {
        if !(instance.settings.is_empty() && instance.grants.is_empty() && instance.name.is_none()) {
            return Err("--name, --setting and --grant describe the config entry, which --serves asks for: add --serves <URL prefix>".into());
        }
        None
    } else {
        Some(crate::config_entry::Entry::new(
            broker.paths(),
            &vetted.ceiling,
            instance.name,
            instance.serves,
            instance.settings,
            instance.grants,
        )?)
    };
    // The upgrade guard: a release that may newly do more than the approved one waits,
    // beside it, for `credence approve`; the approved one keeps answering, and the floor
    // stays where it is (raising it would refuse the approved release).
    let upgrades = trust.store.org.as_ref().map(|o| o.upgrades);
    if let Some(wider) = crate::policy_cli::needs_approval(broker, &vetted.ceiling, upgrades) {
        let pending = crate::policy_cli::pending_dir(broker);
        crate::private_dir::ensure_private_dir(&pending)
            .map_err(|e| format!("cannot create {}: {e}", pending.display()))?;
        let statement_bytes = vetted.statement_bytes.as_deref().expect("signed");
        write_file_atomically(&pending, &format!("{name}.statement.json"), statement_bytes, 0o644)?;
        write_file_atomically(&pending, &format!("{name}.wasm"), &vetted.bytes, 0o644)?;
        if let Some(entry) = entry {
            entry.write()?;
        }
        eprintln!(
            "credence: {name} {} (sequence {}) may do more than the approved release, so it is pending and the approved one keeps answering; it may newly do:{}\n  next: review it, then `credence approve {name}`",
            vetted.ceiling.version,
            vetted.ceiling.sequence,
            crate::policy_cli::describe(&wider)
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Compile and type-check before anything is copied: the whole gate passes first, and
    // only then is the floor raised (by `admit`).
    let loader = crate::loader::Loader {
        providers_dir: &broker.paths().providers_dir(),
        engine: broker.engine().map_err(|e| e.to_string())?,
        cache: broker.compile_cache(),
        trust: &trust,
    };
    loader
        .admit_with(&name, &vetted, crate::loader::FloorWrite::Required)
        .map_err(|e| e.to_string())?;
    let providers = broker.paths().providers_dir();
    std::fs::create_dir_all(&providers).map_err(|e| format!("cannot create {}: {e}", providers.display()))?;
    let target = providers.join(format!("{name}.wasm"));
    // The bytes that were verified, not the files again (they may have changed since).
    let statement_bytes = vetted.statement_bytes.as_deref().expect("signed");
    write_file_atomically(&providers, &format!("{name}.statement.json"), statement_bytes, 0o644)?;
    write_file_atomically(&providers, &format!("{name}.wasm"), &vetted.bytes, 0o644)?;
    eprintln!(
        "credence: installed {name} {} as {}",
        vetted.ceiling.version,
        target.display()
    );
    match entry {
        Some(entry) => {
            let instance = entry.write()?;
            eprintln!(
                "credence: added instance {instance:?} to {}\n  next: `credence setup <tool> --write` (cargo, git, docker, ...), then use the tool",
                broker.paths().config_file().display()
            );
        }
        None => eprintln!(
            "  next: add it to config.toml, e.g. `credence install {} --serves https://<your feed>/`, or by hand:\n    [[provider]]\n    name = \"{name}\"\n    serves = [\"https://...\"]",
            crate::setup::sh(&component.display().to_string())
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Replaces `dir/name` by rename with the given mode (0644 for providers, which are not
/// secret), so a running credence never reads half a file.
pub(crate) fn write_file_atomically(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", dir.join(name).display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(fail)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(fail)?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.write_all(bytes).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(dir.join(name)).map_err(|e| fail(e.error))?;
    Ok(())
}
