//! Structured logs through `tracing`.

use tracing_subscriber::EnvFilter;

/// Libraries that are chatty at `info`; kept at `warn` unless RUST_LOG says otherwise.
const QUIET: &str = "openraft=warn,h2=warn,tower=warn,hyper=warn,tonic=warn";

/// Logging for the agent: `RUST_LOG` if set, else the configured level;
/// text or one JSON object per line, to standard error.
pub fn init_agent(level: Option<&str>, json: bool) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(format!("{},{QUIET}", level.unwrap_or("info"))),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs written to files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Logging for CLI commands: warnings only unless RUST_LOG says otherwise.
pub fn init_cli() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("warn,{QUIET}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
