//! The data of one provider's store, and the host side of its imports.

use super::bindings::current::credence::provider::{flow, http, prompt, workload_identity};
use super::bindings::v0_1::credence::provider as v0_1;
use super::limits::{CallClock, LimitHit, Limiter, ProviderLimits};
use super::wasi::DeadlineIo;
use crate::capability::http::{FetchError, HttpCapability, HttpRequest};
use crate::capability::io_runtime;
use crate::capability::loopback::{self, AuthorizeError};
use crate::capability::prompt::{DeviceCode, PromptCapability, PromptError, neutralise, neutralise_within};
use crate::capability::workload_identity::{IdTokenCapability, IdTokenError};
use credence_signing::PromptKind;
use std::time::{Duration, Instant};
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
    /// The CI identity asked for: the audience and the outcome, never the token.
    IdToken {
        audience: String,
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
    pub(super) id_token: IdTokenCapability,
    /// Device codes shown and browser sign-ins started in this call.
    pub(super) device_codes: usize,
    pub(super) authorizations: usize,
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
            CapabilityUse::IdToken { audience, outcome } => write!(f, "id-token {audience}: {outcome}"),
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
        let limit = self.limits.fetches_for(self.clock.is_interactive(&self.limits));
        if attempt >= limit {
            self.limiter.hit = Some(LimitHit::Fetches { limit });
            let message = format!("the limit of {} HTTP requests in one call is reached", limit);
            // The first refused attempt is a use too, so the audit trail shows what was
            // tried; later ones are not kept, or a guest looping on fetch would grow it.
            if attempt == limit {
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

/// The longest single `flow.wait`: polling intervals are seconds; a provider wanting
/// longer calls again, and each call is checked against the deadline.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Device codes one call may show: a new code after one expired is fine, a stream of
/// them is not.
const MAX_DEVICE_CODES: usize = 3;
/// Browser sign-ins one call may start: each opens a page on the user's desktop.
const MAX_AUTHORIZATIONS: usize = 1;

impl flow::Host for ProviderStore {
    fn show_device_code(&mut self, code: flow::DeviceCode) -> Result<(), prompt::PromptError> {
        let result = if self.device_codes >= MAX_DEVICE_CODES {
            Err(PromptError::Unavailable(format!(
                "a call may show at most {MAX_DEVICE_CODES} device codes"
            )))
        } else {
            self.device_codes += 1;
            let http = &self.http;
            let prompt = &mut self.prompt;
            let shown = DeviceCode {
                verification_uri: &code.verification_uri,
                verification_uri_complete: code.verification_uri_complete.as_deref(),
                user_code: &code.user_code,
                expires_in_s: code.expires_in_s,
            };
            self.clock.block(&mut self.limiter.hit, |time_left| {
                prompt.show_device_code(&shown, |uri| http.origin_of(uri).is_ok(), time_left)
            })
        };
        // The user has minutes, not seconds, once a code is on their screen, and only then.
        if result.is_ok() {
            self.clock.become_interactive(self.limits.interactive_wall);
        }
        self.record_prompt("device-code", &result);
        result.map_err(to_wit)
    }

    fn dismiss(&mut self) {
        self.record_use(CapabilityUse::prompt("device-code", "dismissed"));
    }

    fn wait(&mut self, ms: u32) -> Result<(), prompt::PromptError> {
        let wanted = Duration::from_millis(ms.into()).min(MAX_WAIT);
        self.clock.block(&mut self.limiter.hit, |time_left| {
            std::thread::sleep(wanted.min(time_left));
            if wanted > time_left {
                Err(prompt::PromptError::Unavailable(
                    "the call's deadline passed while waiting".into(),
                ))
            } else {
                Ok(())
            }
        })
    }

    fn authorize(
        &mut self,
        req: flow::AuthorizationRequest,
    ) -> Result<flow::AuthorizationResponse, flow::AuthorizeError> {
        let (result, strays) = self.authorize_now(req);
        let outcome = match &result {
            Ok(_) => "code received".to_owned(),
            Err(e) => e.to_string(),
        };
        let outcome = if strays > 0 {
            format!("{outcome} ({strays} other requests turned away)")
        } else {
            outcome
        };
        self.record_use(CapabilityUse::prompt("authorize", &outcome));
        result
            .map(|r| flow::AuthorizationResponse {
                code: r.code,
                redirect_uri: r.redirect_uri,
                code_verifier: r.code_verifier,
                extra: r.extra,
            })
            .map_err(|e| match e {
                AuthorizeError::NotInteractive => flow::AuthorizeError::NotInteractive,
                AuthorizeError::Cancelled => flow::AuthorizeError::Cancelled,
                AuthorizeError::Timeout => flow::AuthorizeError::Timeout,
                AuthorizeError::AccessDenied(d) => flow::AuthorizeError::AccessDenied(d),
                AuthorizeError::ServerError(e) => flow::AuthorizeError::ServerError(e),
                AuthorizeError::InvalidRequest(m) => flow::AuthorizeError::InvalidRequest(m),
                AuthorizeError::Unavailable(m) => flow::AuthorizeError::Unavailable(m),
            })
    }
}

impl ProviderStore {
    /// The authorization code flow, and how many requests its listener turned away.
    fn authorize_now(
        &mut self,
        req: flow::AuthorizationRequest,
    ) -> (Result<loopback::AuthorizationResponse, AuthorizeError>, usize) {
        // Nothing is bound, shown or opened for a tool that may not prompt, or where no
        // terminal would show the URL.
        match self.prompt.may(PromptKind::Authorize) {
            Ok(()) => {}
            Err(PromptError::NotInteractive) => return (Err(AuthorizeError::NotInteractive), 0),
            Err(e) => return (Err(AuthorizeError::Unavailable(e.to_string())), 0),
        }
        if self.authorizations >= MAX_AUTHORIZATIONS {
            return (
                Err(AuthorizeError::Unavailable(format!(
                    "a call may start at most {MAX_AUTHORIZATIONS} browser sign-in"
                ))),
                0,
            );
        }
        self.authorizations += 1;
        let request = loopback::AuthorizationRequest {
            endpoint: req.endpoint,
            params: req.params,
            redirect_path: req.redirect_path,
            redirect_host: match req.redirect_host {
                flow::RedirectHost::Ip4 => loopback::RedirectHost::Ip4,
                flow::RedirectHost::Ip6 => loopback::RedirectHost::Ip6,
            },
            redirect_port: req.redirect_port,
            expected_issuer: req.expected_issuer,
        };
        let http = &self.http;
        // Bound here, before the URL exists; closed when `pending` is dropped, whatever the outcome.
        let pending = match loopback::begin(&request, |url| http.origin_of(url.as_str()).is_ok()) {
            Ok(p) => p,
            Err(e) => return (Err(e), 0),
        };
        let prompt = &mut self.prompt;
        let shown = self.clock.block(&mut self.limiter.hit, |time_left| {
            prompt.show_authorization(pending.url(), &req.message, time_left)
        });
        if let Err(e) = shown {
            return (Err(AuthorizeError::Unavailable(e.to_string())), 0);
        }
        self.clock.become_interactive(self.limits.interactive_wall);
        // The browser gets the one-time launch address, never the URL with `state` in it.
        if let Err(why) = crate::capability::browser::open(&pending.launch_url()) {
            let prompt = &mut self.prompt;
            let _ = self.clock.block(&mut self.limiter.hit, |time_left| {
                prompt.show_no_browser(&why, time_left)
            });
        }
        let prompt = &self.prompt;
        let outcome = self.clock.block(&mut self.limiter.hit, |time_left| {
            pending.wait(Instant::now() + time_left, || prompt.requester_gone())
        });
        (outcome.result, outcome.strays)
    }
}

impl workload_identity::Host for ProviderStore {
    fn id_token(&mut self, audience: String) -> Result<String, workload_identity::IdTokenError> {
        let id_token = &self.id_token;
        let result = self.clock.block(&mut self.limiter.hit, |time_left| {
            id_token.id_token(&audience, time_left)
        });
        // The audience and the outcome, never the token.
        let outcome = match &result {
            Ok(_) => "issued".to_owned(),
            Err(e) => e.to_string(),
        };
        self.record_use(CapabilityUse::IdToken {
            audience: neutralise_within(&audience, 256),
            outcome: neutralise(&outcome),
        });
        result.map_err(|e| match e {
            IdTokenError::NotAvailable(m) => workload_identity::IdTokenError::NotAvailable(m),
            IdTokenError::Denied(m) => workload_identity::IdTokenError::Denied(m),
            IdTokenError::Failed(m) => workload_identity::IdTokenError::Failed(m),
        })
    }
}

// World 0.1.0: the same capabilities under their old names, converted at the boundary.

impl v0_1::http::Host for ProviderStore {
    fn fetch(&mut self, req: v0_1::http::Request) -> Result<v0_1::http::Response, v0_1::http::FetchError> {
        let req = http::Request {
            method: req.method,
            url: req.url,
            headers: req.headers,
            body: req.body,
        };
        http::Host::fetch(self, req)
            .map(|r| v0_1::http::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            })
            .map_err(|e| match e {
                http::FetchError::Denied(m) => v0_1::http::FetchError::Denied(m),
                http::FetchError::InvalidRequest(m) => v0_1::http::FetchError::InvalidRequest(m),
                http::FetchError::Timeout => v0_1::http::FetchError::Timeout,
                http::FetchError::TooLarge(m) => v0_1::http::FetchError::TooLarge(m),
                http::FetchError::Transport(m) => v0_1::http::FetchError::Transport(m),
            })
    }
}

fn prompt_error_v0_1(e: prompt::PromptError) -> v0_1::prompt::PromptError {
    match e {
        prompt::PromptError::NotInteractive => v0_1::prompt::PromptError::NotInteractive,
        prompt::PromptError::Cancelled => v0_1::prompt::PromptError::Cancelled,
        prompt::PromptError::Unavailable(m) => v0_1::prompt::PromptError::Unavailable(m),
    }
}

impl v0_1::prompt::Host for ProviderStore {
    fn ask(&mut self, message: String, kind: v0_1::prompt::InputKind) -> Result<String, v0_1::prompt::PromptError> {
        let kind = match kind {
            v0_1::prompt::InputKind::Text => prompt::InputKind::Text,
            v0_1::prompt::InputKind::Secret => prompt::InputKind::Secret,
        };
        prompt::Host::ask(self, message, kind).map_err(prompt_error_v0_1)
    }

    fn show(&mut self, message: String) -> Result<(), v0_1::prompt::PromptError> {
        prompt::Host::show(self, message).map_err(prompt_error_v0_1)
    }

    fn open_url(&mut self, url: String, message: String) -> Result<(), v0_1::prompt::PromptError> {
        prompt::Host::open_url(self, url, message).map_err(prompt_error_v0_1)
    }
}
