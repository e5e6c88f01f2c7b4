//! Logging: a `tracing` subscriber writing text or JSON to stderr.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::cli::{LogArgs, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `--log-level`.
pub fn init(args: &LogArgs) {
    let level = level_directive(&args.level);
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},hyper=warn,h2=warn,rustls=warn,kube=warn,tower=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true);
    let _ = match args.format {
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
