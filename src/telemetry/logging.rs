//! Logging setup: text or JSON lines on stderr, at the configured level.
//!
//! Lines are handed to a writer thread (tracing-appender's non-blocking
//! writer) so that no request waits on a write to stderr; if that thread
//! ever falls 128k lines behind, further lines are dropped rather than
//! blocking requests.

use std::io::IsTerminal;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`
/// (handy for a single module's trace logs); dependencies stay at warn
/// unless asked for, so the decision log is not drowned out. Keep the guard
/// until exit: dropping it flushes the lines still queued.
pub fn init(format: &LogFormat, level: tracing::Level) -> WorkerGuard {
    let default = format!("warn,iamlet={level}");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(error) = result {
        eprintln!("iamlet: logging was already set up: {error}");
    }
    guard
}
