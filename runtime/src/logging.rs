//! Where credence's own diagnostics go: stderr, never stdout (every tool's protocol channel).
//!
//! By default only warnings, through [`WarningsToStderr`]: tracing-subscriber's formatter
//! and span registry cost ~0.16 ms of start-up (measured), which a helper spawned on every
//! fetch pays every time. `CREDENCE_LOG=<directives>` (e.g. `credence=debug`) installs the
//! full formatter with an `EnvFilter`.

use std::fmt::Write as _;
use std::io::Write as _;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;

pub fn init() {
    match std::env::var("CREDENCE_LOG") {
        Ok(directives) if !directives.is_empty() => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(directives))
                .with_writer(std::io::stderr)
                .with_target(false)
                .try_init();
        }
        _ => {
            let _ = tracing::subscriber::set_global_default(WarningsToStderr);
        }
    }
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
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
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
