//! Logging and metrics.
//!
//! Logging: a `tracing` subscriber writing text or JSON to stderr. Metrics: a `prometheus-client`
//! registry behind `Metrics` (`metrics.rs`), recorded by the HTTP middleware, the issuance
//! decorator and the TLS reloader, and served by `http::admin_router` on the admin listener
//! (`--metrics-address`), never on the public port. Audit events are ordinary `tracing` events
//! with target `audit`.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

mod metrics;

pub use metrics::{Metrics, METRICS_CONTENT_TYPE};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`.
pub fn init(level: &str, format: LogFormat) {
    let level = level_directive(level);
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},hyper=warn,h2=warn,rustls=warn,kube=warn,tower=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Maps a level name or a klog verbosity number to a tracing level.
pub fn level_directive(level: &str) -> &'static str {
    match level.trim().to_ascii_lowercase().as_str() {
        "error" => "error",
        "warn" | "warning" => "warn",
        "debug" => "debug",
        "trace" => "trace",
        number => match number.parse::<u8>() {
            Ok(0..=1) => "info",
            Ok(2..=3) => "debug",
            Ok(_) => "trace",
            Err(_) => "info",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn klog_numbers_map_to_levels() {
        assert_eq!(level_directive("0"), "info");
        assert_eq!(level_directive("2"), "debug");
        assert_eq!(level_directive("8"), "trace");
        assert_eq!(level_directive("WARN"), "warn");
    }
}
