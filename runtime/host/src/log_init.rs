//! The host's diagnostics: `CREDENCE_LOG=<directives>` (e.g. `credence=debug`) installs
//! tracing-subscriber's formatter with an `EnvFilter` on stderr (the agent's stderr is
//! `agent.log`); otherwise only warnings, as the tool-facing program prints them.

pub fn init() {
    match std::env::var("CREDENCE_LOG") {
        Ok(directives) if !directives.is_empty() => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(directives))
                .with_writer(std::io::stderr)
                .with_target(false)
                .try_init();
        }
        _ => credence::logging::init(),
    }
}
