//! The data of one provider's store, and the host side of its imports.

use super::bindings::credence::provider::{http, prompt};
use super::limits::{CallClock, LimitHit, Limiter, ProviderLimits};
use crate::capability::http::{FetchError, HttpCapability, HttpRequest};
use crate::capability::io_runtime;
use crate::capability::prompt::{PromptCapability, PromptError};
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// One capability use, for the debug log now and the audit trail later. Never holds a
/// secret: method, origin and status only; prompts by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CapabilityUse {
    Fetch {
        method: String,
        origin: String,
        outcome: String,
    },
    Prompt {
        kind: &'static str,
        outcome: String,
    },
}

pub struct ProviderStore {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: Limiter,
    pub(super) clock: CallClock,
    pub(super) limits: ProviderLimits,
    pub(super) http: HttpCapability,
    pub(super) prompt: PromptCapability,
    pub(super) uses: Vec<CapabilityUse>,
}

impl std::fmt::Display for CapabilityUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapabilityUse::Fetch {
                method,
                origin,
                outcome,
            } => write!(f, "fetch {method} {origin}: {outcome}"),
            CapabilityUse::Prompt { kind, outcome } => write!(f, "prompt {kind}: {outcome}"),
        }
    }
}

impl WasiView for ProviderStore {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ProviderStore {
    /// Runs a blocking host call, crediting the time it took back to the CPU budget.
    /// A call that ran out the wall clock (a server that never answers, a prompt nobody
    /// answers) is the wall-clock limit's doing, whatever the provider makes of the
    /// error it gets: recorded here, it names the limit even if the guest returns first.
    fn blocking<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let started = Instant::now();
        let result = f(self);
        self.clock.blocked += started.elapsed();
        if self.clock.wall_left().is_zero() && self.limiter.hit.is_none() {
            self.limiter.hit = Some(LimitHit::Wall { limit: self.clock.wall });
        }
        result
    }
}

impl http::Host for ProviderStore {
    fn fetch(&mut self, req: http::Request) -> Result<http::Response, http::FetchError> {
        let method = req.method.clone();
        let target = self
            .http
            .origin_of(&req.url)
            .map(|o| o.to_string())
            .unwrap_or_else(|_| "(refused)".into());
        let fetches = self
            .uses
            .iter()
            .filter(|u| matches!(u, CapabilityUse::Fetch { .. }))
            .count();
        if fetches >= self.limits.fetches {
            self.limiter.hit = Some(LimitHit::Fetches {
                limit: self.limits.fetches,
            });
            let message = format!(
                "the limit of {} HTTP requests in one call is reached",
                self.limits.fetches
            );
            // The first refused attempt is a use too, so the audit trail shows what was
            // tried; later ones are not kept, or a guest looping on fetch would grow it.
            if fetches == self.limits.fetches {
                self.uses.push(CapabilityUse::Fetch {
                    method,
                    origin: target,
                    outcome: format!("denied: {message}"),
                });
            }
            return Err(http::FetchError::Denied(message));
        }
        let request = HttpRequest {
            method: req.method,
            url: req.url,
            headers: req.headers,
            body: req.body,
        };
        let result = self.blocking(|s| {
            let time_left = s.clock.wall_left();
            io_runtime().block_on(s.http.fetch(request, time_left))
        });
        let outcome = match &result {
            Ok((r, _)) => format!("HTTP {}", r.status),
            Err(e) => e.to_string(),
        };
        tracing::debug!(method = %method, origin = %target, outcome = %outcome, "provider fetch");
        self.uses.push(CapabilityUse::Fetch {
            method,
            origin: target,
            outcome,
        });
        result
            .map(|(r, _)| http::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            })
            .map_err(|e| match e {
                FetchError::Denied(m) => http::FetchError::Denied(m),
                FetchError::InvalidRequest(m) => http::FetchError::InvalidRequest(m),
                FetchError::Timeout => http::FetchError::Timeout,
                FetchError::TooLarge(m) => http::FetchError::TooLarge(m),
                FetchError::Transport(m) => http::FetchError::Transport(m),
            })
    }
}

fn to_wit(e: PromptError) -> prompt::PromptError {
    match e {
        PromptError::NotInteractive => prompt::PromptError::NotInteractive,
        PromptError::Cancelled => prompt::PromptError::Cancelled,
        PromptError::Unavailable(m) => prompt::PromptError::Unavailable(m),
    }
}

impl ProviderStore {
    fn record_prompt<T>(&mut self, kind: &'static str, result: &Result<T, PromptError>) {
        let outcome = match result {
            Ok(_) => "shown".to_owned(),
            Err(e) => e.to_string(),
        };
        tracing::debug!(kind, outcome = %outcome, "provider prompt");
        self.uses.push(CapabilityUse::Prompt { kind, outcome });
    }
}

impl prompt::Host for ProviderStore {
    fn ask(&mut self, message: String, kind: prompt::InputKind) -> Result<String, prompt::PromptError> {
        let secret = matches!(kind, prompt::InputKind::Secret);
        let result = self.blocking(|s| {
            let time_left = s.clock.wall_left();
            s.prompt.ask(&message, secret, time_left)
        });
        self.record_prompt("ask", &result);
        result.map_err(to_wit)
    }

    fn show(&mut self, message: String) -> Result<(), prompt::PromptError> {
        let result = self.blocking(|s| {
            let time_left = s.clock.wall_left();
            s.prompt.show(&message, time_left)
        });
        self.record_prompt("show", &result);
        result.map_err(to_wit)
    }

    fn open_url(&mut self, url: String, message: String) -> Result<(), prompt::PromptError> {
        let result = self.blocking(|s| {
            let time_left = s.clock.wall_left();
            s.prompt.open_url(&url, &message, time_left)
        });
        self.record_prompt("open-url", &result);
        result.map_err(to_wit)
    }
}
