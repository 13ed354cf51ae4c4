//! From a request to a credential: the providers that serve the URL, in config order;
//! a stored credential when one is still valid; otherwise each provider through the
//! loading gate and the sandbox, until one answers or refuses.

use crate::audit::{self, Attempt, AuditLog};
use crate::capability::http::{HttpCapability, HttpLimits};
use crate::capability::prompt::{PromptCapability, Terminal};
use crate::compile_cache::CompileCache;
use crate::config::{Config, ProviderConfig};
use crate::credential_cache::CredentialCache;
use crate::loader::{LoadedProvider, Loader, Trust, TrustMode};
use crate::paths::Paths;
use crate::producer::{FileStamp, PolicyStamp, Producer};
use crate::request::{Answer, CachePolicy, Credential, CredentialRequest, Protocol, Refusal, Source, shown_url};
use crate::run_slots::RunSlots;
use crate::sandbox::limits::LimitHit;
use crate::sandbox::new_engine;
use crate::sandbox::run::{self as wit, Prepared, ProviderCall, ProviderRunError, run_provider};
use crate::secret::Secret;
use crate::sequence_store::SequenceStore;
use crate::state_store::StateStore;
use credence::resolver::{Forget, Forgotten, Resolver, Verdict};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use wasmtime::Engine;

pub struct Broker {
    paths: Paths,
    config: Config,
    trust_mode: TrustMode,
    audit: AuditLog,
    /// Read on first use and again whenever `trust.toml` is no longer provably the file it
    /// was read from: a long-running process (the NuGet plugin) sees a revocation at once.
    trust: Mutex<Option<Arc<Trust>>>,
    /// Where the organisation's pinned root key and policy bundle are.
    policy_dir: crate::org_policy::PolicyDir,
    /// The day (Unix days) expiry warnings were last considered in this process.
    notices_day: std::sync::atomic::AtomicU64,
    state: StateStore,
    cache: CompileCache,
    engine: OnceLock<Engine>,
    /// Credentials answered in this process (the agent: until it exits).
    memory: CredentialCache,
    /// Providers that passed the gate, per instance.
    warm: Mutex<HashMap<String, Arc<Warm>>>,
    /// The agent bounds provider runs across all its requests; a one-shot run has one.
    runs: Option<Arc<RunSlots>>,
    /// Per instance, with `runs`.
    instance_runs: Mutex<HashMap<String, Arc<RunSlots>>>,
    /// What the verdicts rest on, watched (the agent).
    watch: Option<crate::fs_watch::FsWatch>,
    /// Producers judged admitted at a watch generation.
    admitted: Mutex<(u64, std::collections::HashSet<String>)>,
    /// The recorded rejections of every configured instance as listed at a watch
    /// generation (the agent, when their directories are watched): while the generation
    /// holds, a key not listed has none, and no file is looked up for it.
    rejections: Mutex<(u64, HashMap<String, std::collections::HashSet<String>>)>,
    rejections_watched: bool,
    /// Keys of credentials a remote session's tool said were refused: its next request for
    /// them is a retry. Kept in memory only, like everything minted for a session.
    remote_rejected: Mutex<std::collections::HashSet<String>>,
}

/// A request from a remote session, as the broker needs to know it: the provider is told
/// the requester is remote (by the label the user gave the session), the user's stored
/// credentials may answer it ("existing"), and what a provider mints for it ("fresh") is
/// kept in memory under the session only, never in the store, and dropped when the session
/// ends.
#[derive(Clone, Debug)]
pub struct RemoteScope {
    pub session: String,
    pub label: String,
    /// What the audit record says of the session and its policy.
    pub audit: audit::Remote,
}

impl RemoteScope {
    fn key(&self, key: &str) -> String {
        format!("{key}{}", session_suffix(&self.session))
    }
}

/// What ends every cache key of a session's own entries.
fn session_suffix(session: &str) -> String {
    format!("\0remote:{session}")
}

/// Rejections recorded for remote sessions, all sessions together.
const MAX_REMOTE_REJECTIONS: usize = 4096;

/// Runs of one provider instance at once in the agent.
pub const RUNS_PER_INSTANCE: usize = 4;

/// A provider as it passed the gate, linked once, and the producer record that says when
/// it would no longer pass.
struct Warm {
    loaded: LoadedProvider,
    pre: Option<Prepared>,
    producer: Producer,
}

/// One instance's turn at a request.
enum Step {
    Answered(Answer),
    NotMine,
    NotFound(String),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Broker {
    pub fn new(paths: Paths, config: Config, trust: TrustMode) -> Self {
        Broker {
            state: StateStore::new(paths.state.clone(), config.store),
            cache: CompileCache::new(paths.compiled_dir(), paths.trust_state.clone()),
            audit: AuditLog::new(paths.trust_state.clone()),
            paths,
            config,
            trust_mode: trust,
            trust: Mutex::new(None),
            policy_dir: crate::org_policy::PolicyDir::from_env(),
            notices_day: std::sync::atomic::AtomicU64::new(0),
            engine: OnceLock::new(),
            memory: CredentialCache::default(),
            warm: Mutex::new(HashMap::new()),
            runs: None,
            instance_runs: Mutex::new(HashMap::new()),
            watch: None,
            admitted: Mutex::new((u64::MAX, std::collections::HashSet::new())),
            rejections: Mutex::new((u64::MAX, HashMap::new())),
            rejections_watched: false,
            remote_rejected: Mutex::default(),
        }
    }

    /// Provider runs take a slot of `runs` (the agent's).
    pub fn with_run_slots(mut self, runs: Arc<RunSlots>) -> Broker {
        self.runs = Some(runs);
        self
    }

    /// Starts the engine now (the agent, so its first request does not pay for it).
    pub fn with_engine(self, engine: Engine) -> Broker {
        let _ = self.engine.set(engine);
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    pub fn state(&self) -> &StateStore {
        &self.state
    }

    /// The engine is built on first use, so answering from a stored credential never pays for it.
    pub fn engine(&self) -> Result<&Engine, Refusal> {
        if let Some(e) = self.engine.get() {
            return Ok(e);
        }
        let engine = new_engine().map_err(|e| Refusal::Failed(format!("cannot start the WebAssembly engine: {e}")))?;
        Ok(self.engine.get_or_init(|| engine))
    }

    /// The trust store, read on first use (so a stored credential that need not be judged
    /// again never pays for it) and read again when the file has changed since.
    pub fn trust(&self) -> Result<Arc<Trust>, Refusal> {
        let path = self.paths.trust_file();
        let mut cached = self.trust.lock().unwrap_or_else(|e| e.into_inner());
        // Taken before the read: if the file changes in between, the stamp is of the older
        // file and never vouches for what was read.
        let mut stamp = FileStamp::of(&path);
        let policy = PolicyStamp::of(&self.policy_dir);
        let now = crate::state_store::now_unix();
        if let Some(t) = cached.as_ref() {
            let bundle_current = t.store.org.as_ref().is_none_or(|o| now < o.expires_at);
            if stamp.is_some() && t.sequences.trust_file() == stamp && t.policy == policy && bundle_current {
                return Ok(t.clone());
            }
        }
        let bundle = crate::org_policy::load(&self.paths, &self.policy_dir).map_err(Refusal::Failed)?;
        if let Some(warning) = bundle.as_ref().and_then(|b| b.expired_warning.as_ref()) {
            tracing::warn!("{warning}; trusting it because the bundle says on-expiry = \"warn\"");
        }
        let mut store = crate::trust_file::load(&path).map_err(Refusal::Failed)?;
        if let Some(floor) = migrate_old_floor(&self.paths) {
            store.floor = floor;
            stamp = None;
        }
        let mut floors = store.floor.clone();
        if let Some(old) = cached.as_ref() {
            // Floors this process raised but could not write stay raised.
            for (name, seq) in old.sequences.floors() {
                let f = floors.entry(name).or_insert(0);
                *f = (*f).max(seq);
            }
        }
        let trust = Arc::new(Trust {
            mode: self.trust_mode,
            sequences: SequenceStore::new(self.paths.home.clone(), floors, stamp),
            store: credence_signing::TrustStore::in_force(&store, bundle.as_ref(), now),
            policy,
        });
        *cached = Some(trust.clone());
        Ok(trust)
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    pub fn policy_dir(&self) -> &crate::org_policy::PolicyDir {
        &self.policy_dir
    }

    /// On every request, that the policy directory was moved (for tests only); once a day,
    /// what expires within 14 days.
    fn notices(&self) {
        if let Some(w) = self.policy_dir.override_warning() {
            tracing::warn!("{w}");
        }
        let now = crate::state_store::now_unix();
        let today = now / 86_400;
        if self.notices_day.swap(today, std::sync::atomic::Ordering::Relaxed) == today
            || crate::expiry::warned_today(&self.paths, now)
        {
            return;
        }
        let Ok(trust) = self.trust() else { return };
        let items = crate::expiry::expiring(&trust.store, &self.statement_expiries(), now);
        crate::expiry::announce(&self.paths, &self.audit, &items, now);
    }

    /// Each configured provider's name and the expiry of its installed statement.
    pub fn statement_expiries(&self) -> Vec<(String, Option<u64>)> {
        let providers = self.paths.providers_dir();
        self.config
            .providers
            .iter()
            .filter_map(|p| {
                let path = crate::loader::statement_path(&providers.join(&p.component));
                let bytes = crate::trusted_file::read_file(
                    &path,
                    credence_signing::statement::MAX_STATEMENT_BYTES as u64,
                    crate::trusted_file::Writers::UserOnly,
                )
                .ok()?;
                let file = credence_signing::StatementFile::parse(&bytes).ok()?;
                Some((p.provider.clone(), file.statement.expires_at))
            })
            .collect()
    }

    pub fn compile_cache(&self) -> &CompileCache {
        &self.cache
    }

    pub fn load(&self, provider: &ProviderConfig) -> Result<LoadedProvider, Refusal> {
        self.load_under(provider).map(|(loaded, _)| loaded)
    }

    /// [`load`](Self::load), with the trust it was admitted under: its producer must record
    /// that trust's files, not those of a trust read again after a change meanwhile.
    fn load_under(&self, provider: &ProviderConfig) -> Result<(LoadedProvider, Arc<Trust>), Refusal> {
        let trust = self.trust()?;
        let loader = Loader {
            providers_dir: &self.paths.providers_dir(),
            engine: self.engine()?,
            cache: &self.cache,
            trust: &trust,
        };
        let loaded = loader.load(provider).map_err(|e| Refusal::Failed(e.to_string()))?;
        Ok((loaded, trust))
    }

    /// Whether the provider that made a stored credential would still pass the gate for
    /// this instance (see `producer`). The component is never hashed; the trust store is
    /// read only if it may have changed since the credential was made.
    fn still_admitted(&self, provider: &ProviderConfig, producer: &Producer) -> Result<(), String> {
        // The agent: a verdict given while nothing it rests on has changed holds, but for
        // the passing of time (a key's or the statement's expiry).
        let generation = self.watch_generation();
        let key = format!(
            "{}\0{}\0{}\0{}",
            provider.name,
            producer.component_sha256,
            producer.statement_sha256.as_deref().unwrap_or(""),
            producer.sequence
        );
        let now = crate::state_store::now_unix();
        if let Some(g) = generation {
            let admitted = lock(&self.admitted);
            if admitted.0 == g && admitted.1.contains(&key) && producer.valid_until.is_none_or(|t| now < t) {
                return Ok(());
            }
        }
        let verdict = self.judge_again(provider, producer);
        if let (Some(g), Ok(())) = (generation, &verdict) {
            let mut admitted = lock(&self.admitted);
            if admitted.0 != g {
                *admitted = (g, std::collections::HashSet::new());
            }
            admitted.1.insert(key);
        }
        verdict
    }

    /// The watch's generation (see `fs_watch`), in the agent.
    pub fn watch_generation(&self) -> Option<u64> {
        self.watch.as_ref().map(|w| w.generation())
    }

    /// Watches what this broker's verdicts and answers rest on (the agent): config and
    /// trust store, every configured component and statement, the home and providers
    /// directories and those above them, and each instance's directory of recorded
    /// rejections (made here when missing, so it can be watched; a rejection recorded by
    /// a credence without the agent is seen by the next request).
    pub fn with_watch(mut self) -> Broker {
        let providers = self.paths.providers_dir();
        let mut files = vec![self.paths.config_file(), self.paths.trust_file()];
        // The organisation's root key and bundle: their directory (and those above it)
        // are watched for the entries leading to them.
        files.extend(crate::org_policy::files(&self.policy_dir));
        let mut dirs = vec![self.paths.home.clone(), providers.clone()];
        let mut rejections_watched = true;
        for p in &self.config.providers {
            let component = providers.join(&p.component);
            files.push(crate::loader::statement_path(&component));
            files.push(component);
            let rejected = self.state.rejected_dir(&p.name);
            match crate::private_dir::ensure_private_dir(&rejected) {
                Ok(()) => dirs.push(rejected),
                Err(e) => {
                    tracing::debug!(provider = %p.name, "rejections are looked up per request: {e}");
                    rejections_watched = false;
                }
            }
        }
        self.watch = crate::fs_watch::FsWatch::new(files, dirs);
        self.rejections_watched = rejections_watched && self.watch.is_some();
        self
    }

    /// Whether the tool's server refused what was last answered for `key` (recorded by
    /// [`reject`](Self::reject) here or by any credence of this home); consumes it.
    fn take_rejected(&self, provider: &str, key: &str) -> bool {
        if let (true, Some(g)) = (self.rejections_watched, self.watch_generation()) {
            let mut known = lock(&self.rejections);
            if known.0 != g {
                let listed: std::io::Result<HashMap<_, _>> = self
                    .config
                    .providers
                    .iter()
                    .map(|p| self.state.rejected_keys(&p.name).map(|keys| (p.name.clone(), keys)))
                    .collect();
                *known = match listed {
                    Ok(listed) => (g, listed),
                    Err(_) => (u64::MAX, HashMap::new()),
                };
            }
            if known.0 == g && known.1.get_mut(provider).is_some_and(|keys| !keys.remove(key)) {
                return false;
            }
        }
        self.state.take_rejected(provider, key)
    }

    fn judge_again(&self, provider: &ProviderConfig, producer: &Producer) -> Result<(), String> {
        let providers = self.paths.providers_dir();
        let component = providers.join(&provider.component);
        producer.local_checks(
            provider,
            (&component, &crate::loader::statement_path(&component)),
            self.trust_mode,
        )?;
        // The one rule of the gate the file identities do not cover: who could have written
        // the providers directory and those above it.
        crate::trusted_file::check_dir_chain(&providers).map_err(|e| e.to_string())?;
        let now = crate::state_store::now_unix();
        if producer.trust_unchanged(
            FileStamp::of(&self.paths.trust_file()),
            PolicyStamp::of(&self.policy_dir),
            now,
        ) {
            return Ok(());
        }
        let trust = self.trust().map_err(|e| e.to_string())?;
        producer.trust_checks(&trust.store, trust.sequences.highest(&producer.provider), now)
    }

    /// Deletes every stored credential whose producer would no longer pass the gate under
    /// the trust in force, read again (after `credence trust revoke` or `remove`, or a new
    /// policy bundle). Returns how many went.
    pub fn drop_invalidated_credentials(&self) -> usize {
        let Ok(trust) = self.trust() else { return 0 };
        let store = &trust.store;
        let now = crate::state_store::now_unix();
        let mut dropped = 0;
        for provider in &self.config.providers {
            let component = self.paths.providers_dir().join(&provider.component);
            let statement = crate::loader::statement_path(&component);
            dropped += self.state.retain_credentials(&provider.name, |producer| {
                producer
                    .local_checks(provider, (&component, &statement), trust.mode)
                    .is_ok()
                    && producer
                        .trust_checks(
                            store,
                            store
                                .floor(&producer.provider)
                                .max(trust.sequences.highest(&producer.provider)),
                            now,
                        )
                        .is_ok()
            });
        }
        dropped
    }

    /// The audit record of a decision the tool made (a rejection, a logout): every provider
    /// serving the URL, with `outcome` as its verdict.
    fn tool_decision(&self, request: &CredentialRequest, outcome: &str) -> audit::Record {
        let mut record = self.record(request);
        record.outcome = outcome.into();
        record.providers = self
            .config
            .providers_for(&request.url)
            .map(|p| Attempt {
                instance: p.name.clone(),
                verdict: outcome.into(),
                ..Default::default()
            })
            .collect();
        record
    }

    /// The tool's server refused the credential for this request: forget any stored one
    /// and make the next request for it a retry.
    pub fn reject(&self, request: &CredentialRequest) {
        self.audit.append(&self.tool_decision(request, "rejected"));
        self.memory.clear_negative(&negative_key(request));
        for provider in self.config.providers_for(&request.url) {
            let key = credential_key(provider, request);
            self.memory.evict(&key);
            self.state.evict(&provider.name, &key);
            if let Err(e) = self.state.mark_rejected(&provider.name, &key) {
                tracing::warn!(provider = %provider.name, "cannot record the rejection: {e}");
            }
        }
    }

    /// The tool's server accepted the credential: a pending rejection no longer applies.
    pub fn accept(&self, request: &CredentialRequest) {
        for provider in self.config.providers_for(&request.url) {
            self.take_rejected(&provider.name, &credential_key(provider, request));
        }
    }

    /// The user logged out through the tool (docker `erase`, cargo `logout`, keyring
    /// `del`): what is stored for the URL is forgotten and the record says so. Not a
    /// rejection: the next request is a first one, not a retry, so a provider with a fixed
    /// token answers it as before.
    pub fn log_out(&self, request: &CredentialRequest) -> Result<usize, String> {
        let record = self.tool_decision(request, "logged-out");
        if record.providers.is_empty() {
            // Nothing is kept for a URL no provider serves (a tool may log out of several
            // spellings of one server), so there is nothing to forget or record.
            return Ok(0);
        }
        self.audit.append(&record);
        self.logout(&request.url)
    }

    /// Drops the credential stored for this request at each provider that serves its URL,
    /// keeping their state, so the next request runs the provider (cargo `login`).
    pub fn drop_stored(&self, request: &CredentialRequest) {
        self.memory.clear_negative(&negative_key(request));
        for provider in self.config.providers_for(&request.url) {
            let key = credential_key(provider, request);
            self.memory.evict(&key);
            self.state.evict(&provider.name, &key);
        }
    }

    /// Forgets stored credentials and state of every provider that serves `url`.
    pub fn logout(&self, url: &url::Url) -> Result<usize, String> {
        let mut n = 0;
        for provider in self.config.providers_for(url) {
            self.memory.evict_instance(Some(&provider.name));
            n += self.state.forget(Some(&provider.name)).map_err(|e| e.to_string())?;
        }
        Ok(n)
    }

    /// Answers a request and writes its audit record.
    pub fn get(&self, request: &CredentialRequest, prompts: Box<dyn Terminal>) -> Result<Answer, Refusal> {
        self.get_for(request, prompts, None)
    }

    /// [`get`](Self::get) for a client of the agent, whom the audit record names.
    pub fn get_for(
        &self,
        request: &CredentialRequest,
        prompts: Box<dyn Terminal>,
        client: Option<audit::Client>,
    ) -> Result<Answer, Refusal> {
        self.get_scoped(request, prompts, client, None)
    }

    /// [`get_for`](Self::get_for) for a remote session (see [`RemoteScope`]).
    pub fn get_remote(
        &self,
        request: &CredentialRequest,
        prompts: Box<dyn Terminal>,
        client: Option<audit::Client>,
        scope: &RemoteScope,
    ) -> Result<Answer, Refusal> {
        self.get_scoped(request, prompts, client, Some(scope))
    }

    fn get_scoped(
        &self,
        request: &CredentialRequest,
        prompts: Box<dyn Terminal>,
        client: Option<audit::Client>,
        scope: Option<&RemoteScope>,
    ) -> Result<Answer, Refusal> {
        let request = &crate::capability::prompt::interactive_only_with_a_terminal(request, &*prompts);
        self.notices();
        let mut prompts = Some(prompts);
        let started = std::time::Instant::now();
        let mut record = self.record(request);
        record.client = client;
        record.remote = scope.map(|s| s.audit.clone());
        let negative_key = match scope {
            Some(s) => s.key(&negative_key(request)),
            None => negative_key(request),
        };
        let negative = match request.is_retry {
            true => None,
            false => self.memory.negative(&negative_key).filter(|(_, producers)| {
                // Repeated only while every provider that answered would still be admitted.
                let admitted = producers.iter().all(|(instance, producer)| {
                    self.config
                        .providers
                        .iter()
                        .find(|p| &p.name == instance)
                        .is_some_and(|p| self.still_admitted(p, producer).is_ok())
                });
                if !admitted {
                    self.memory.clear_negative(&negative_key);
                }
                admitted
            }),
        };
        let result = match negative {
            Some((refusal, _)) => {
                record.cache = Some("negative".into());
                Err(refusal)
            }
            None => {
                let mut ran = Vec::new();
                let result = self.answer(request, &mut record, &mut prompts, &mut ran, scope);
                match &result {
                    Ok(_) => self.memory.clear_negative(&negative_key),
                    Err(refusal) => self
                        .memory
                        .put_negative(&negative_key, refusal, request.interactive, ran),
                }
                result
            }
        };
        record.duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        match &result {
            Ok(answer) => {
                record.outcome = "credential".into();
                record.source = Some(
                    match answer.source {
                        Source::Stored => "stored",
                        Source::Provider => "provider",
                    }
                    .into(),
                );
                record.credential_fingerprint = Some(self.audit.fingerprint(answer.credential.secret.expose()));
            }
            Err(refusal) => {
                record.outcome = outcome_of(refusal).into();
                record.error = Some(refusal.to_string());
            }
        }
        self.audit.append(&record);
        result
    }

    /// The audit record of a remote request refused before any provider was asked (outside
    /// the session's allow list, not approved, the session ended).
    pub fn audit_remote_refusal(
        &self,
        request: &CredentialRequest,
        remote: audit::Remote,
        refusal: &Refusal,
        took: std::time::Duration,
    ) {
        let mut record = self.record(request);
        record.remote = Some(remote);
        record.outcome = outcome_of(refusal).into();
        record.error = Some(refusal.to_string());
        record.duration_ms = (took.as_secs_f64() * 1e6).round() / 1e3;
        self.audit.append(&record);
    }

    fn record(&self, request: &CredentialRequest) -> audit::Record {
        audit::Record {
            time: crate::state_store::now_unix(),
            protocol: serde_json::to_value(request.protocol)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            operation: request.operation.clone(),
            url: shown_url(&request.url),
            is_retry: request.is_retry,
            interactive: request.interactive,
            ..Default::default()
        }
    }

    fn answer(
        &self,
        request: &CredentialRequest,
        record: &mut audit::Record,
        prompts: &mut Option<Box<dyn Terminal>>,
        ran: &mut Vec<(String, Producer)>,
        scope: Option<&RemoteScope>,
    ) -> Result<Answer, Refusal> {
        let mut not_found = Vec::new();
        for provider in self.config.providers_for(&request.url) {
            record.providers.push(Attempt {
                instance: provider.name.clone(),
                ..Default::default()
            });
            let key = credential_key(provider, request);
            let own_key = scope.map(|s| s.key(&key));
            // Concurrent identical requests wait for this one and find its answer cached.
            let step = self.memory.single_flight(own_key.as_deref().unwrap_or(&key), || {
                self.attempt(provider, &key, request, record, prompts, ran, scope)
            });
            match step? {
                Step::Answered(answer) => return Ok(answer),
                Step::NotMine => {}
                Step::NotFound(message) => not_found.push(format!("{}: {}", provider.name, message)),
            }
        }
        let url = shown_url(&request.url);
        if not_found.is_empty() {
            Err(Refusal::NotServed(url))
        } else {
            Err(Refusal::NotFound {
                url,
                detail: clean(&not_found.join("; ")),
            })
        }
    }

    /// One provider instance's turn: its cached or stored credential if the gate would
    /// still admit what made it, else a run.
    #[allow(clippy::too_many_arguments)]
    fn attempt(
        &self,
        provider: &ProviderConfig,
        key: &str,
        request: &CredentialRequest,
        record: &mut audit::Record,
        prompts: &mut Option<Box<dyn Terminal>>,
        ran: &mut Vec<(String, Producer)>,
        scope: Option<&RemoteScope>,
    ) -> Result<Step, Refusal> {
        // A session's own entries are under its key; the user's (`key`) are read, never
        // written or evicted, for it.
        let scoped = scope.map(|s| s.key(key));
        let own_key = scoped.as_deref().unwrap_or(key);
        let mut request = request.clone();
        let rejected = match scope {
            Some(_) => lock(&self.remote_rejected).remove(own_key),
            None => self.take_rejected(&provider.name, key),
        };
        if rejected {
            request.is_retry = true;
            record.is_retry = true;
        }
        let request = &request;
        let attempt = record.providers.last_mut().expect("pushed by the caller");
        let now = crate::state_store::now_unix();
        if request.is_retry {
            self.memory.evict(own_key);
            if scope.is_none() {
                self.state.evict(&provider.name, key);
            }
        } else {
            let cached = match self.memory.get(own_key, now) {
                Some(hit) => Some((hit, "hit")),
                None => scoped
                    .as_ref()
                    .and_then(|_| self.memory.get(key, now))
                    .map(|hit| (hit, "hit"))
                    .or_else(|| self.state.cached_credential(&provider.name, key).map(|c| (c, "stored"))),
            };
            if let Some(((credential, producer), cache)) = cached {
                match self.still_admitted(provider, &producer) {
                    Ok(()) => {
                        tracing::debug!(provider = %provider.name, cache, "answered from a kept credential");
                        attempt.verdict = "stored".into();
                        attempt.provider = Some(producer.provider.clone());
                        attempt.sha256 = Some(producer.component_sha256.clone());
                        record.cache = Some(cache.into());
                        if cache == "stored" {
                            self.memory.put(key, &provider.name, &credential, &producer, now);
                        }
                        return Ok(Step::Answered(Answer {
                            credential,
                            provider: provider.name.clone(),
                            source: Source::Stored,
                            serves: serving_prefix(provider, &request.url),
                        }));
                    }
                    Err(why) => {
                        // Whatever changed, the provider goes through the whole gate again.
                        tracing::debug!(provider = %provider.name, "not serving the kept credential: {why}");
                        self.memory.evict(own_key);
                        self.memory.evict(key);
                        self.state.evict(&provider.name, key);
                    }
                }
            }
        }
        record.cache = Some("miss".into());

        let warm = match self.warm(provider) {
            Ok(w) => w,
            Err(e) => {
                attempt.verdict = format!("refused: {e}");
                return Err(e);
            }
        };
        let loaded = &warm.loaded;
        attempt.verdict = "loaded".into();
        attempt.provider = Some(loaded.ceiling.name.clone());
        attempt.version = Some(loaded.ceiling.version.clone());
        attempt.sha256 = Some(hex::encode(loaded.digest));
        attempt.signers = loaded
            .signers
            .iter()
            .map(|s| format!("{} {}", s.role, s.key_id))
            .collect();
        let started = std::time::Instant::now();
        // An instance with state runs one request at a time, from reading its state to
        // writing what replaces it, across every process of this home (the agent, and any
        // in-process run beside it): a rotating refresh token is never sent twice. Taken
        // before any run slot, so a request that waits for it holds none.
        let _state_lock = match self.state.provider_state(&provider.name) {
            Some(_) => Some(
                self.state
                    .lock_instance(&provider.name)
                    .map_err(|e| Refusal::Failed(format!("cannot lock the state of {}: {e}", provider.name)))?,
            ),
            None => None,
        };
        // In the agent, a run takes one of its instance's slots, then one of the agent's: one
        // slow or hostile instance cannot take every slot from the others.
        let instance_slots = self.runs.as_ref().map(|_| {
            lock(&self.instance_runs)
                .entry(provider.name.clone())
                .or_insert_with(|| Arc::new(RunSlots::new(RUNS_PER_INSTANCE, 256)))
                .clone()
        });
        let _instance_slot = match &instance_slots {
            Some(slots) => Some(slots.acquire()?),
            None => None,
        };
        let _slot = match &self.runs {
            Some(runs) => Some(runs.acquire()?),
            None => None,
        };
        let outcome = self.run(provider, &warm, request, attempt, prompts, scope)?;
        ran.push((provider.name.clone(), warm.producer.clone()));
        tracing::debug!(provider = %provider.name, run_us = started.elapsed().as_micros() as u64, "provider call finished");
        attempt.answer = Some(
            match &outcome {
                Ok(_) => "credential",
                Err(wit::CredentialError::NotMine) => "not-mine",
                Err(wit::CredentialError::NotFound(_)) => "not-found",
                Err(wit::CredentialError::NeedsInteraction(_)) => "needs-interaction",
                Err(wit::CredentialError::Denied(_)) => "denied",
                Err(wit::CredentialError::Failed(_)) => "failed",
            }
            .into(),
        );
        match outcome {
            Ok(credential) => {
                let producer = &warm.producer;
                self.memory.put(own_key, &provider.name, &credential, producer, now);
                if scope.is_none() {
                    if let Err(e) = self.state.cache_credential(&provider.name, key, &credential, producer) {
                        tracing::warn!(provider = %provider.name, "cannot store the credential for later runs: {e}");
                    }
                }
                Ok(Step::Answered(Answer {
                    credential,
                    provider: provider.name.clone(),
                    source: Source::Provider,
                    serves: serving_prefix(provider, &request.url),
                }))
            }
            Err(wit::CredentialError::NotMine) => {
                tracing::debug!(provider = %provider.name, "not mine; trying the next provider");
                Ok(Step::NotMine)
            }
            Err(wit::CredentialError::NotFound(message)) => {
                tracing::debug!(provider = %provider.name, "not found; trying the next provider");
                Ok(Step::NotFound(message))
            }
            Err(wit::CredentialError::NeedsInteraction(message)) => Err(Refusal::NeedsInteraction {
                provider: provider.name.clone(),
                message: clean(&message),
            }),
            Err(wit::CredentialError::Denied(message)) => Err(Refusal::Denied {
                provider: provider.name.clone(),
                message: clean(&message),
            }),
            Err(wit::CredentialError::Failed(message)) => Err(Refusal::Failed(format!(
                "provider {} failed: {}",
                provider.name,
                clean(&message)
            ))),
        }
    }

    /// The instance's provider as it last passed the gate, linked and ready to instantiate,
    /// while the gate would still admit it (the same judgement as for a stored credential:
    /// the component, statement and trust store unchanged, no expiry passed); otherwise
    /// through the whole gate again. A 2 MB component is hashed once, not per request.
    fn warm(&self, provider: &ProviderConfig) -> Result<Arc<Warm>, Refusal> {
        let known = lock(&self.warm).get(&provider.name).cloned();
        if let Some(w) = known {
            if self.still_admitted(provider, &w.producer).is_ok() {
                return Ok(w);
            }
            lock(&self.warm).remove(&provider.name);
        }
        let (loaded, trust) = self.load_under(provider)?;
        let pre = match crate::sandbox::run::prepare(self.engine()?, &loaded.component) {
            Ok(p) => Some(p),
            Err(e) => {
                // Left to the call, which reports it as the provider's instantiation error.
                tracing::debug!(provider = %provider.name, "cannot link the provider ahead of its call: {e}");
                None
            }
        };
        let producer = Producer::of(&loaded, &trust);
        let warm = Arc::new(Warm { loaded, pre, producer });
        lock(&self.warm).insert(provider.name.clone(), warm.clone());
        Ok(warm)
    }

    /// Drops every answer and warm provider the gate would no longer admit (the agent, once
    /// `trust.toml` changed): a revoked release's credentials are gone, not only unserved.
    pub fn drop_what_is_no_longer_admitted(&self) -> usize {
        let admitted = |instance: &str, producer: &Producer| {
            self.config
                .providers
                .iter()
                .find(|p| p.name == instance)
                .is_some_and(|p| self.still_admitted(p, producer).is_ok())
        };
        lock(&self.warm).retain(|instance, w| admitted(instance, &w.producer));
        self.memory.retain(admitted)
    }

    /// How many providers are loaded and warm.
    /// A remote session's tool said the credential it was given was refused: the session's
    /// own entry goes and its next request is a retry. The user's stored credentials stay:
    /// a remote cannot make this machine forget them.
    pub fn remote_rejected(&self, request: &CredentialRequest, scope: &RemoteScope) {
        let mut record = self.tool_decision(request, "rejected");
        record.remote = Some(scope.audit.clone());
        self.audit.append(&record);
        self.memory.clear_negative(&scope.key(&negative_key(request)));
        for provider in self.config.providers_for(&request.url) {
            let key = scope.key(&credential_key(provider, request));
            self.memory.evict(&key);
            let mut rejected = lock(&self.remote_rejected);
            // Bounded: a remote repeating verdicts cannot grow it without end.
            if rejected.len() < MAX_REMOTE_REJECTIONS {
                rejected.insert(key);
            }
        }
    }

    /// A session ended: everything minted for it goes (zeroised on eviction).
    pub fn end_session(&self, session: &str) -> usize {
        let suffix = session_suffix(session);
        lock(&self.remote_rejected).retain(|k| !k.ends_with(&suffix));
        self.memory.retain_keys(|key| !key.ends_with(&suffix))
    }

    pub fn providers_loaded(&self) -> usize {
        lock(&self.warm).len()
    }

    /// How many credentials are kept in memory.
    pub fn cache_entries(&self) -> usize {
        self.memory.len()
    }

    /// Runs one loaded provider. The outer error ends the request; the inner one is the
    /// provider's own answer.
    fn run(
        &self,
        provider: &ProviderConfig,
        warm: &Warm,
        request: &CredentialRequest,
        attempt: &mut Attempt,
        prompts: &mut Option<Box<dyn Terminal>>,
        scope: Option<&RemoteScope>,
    ) -> Result<Result<Credential, wit::CredentialError>, Refusal> {
        let name = &provider.name;
        // Who asked, as a device code or browser sign-in shows it.
        let asked_by = match scope {
            Some(s) => format!("{} in remote session \"{}\"", request.protocol.name(), s.label),
            None => request.protocol.name().to_owned(),
        };
        let loaded = &warm.loaded;
        // Read under the caller's state lock (see `attempt`).
        let state = self.state.provider_state(name);
        let call = ProviderCall {
            engine: self.engine()?,
            component: &loaded.component,
            pre: warm.pre.as_ref(),
            limits: loaded.limits,
            http: HttpCapability::new(loaded.origins.clone(), HttpLimits::default()),
            // Labelled with the verified (signed) name, not the user's instance name.
            prompt: PromptCapability::new(
                &loaded.ceiling.name,
                request.interactive,
                loaded.prompts.clone(),
                // The first provider that runs gets the requester's terminal; one after it
                // (the first said not-mine) cannot prompt.
                prompts.take().unwrap_or_else(|| Box::new(NoTerminal)),
            )
            .for_request(&request.url, &asked_by),
            // Remote sessions (a later issue) never get the CI identity.
            id_token: crate::capability::workload_identity::IdTokenCapability::new(
                loaded.ceiling.id_token,
                provider.id_token_grants.clone(),
                false,
            ),
            request: wit::CredentialRequest {
                url: request.url.to_string(),
                protocol: wit_protocol(request.protocol),
                operation: request.operation.clone(),
                is_retry: request.is_retry,
                interactive: request.interactive,
                username_hint: request.username_hint.clone(),
                challenge_headers: request.challenge_headers.clone(),
                settings: provider.settings.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                state,
                requester: match scope {
                    Some(s) => wit::Requester::Remote(s.label.clone()),
                    None => wit::Requester::Local(request.protocol.name().to_owned()),
                },
                reason: if request.is_retry {
                    wit::RequestReason::Retry
                } else {
                    wit::RequestReason::Request
                },
                interactive_deadline_s: if request.interactive {
                    loaded.limits.interactive_wall.as_secs().try_into().unwrap_or(u32::MAX)
                } else {
                    0
                },
            },
        };
        let answer = run_provider(call);
        attempt.uses = answer.uses.iter().map(|u| u.to_string()).collect();
        let result = answer.result.map_err(|e| match e {
            ProviderRunError::Limit(hit) => {
                attempt.limit = Some(hit.to_string());
                Refusal::Failed(format!("provider {name} {hit}"))
            }
            other => Refusal::Failed(format!("provider {name} {other}")),
        })?;
        tracing::debug!(provider = %name, uses = answer.uses.len(), "provider returned");
        let credential = match result {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let size = credential.secret.len()
            + credential.username.as_ref().map_or(0, String::len)
            + credential.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if size > loaded.limits.output_bytes {
            return Err(Refusal::Failed(format!(
                "provider {name} {}",
                LimitHit::Output {
                    size,
                    limit: loaded.limits.output_bytes
                }
            )));
        }
        if let Some(new_state) = &credential.new_state {
            if new_state.len() > loaded.limits.state_bytes {
                return Err(Refusal::Failed(format!(
                    "provider {name} {}",
                    LimitHit::State {
                        size: new_state.len(),
                        limit: loaded.limits.state_bytes
                    }
                )));
            }
            if let Err(e) = self.state.set_provider_state(name, new_state) {
                tracing::warn!(provider = %name, "cannot keep the provider's state: {e}");
            }
        }
        check_credential(&credential)
            .map_err(|why| Refusal::Failed(format!("provider {name} returned an unusable credential: {why}")))?;
        Ok(Ok(Credential {
            username: credential.username,
            secret: Secret::new(credential.secret),
            headers: credential
                .headers
                .into_iter()
                .map(|(k, v)| (k, Secret::new(v)))
                .collect(),
            expires_at: crate::request::representable_expiry(credential.expires_at),
            // Asking again after the credential expired means nothing.
            refresh_at: credential
                .refresh_at
                .filter(|r| credential.expires_at.is_none_or(|e| *r < e)),
            cache: match credential.cache {
                wit::CachePolicy::Never => CachePolicy::Never,
                wit::CachePolicy::Session => CachePolicy::Session,
                wit::CachePolicy::UntilExpiry => CachePolicy::UntilExpiry,
            },
        }))
    }
}

/// Before the floor moved into trust.toml it was `sequences.json` in the state dir: fold its
/// entries in once (never lowering one), then delete it. Returns the merged floor.
fn migrate_old_floor(paths: &Paths) -> Option<std::collections::BTreeMap<String, u64>> {
    let old = paths.trust_state.join("sequences.json");
    if !crate::private_dir::is_private_file(&old).unwrap_or(false) || !paths.trust_file().exists() {
        return None;
    }
    let bytes = crate::trusted_file::read_file(&old, 1 << 20, crate::trusted_file::Writers::UserOnly).ok()?;
    let entries: std::collections::BTreeMap<String, u64> = serde_json::from_slice(&bytes).ok()?;
    let merged = crate::trust_file::update(&paths.home, |store| {
        for (name, seq) in entries {
            if credence_signing::manifest::valid_name(&name) {
                let f = store.floor.entry(name).or_insert(0);
                *f = (*f).max(seq);
            }
        }
        Ok(store.floor.clone())
    });
    match merged {
        Ok(floor) => {
            let _ = std::fs::remove_file(&old);
            Some(floor)
        }
        Err(e) => {
            tracing::warn!(
                "cannot move the rollback floor from {} into trust.toml: {e}",
                old.display()
            );
            None
        }
    }
}

/// Every tool's protocol is line- or field-framed: a CR, LF or NUL from a provider could
/// smuggle a second field into the answer, so such credentials are refused here, once.
fn check_credential(c: &wit::Credential) -> Result<(), String> {
    let bad = |s: &str| s.chars().any(|ch| ch.is_control());
    if c.secret.is_empty() {
        return Err("the secret is empty".into());
    }
    if bad(&c.secret) {
        return Err("the secret contains control characters".into());
    }
    if c.username.as_deref().is_some_and(bad) {
        return Err("the user name contains control characters".into());
    }
    for (name, value) in &c.headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() || bad(value) {
            return Err("a header name or value is not valid HTTP".into());
        }
    }
    Ok(())
}

/// Provider-supplied text going into an error message: one line, no control characters.
fn clean(message: &str) -> String {
    crate::capability::prompt::neutralise(message)
}

/// The `serves` prefix of `provider` that matched `url`.
fn serving_prefix(provider: &ProviderConfig, url: &url::Url) -> Option<String> {
    provider.serves.iter().find(|s| s.matches(url)).map(|s| s.to_string())
}

/// Where prompts go once the requester's terminal went to an earlier provider.
struct NoTerminal;

impl Terminal for NoTerminal {
    fn ask(&mut self, _line: &str, _secret: bool) -> std::io::Result<Option<String>> {
        Err(std::io::Error::other("another provider already had the terminal"))
    }
    fn show(&mut self, _line: &str) -> std::io::Result<()> {
        Err(std::io::Error::other("another provider already had the terminal"))
    }
    fn can_prompt(&self) -> bool {
        false
    }
}

impl Resolver for Broker {
    fn resolve(&self, request: &CredentialRequest, prompts: Box<dyn Terminal>) -> Result<Answer, Refusal> {
        self.get(request, prompts)
    }

    fn verdict(&self, request: &CredentialRequest, verdict: Verdict) {
        match verdict {
            Verdict::Accepted => self.accept(request),
            Verdict::Rejected => self.reject(request),
        }
    }

    fn forget(&self, what: Forget) -> Result<Forgotten, Refusal> {
        let count = match what {
            Forget::LoggedOut(request) => {
                if self.config.providers_for(&request.url).next().is_none() {
                    return Err(Refusal::NotServed(shown_url(&request.url)));
                }
                self.log_out(&request).map_err(Refusal::Failed)?
            }
            Forget::Stored(request) => {
                if self.config.providers_for(&request.url).next().is_none() {
                    return Err(Refusal::NotServed(shown_url(&request.url)));
                }
                self.drop_stored(&request);
                0
            }
            Forget::Provider(provider) => {
                if let Some(p) = &provider {
                    if !self.config.providers.iter().any(|c| &c.name == p) {
                        return Err(Refusal::Failed(format!(
                            "no provider named {p:?} in the config; run `credence providers` to list them"
                        )));
                    }
                }
                self.memory.evict_instance(provider.as_deref());
                self.state
                    .forget(provider.as_deref())
                    .map_err(|e| Refusal::Failed(format!("cannot remove stored state: {e}")))?
            }
        };
        Ok(Forgotten {
            count,
            store: self.state.describe(),
        })
    }
}

/// Key for a stored credential: the provider's configuration, the URL, the tool's protocol
/// and the operation. A credential made for one tool is shaped for it (cargo's token, git's
/// user and password, a registry's Basic pair for docker) and a scope granted for one
/// operation (read) is not one for another (publish): neither crosses over.
/// A refusal as the audit trail's `outcome` names it.
fn outcome_of(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::NotServed(_) => "not-served",
        Refusal::NotFound { .. } => "not-found",
        Refusal::NeedsInteraction { .. } => "needs-interaction",
        Refusal::Denied { .. } => "denied",
        Refusal::Failed(_) => "failed",
        Refusal::Busy(_) => "busy",
    }
}

fn credential_key(provider: &ProviderConfig, request: &CredentialRequest) -> String {
    let mut h = Sha256::new();
    let protocol = serde_json::to_value(request.protocol)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    for part in [
        b"credence credential v2".as_slice(),
        provider.name.as_bytes(),
        provider.component.as_bytes(),
        provider.provider.as_bytes(),
        provider.publisher.as_deref().unwrap_or("").as_bytes(),
        protocol.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    for (k, v) in &provider.settings {
        for part in [k, v] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
    }
    for part in [request.url.as_str(), request.operation.as_str()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Key for a refusal answered again (see `credential_cache::negative_for`): the request as
/// the router sees it, under this config (a new config is a new broker and a new cache).
fn negative_key(request: &CredentialRequest) -> String {
    let mut h = Sha256::new();
    let protocol = serde_json::to_string(&request.protocol).unwrap_or_default();
    for part in [
        b"credence negative v1".as_slice(),
        protocol.as_bytes(),
        request.url.as_str().as_bytes(),
        request.operation.as_bytes(),
        request.username_hint.as_deref().unwrap_or("").as_bytes(),
        // A request that can prompt is never answered with a refusal made for one that
        // could not.
        if request.interactive {
            b"interactive".as_slice()
        } else {
            b"non-interactive".as_slice()
        },
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

fn wit_protocol(p: Protocol) -> wit::Protocol {
    match p {
        Protocol::Cargo => wit::Protocol::Cargo,
        Protocol::Git => wit::Protocol::Git,
        Protocol::Docker => wit::Protocol::Docker,
        Protocol::Nuget => wit::Protocol::Nuget,
        Protocol::Bazel => wit::Protocol::Bazel,
        Protocol::Goauth => wit::Protocol::Goauth,
        Protocol::Keyring => wit::Protocol::Keyring,
        Protocol::Kubectl => wit::Protocol::Kubectl,
        Protocol::Generic => wit::Protocol::Generic,
    }
}
