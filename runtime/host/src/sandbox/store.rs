//! The data of one provider's store, and the host side of its imports.

use super::bindings::credence::provider::{http, prompt};
use super::limits::{CallClock, LimitHit, Limiter, ProviderLimits};
use super::wasi::DeadlineIo;
use crate::capability::http::{FetchError, HttpCapability, HttpRequest};
use crate::capability::io_runtime;
use crate::capability::prompt::{PromptCapability, PromptError, neutralise};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// One capability use, for the debug log now and the audit trail later. Never holds a
/// secret: method, origin and status only; prompts by kind. Built only through
/// [`CapabilityUse::fetch`] and [`CapabilityUse::prompt`], which neutralise the text (the
/// method and the error messages are the provider's to choose), so neither the log nor
/// the audit trail ever carries a provider's escape sequences or line breaks.
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
    /// Uses past [`MAX_RECORDED_USES`], counted only.
    NotRecorded {
        count: usize,
    },
}

/// Capability uses one call keeps for the audit trail; a guest looping on a refused
/// prompt would otherwise grow the list (and the record) for as long as its clock runs.
pub const MAX_RECORDED_USES: usize = 100;

impl CapabilityUse {
    fn fetch(method: &str, origin: &str, outcome: &str) -> Self {
        CapabilityUse::Fetch {
            method: neutralise(method),
            origin: neutralise(origin),
            outcome: neutralise(outcome),
        }
    }

    fn prompt(kind: &'static str, outcome: &str) -> Self {
        CapabilityUse::Prompt {
            kind,
            outcome: neutralise(outcome),
        }
    }
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
    /// Uses past [`MAX_RECORDED_USES`].
    pub(super) uses_not_recorded: usize,
    /// Fetches attempted in this call, refused ones included.
    pub(super) fetches: usize,
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
            CapabilityUse::NotRecorded { count } => write!(f, "… {count} more capability uses not recorded"),
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
    fn record_use(&mut self, used: CapabilityUse) {
        if self.uses.len() < MAX_RECORDED_USES {
            self.uses.push(used);
        } else {
            self.uses_not_recorded += 1;
        }
    }

    /// The uses to report, with a count of those not kept.
    pub(super) fn take_uses(&mut self) -> Vec<CapabilityUse> {
        let mut uses = std::mem::take(&mut self.uses);
        if self.uses_not_recorded > 0 {
            uses.push(CapabilityUse::NotRecorded {
                count: self.uses_not_recorded,
            });
        }
        uses
    }

    /// The parts `wasi:io/poll` needs to wait no longer than the wall clock allows.
    pub(super) fn deadline_io(&mut self) -> DeadlineIo<'_> {
        DeadlineIo {
            table: &mut self.table,
            clock: &mut self.clock,
            hit: &mut self.limiter.hit,
        }
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
        let attempt = self.fetches;
        self.fetches = self.fetches.saturating_add(1);
        if attempt >= self.limits.fetches {
            self.limiter.hit = Some(LimitHit::Fetches {
                limit: self.limits.fetches,
            });
            let message = format!(
                "the limit of {} HTTP requests in one call is reached",
                self.limits.fetches
            );
            // The first refused attempt is a use too, so the audit trail shows what was
            // tried; later ones are not kept, or a guest looping on fetch would grow it.
            if attempt == self.limits.fetches {
                self.record_use(CapabilityUse::fetch(&method, &target, &format!("denied: {message}")));
            }
            return Err(http::FetchError::Denied(message));
        }
        let request = HttpRequest {
            method: req.method,
            url: req.url,
            headers: req.headers,
            body: req.body,
        };
        let http = &self.http;
        let result = self.clock.block(&mut self.limiter.hit, |time_left| {
            io_runtime().block_on(http.fetch(request, time_left))
        });
        let outcome = match &result {
            Ok((r, _)) => format!("HTTP {}", r.status),
            Err(e) => e.to_string(),
        };
        let used = CapabilityUse::fetch(&method, &target, &outcome);
        if let CapabilityUse::Fetch {
            method,
            origin,
            outcome,
        } = &used
        {
            tracing::debug!(method = %method, origin = %origin, outcome = %outcome, "provider fetch");
        }
        self.record_use(used);
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
        let used = CapabilityUse::prompt(kind, &outcome);
        if let CapabilityUse::Prompt { outcome, .. } = &used {
            tracing::debug!(kind, outcome = %outcome, "provider prompt");
        }
        self.record_use(used);
    }
}

impl prompt::Host for ProviderStore {
    fn ask(&mut self, message: String, kind: prompt::InputKind) -> Result<String, prompt::PromptError> {
        let secret = matches!(kind, prompt::InputKind::Secret);
        let prompt = &mut self.prompt;
        let result = self.clock.block(&mut self.limiter.hit, |time_left| {
            prompt.ask(&message, secret, time_left)
        });
        self.record_prompt("ask", &result);
        result.map_err(to_wit)
    }

    fn show(&mut self, message: String) -> Result<(), prompt::PromptError> {
        let prompt = &mut self.prompt;
        let result = self
            .clock
            .block(&mut self.limiter.hit, |time_left| prompt.show(&message, time_left));
        self.record_prompt("show", &result);
        result.map_err(to_wit)
    }

    fn open_url(&mut self, url: String, message: String) -> Result<(), prompt::PromptError> {
        let prompt = &mut self.prompt;
        let result = self.clock.block(&mut self.limiter.hit, |time_left| {
            prompt.open_url(&url, &message, time_left)
        });
        self.record_prompt("open-url", &result);
        result.map_err(to_wit)
    }
}
