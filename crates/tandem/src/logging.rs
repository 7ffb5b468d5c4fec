//! Structured logs through `tracing`.

use tandem_core::config::LogFormat;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Libraries that are chatty at `info`; kept at `warn` unless RUST_LOG says otherwise.
const QUIET: &str = "openraft=warn,h2=warn,tower=warn,hyper=warn,tonic=warn";

/// Logging for the agent: `RUST_LOG` if set, else the configured level;
/// text or one JSON object per line (the event's fields flattened to the
/// top level, as log shippers expect) to standard error, or the systemd
/// journal (falling back to text when there is no journal).
pub fn init_agent(level: Option<&str>, format: LogFormat) {
    let filter = || match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(format!("{},{QUIET}", level.unwrap_or("info"))),
    };
    let mut no_journal = None;
    if format == LogFormat::Journald {
        match tracing_journald::layer() {
            Ok(journal) => {
                if tracing_subscriber::registry()
                    .with(filter())
                    .with(journal)
                    .try_init()
                    .is_ok()
                {
                    return;
                }
            }
            Err(e) => no_journal = Some(e),
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs written to files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if format == LogFormat::Json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if let Some(e) = no_journal {
        tracing::warn!(error = %e, "no systemd journal to log to: logging text to standard error");
    }
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
