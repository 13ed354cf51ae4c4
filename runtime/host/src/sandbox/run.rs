//! One call of a provider's `get-credential`, from a compiled component to its answer or
//! to the limit that stopped it.

use super::bindings::current::exports::credence::provider::credential_provider as wit;
use super::bindings::current::{Provider, ProviderPre};
use super::bindings::v0_1::exports::credence::provider::credential_provider as wit_v0_1;
use super::bindings::v0_1::{Provider as ProviderV0_1, ProviderPre as ProviderPreV0_1};
use super::engine::EPOCH_TICK;
use super::limits::{CallClock, LimitHit, Limiter, ProviderLimits};
pub use super::store::CapabilityUse;
use super::store::ProviderStore;
use super::wasi::{STDERR_CAPTURE, add_inert_wasi, inert_ctx};
use crate::capability::http::HttpCapability;
use crate::capability::prompt::PromptCapability;
use crate::capability::workload_identity::IdTokenCapability;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

pub use wit::{CachePolicy, Credential, CredentialError, CredentialRequest, Protocol, RequestReason, Requester};

pub struct ProviderCall<'a> {
    pub engine: &'a Engine,
    pub component: &'a Component,
    /// The component linked once, ahead of time (a long-running host keeps one per
    /// verified component); without it the call links the component itself.
    pub pre: Option<&'a Prepared>,
    pub limits: ProviderLimits,
    pub http: HttpCapability,
    pub prompt: PromptCapability,
    pub id_token: IdTokenCapability,
    pub request: CredentialRequest,
}

#[derive(Debug)]
pub struct ProviderAnswer {
    /// The provider's own answer, or what stopped it.
    pub result: Result<Result<Credential, CredentialError>, ProviderRunError>,
    /// Every capability use, also when a limit stopped it (for the audit trail).
    pub uses: Vec<CapabilityUse>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderRunError {
    #[error("{0}")]
    Limit(LimitHit),
    #[error("crashed: {0}")]
    Trap(String),
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
}

fn ticks(d: Duration) -> u64 {
    (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

/// A component linked against the host's imports and type-checked once: each call then
/// only instantiates it, in a fresh store. Never an instance: nothing a provider keeps in
/// memory outlives the request it was made for.
pub enum Prepared {
    Current(ProviderPre<ProviderStore>),
    V0_1(ProviderPreV0_1<ProviderStore>),
}

/// Both worlds' imports in one linker: a component gets the ones it names.
fn linker(engine: &Engine) -> wasmtime::Result<Linker<ProviderStore>> {
    let mut linker: Linker<ProviderStore> = Linker::new(engine);
    add_inert_wasi(&mut linker)?;
    Provider::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    ProviderV0_1::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// Whether the component exports the 0.1 provider interface rather than the current one.
fn is_v0_1(engine: &Engine, component: &Component) -> bool {
    component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name.starts_with("credence:provider/credential-provider@0.1."))
}

/// Links `component` once for many calls.
pub fn prepare(engine: &Engine, component: &Component) -> Result<Prepared, String> {
    let pre = linker(engine).and_then(|l| l.instantiate_pre(component));
    let prepared = if is_v0_1(engine, component) {
        pre.and_then(ProviderPreV0_1::new).map(Prepared::V0_1)
    } else {
        pre.and_then(ProviderPre::new).map(Prepared::Current)
    };
    prepared.map_err(|e| format!("{e:#}"))
}

/// A current request as a 0.1 provider sees it: without who asked, why and the deadline.
fn request_v0_1(r: &CredentialRequest) -> wit_v0_1::CredentialRequest {
    wit_v0_1::CredentialRequest {
        url: r.url.clone(),
        protocol: match r.protocol {
            Protocol::Cargo => wit_v0_1::Protocol::Cargo,
            Protocol::Git => wit_v0_1::Protocol::Git,
            Protocol::Docker => wit_v0_1::Protocol::Docker,
            Protocol::Nuget => wit_v0_1::Protocol::Nuget,
            Protocol::Bazel => wit_v0_1::Protocol::Bazel,
            Protocol::Goauth => wit_v0_1::Protocol::Goauth,
            Protocol::Keyring => wit_v0_1::Protocol::Keyring,
            Protocol::Kubectl => wit_v0_1::Protocol::Kubectl,
            Protocol::Generic => wit_v0_1::Protocol::Generic,
        },
        operation: r.operation.clone(),
        is_retry: r.is_retry,
        interactive: r.interactive,
        username_hint: r.username_hint.clone(),
        challenge_headers: r.challenge_headers.clone(),
        settings: r.settings.clone(),
        state: r.state.clone(),
    }
}

/// A 0.1 answer in current terms: no scope beyond the request, operation-specific, no
/// refresh time.
fn answer_from_v0_1(a: Result<wit_v0_1::Credential, wit_v0_1::CredentialError>) -> Result<Credential, CredentialError> {
    match a {
        Ok(c) => Ok(Credential {
            username: c.username,
            secret: c.secret,
            headers: c.headers,
            expires_at: c.expires_at,
            cache: match c.cache {
                wit_v0_1::CachePolicy::Never => CachePolicy::Never,
                wit_v0_1::CachePolicy::Session => CachePolicy::Session,
                wit_v0_1::CachePolicy::UntilExpiry => CachePolicy::UntilExpiry,
            },
            new_state: c.new_state,
            scope: None,
            operation_independent: false,
            refresh_at: None,
        }),
        Err(e) => Err(match e {
            wit_v0_1::CredentialError::NotMine => CredentialError::NotMine,
            wit_v0_1::CredentialError::NotFound(m) => CredentialError::NotFound(m),
            wit_v0_1::CredentialError::NeedsInteraction(m) => CredentialError::NeedsInteraction(m),
            wit_v0_1::CredentialError::Denied(m) => CredentialError::Denied(m),
            wit_v0_1::CredentialError::Failed(m) => CredentialError::Failed(m),
        }),
    }
}

pub fn run_provider(call: ProviderCall<'_>) -> ProviderAnswer {
    let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
    let limits = call.limits;
    let state = ProviderStore {
        wasi: inert_ctx(stderr.clone()),
        table: {
            let mut t = ResourceTable::new();
            t.set_max_capacity(limits.handles);
            t
        },
        limiter: Limiter::new(limits.memory_bytes),
        clock: CallClock::new(&limits),
        limits,
        http: call.http,
        prompt: call.prompt,
        id_token: call.id_token,
        device_codes: 0,
        authorizations: 0,
        uses: Vec::new(),
        uses_not_recorded: 0,
        fetches: 0,
    };
    let mut store = Store::new(call.engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(ticks(limits.cpu.min(limits.wall)));
    store.epoch_deadline_callback(|mut ctx| {
        let data = ctx.data_mut();
        match data.clock.check() {
            Ok(left) => Ok(UpdateDeadline::Continue(ticks(left))),
            Err(hit) => {
                data.limiter.hit = Some(hit);
                Ok(UpdateDeadline::Interrupt)
            }
        }
    });

    let linked;
    let pre = match call.pre {
        Some(pre) => pre,
        None => match prepare(call.engine, call.component) {
            Ok(p) => {
                linked = p;
                &linked
            }
            Err(e) => {
                return ProviderAnswer {
                    result: Err(ProviderRunError::Instantiate(e)),
                    uses: Vec::new(),
                };
            }
        },
    };
    let outcome = match pre {
        Prepared::Current(pre) => pre.instantiate(&mut store).map_err(|e| (e, true)).and_then(|provider| {
            provider
                .credence_provider_credential_provider()
                .call_get_credential(&mut store, &call.request)
                .map_err(|e| (e, false))
        }),
        Prepared::V0_1(pre) => pre.instantiate(&mut store).map_err(|e| (e, true)).and_then(|provider| {
            provider
                .credence_provider_credential_provider()
                .call_get_credential(&mut store, &request_v0_1(&call.request))
                .map(answer_from_v0_1)
                .map_err(|e| (e, false))
        }),
    };

    let diagnostics = stderr.contents();
    if !diagnostics.is_empty() {
        tracing::debug!(
            stderr = %crate::capability::prompt::neutralise(&String::from_utf8_lossy(&diagnostics)),
            "provider wrote to stderr"
        );
    }
    let mut data = store.into_data();
    let uses = data.take_uses();
    let result = match (data.limiter.hit, outcome) {
        (Some(hit), _) => Err(ProviderRunError::Limit(hit)),
        (None, Ok(result)) => Ok(result),
        (None, Err((e, true))) => Err(ProviderRunError::Instantiate(format!("{e:#}"))),
        (None, Err((e, false))) if is_table_full(&e) => {
            Err(ProviderRunError::Limit(LimitHit::Handles { limit: limits.handles }))
        }
        (None, Err((e, false))) => Err(ProviderRunError::Trap(trap_summary(&e))),
    };
    ProviderAnswer { result, uses }
}

fn is_table_full(e: &wasmtime::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<wasmtime::component::ResourceTableError>(),
            Some(wasmtime::component::ResourceTableError::Full)
        )
    })
}

/// The trap, without wasmtime's multi-line backtrace.
fn trap_summary(e: &wasmtime::Error) -> String {
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return format!("the provider exited with status {}", exit.0);
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        // Its Display says "wasm trap: ..." already.
        Some(trap) => trap.to_string(),
        None => e.to_string().lines().next().unwrap_or("unknown error").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trap_is_summarised_once_without_a_doubled_prefix() {
        let e = wasmtime::Error::new(wasmtime::Trap::UnreachableCodeReached);
        let summary = trap_summary(&e);
        assert!(summary.starts_with("wasm trap: "), "{summary}");
        assert_eq!(summary.matches("wasm trap").count(), 1, "{summary}");
    }
}
