use tracing_subscriber::EnvFilter;

use super::commands::LogFormat;

/// Human-readable logs on stderr by default, JSON lines with `--log-format json`; RUST_LOG filters.
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    // ractor_cluster logs every session's life at info and warn; the cluster's own events (a worker
    // joined, lost, refused) are logged by d2nn with ranks and reasons.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ractor=error,ractor_cluster=error"));
    // Colours only for a terminal: escape codes in a log file or a pod's log are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}
