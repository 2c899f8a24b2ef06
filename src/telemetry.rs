//! Logging. Structured (`key=value`, or JSON), one span per job carrying message_id and record_id.
//! Never a payload value: the code logs kinds, ids and our own reasons only, and the panic hook below
//! keeps panic messages (which could quote a value) out of the log.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

pub fn init(log: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    install_panic_hook();
}

/// Logs where a panic happened, not what it said. A job's panic message reaches the dead letter
/// after a check that it does not quote the record (see `worker::panic_reason`).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(%location, "panic caught (message withheld from the log)");
    }));
}
