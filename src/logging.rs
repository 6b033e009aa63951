//! Structured JSON logs. `LOGGING_LEVEL_COM_YUBICO` (Java level names) sets the service's
//! own level; dependencies stay at WARN unless `RUST_LOG` says otherwise.

use crate::config::LogLevel;

pub fn init(level: LogLevel) {
    let filter = crate::config::log_filter(level);
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stdout)
        .try_init();
}
