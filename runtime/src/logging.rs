//! Where credence's own diagnostics go: stderr, never stdout (every tool's protocol channel).
//!
//! Only warnings, through [`WarningsToStderr`]: tracing-subscriber's formatter and span
//! registry cost ~0.16 ms of start-up (measured), and the program every fetch spawns does
//! not link them at all. `CREDENCE_LOG=<directives>` (e.g. `credence=debug`) makes
//! `credence` answer in-process, and `credence-host` installs the full formatter.

use std::fmt::Write as _;
use std::io::Write as _;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// At most this many warnings go back with one answer.
const MAX_CAPTURED: usize = 32;

thread_local! {
    static CAPTURED: std::cell::RefCell<Option<Vec<String>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with the warnings it logs on this thread kept instead of printed: the agent
/// sends a request's warnings to the client that asked, which prints them on the tool's
/// stderr as an in-process run would have.
pub fn capture_warnings<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
    let outer = CAPTURED.with(|c| c.borrow_mut().replace(Vec::new()));
    let result = f();
    let lines = CAPTURED
        .with(|c| std::mem::replace(&mut *c.borrow_mut(), outer))
        .unwrap_or_default();
    (result, lines)
}

/// Prints warnings an agent sent back, as they were printed there: already neutralised
/// `credence: warning: ...` lines.
pub fn print_warnings(lines: &[String]) {
    let mut err = std::io::stderr().lock();
    for line in lines.iter().take(MAX_CAPTURED) {
        let _ = err.write_all(line.as_bytes());
    }
}

pub fn init() {
    let _ = tracing::subscriber::set_global_default(WarningsToStderr);
}

/// Prints `credence: warning: <message> (<field>=<value>, ...)` for warnings and errors,
/// one write per line; ignores everything else, spans included.
pub struct WarningsToStderr;

impl WarningsToStderr {
    fn wanted(metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN
    }
}

impl Subscriber for WarningsToStderr {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if Self::wanted(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        Self::wanted(metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::WARN)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = Line::default();
        event.record(&mut line);
        let kind = if *event.metadata().level() == Level::ERROR {
            "error"
        } else {
            "warning"
        };
        let mut out = format!("credence: {kind}: {}", line.message);
        if !line.fields.is_empty() {
            let _ = write!(out, " ({})", line.fields.join(", "));
        }
        out.push('\n');
        let captured = CAPTURED.with(|c| match c.borrow_mut().as_mut() {
            Some(lines) if lines.len() < MAX_CAPTURED => {
                lines.push(out.clone());
                true
            }
            Some(_) => true,
            None => false,
        });
        if !captured {
            let _ = std::io::stderr().lock().write_all(out.as_bytes());
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[derive(Default)]
struct Line {
    message: String,
    fields: Vec<String>,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.push(format!("{}={value}", field.name()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields.push(format!("{}={value:?}", field.name()));
        }
    }
}
